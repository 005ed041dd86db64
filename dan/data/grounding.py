"""Ground truth for scoring attention: object boxes per image, and the objects each question/caption names.

``grounding.json``: ``{"images": {"<image_id>": {"width", "height", "objects": [{"id", "shape", "color",
"size", "bbox": [x, y, w, h]}]}}, "questions": {"<question_id>": {"family", "object_ids", "anchor_ids",
"target_ids", "key_words", "image_id"}}, "captions": {"<sentid>": {"object_ids", "key_words", "image_id"}}}``.
Object ids are per image (0..n-1). For a multi-hop question ``anchor_ids`` are the objects named in the
relation and ``target_ids`` the objects the answer is about; single-hop questions have no anchor.
``key_words`` are the (tokenised) words of the question or caption that name those objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dan.io import DataError, is_int, is_number, read_json, require_keys


@dataclass
class ObjectGT:
    id: int
    shape: str
    color: str
    size: str  # "small" | "large"
    bbox: list[float]  # [x, y, w, h] in pixels of the original image


@dataclass
class ImageGT:
    width: int
    height: int
    objects: list[ObjectGT] = field(default_factory=list)

    def object(self, object_id: int) -> ObjectGT:
        for obj in self.objects:
            if obj.id == object_id:
                return obj
        raise DataError(f"no object {object_id} in this image (ids {[o.id for o in self.objects]})")


@dataclass
class QuestionGT:
    family: str  # "single-hop" | "multi-hop"
    object_ids: list[int]
    anchor_ids: list[int]
    target_ids: list[int]
    key_words: list[str]
    image_id: int | None = None


@dataclass
class CaptionGT:
    object_ids: list[int]
    key_words: list[str]
    image_id: int | None = None


@dataclass
class Grounding:
    images: dict[int, ImageGT]
    questions: dict[int, QuestionGT]
    captions: dict[int, CaptionGT]


def _ids(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise DataError(f"{where}: expected a list of integer ids, got {value!r}")
    return list(value)


def _words(value: Any, where: str) -> list[str]:
    """``key_words``: a list of strings (a bare string would be split into letters)."""
    if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
        raise DataError(f"{where}: expected a list of words, got {value!r}")
    return list(value)


FAMILIES = ("single-hop", "multi-hop")


def _key(k: str, where: str) -> int:
    """An object key as an id: only the plain decimal spelling, so that "7" and "07" cannot both stand for 7 (the
    later entry would silently replace the earlier)."""
    try:
        value = int(k)
    except ValueError:
        raise DataError(f"{where}: id {k!r} is not an integer") from None
    if str(value) != k:
        raise DataError(f"{where}: id {k!r} is not written as a plain integer; write it as \"{value}\"")
    return value


def _section(data: dict, name: str, path: Path) -> dict:
    sec = data[name]
    if not isinstance(sec, dict):
        raise DataError(f"{path}: '{name}' must be an object keyed by id")
    return sec


def load_grounding(path: str | Path) -> Grounding:
    """Read ``grounding.json``; missing keys, bad boxes and references to unknown objects raise
    :class:`DataError` naming the file and id."""
    path = Path(path)
    data = read_json(path, "grounding file")
    require_keys(data, ["images", "questions", "captions"], str(path))
    images: dict[int, ImageGT] = {}
    for k, rec in _section(data, "images", path).items():
        where = f"{path}: image {k}"
        image_id = _key(k, where)
        require_keys(rec, ["width", "height", "objects"], where)
        for key in ("width", "height"):  # a 0 would make every grid cell's coverage NaN
            if not is_int(rec[key]) or rec[key] <= 0:
                raise DataError(f"{where}: {key} must be an integer > 0, got {rec[key]!r}")
        if not isinstance(rec["objects"], list):
            raise DataError(f"{where}: 'objects' must be a list, got {rec['objects']!r}")
        objs = []
        for j, o in enumerate(rec["objects"]):
            require_keys(o, ["id", "shape", "color", "size", "bbox"], f"{where}, object #{j}")
            if not is_int(o["id"]):
                raise DataError(f"{where}, object #{j}: id must be an integer, got {o['id']!r}")
            box = o["bbox"]  # finite: a NaN corner made every cell's coverage NaN, and NaN <= 0 let it through
            numeric = isinstance(box, list) and all(is_number(v) for v in box)
            if not numeric or len(box) != 4 or box[2] <= 0 or box[3] <= 0:
                raise DataError(f"{where}, object {o['id']}: bbox must be [x, y, w, h] with w, h > 0, "
                                f"got {box!r}")
            objs.append(ObjectGT(id=o["id"], shape=o["shape"], color=o["color"], size=o["size"],
                                 bbox=[float(v) for v in box]))
        if len({o.id for o in objs}) != len(objs):
            raise DataError(f"{where}: duplicate object ids")
        images[image_id] = ImageGT(width=rec["width"], height=rec["height"], objects=objs)

    def check_refs(where: str, image_id: Any, ids: list[int]) -> int | None:
        if image_id is None:
            return None
        if not is_int(image_id):  # a list raised TypeError (unhashable); true or 1.0 stood for image 1
            raise DataError(f"{where}: image_id must be an integer, got {image_id!r}")
        if image_id not in images:
            raise DataError(f"{where}: refers to image {image_id!r}, which has no entry under 'images'")
        known = {o.id for o in images[image_id].objects}
        unknown = sorted(set(ids) - known)
        if unknown:
            raise DataError(f"{where}: object ids {unknown} are not objects of image {image_id}")
        return image_id

    questions: dict[int, QuestionGT] = {}
    for k, rec in _section(data, "questions", path).items():
        where = f"{path}: question {k}"
        require_keys(rec, ["family", "object_ids", "anchor_ids", "target_ids", "key_words"], where)
        if rec["family"] not in FAMILIES:
            raise DataError(f"{where}: family must be one of {', '.join(FAMILIES)}, got {rec['family']!r}")
        ids = {f: _ids(rec[f], f"{where}, {f}") for f in ("object_ids", "anchor_ids", "target_ids")}
        image_id = check_refs(where, rec.get("image_id"), [i for v in ids.values() for i in v])
        questions[_key(k, where)] = QuestionGT(family=rec["family"], key_words=_words(rec["key_words"], f"{where}, "
                                                                                      f"key_words"),
                                               image_id=image_id, **ids)
    captions: dict[int, CaptionGT] = {}
    for k, rec in _section(data, "captions", path).items():
        where = f"{path}: caption {k}"
        require_keys(rec, ["object_ids", "key_words"], where)
        ids = _ids(rec["object_ids"], f"{where}, object_ids")
        captions[_key(k, where)] = CaptionGT(object_ids=ids, key_words=_words(rec["key_words"], f"{where}, key_words"),
                                             image_id=check_refs(where, rec.get("image_id"), ids))
    return Grounding(images=images, questions=questions, captions=captions)


def cell_edges(extent: float, cells: int, stride: int | None = None, image_size: int | None = None) -> np.ndarray:
    """Edges [cells + 1] of a feature grid's cells along one side of an image ``extent`` pixels long, in its pixels.

    Without ``stride``: ``cells`` equal cells over the whole side. With the backbone's ``stride`` and the side
    ``image_size`` S the image was resized to (whole, no crop) before the backbone: cell i covers the resized
    pixels [i * stride, min((i + 1) * stride, S)), scaled back to the image's. Where the stride divides S the two
    are the same cells (and the same edges, bit for bit); where it does not, a padded backbone's last cell is
    partial (200 px at stride 16: 13 cells, the last covering 192..199) and a cropping one's (floor) ends before
    the side does: the pixels past its last edge are in no cell.
    """
    if stride is None and image_size is None:
        return np.linspace(0.0, extent, cells + 1)
    if not (is_int(stride) and is_int(image_size) and stride > 0 and image_size > 0):
        raise DataError(f"the feature grid's cells need both the backbone's stride and the input size as integers "
                        f"> 0, got stride {stride!r}, image_size {image_size!r}")
    if cells * stride == image_size:
        return np.linspace(0.0, extent, cells + 1)  # equal cells: the edges as without a stride
    if cells not in (-(-image_size // stride), image_size // stride):
        raise DataError(f"a grid of {cells} cells does not come from a {image_size} px input at stride {stride} "
                        f"({-(-image_size // stride)} cells, padded, or {image_size // stride}, cropped)")
    return np.minimum(np.arange(cells + 1) * stride, image_size) * (extent / image_size)


def check_grid(grid: tuple[int, int], stride: int | None = None, image_size: int | None = None) -> None:
    """:class:`DataError` unless both sides of ``grid`` are ones a backbone of ``stride`` gives at an ``image_size``
    px input (:func:`cell_edges`' rule; nothing to check without them): before any map is scored or drawn."""
    for side in grid:
        cell_edges(1.0, side, stride, image_size)


def grid_coverage(bbox: list[float], width: int, height: int, grid: tuple[int, int], *, stride: int | None = None,
                  image_size: int | None = None) -> np.ndarray:
    """Fraction of each grid cell covered by ``bbox`` -> float32 [gh * gw]; region n = cell (n // gw, n % gw).

    The cells are the feature grid's (:func:`cell_edges`): given the backbone's ``stride`` and the ``image_size``
    the whole ``width`` x ``height`` image was resized to, the backbone's own cells; without them, equal cells
    (the same cells where the stride divides the input size, as in the study's profiles).
    """
    gh, gw = grid
    x, y, w, h = bbox
    xs = cell_edges(width, gw, stride, image_size)  # cell edges, pixels
    ys = cell_edges(height, gh, stride, image_size)
    ox = np.clip(np.minimum(xs[1:], x + w) - np.maximum(xs[:-1], x), 0, None) / np.diff(xs)  # [gw]
    oy = np.clip(np.minimum(ys[1:], y + h) - np.maximum(ys[:-1], y), 0, None) / np.diff(ys)  # [gh]
    return (oy[:, None] * ox[None, :]).reshape(-1).astype(np.float32)


def object_mask(image: ImageGT, object_ids: list[int], grid: tuple[int, int], *, stride: int | None = None,
                image_size: int | None = None) -> np.ndarray:
    """Per region, the fraction covered by the union of the boxes of ``object_ids`` -> float32 [gh * gw] (0 if
    none). Overlaps count once; two objects sharing a cell add up (the largest single box would undercount).
    ``stride``, ``image_size``: the feature grid's cells, as in :func:`grid_coverage`."""
    boxes = [image.object(oid).bbox for oid in object_ids]
    if len(boxes) <= 1:
        return grid_coverage(boxes[0], image.width, image.height, grid, stride=stride, image_size=image_size) \
            if boxes else np.zeros(grid[0] * grid[1], dtype=np.float32)
    gh, gw = grid
    xe = cell_edges(image.width, gw, stride, image_size)  # cell edges, pixels
    ye = cell_edges(image.height, gh, stride, image_size)
    # the plane cut along every cell and box edge: each piece is wholly inside or outside each box and one cell
    # (clipped to the grid: a cropping backbone's grid can end before the image does)
    xs = np.unique(np.clip(np.concatenate([xe, *[[x, x + w] for x, _, w, _ in boxes]]), 0.0, xe[-1]))
    ys = np.unique(np.clip(np.concatenate([ye, *[[y, y + h] for _, y, _, h in boxes]]), 0.0, ye[-1]))
    cx, cy = (xs[:-1] + xs[1:]) / 2, (ys[:-1] + ys[1:]) / 2  # piece centres
    inside = np.zeros((cy.size, cx.size), dtype=bool)
    for x, y, w, h in boxes:
        inside |= ((cy > y) & (cy < y + h))[:, None] & ((cx > x) & (cx < x + w))[None, :]
    area = np.diff(ys)[:, None] * np.diff(xs)[None, :] * inside  # [pieces_y, pieces_x], pixels^2
    row = np.clip(np.searchsorted(ye, cy, side="right") - 1, 0, gh - 1)
    col = np.clip(np.searchsorted(xe, cx, side="right") - 1, 0, gw - 1)
    out = np.zeros((gh, gw))
    np.add.at(out, (row[:, None], col[None, :]), area)
    return (out / (np.diff(ye)[:, None] * np.diff(xe)[None, :])).reshape(-1).astype(np.float32)
