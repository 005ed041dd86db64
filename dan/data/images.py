"""Image files and their integer ids, in the naming conventions of COCO and Flickr.

COCO names files ``COCO_<split>_<12-digit id>.jpg`` (VQA and Karpathy COCO use that id); Flickr30K/8K name
them ``<digits>[_<hex>].jpg``. Feature stores are indexed by these integer ids.
"""

from __future__ import annotations

import re
from pathlib import Path

from dan.io import DataError, is_int

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_ID = 2**63 - 1  # ids become int64 arrays (feature stores, batches): a larger one raised OverflowError there
_COCO = re.compile(r"^COCO_[A-Za-z0-9]+_0*(\d+)$")
_DIGITS = re.compile(r"^0*(\d+)(?:_[0-9a-fA-F]+)?$")


def is_id(value: object) -> bool:
    """An id as the loaders accept it: an integer (not a bool) in [0, :data:`MAX_ID`]."""
    return is_int(value) and 0 <= value <= MAX_ID


def image_id_from_filename(name: str) -> int:
    """Integer id of an image file: ``COCO_val2014_000000000042.jpg`` -> 42, ``1000092795.jpg`` -> 1000092795."""
    stem = Path(name).stem
    for pattern in (_COCO, _DIGITS):
        m = pattern.match(stem)
        if m:
            if int(m.group(1)) > MAX_ID:
                raise DataError(f"image id of file name {name!r} is larger than {MAX_ID} (2**63 - 1)")
            return int(m.group(1))
    raise DataError(f"cannot read an image id from file name {name!r}: expected COCO_<split>_<id>.jpg or <id>.jpg")


def coco_image_name(split: str, image_id: int, suffix: str = ".jpg") -> str:
    """COCO file name for ``image_id`` in ``split`` (e.g. ``train2014``)."""
    return f"COCO_{split}_{int(image_id):012d}{suffix}"


def list_images(images_dir: str | Path) -> list[tuple[int, Path]]:
    """All image files in ``images_dir`` as ``(image_id, path)``, sorted by id; duplicate ids are an error."""
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise DataError(f"image folder not found: {images_dir}")
    found: dict[int, Path] = {}
    try:
        listing = sorted(images_dir.iterdir())
    except OSError as exc:
        raise DataError(f"cannot list image folder {images_dir}: {exc.strerror or exc}") from exc
    for path in listing:
        if path.suffix.lower() not in IMAGE_SUFFIXES or path.name.startswith("."):
            continue
        try:
            image_id = image_id_from_filename(path.name)
        except DataError as exc:
            raise DataError(f"{images_dir}: {exc}") from None
        if image_id in found:
            raise DataError(f"duplicate image id {image_id} in {images_dir}: {found[image_id].name} and {path.name}")
        found[image_id] = path
    if not found:
        raise DataError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {images_dir}")
    return sorted(found.items())
