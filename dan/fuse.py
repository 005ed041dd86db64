"""Inference fusion for the frozen ResNet trunk: BatchNorm folded into the convolutions, and each convolution's
bias, the residual and the ReLU applied in one pass over its output.

A frozen backbone's BatchNorm is an affine map per channel, ``bn(z) = z * scale + shift`` with
``scale = gamma / sqrt(running_var + eps)`` and ``shift = beta - running_mean * scale``, so
``bn(conv(x, w)) = conv(x, w * scale) + shift`` (the scale folded into the weights, in float32). What the eager
torchvision block does after each convolution, and what this module does instead:

| after          | eager (passes over the output)                   | fused (one pass, :func:`bias_act_`)       |
| -------------- | ------------------------------------------------ | ----------------------------------------- |
| conv1, conv2   | BatchNorm (read, write), ReLU (read, write)      | ``relu(z + shift)`` in place              |
| conv3          | BatchNorm, residual add (2 reads, write), ReLU   | ``relu(z + shift + identity)`` in place   |
| downsample     | BatchNorm                                        | its shift joins conv3's                   |

Counting the output elements of ResNet-152's convolutions at 448 px (90.2 M per image, 92 GFLOP), the eager
elementwise passes move about 12 bytes per element in bf16 and the fused ones about 5.3; on a GPU these passes
are memory-bound, so the saving is an estimate of ~7 bytes x 90 M x 256 images = ~160 GB per batch of 256
(~40 ms at ~4 TB/s against the ~128 ms eager batch measured on an H200: not yet measured fused).

On CUDA (channels_last activations, Triton installed) the pass is :func:`_bias_act_kernel`; elsewhere (the CPU,
another memory layout) the same arithmetic in torch ops. The fused trunk computes the same function as the eager
one up to rounding (float32: a relative difference ~1e-6; tested), so stores record it
(``meta["inference"]``) and it is part of their fingerprint.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

try:  # Triton comes with PyTorch's CUDA builds
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = tl = None

FUSED = "BatchNorm folded into the convolutions (float32); bias + residual + ReLU in one pass (dan.fuse)"
_kernel_failed = False  # set once the Triton kernel could not run here; the torch ops take over


def fold_batchnorm(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> tuple[nn.Conv2d, torch.Tensor]:
    """``bn(conv(x)) == folded(x) + shift[c]``: a bias-free copy of ``conv`` with BatchNorm's per-channel scale
    folded into its weights (float32) and the shift ``[C_out]`` (float32), from ``bn``'s running statistics."""
    with torch.no_grad():
        scale = bn.weight.float() / torch.sqrt(bn.running_var.float() + bn.eps)  # [C_out]
        shift = bn.bias.float() - bn.running_mean.float() * scale
        if conv.bias is not None:
            shift = shift + conv.bias.float() * scale
        folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                           conv.dilation, conv.groups, bias=False, padding_mode=conv.padding_mode)
        folded.weight.copy_(conv.weight.float() * scale.view(-1, 1, 1, 1))
    return folded.requires_grad_(False), shift


if triton is not None:

    @triton.jit
    def _bias_act_kernel(y, bias, res, n_pix, n_ch, HAS_RES: tl.constexpr, BLOCK_P: tl.constexpr,
                         BLOCK_C: tl.constexpr):
        """In place on ``y`` viewed as ``[n_pix, n_ch]`` (a channels_last activation ``[B, C, H, W]``, pixels x
        channels): ``y = relu(y + bias[c] (+ res))`` computed in float32, stored in ``y``'s dtype."""
        rows = tl.program_id(0) * BLOCK_P + tl.arange(0, BLOCK_P)
        cols = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
        col_ok = cols < n_ch
        b = tl.load(bias + cols, mask=col_ok, other=0.0)
        at = rows.to(tl.int64)[:, None] * n_ch + cols[None, :]  # int64: big batches of big images pass 2**31
        ok = (rows < n_pix)[:, None] & col_ok[None, :]
        v = tl.load(y + at, mask=ok, other=0.0).to(tl.float32) + b[None, :]
        if HAS_RES:
            v += tl.load(res + at, mask=ok, other=0.0).to(tl.float32)
        tl.store(y + at, tl.maximum(v, 0.0).to(y.dtype.element_ty), mask=ok)


def _kernel_fits(y: torch.Tensor, residual: torch.Tensor | None) -> bool:
    """The kernel indexes ``y`` (and ``residual``) as ``[pixels, channels]``: dense channels_last 4-D tensors; and
    autograd does not see it, so a ``y`` that needs gradients takes the torch ops."""
    def dense(t: torch.Tensor) -> bool:
        return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)
    grad = torch.is_grad_enabled() and (y.requires_grad or (residual is not None and residual.requires_grad))
    return not grad and dense(y) and (residual is None or (dense(residual) and residual.shape == y.shape))


