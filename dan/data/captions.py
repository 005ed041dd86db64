"""Caption data sets: Karpathy split JSONs (COCO, Flickr30K, Flickr8k, the generated one) and Flickr8k's
``captions.txt``.

Karpathy format: ``{"dataset": name, "images": [{"filepath" (COCO only), "filename", "imgid", "cocoid"
(COCO only), "split": "train"|"val"|"test"|"restval", "sentids": [...], "sentences": [{"tokens", "raw",
"imgid", "sentid"}]}]}``.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dan.data.images import MAX_ID, image_id_from_filename, is_id
from dan.data.vqa import DataWarning, check_image_file
from dan.io import DataError, read_json, require_keys


@dataclass
class CaptionImage:
    """One image with its reference sentences (5 in all the standard sets)."""

    image_id: int
    filename: str
    filepath: str  # sub-folder of the images root ("train2014"), "" when the set has none (Flickr)
    split: str
    sentences: list[str] = field(default_factory=list)
    sentence_ids: list[int] = field(default_factory=list)


KARPATHY_SPLITS = ("train", "val", "test", "restval")
# Image folder (under images/) of the entries without a "filepath" in Karpathy's Flickr files, as their image
# archives unpack: flickr30k-images.tar.gz -> flickr30k-images/, Flickr8k_Dataset.zip -> Flicker8k_Dataset/ (sic).
KARPATHY_IMAGE_FOLDERS = {"dataset_flickr30k.json": "flickr30k-images", "dataset_flickr8k.json": "Flicker8k_Dataset"}
DEFAULT_IMAGE_FOLDER = "flickr30k-images"


def default_image_folder(captions_file: str | Path) -> str:
    """Image folder of the entries without a ``filepath`` in Karpathy file ``captions_file``:
    :data:`KARPATHY_IMAGE_FOLDERS` by file name, else ``flickr30k-images``."""
    return KARPATHY_IMAGE_FOLDERS.get(Path(captions_file).name, DEFAULT_IMAGE_FOLDER)


def _check_fields(rec: dict, where: str) -> None:
    """Types of an image record's fields (a wrong type is named with its value, not a TypeError later)."""
    def bad(field: str, expected: str) -> DataError:
        return DataError(f"{where}: field {field!r} must be {expected}, got {rec[field]!r}")

    if not isinstance(rec["filename"], str) or not rec["filename"].strip():
        raise bad("filename", "a non-empty string")
    if rec.get("filepath") is not None and not isinstance(rec["filepath"], str):
        raise bad("filepath", "a string")
    if rec["split"] not in KARPATHY_SPLITS:
        raise bad("split", f"one of {', '.join(KARPATHY_SPLITS)}")
    for key in ("cocoid", "imgid"):
        if key in rec and rec[key] is not None and not is_id(rec[key]):
            raise bad(key, "an integer in [0, 2**63)")


def _image_id(rec: dict, where: str) -> int:
    if isinstance(rec.get("cocoid"), int):
        return rec["cocoid"]
    try:
        return image_id_from_filename(rec["filename"])
    except DataError:
        if isinstance(rec.get("imgid"), int):
            return rec["imgid"]
        raise DataError(f"{where}: no 'cocoid', no integer 'imgid' and no id in file name "
                        f"{rec['filename']!r}") from None


def load_karpathy(path: str | Path, splits: Iterable[str] | None = None) -> list[CaptionImage]:
    """Images (with sentences) of a Karpathy split JSON, in file order; ``splits`` keeps only those splits.

    Checked: malformed JSON, missing keys, images without sentences, empty sentences, duplicate image or
    sentence ids (a :class:`DataError` naming the file and id).
    """
    path = Path(path)
    data = read_json(path, "caption file")
    if isinstance(data, dict) and "annotations" in data and "images" in data and "dataset" not in data:
        raise DataError(f"{path}: this is COCO's own captions file (images + annotations); the loaders read Karpathy's "
                        f"split files (dataset_coco.json, dataset_flickr30k.json: python data/download.py --only "
                        f"karpathy)")
    require_keys(data, ["images"], str(path))
    if not isinstance(data["images"], list):
        raise DataError(f"{path}: 'images' must be a list")
    keep = set(splits) if splits is not None else None
    out: list[CaptionImage] = []
    seen_images: dict[int, str] = {}
    seen_sents: set[int] = set()
    for i, rec in enumerate(data["images"]):
        where = f"{path}: image #{i}"
        require_keys(rec, ["filename", "split", "sentences"], where)
        _check_fields(rec, where)
        image_id = _image_id(rec, where)
        where = f"{path}: image {image_id} ({rec['filename']})"
        if image_id in seen_images:
            raise DataError(f"{path}: duplicate image id {image_id} ({seen_images[image_id]} and "
                            f"{rec['filename']})")
        seen_images[image_id] = rec["filename"]
        sents = rec["sentences"]
        if not isinstance(sents, list):
            raise DataError(f"{where}: 'sentences' must be a list, got {type(sents).__name__}")
        if not sents:
            raise DataError(f"{where}: no sentences")
        raws, sids = [], []
        sentids = rec["sentids"] if isinstance(rec.get("sentids"), list) else []
        for j, s in enumerate(sents):
            if not isinstance(s, dict) or not ("raw" in s or "tokens" in s):
                raise DataError(f"{where}, sentence #{j}: expected an object with 'raw' or 'tokens'")
            if s.get("raw") is not None and not isinstance(s["raw"], str):
                raise DataError(f"{where}, sentence #{j}: 'raw' must be a string, got {s['raw']!r}")
            tokens = s.get("tokens")
            if tokens is not None and (not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens)):
                raise DataError(f"{where}, sentence #{j}: 'tokens' must be a list of strings, got {tokens!r}")
            raw = s["raw"] if isinstance(s.get("raw"), str) else " ".join(tokens or [])
            if not raw.strip():
                raise DataError(f"{where}, sentence #{j}: empty sentence")
            sid = s.get("sentid", sentids[j] if j < len(sentids) else None)
            if sid is None:
                sid = -1  # no sentence id in this file
            elif type(sid) is not int or not -MAX_ID <= sid <= MAX_ID:  # true would have been sentence 1
                raise DataError(f"{where}, sentence #{j}: 'sentid' must be an integer in the int64 range, got "
                                f"{sid!r}")
            elif sid in seen_sents:
                raise DataError(f"{where}: duplicate sentence id {sid}")
            else:
                seen_sents.add(sid)
            raws.append(raw.strip())
            sids.append(sid)
        if keep is not None and rec["split"] not in keep:
            continue
        out.append(CaptionImage(image_id=image_id, filename=rec["filename"],
                                filepath=rec.get("filepath") or "", split=rec["split"], sentences=raws,
                                sentence_ids=sids))
    return out


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        text = text[1:-1].replace('""', '"')
    return text.strip()


