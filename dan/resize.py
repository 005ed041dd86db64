"""PIL's BILINEAR resize of 8-bit images, reproduced exactly as matrix products on any device.

The device-decode path (:func:`dan.jpeg.decode_jpeg_batch`) decodes JPEGs on the GPU and must then resize
them as the CPU path does (``PIL.Image.resize(size, BILINEAR)``, :func:`dan.images.read_image`). What PIL does,
for 8-bit images (its ``Resample.c``, restated):

* two passes (horizontal first, except as :func:`vertical_first` says): each output pixel is a weighted sum over a
  window of input pixels; the weights are the triangle filter stretched by the scale factor when shrinking
  (antialiasing), normalised to sum to 1;
* the weights are fixed-point integers with 22 fractional bits; a sum starts at ``2**21`` (rounding half up), is
  shifted right by 22 and clipped to 0..255, after **each** pass (the intermediate image is 8-bit too; with the
  triangle filter's non-negative weights the clipping never acts).

Here a pass is one matrix product with a ``[in, out]`` coefficient matrix that is zero outside each output's window.
Sums of integer products stay exact in float32 (24-bit significand) while below ``2**24``, and the inputs of a
TF32 tensor-core product are exact while they are integers below ``2**11``. So each 22-bit coefficient ``c`` is split
as ``c = hi * 2**11 + lo`` (``hi <= 2**11``, ``lo < 2**11``), both halves go through one product (a ``[in, 2 out]``
matrix), and they are recombined with exact float steps::

    (hi_sum * 2**11 + lo_sum + 2**21) >> 22  ==  floor((hi_sum + floor((lo_sum + 2**21) / 2**11)) / 2**11)

``lo_sum + 2**21 < 2**24`` holds for windows of up to 28 taps (shrinking by up to ~13x); a pass with wider windows
runs in float64 (integer sums exact below ``2**53``). The result equals PIL's pixel for pixel on the same 8-bit
input: tested against Pillow on the CPU (the GPU kernel below under Triton's interpreter included);
``benchmarks/gpu_checks.py`` checks it on a GPU (with TF32 off and on), which has not run yet.
The torch alternative, ``F.interpolate(..., antialias=True)``, keeps the intermediate in float and differed from PIL
by one level on ~20 % of the pixels of a 640 x 480 -> 448 x 448 test image.
"""

from __future__ import annotations

import warnings

import numpy as np
import PIL
import torch
import torch.nn.functional as F

try:  # Triton comes with PyTorch's CUDA builds; without it (CPU builds) the matrix products do the work
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the installation
    triton = tl = None

PRECISION_BITS = 22  # PIL's fractional bits for 8-bit resampling coefficients
SPLIT_BITS = 11  # coefficient halves and pixels below 2**11: exact TF32 inputs
_HALF = 1 << (PRECISION_BITS - 1)  # the rounding offset PIL starts each sum with
RESIZE_MODES = ("pil", "antialias")
PILLOW_MAJOR = int(PIL.__version__.split(".")[0])


def vertical_first(h: int, w: int, out_h: int, out_w: int) -> bool:
    """Pillow's pass order: since Pillow 13 the vertical pass runs first when the height shrinks by more than twice
    as many pixels as the width (``Resample.c``); before, the horizontal pass always ran first."""
    return PILLOW_MAJOR >= 13 and h - out_h > 0 and h - out_h > 2 * (w - out_w)


