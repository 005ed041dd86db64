"""VQA v1/v2 question and annotation files (official format) and their COCO images.

Layout of a data root: ``vqa/v2_OpenEnded_mscoco_<split>_questions.json`` and
``vqa/v2_mscoco_<split>_annotations.json`` (v1: ``OpenEnded_mscoco_<split>_questions.json`` and
``mscoco_<split>_annotations.json``), images in
``images/<split>/COCO_<split>_<12-digit id>.jpg``. Test splits have no annotation file.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dan.data.images import coco_image_name, is_id, list_images
from dan.io import ConfigError, DataError, read_json, require_keys

SPLIT_ALIASES = {"train": "train2014", "val": "val2014", "test": "test2015", "test-dev": "test-dev2015"}
IMAGE_FOLDERS = {"test-dev2015": "test2015"}  # test-dev's questions are about a subset of the test2015 images


def image_folder(split: str) -> str:
    """The image folder (``images/<folder>/``, and feature store) of a VQA question split: the split's own name,
    except test-dev2015, whose images are COCO's test2015 ones (``COCO_test2015_<id>.jpg``)."""
    split = SPLIT_ALIASES.get(split, split)
    return IMAGE_FOLDERS.get(split, split)
ON_ERROR = ("raise", "skip")
ANSWER_TYPES = ("yes/no", "number", "other")  # the only ones in VQA v1 and v2; others would drop out of per-type tables
# Human answers per annotated question: every VQA v1/v2 annotation has ten. The official accuracy,
# min(#matching humans / 3, 1) averaged over the ten leave-one-out subsets of nine, is defined on ten: with n != 10
# dan.metrics.vqa_score averages over n subsets of n - 1 instead, another measure (3 answers cap a perfect
# prediction at 2/3, 1 answer is exact match, 9 score one match 0.296 and 20 score it 0.317, not 0.3). So another
# count is an error, not a warning: what is reported as VQA accuracy must be VQA accuracy. on_error="skip" drops
# such questions and counts them by reason.
HUMAN_ANSWERS = 10


class DataWarning(UserWarning):
    """Records were skipped (``on_error="skip"``); the message counts them by reason."""


@dataclass
class VQAExample:
    """One question with its ten human answers (``answers == []`` on test splits)."""

    question_id: int
    image_id: int
    question: str
    answers: list[str] = field(default_factory=list)
    multiple_choice_answer: str | None = None
    answer_type: str | None = None  # "yes/no" | "number" | "other"
    question_type: str | None = None  # e.g. "what color is the"


def _names(split: str, version: str) -> tuple[str, str]:
    if version == "v2":
        return f"v2_OpenEnded_mscoco_{split}_questions.json", f"v2_mscoco_{split}_annotations.json"
    return f"OpenEnded_mscoco_{split}_questions.json", f"mscoco_{split}_annotations.json"


def vqa_files(root: str | Path, split: str, version: str = "auto") -> tuple[Path, Path | None]:
    """(questions file, annotations file or None) of ``split`` (e.g. "train2014") in ``root`` or ``root/vqa``.

    ``version``: "v2", "v1" or "auto" (v2 first). A missing questions file is a :class:`DataError` listing
    every path looked at.
    """
    if version not in ("auto", "v1", "v2"):
        raise ConfigError(f"unknown VQA version {version!r} (accepted: auto, v1, v2)")
    split = SPLIT_ALIASES.get(split, split)
    root = Path(root)
    looked = []
    for ver in (("v2", "v1") if version == "auto" else (version,)):
        q_name, a_name = _names(split, ver)
        for folder in (root / "vqa", root):
            q = folder / q_name
            looked.append(str(q))
            if q.is_file():
                a = folder / a_name
                return q, (a if a.is_file() else None)
    raise DataError(f"no VQA questions file for split {split!r}; looked for: {', '.join(looked)}")