# An image file name with a copy number after it: the official Flickr8k.token.txt gives five captions to
# "2258277193_586949ec62.jpg.1", a file that is not in the image set (loaders in public code drop those lines).
_NOT_AN_IMAGE_NAME = re.compile(r"\.(?:jpe?g|png)\.\d+$", re.IGNORECASE)


def load_flickr8k_txt(path: str | Path,
                      split_map: Mapping[str | int, str] | None = None) -> list[CaptionImage]:
    """Flickr8k's ``captions.txt`` (header ``image,caption``; a caption may hold commas) or the original
    ``Flickr8k.token.txt`` (``name.jpg#k<TAB>caption``). ``split_map`` maps file names or image ids to a split
    (default "train"). Images in first-seen order; sentence ids are line order, starting at 0.

    Lines naming a file such as ``2258277193_586949ec62.jpg.1`` (an image name with a copy number, which the
    released ``Flickr8k.token.txt`` has and the image set lacks) are skipped with a :class:`DataWarning`; any other
    name without an image id is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"caption file not found: {path}")
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()  # -sig: a byte-order mark is dropped
    except UnicodeDecodeError as exc:
        raise DataError(f"caption file {path} is not UTF-8 text: {exc}") from exc
    blank = next((k for k, line in enumerate(lines) if line.strip()), len(lines))
    if blank == len(lines):
        raise DataError(f"caption file {path} is empty")
    first = lines[blank]  # leading blank lines are skipped (and still counted in line numbers)
    tab_format = "\t" in first and "#" in first.split("\t", 1)[0]
    if not tab_format:
        if first.replace(" ", "").lower() != "image,caption":
            raise DataError(f"{path}: expected the header 'image,caption' on line {blank + 1}, got {first[:60]!r}")
        lines = [""] * (blank + 1) + lines[blank + 1:]  # the header read; line numbers stay 1-based below
    images: dict[str, CaptionImage] = {}
    skipped: dict[str, list[int]] = {}  # name that is no image file -> its line numbers
    next_sid = 0
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if tab_format:
            name, sep, caption = line.partition("\t")
            name = name.split("#", 1)[0]
        else:
            name, sep, caption = line.partition(",")
        caption = _unquote(caption)
        if not sep or not name.strip() or not caption:
            raise DataError(f"{path}, line {lineno}: expected '<image>,<caption>' with a non-empty caption")
        name = name.strip()
        if _NOT_AN_IMAGE_NAME.search(name):
            skipped.setdefault(name, []).append(lineno)
            continue
        img = images.get(name)
        if img is None:
            try:
                image_id = image_id_from_filename(name)
            except DataError as exc:
                raise DataError(f"{path}, line {lineno}: {exc}") from None
            split = "train"
            if split_map is not None:
                split = split_map.get(name, split_map.get(image_id, "train"))
            img = images[name] = CaptionImage(image_id=image_id, filename=name, filepath="", split=split)
        img.sentences.append(caption)
        img.sentence_ids.append(next_sid)
        next_sid += 1
    for name, where in skipped.items():
        lines_at = f"line {where[0]}" if len(where) == 1 else f"lines {where[0]}-{where[-1]}"
        warnings.warn(f"{path}: skipped {len(where)} caption line(s) of {name!r} ({lines_at}): not an image file "
                      f"name", DataWarning, stacklevel=2)
    ids: dict[int, str] = {}
    for img in images.values():
        if img.image_id in ids:
            raise DataError(f"{path}: files {ids[img.image_id]} and {img.filename} give the same image id "
                            f"{img.image_id}")
        ids[img.image_id] = img.filename
    return list(images.values())


def image_file(images_root: str | Path, img: CaptionImage, check: bool = False, default_folder: str = "") -> Path:
    """Path of ``img``: ``images_root/filepath/filename``, or ``images_root/default_folder/filename`` for entries
    without a filepath (Flickr30K's and Flickr8K's Karpathy files; training uses ``caption_image_folder``).

    With ``check`` a missing or empty file is a :class:`DataError` naming the path and image id.
    """
    path = Path(images_root, img.filepath or default_folder, img.filename)  # an empty folder adds none
    if check:
        check_image_file(path, img.image_id)
    return path
