"""Reading image files for the feature extraction: decode (PIL), convert to RGB, resize to the backbone's input.

:func:`read_image` is the CPU side of every extraction path: the loader workers' pixels (all images, or a share of
each batch: ``FeatureConfig.cpu_decode_share``), the fallback for a JPEG the device decoder refuses, and the
reference the device path (:mod:`dan.jpeg`, :class:`dan.resize.PilResize`) is tested against. With
``resize=False`` it stops before the resize, so that the device can do that part (the split's workers: on the
development machine PIL's resize of a 640x480 photo to 448 x 448 took longer than its decoding). Unreadable files
raise :class:`BadImage` with the reason. Re-exported by :mod:`dan.backbones`, where these lived before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError


class BadImage(Exception):
    """An unreadable image file; ``reason`` says why (the caller adds the path and image id)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB version of ``im``: CMYK, gray, palette, 16-bit converted; transparency composited over white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        return Image.alpha_composite(Image.new("RGBA", im.size, (255, 255, 255, 255)), rgba).convert("RGB")
    if im.mode == "I" or im.mode.startswith("I;16"):  # 16-bit gray (PNG): scale 0..65535 to 0..255
        im = Image.fromarray(np.clip(np.asarray(im, dtype=np.float64) / 257.0, 0, 255).round().astype(np.uint8))
    return im.convert("RGB")


def read_image(path: Path, size: int, resize: bool = True) -> np.ndarray:
    """Decode ``path``, convert to RGB and resize the whole image to ``size`` x ``size``: uint8 ``[S, S, 3]``.

    JPEGs at least twice the target size are decoded at 1/2, 1/4 or 1/8 scale by libjpeg (DCT domain) first.
    ``resize=False``: the decoded RGB pixels before the resize, uint8 ``[H, W, 3]`` (after that DCT scaling), which
    PIL's BILINEAR resize to ``size`` (or :class:`dan.resize.PilResize`) turns into the default's result.
    Missing, empty, truncated or non-image files raise :class:`BadImage`.
    """
    try:
        if Path(path).stat().st_size == 0:
            raise BadImage("empty file (0 bytes)")
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft(None, (size, size))
            im.load()
            rgb = to_rgb(im)
            if resize:
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.array(rgb, dtype=np.uint8)  # inside: unresized, rgb may be the file's image itself
    except FileNotFoundError as exc:
        raise BadImage("file not found") from exc
    except IsADirectoryError as exc:
        raise BadImage("is a folder, not an image file") from exc
    except UnidentifiedImageError as exc:
        raise BadImage("not an image (format not recognised)") from exc
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as exc:
        raise BadImage(f"cannot decode ({exc})") from exc