class _Problems:
    """Raise at the first bad record, or count skipped records by reason and report them once."""

    def __init__(self, on_error: str, path: Path) -> None:
        if on_error not in ON_ERROR:
            raise ConfigError(f"unknown on_error {on_error!r} (accepted: {', '.join(ON_ERROR)})")
        self.skip = on_error == "skip"
        self.path = path
        self.reasons: Counter[str] = Counter()
        self.examples: list[str] = []

    def __call__(self, reason: str, message: str) -> None:
        if not self.skip:
            raise DataError(message)
        self.reasons[reason] += 1
        if len(self.examples) < 5:
            self.examples.append(message)

    def report(self, total: int, stats: dict | None) -> None:
        n = sum(self.reasons.values())
        if stats is not None:
            stats.update(skipped=n, total=total, reasons=dict(self.reasons), examples=list(self.examples))
        if n:
            detail = ", ".join(f"{c} {r}" for r, c in sorted(self.reasons.items()))
            msg = f"{self.path}: skipped {n} of {total} record(s): {detail}"
            warnings.warn(msg, DataWarning, stacklevel=3)


def _int(value: Any) -> int | None:
    return value if is_id(value) else None


def _records(data: Any, key: str, path: Path) -> list:
    require_keys(data, [key], str(path))
    if not isinstance(data[key], list):
        raise DataError(f"{path}: '{key}' must be a list, got {type(data[key]).__name__}")
    return data[key]


def load_vqa(questions_path: str | Path, annotations_path: str | Path | None = None,
             image_ids: set[int] | None = None, on_error: str = "raise",
             stats: dict | None = None) -> list[VQAExample]:
    """Read official VQA question (and annotation) files into :class:`VQAExample` records, in file order.

    Checked: malformed JSON, missing keys, non-integer ids, duplicate question ids, empty questions,
    questions whose image is not in ``image_ids`` (when given), annotations without a question and questions
    without an annotation, annotations without exactly ten answers (:data:`HUMAN_ANSWERS`) or with an
    ``answer_type`` other than :data:`ANSWER_TYPES`. ``on_error="raise"`` stops at the first with a
    :class:`DataError` naming the file and id; ``"skip"`` drops the record, counts it (into ``stats`` if given)
    and warns once with the counts.
    """
    qpath = Path(questions_path)
    problems = _Problems(on_error, qpath)
    records = _records(read_json(qpath, "VQA questions file"), "questions", qpath)
    examples: dict[int, VQAExample] = {}
    for i, rec in enumerate(records):
        where = f"{qpath}: question #{i}"
        try:
            require_keys(rec, ["image_id", "question", "question_id"], where)
        except DataError as exc:
            problems("missing keys", str(exc))
            continue
        qid, iid, text = _int(rec["question_id"]), _int(rec["image_id"]), rec["question"]
        if qid is None or iid is None:
            problems("bad id", f"{where}: question_id/image_id must be integers in [0, 2**63), got "
                               f"{rec['question_id']!r}/{rec['image_id']!r}")
        elif qid in examples:
            problems("duplicate id", f"{qpath}: duplicate question_id {qid}")
        elif not isinstance(text, str) or not text.strip():
            problems("empty question", f"{qpath}: question {qid} has an empty question text ({text!r})")
        elif image_ids is not None and iid not in image_ids:
            problems("unknown image", f"{qpath}: question {qid} references image {iid}, which is not among "
                                      f"the {len(image_ids)} known images")
        else:
            examples[qid] = VQAExample(question_id=qid, image_id=iid, question=text.strip())
    total = len(records)
    if annotations_path is not None:
        apath = Path(annotations_path)
        anns = _records(read_json(apath, "VQA annotations file"), "annotations", apath)
        total += len(anns)
        seen: set[int] = set()
        for i, ann in enumerate(anns):
            where = f"{apath}: annotation #{i}"
            try:
                require_keys(ann, ["question_id", "answers", "multiple_choice_answer"], where)
                qid = _int(ann["question_id"])
                if qid is None:
                    raise DataError(f"{where}: question_id must be an integer in [0, 2**63), got "
                                    f"{ann['question_id']!r}")
                answers = _answers(ann["answers"], f"{apath}: annotation of question {qid}")
                mca = ann["multiple_choice_answer"]
                if not isinstance(mca, str) or not mca.strip():
                    raise DataError(f"{apath}: annotation of question {qid}: 'multiple_choice_answer' must be a "
                                    f"non-empty string, got {mca!r}")
                for key in ("answer_type", "question_type"):
                    if ann.get(key) is not None and not isinstance(ann[key], str):
                        raise DataError(f"{apath}: annotation of question {qid}: {key!r} must be a string, got "
                                        f"{ann[key]!r}")
                if ann.get("answer_type") not in (None, *ANSWER_TYPES):  # else it drops out of per-type tables
                    raise DataError(f"{apath}: annotation of question {qid}: 'answer_type' must be one of "
                                    f"{', '.join(map(repr, ANSWER_TYPES))}, got {ann['answer_type']!r}")
            except DataError as exc:
                problems("bad annotation", str(exc))
                continue
            if qid in seen:
                problems("duplicate id", f"{apath}: duplicate annotation for question_id {qid}")
                continue
            seen.add(qid)
            ex = examples.get(qid)
            if ex is None:
                problems("annotation without question", f"{apath}: annotation for question_id {qid}, "
                                                        f"which {qpath} does not hold (or was skipped)")
                continue
            if "image_id" in ann and ann["image_id"] != ex.image_id:
                problems("image mismatch", f"{apath}: question {qid} has image_id {ann['image_id']!r} here "
                                           f"but {ex.image_id} in {qpath}")
                del examples[qid]
                continue
            ex.answers = answers
            ex.multiple_choice_answer = ann["multiple_choice_answer"]
            ex.answer_type = ann.get("answer_type")
            ex.question_type = ann.get("question_type")
        for qid in [q for q in examples if q not in seen]:
            problems("question without annotation",
                     f"{apath}: no annotation for question_id {qid} of {qpath}")
            del examples[qid]
    problems.report(total, stats)
    return list(examples.values())


