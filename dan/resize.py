"""PIL's BILINEAR resize of 8-bit images, reproduced exactly as matrix products on any device.

The device-decode path (:func:`dan.backbones.decode_jpeg_batch`) decodes JPEGs on the GPU and must then resize
them as the CPU path does (``PIL.Image.resize(size, BILINEAR)``, :func:`dan.backbones.read_image`). What PIL does,
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
input (tested against Pillow), on the CPU and, with TF32 allowed or not, on a GPU (``benchmarks/gpu_checks.py``).
The torch alternative, ``F.interpolate(..., antialias=True)``, keeps the intermediate in float and differed from PIL
by one level on ~20 % of the pixels of a 640 x 480 -> 448 x 448 test image.
"""

from __future__ import annotations

import numpy as np
import PIL
import torch
import torch.nn.functional as F

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


class PilResize:
    """Resize same-size uint8 images ``[C, H, W]`` on ``device`` to float ``[n, C, S, S]`` holding PIL's 8-bit
    BILINEAR result (whole levels 0..255).

    A pass is cut into blocks of ``tile`` outputs (None: one block); a block's product reads only the inputs its
    windows cover, so shrinking 640 -> 448 in blocks of 112 does ~1/3.5 of the dense product's arithmetic, for a
    few more (smaller) products. Coefficient blocks are built once per input size and kept."""

    def __init__(self, size: int, device: torch.device | str, tile: int | None = 112) -> None:
        self.size, self.device, self.tile = size, torch.device(device), tile or size
        self._blocks: dict[int, tuple[list[tuple[int, int, int, int, torch.Tensor]], bool]] = {}

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
        # [H, n, C, W]: a horizontal pass is one product over its rows, a vertical one over its leading H
        x = torch.stack([im.permute(1, 0, 2) for im in images], dim=1).reshape(h, -1)
        passes = ["v", "h"] if vertical_first(h, w, s, s) else ["h", "v"]
        for p in passes:
            if p == "h" and w != s:
                x = self._pass(x.reshape(-1, w), leading=False)  # [rows * n * C, S]
                w = s
            elif p == "v" and h != s:
                x = self._pass(x.reshape(h, -1), leading=True)  # [S, n * C * W]
                h = s
        return x.float().view(s, n, c, s).permute(1, 2, 0, 3)  # [n, C, S, S] (a view of [S, n, C, S])


def antialias_resize(images: list[torch.Tensor], size: int) -> torch.Tensor:
    """torch's antialiased bilinear resize of same-size ``[C, H, W]`` images, rounded to whole levels: float32
    ``[n, C, S, S]``. Close to PIL, not equal (the intermediate is not rounded): kept for comparison."""
    g = torch.stack(images).float()  # [n, C, H, W]
    if g.shape[-2:] != (size, size):
        g = F.interpolate(g, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        g = g.round_().clamp_(0, 255)
    return g