def bilinear_coefficients(n_in: int, n_out: int) -> np.ndarray:
    """PIL's fixed-point BILINEAR coefficients for resizing a line of ``n_in`` pixels to ``n_out``: int64
    ``[n_out, n_in]``, row ``i`` = the weights of output pixel ``i`` (scaled by ``2**22``, zero outside its window)."""
    if n_in < 1 or n_out < 1:
        raise ValueError(f"line lengths must be >= 1, got {n_in} -> {n_out}")
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the triangle filter's support (1) stretched when shrinking
    inv = 1.0 / filterscale
    out = np.zeros((n_out, n_in), dtype=np.int64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)  # int() truncates toward zero, as PIL's C cast
        hi = min(int(center + support + 0.5), n_in)
        w = np.maximum(1.0 - np.abs((np.arange(lo, hi) - center + 0.5) * inv), 0.0)
        total = float(np.cumsum(w)[-1]) if w.size else 0.0  # summed in order, as PIL does
        if total != 0.0:
            w = w / total
        out[i, lo:hi] = np.trunc(0.5 + w * (1 << PRECISION_BITS)).astype(np.int64)
    return out


def bilinear_windows(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`bilinear_coefficients` as windows: ``(starts int32 [n_out], coeffs int32 [n_out, K])``, output ``i``
    = sum over ``k < K`` of ``coeffs[i, k] * input[starts[i] + k]`` (zeros pad the shorter windows; K = the widest)."""
    c = bilinear_coefficients(n_in, n_out)
    nz = c != 0
    starts = nz.argmax(axis=1)
    ends = n_in - nz[:, ::-1].argmax(axis=1)
    k = int((ends - starts).max())
    coeffs = np.zeros((n_out, k), dtype=np.int32)
    for i, (a, b) in enumerate(zip(starts, ends, strict=True)):
        coeffs[i, : b - a] = c[i, a:b]
    return starts.astype(np.int32), coeffs


if triton is not None:

    @triton.jit(do_not_specialize=["n_lines", "n_out", "n_in", "src_line", "src_tap", "r1", "r2", "s0", "s1", "s2",
                                   "dst_out", "ch_div", "n_ch"])  # sizes: no recompiling per image size
    def _resample_kernel(src, dst, starts, coeffs, scale, shift, n_lines, n_out, n_in, src_line, src_tap,
                         r1, r2, s0, s1, s2, dst_out, ch_div, n_ch, K: tl.constexpr, BLOCK_LINES: tl.constexpr,
                         BLOCK_OUT: tl.constexpr, OUT_FAST: tl.constexpr, NORMALISE: tl.constexpr):
        """One PIL pass over ``n_lines`` lines of ``n_in`` 8-bit pixels (element ``(line, tap)`` of ``src`` at
        ``line * src_line + tap * src_tap``) into ``n_out`` outputs a line, in int32 fixed point as PIL computes
        it. Output ``(line, out)`` goes to ``dst`` at ``d0 * s0 + d1 * s1 + d2 * s2 + out * dst_out``, where
        ``line = (d0 * r1 + d1) * r2 + d2`` (so the last pass can write the NHWC model input directly), as
        ``value * scale[c] + shift[c]`` with ``c = line // ch_div % n_ch`` when NORMALISE. A program does
        BLOCK_LINES x BLOCK_OUT outputs; the tile's memory-adjacent axis is the outputs (OUT_FAST) or the lines."""
        if OUT_FAST:
            lines = tl.program_id(0) * BLOCK_LINES + tl.arange(0, BLOCK_LINES)[:, None]
            outs = tl.program_id(1) * BLOCK_OUT + tl.arange(0, BLOCK_OUT)[None, :]
            acc = tl.full((BLOCK_LINES, BLOCK_OUT), 1 << 21, tl.int32)  # PIL's rounding offset, 2**(22 - 1)
        else:
            lines = tl.program_id(0) * BLOCK_LINES + tl.arange(0, BLOCK_LINES)[None, :]
            outs = tl.program_id(1) * BLOCK_OUT + tl.arange(0, BLOCK_OUT)[:, None]
            acc = tl.full((BLOCK_OUT, BLOCK_LINES), 1 << 21, tl.int32)
        lines = lines.to(tl.int64)
        out_ok = outs < n_out
        ok = (lines < n_lines) & out_ok
        start = tl.load(starts + outs, mask=out_ok, other=0)
        for k in tl.static_range(K):  # K: the widest window (taps; a compile-time constant, so the loop unrolls:
            # 1-3 for every side of 100-640 pixels -> 448; a runtime K failed in Triton 3.6's interpreter)
            w = tl.load(coeffs + outs * K + k, mask=out_ok, other=0)
            tap = (start + k).to(tl.int64)  # addresses in int64: a big batch of big images passes 2**31 bytes
            v = tl.load(src + lines * src_line + tap * src_tap, mask=ok & (tap < n_in), other=0)
            acc += v.to(tl.int32) * w
        val = tl.minimum(tl.maximum(acc >> 22, 0), 255)
        d2 = lines % r2
        d1 = (lines // r2) % r1
        d0 = lines // (r1 * r2)
        if NORMALISE:
            ch = (lines // ch_div) % n_ch
            val = val.to(tl.float32) * tl.load(scale + ch) + tl.load(shift + ch)
        dst_at = d0 * s0 + d1 * s1 + d2 * s2 + outs.to(tl.int64) * dst_out
        tl.store(dst + dst_at, val.to(dst.dtype.element_ty), mask=ok)


def normalise_(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Whole levels ``x [n, C, S, S]`` -> the model input ``x * scale + shift`` (``[1, C, 1, 1]`` each: the
    backbone's ``1 / (255 std)`` and ``-mean / std``), float32 channels_last (in place after the layout copy)."""
    return x.float().contiguous(memory_format=torch.channels_last).mul_(scale).add_(shift)


class PilResize:
    """Resize same-size uint8 images ``[C, H, W]`` on ``device`` to float32 ``[n, C, S, S]`` holding PIL's 8-bit
    BILINEAR result (whole levels 0..255), or with ``normalise=(scale, shift)`` (``[1, C, 1, 1]`` tensors on the
    device) the model input :func:`normalise_` makes of it, channels_last.

    ``method``: "kernel" runs each pass as PIL does (int32 fixed point over each output's window, 8-bit
    intermediate) in a Triton kernel whose last pass writes the normalised NHWC input; "products" as blocked matrix
    products (below); "auto" = the kernel on CUDA when Triton is installed, else the products. Both are exact, so
    they agree with each other and with Pillow (the kernel's normalisation may round once where
    :func:`normalise_` rounds twice: a last-bit difference before the bf16 cast). For the products a pass is cut
    into blocks of ``tile`` outputs (None: one block); a block's product reads only the inputs its windows cover,
    so shrinking 640 -> 448 in blocks of 112 (windows of 161-162 inputs) does ~1/4 of the dense product's
    arithmetic. Coefficients are built once per input size and kept."""

    def __init__(self, size: int, device: torch.device | str, tile: int | None = 112, method: str = "auto",
                 normalise: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.size, self.device, self.tile, self.normalise = size, torch.device(device), tile or size, normalise
        if method == "auto":
            method = "kernel" if triton is not None and self.device.type == "cuda" else "products"
        if method not in ("kernel", "products"):
            raise ValueError(f"method must be 'auto', 'kernel' or 'products', got {method!r}")
        if method == "kernel" and triton is None:
            raise ValueError("method 'kernel' needs Triton (pip install triton), which this installation lacks")
        self.method, self._kernel_ran = method, False
        self._blocks: dict[int, tuple[list[tuple[int, int, int, int, torch.Tensor]], bool]] = {}
        self._windows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def windows(self, n_in: int) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`bilinear_windows` for lines of ``n_in`` pixels, on the device (the kernel's coefficients)."""
        if n_in not in self._windows:
            starts, coeffs = bilinear_windows(n_in, self.size)
            self._windows[n_in] = (torch.from_numpy(starts).to(self.device), torch.from_numpy(coeffs).to(self.device))
        return self._windows[n_in]

    def _kernel_pass(self, x: torch.Tensor, leading: bool, last: tuple[int, int] | None) -> torch.Tensor:
        """:meth:`_pass` by :func:`_resample_kernel` on 2-D ``x`` (whole levels, any dtype): uint8, or for the
        ``last`` pass of ``(n images, C channels)`` the NHWC float32 ``[n, C, S, S]`` result."""
        n_in, n_lines = (x.shape[0], x.shape[1]) if leading else (x.shape[1], x.shape[0])
        starts, coeffs = self.windows(n_in)
        s = self.size
        block = (128, 8) if leading else (8, 128)  # memory-adjacent: the columns (lines), or the outputs
        if last is None:  # the 8-bit intermediate, [S, n_lines] or [n_lines, S]
            dst = torch.empty((s, n_lines) if leading else (n_lines, s), dtype=torch.uint8, device=x.device)
            layout = (1, 1, 1, 0, 0, n_lines, 1) if leading else (1, 1, s, 0, 0, 1, 1)  # r1, r2, s0-s2, out, ch_div
        else:
            n, c = last
            dst = torch.empty((n, c, s, s), device=x.device, memory_format=torch.channels_last)
            sn, sy, sx = dst.stride(0), dst.stride(2), dst.stride(3)  # NHWC: S S C, S C, C (channel stride 1)
            # lines: (n, c, x) under a vertical pass, (y, n, c) under a horizontal one
            layout = (c, s, sn, 1, sx, sy, s) if leading else (n, c, sy, sn, 1, sx, 1)
        scale, shift = (t.reshape(-1) for t in self.normalise) if self.normalise and last else (starts, starts)
        grid = (triton.cdiv(n_lines, block[0]), triton.cdiv(s, block[1]))
        _resample_kernel[grid](x, dst, starts, coeffs, scale, shift, n_lines, s, n_in,
                               *((x.stride(1), x.stride(0)) if leading else (x.stride(0), x.stride(1))),
                               *layout, last[1] if last else 1, K=coeffs.shape[1], BLOCK_LINES=block[0],
                               BLOCK_OUT=block[1], OUT_FAST=not leading, NORMALISE=bool(self.normalise and last))
        return dst

    def blocks(self, n_in: int) -> tuple[list[tuple[int, int, int, int, torch.Tensor]], bool]:
        """``([(o0, o1, a, b, m), ...], split)`` for a pass over lines of ``n_in`` pixels: outputs ``o0:o1`` are
        inputs ``a:b`` times ``m``, float32 ``[b - a, 2 (o1 - o0)]`` (hi halves, then lo) when the split sums stay
        exact in float32 (``split``), else float64 ``[b - a, o1 - o0]`` (the whole coefficients)."""
        if n_in not in self._blocks:
            c = bilinear_coefficients(n_in, self.size)  # [S, n_in]
            lo_sums = (c & ((1 << SPLIT_BITS) - 1)).sum(axis=1)
            split = int(lo_sums.max()) * 255 + _HALF < 1 << 24
            blocks = []
            for o0 in range(0, self.size, self.tile):
                o1 = min(o0 + self.tile, self.size)
                cols = np.flatnonzero(c[o0:o1].any(axis=0))
                a, b = int(cols[0]), int(cols[-1]) + 1
                m = c[o0:o1, a:b].T  # [b - a, o1 - o0]
                m = np.concatenate([m >> SPLIT_BITS, m & ((1 << SPLIT_BITS) - 1)], axis=1).astype(np.float32) \
                    if split else m.astype(np.float64)
                blocks.append((o0, o1, a, b, torch.from_numpy(m).to(self.device)))
            self._blocks[n_in] = (blocks, split)
        return self._blocks[n_in]

    def _pass(self, x: torch.Tensor, leading: bool) -> torch.Tensor:
        """One pass over a 2-D ``x`` of whole levels: over its columns (``[rows, n_in] -> [rows, S]``) or, with
        ``leading``, over its rows (``[n_in, cols] -> [S, cols]``). Returns float32 whole levels, contiguous."""
        blocks, split = self.blocks(x.shape[0] if leading else x.shape[1])
        x = x.float() if split else x.to(torch.float64)
        out = torch.empty((self.size, x.shape[1]), dtype=torch.float32, device=x.device) if leading else None
        parts = []
        for o0, o1, a, b, m in blocks:
            r = m.T @ x[a:b] if leading else x[:, a:b] @ m  # [2w | w, cols] or [rows, 2w | w]: exact integer sums
            if split:
                w = o1 - o0
                hi, lo = (r[:w], r[w:]) if leading else (r[:, :w], r[:, w:])
                lo = lo.add_(_HALF).div_(1 << SPLIT_BITS, rounding_mode="floor")
                r = torch.add(hi, lo, out=out[o0:o1] if leading else None).div_(1 << SPLIT_BITS, rounding_mode="floor")
            else:
                r = r.add_(_HALF).div_(1 << PRECISION_BITS, rounding_mode="floor")
                if leading:
                    out[o0:o1] = r
            parts.append(r)  # no clipping needed: the weights are >= 0 and a row sums to 2**22 within a few units
        if leading:
            return out
        return parts[0].float() if len(parts) == 1 else torch.cat(parts, dim=1).float()

    def __call__(self, images: list[torch.Tensor]) -> torch.Tensor:
        """``images``: n uint8 (or whole-level float) ``[C, H, W]`` of one size -> float32 ``[n, C, S, S]``."""
        n, (c, h, w), s = len(images), images[0].shape, self.size
        # [H, n, C, W]: a horizontal pass runs along its rows, a vertical one down its leading H
        x = torch.stack([im.permute(1, 0, 2) for im in images], dim=1).reshape(h, -1)
        order = ["v", "h"] if vertical_first(h, w, s, s) else ["h", "v"]
        passes = [p for p in order if (p == "h" and w != s) or (p == "v" and h != s)]
        for k, p in enumerate(passes):
            x = x.reshape(-1, w) if p == "h" else x.reshape(h, -1)  # [rows * n * C, W] | [H, n * C * W]
            if self.method == "kernel":  # 8-bit intermediate, as PIL's; the last pass writes the NHWC result
                try:
                    x = self._kernel_pass(x, p == "v", (n, c) if k == len(passes) - 1 else None)
                except Exception as exc:  # noqa: BLE001 - e.g. a GPU that Triton cannot compile for
                    if self._kernel_ran:
                        raise
                    warnings.warn(f"PilResize: the Triton kernel failed on {self.device} ({type(exc).__name__}: "
                                  f"{exc}); resizing with matrix products instead (same result, slower)",
                                  RuntimeWarning, stacklevel=2)
                    self.method = "products"
                    return self(images)
                if k == len(passes) - 1:
                    self._kernel_ran = True  # both passes compiled and ran: later failures are real errors
                    return x
            else:
                x = self._pass(x, leading=p == "v")
            w, h = (s, h) if p == "h" else (w, s)
        x = x.float().view(s, n, c, s).permute(1, 2, 0, 3)  # [n, C, S, S] (a view of [S, n, C, S])
        return normalise_(x, *self.normalise) if self.normalise else x


def antialias_resize(images: list[torch.Tensor], size: int) -> torch.Tensor:
    """torch's antialiased bilinear resize of same-size ``[C, H, W]`` images, rounded to whole levels: float32
    ``[n, C, S, S]``. Close to PIL, not equal (the intermediate is not rounded): kept for comparison (it is what
    the extraction used before :class:`PilResize`)."""
    g = torch.stack(images).float()  # [n, C, H, W]
    if g.shape[-2:] != (size, size):
        g = F.interpolate(g, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        g = g.round_().clamp_(0, 255)
    return g