def _answers(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not value:
        raise DataError(f"{where}: 'answers' must be a non-empty list, got {value!r}")
    out = []
    for j, a in enumerate(value):
        require_keys(a, ["answer"], f"{where}, answer #{j}")
        if not isinstance(a["answer"], str):
            raise DataError(f"{where}, answer #{j}: 'answer' must be a string, got {a['answer']!r}")
        out.append(a["answer"])
    if len(out) != HUMAN_ANSWERS:
        raise DataError(f"{where}: 'answers' has {len(out)} entries, expected {HUMAN_ANSWERS} (VQA accuracy is "
                        f"defined on ten human answers)")
    return out


def vqa_image_path(data_root: str | Path, split: str, image_id: int) -> Path:
    """``<data_root>/images/<folder>/COCO_<folder>_<id>.jpg`` with ``folder =`` :func:`image_folder` ``(split)``."""
    folder = image_folder(split)
    return Path(data_root) / "images" / folder / coco_image_name(folder, image_id)


def check_image_file(path: str | Path, image_id: int | None = None, verify: bool = False) -> Path:
    """Raise :class:`DataError` naming ``path`` and ``image_id`` if the file is missing, empty or (with
    ``verify``) not a readable image."""
    path = Path(path)
    what = f"image file for image id {image_id}" if image_id is not None else "image file"
    if not path.is_file():
        raise DataError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise DataError(f"{what} is empty (0 bytes): {path}")
    if verify:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.load()
        except (OSError, UnidentifiedImageError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) \
                as exc:  # those dan.images.read_image reports as a bad image: a header claiming too many pixels too
            raise DataError(f"{what} is not a readable image: {path} ({exc})") from exc
    return path


def split_images(data_root: str | Path, split: str) -> dict[int, Path]:
    """Every image file of ``split``'s folder ``images/<folder>/`` (:func:`image_folder`) by id, each checked
    present and non-empty (:func:`check_image_file`)."""
    found = list_images(Path(data_root) / "images" / image_folder(split))
    for image_id, path in found:
        check_image_file(path, image_id)
    return dict(found)


def load_vqa_split(data_root: str | Path, split: str, version: str = "auto", check_images: bool = False,
                   on_error: str = "raise", stats: dict | None = None,
                   images: Mapping[int, Path] | None = None) -> list[VQAExample]:
    """Questions (+ annotations when present) of ``split`` under ``data_root``.

    With ``check_images`` every question must have a non-empty image file in ``images/<folder>/``
    (:func:`split_images`); ``images``, that function's result for the split's folder, does the same without
    listing the folder again.
    """
    split = SPLIT_ALIASES.get(split, split)
    qpath, apath = vqa_files(data_root, split, version)
    if check_images and images is None:
        images = split_images(data_root, split)
    image_ids = None if images is None else set(images)
    return load_vqa(qpath, apath, image_ids=image_ids, on_error=on_error, stats=stats)