def _kernel_by_default(y: torch.Tensor) -> bool:
    return y.is_cuda and triton is not None and not _kernel_failed


def bias_act_(y: torch.Tensor, bias: torch.Tensor, residual: torch.Tensor | None = None,
              kernel: bool | None = None) -> torch.Tensor:
    """``y = relu(y + bias[c] (+ residual))`` in place; ``y`` ``[B, C, H, W]``, ``bias`` float32 ``[C]``.

    ``kernel``: None = the Triton kernel where it applies (CUDA, Triton installed, channels_last), else torch ops;
    True = the kernel (tests run it on the CPU under ``TRITON_INTERPRET=1``); False = torch ops. If the kernel
    cannot run (e.g. a GPU Triton cannot compile for) it warns once and the torch ops take over."""
    global _kernel_failed
    use = _kernel_by_default(y) if kernel is None else kernel
    if use and _kernel_fits(y, residual):
        n_ch = y.shape[1]
        n_pix = y.numel() // n_ch
        grid = (triton.cdiv(n_pix, 32), triton.cdiv(n_ch, 64))
        try:
            _bias_act_kernel[grid](y, bias, residual if residual is not None else y, n_pix, n_ch,
                                   HAS_RES=residual is not None, BLOCK_P=32, BLOCK_C=64)
            return y
        except Exception as exc:  # noqa: BLE001 - compile/launch failures happen before any write
            if kernel:
                raise
            _kernel_failed = True
            warnings.warn(f"dan.fuse: the Triton kernel failed on {y.device} ({type(exc).__name__}: {exc}); "
                          "using torch ops instead (same result, slower)", RuntimeWarning, stacklevel=2)
    y.add_(bias.view(1, -1, 1, 1))  # computed in float32, stored in y's dtype
    if residual is not None:
        y.add_(residual)
    return y.relu_()


class FusedStem(nn.Module):
    """ResNet's ``conv1 -> bn1 -> relu -> maxpool`` with the BatchNorm folded: ``[B, 3, S, S] -> [B, 64, S/4, S/4]``."""

    def __init__(self, conv: nn.Conv2d, bn: nn.BatchNorm2d, pool: nn.Module) -> None:
        super().__init__()
        self.conv, shift = fold_batchnorm(conv, bn)
        self.register_buffer("shift", shift)
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(bias_act_(self.conv(x), self.shift))


class FusedBottleneck(nn.Module):
    """A torchvision ``Bottleneck`` (eval) with its BatchNorms folded: ``[B, C_in, H, W] -> [B, 4 C, H / s, W / s]``.

    ``relu(bn3(conv3(y2)) + identity)``, identity = ``bn_d(conv_d(x))`` or ``x``, becomes
    ``relu(conv3'(y2) + conv_d'(x) + (shift3 + shift_d))``: one pass over conv3's output."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conv1, shift1 = fold_batchnorm(block.conv1, block.bn1)
        self.conv2, shift2 = fold_batchnorm(block.conv2, block.bn2)
        self.conv3, shift3 = fold_batchnorm(block.conv3, block.bn3)
        self.down = None
        if block.downsample is not None:
            conv_d, bn_d = block.downsample  # torchvision: Sequential(conv1x1, BatchNorm2d)
            self.down, shift_d = fold_batchnorm(conv_d, bn_d)
            shift3 = shift3 + shift_d
        for name, shift in (("shift1", shift1), ("shift2", shift2), ("shift3", shift3)):
            self.register_buffer(name, shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = bias_act_(self.conv1(x), self.shift1)  # [B, C, H, W]
        y = bias_act_(self.conv2(y), self.shift2)  # [B, C, H / s, W / s]
        identity = self.down(x) if self.down is not None else x  # [B, 4 C, H / s, W / s]
        return bias_act_(self.conv3(y), self.shift3, identity)


def fuse_resnet(trunk: nn.Sequential) -> nn.Sequential:
    """The fused copy of a torchvision ResNet trunk ``Sequential(conv1, bn1, relu, maxpool, layer1, ...)`` (as
    :func:`dan.backbones.build_backbone` cuts it) in eval mode; the original is left as it was."""
    conv, bn, relu, pool, *layers = trunk
    if not (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)):
        kinds = [type(m).__name__ for m in trunk]
        raise TypeError(f"not a ResNet trunk (conv1, bn1, relu, maxpool, layers...): {kinds}")
    fused = [FusedStem(conv, bn, pool)]
    for layer in layers:
        fused.append(nn.Sequential(*[FusedBottleneck(block) for block in layer]))
    return nn.Sequential(*fused).eval().requires_grad_(False)
