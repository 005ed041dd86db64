"""The embedded benchmark: generate a data root in the real formats (COCO images, VQA v2 JSON, a Karpathy caption
JSON), plus ``grounding.json`` and ``manifest.json``, deterministically from a profile and a seed.

Each image draws from its own random streams (seeded by seed, split and index), so the output does not depend
on the number of worker processes. Everything is written to a hidden staging folder that is renamed onto the
target at the end: an interrupted run leaves the previous data set (or nothing) under the final name.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from dan.data.images import coco_image_name
from dan.data.render import render_scene, sample_scene
from dan.data.synth_captions import make_captions
from dan.data.synth_lang import human_answers
from dan.data.synth_questions import make_questions
from dan.data.text import tokenize
from dan.data.vqa import VQAExample
from dan.io import ConfigError, DanError, is_int, read_json, sha256_file, study_paths, write_json_atomic
from dan.metrics import vqa_accuracy

GENERATOR = "dan.data.synth"
GENERATOR_VERSION = 2  # 2: bboxes of the drawn pixels (1 px off for 1.6 % of objects in 1)
SPLITS = ("train2014", "val2014")
_SPLIT_CODE = {"train2014": 1, "val2014": 2}
_INFO = {"description": "Embedded synthetic VQA/captioning benchmark of the dan study", "url": "", "version": "1.0",
         "year": 2026, "contributor": "dan.data.synth", "date_created": "2026-01-01 00:00:00"}
_LICENSE = {"url": "https://opensource.org/licenses/MIT", "name": "MIT"}


@dataclass(frozen=True)
class SynthConfig:
    """Sizes of one profile. Caption val/test images are disjoint parts of the val2014 images (the rest are
    "restval"); all train2014 images are caption "train"."""

    n_train: int
    n_val: int
    n_caption_val: int
    n_caption_test: int
    width: int = 320
    height: int = 240
    min_objects: int = 3
    max_objects: int = 6
    questions_per_image: int = 8
    captions_per_image: int = 5
    jpeg_quality: int = 90

    def check(self) -> SynthConfig:
        if min(self.n_train, self.n_val, self.n_caption_val, self.n_caption_test) < 1:
            raise ConfigError(f"every image count must be >= 1: {self}")
        if self.n_caption_val + self.n_caption_test > self.n_val:
            raise ConfigError(f"n_caption_val + n_caption_test ({self.n_caption_val} + {self.n_caption_test}) "
                              f"exceeds n_val ({self.n_val})")
        if not 2 <= self.min_objects <= self.max_objects <= 8:
            raise ConfigError(f"need 2 <= min_objects <= max_objects <= 8, got {self.min_objects}, "
                              f"{self.max_objects}")
        return self


PROFILES: dict[str, SynthConfig] = {
    "smoke": SynthConfig(n_train=48, n_val=24, n_caption_val=8, n_caption_test=16),
    "default": SynthConfig(n_train=1100, n_val=400, n_caption_val=150, n_caption_test=250),
    "full": SynthConfig(n_train=8000, n_val=2000, n_caption_val=1000, n_caption_test=1000, width=640, height=480),
}


def _make_image(task: tuple) -> dict[str, Any]:
    """Scene, JPEG, questions and captions of one image (runs in a worker); writes the JPEG into the stage."""
    seed, split, index, image_id, cfg, stage = task
    streams = [np.random.default_rng([seed, _SPLIT_CODE[split], index, k]) for k in range(4)]
    scene = sample_scene(streams[0], cfg.width, cfg.height, cfg.min_objects, cfg.max_objects)
    jpeg = render_scene(scene, streams[1], cfg.jpeg_quality)
    filename = coco_image_name(split, image_id)
    with open(Path(stage) / "images" / split / filename, "wb") as fh:
        fh.write(jpeg)
    questions = make_questions(scene, streams[2], cfg.questions_per_image)
    return {"image_id": image_id, "split": split, "filename": filename, "scene": scene,
            "questions": [(q, human_answers(streams[2], q)) for q in questions],
            "captions": make_captions(scene, streams[3], cfg.captions_per_image)}


def _vqa_files(split: str, recs: list[dict]) -> tuple[dict, dict, list[VQAExample]]:
    questions, annotations, examples = [], [], []
    for rec in recs:
        for k, (q, answers) in enumerate(rec["questions"]):
            qid = rec["image_id"] * 1000 + k
            questions.append({"image_id": rec["image_id"], "question": q.question, "question_id": qid})
            annotations.append({
                "question_type": q.question_type, "multiple_choice_answer": q.answer, "image_id": rec["image_id"],
                "answer_type": q.answer_type, "question_id": qid,
                "answers": [{"answer": a, "answer_confidence": c, "answer_id": j + 1}
                            for j, (a, c) in enumerate(answers)]})
            examples.append(VQAExample(qid, rec["image_id"], q.question, [a for a, _ in answers], q.answer,
                                       q.answer_type, q.question_type))
    head = {"info": _INFO, "license": _LICENSE, "data_type": "mscoco", "data_subtype": split}
    return ({**head, "task_type": "Open-Ended", "questions": questions},
            {**head, "annotations": annotations}, examples)


def _captions_and_grounding(recs: list[dict], caption_split: dict[int, str]) -> tuple[dict, dict]:
    images, g_images, g_questions, g_captions = [], {}, {}, {}
    sentid = 0
    for imgid, rec in enumerate(recs):
        iid, scene = rec["image_id"], rec["scene"]
        g_images[str(iid)] = {"width": scene.width, "height": scene.height,
                              "objects": [o.to_json() for o in scene.objects]}
        for k, (q, _) in enumerate(rec["questions"]):
            g_questions[str(iid * 1000 + k)] = {
                "family": q.family, "object_ids": sorted(set(q.anchor_ids) | set(q.target_ids)),
                "anchor_ids": q.anchor_ids, "target_ids": q.target_ids, "key_words": q.key_words, "image_id": iid}
        sentences, sentids = [], []
        for cap in rec["captions"]:
            sentences.append({"tokens": tokenize(cap.raw), "raw": cap.raw, "imgid": imgid, "sentid": sentid})
            g_captions[str(sentid)] = {"object_ids": cap.object_ids, "key_words": cap.key_words, "image_id": iid}
            sentids.append(sentid)
            sentid += 1
        images.append({"filepath": rec["split"], "filename": rec["filename"], "imgid": imgid, "cocoid": iid,
                       "split": caption_split[iid], "sentids": sentids, "sentences": sentences})
    return ({"dataset": "synth", "images": images},
            {"images": g_images, "questions": g_questions, "captions": g_captions})


def _question_stats(train: list[VQAExample], val: list[VQAExample]) -> dict[str, Any]:
    """Answer-type counts, answer distribution and majority-answer baselines (official VQA accuracy, %)."""
    mc = Counter(e.multiple_choice_answer for e in train)
    top, _ = mc.most_common(1)[0]
    per_type = {}
    for t in ("yes/no", "number", "other"):
        sub = [e for e in val if e.answer_type == t]
        t_top = Counter(e.multiple_choice_answer for e in train if e.answer_type == t).most_common(1)
        if sub and t_top:
            acc = vqa_accuracy({e.question_id: t_top[0][0] for e in sub}, sub)["overall"]
            per_type[t] = {"answer": t_top[0][0], "val_accuracy": round(acc, 3)}
    base = vqa_accuracy({e.question_id: top for e in val}, val)
    return {
        "answer_types": {s: dict(sorted(Counter(e.answer_type for e in ex).items()))
                         for s, ex in (("train2014", train), ("val2014", val))},
        "distinct_answers_train": len(mc),
        "top_answers_train": [[a, round(100.0 * n / len(train), 2)] for a, n in mc.most_common(10)],
        "majority_baseline": {"answer": top, "val_accuracy": round(base["overall"], 3),
                              "val_by_type": {k: (round(v, 3) if v is not None else None)
                                              for k, v in base.items() if k in ("yes/no", "number", "other")},
                              "per_answer_type_majority": per_type},
    }


def _is_complete(out: Path, profile: str, seed: int, cfg: SynthConfig) -> bool:
    try:
        m = read_json(out / "manifest.json")
    except DanError:
        return False
    if not isinstance(m, dict) or (m.get("generator"), m.get("generator_version"), m.get("profile"),
                                   m.get("seed"), m.get("config")) != (GENERATOR, GENERATOR_VERSION, profile,
                                                                        seed, dataclasses.asdict(cfg)):
        return False
    files = m.get("files")  # a manifest edited or damaged in its files (not an object of objects): regenerated
    if not isinstance(files, dict) or not all(isinstance(info, dict) for info in files.values()):
        return False
    return bool(files) and all((out / rel).is_file() and (out / rel).stat().st_size == info.get("bytes")
                               for rel, info in files.items())


def _check_target(out: Path) -> None:
    """Never replace a folder that is not a generated data set (a mistyped --out must not delete anything)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not _ours(out / "manifest.json"))):
        raise ConfigError(f"refusing to replace {out}: it exists and is not a generated data set "
                          f"(no manifest.json of {GENERATOR}); choose a new or empty folder")


def _ours(manifest: Path) -> bool:
    """Whether ``manifest`` is one this generator wrote (any other program's manifest.json is no licence to delete
    the folder it lies in)."""
    try:
        m = read_json(manifest)
    except DanError:
        return False
    return isinstance(m, dict) and m.get("generator") == GENERATOR


def generated_seed(folder: str | os.PathLike, profile: str | None = None) -> int | None:
    """The seed (the draw) of the data set this generator wrote into ``folder``, read from its ``manifest.json``;
    with ``profile``, only a data set of that profile counts. None when there is no such manifest: missing,
    unreadable or damaged, another program's or another profile's, or its seed no integer >= 0
    (:func:`dan.io.study_paths` reads it to key the results by the data set's draw)."""
    try:
        m = read_json(Path(folder) / "manifest.json")
    except (DanError, OSError):  # OSError: a manifest that cannot be opened (permissions)
        return None
    if not isinstance(m, dict) or m.get("generator") != GENERATOR or (profile is not None
                                                                      and m.get("profile") != profile):
        return None
    seed = m.get("seed")
    return seed if is_int(seed) and seed >= 0 else None


def _remove_stale(out: Path) -> None:
    """Delete staging folders that killed runs (processes no longer alive) left beside ``out``."""
    if not out.parent.is_dir():
        return
    for p in out.parent.glob(f".{out.name}.*-*"):
        kind, _, pid = p.name[len(out.name) + 2:].partition("-")
        if kind not in ("tmp", "old") or not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
            alive = int(pid) != os.getpid()
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(p, ignore_errors=True)


def generate(profile: str = "default", out: str | Path | None = None, seed: int = 0, force: bool = False,
             workers: int | None = None, progress: bool = True, config: SynthConfig | None = None) -> Path:
    """Generate the embedded data set of ``profile`` into ``out`` (default ``data/generated/<profile>``).

    A folder that already holds a complete data set for the same profile, seed and configuration is
    returned as is unless ``force``. ``config`` overrides the profile's sizes (tests). Returns ``out``.
    """
    if profile == "real":
        raise ConfigError("profile 'real' is the real data sets, which are downloaded, not generated "
                          f"(python data/download.py, see data/README.md); accepted here: {', '.join(PROFILES)}")
    if not isinstance(profile, str) or profile not in PROFILES:  # a list was "unhashable type: 'list'"
        raise ConfigError(f"unknown profile {profile!r} (accepted: {', '.join(PROFILES)})")
    if workers is not None and (not is_int(workers) or not 1 <= workers <= 64):
        # "2" was a TypeError, 2.0 multiprocessing's, 10**20 processes started until killed
        raise ConfigError(f"workers must be an integer in [1, 64] (or unset), got {workers!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:  # True would reuse seed 1's data set
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    cfg = (config or PROFILES[profile]).check()
    out = Path(out) if out is not None else study_paths(profile).data
    if not force and _is_complete(out, profile, seed, cfg):
        return out
    _check_target(out)
    _remove_stale(out)
    stage = out.parent / f".{out.name}.tmp-{os.getpid()}"
    try:
        for split in SPLITS:
            (stage / "images" / split).mkdir(parents=True)
        recs = _generate_all(cfg, seed, stage, profile, workers, progress)
        _write_tables(recs, cfg, seed, profile, stage)
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists():
            os.replace(out, old)
        os.replace(stage, out)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise DanError(f"cannot write the generated data set to {out}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return out


def _generate_all(cfg: SynthConfig, seed: int, stage: Path, profile: str, workers: int | None,
                  progress: bool) -> list[dict]:
    total = cfg.n_train + cfg.n_val
    ids = np.random.default_rng([seed, 7]).choice(np.arange(1, max(1000, 60 * total)), size=total, replace=False)
    split_ids = {"train2014": sorted(int(i) for i in ids[:cfg.n_train]),
                 "val2014": sorted(int(i) for i in ids[cfg.n_train:])}
    tasks = [(seed, s, k, iid, cfg, str(stage)) for s in SPLITS for k, iid in enumerate(split_ids[s])]
    if workers is None:
        workers = 1 if total < 4000 else min(16, os.cpu_count() or 1)
    recs = []
    with tqdm(total=total, desc=f"generate {profile}", unit="img", disable=not progress) as bar:
        if workers > 1:
            import multiprocessing

            with multiprocessing.get_context("fork").Pool(workers) as pool:
                for rec in pool.imap(_make_image, tasks, chunksize=16):
                    recs.append(rec)
                    bar.update(1)
        else:
            for task in tasks:
                recs.append(_make_image(task))
                bar.update(1)
    return recs


def _write_tables(recs: list[dict], cfg: SynthConfig, seed: int, profile: str, stage: Path) -> None:
    by_split = {s: [r for r in recs if r["split"] == s] for s in SPLITS}
    examples = {}
    for split in SPLITS:
        qfile, afile, examples[split] = _vqa_files(split, by_split[split])
        write_json_atomic(stage / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json", qfile)
        write_json_atomic(stage / "vqa" / f"v2_mscoco_{split}_annotations.json", afile)
    val_ids = [r["image_id"] for r in by_split["val2014"]]
    order = np.random.default_rng([seed, 11]).permutation(len(val_ids))
    caption_split = {r["image_id"]: "train" for r in by_split["train2014"]}
    for rank, j in enumerate(order):
        caption_split[val_ids[j]] = ("val" if rank < cfg.n_caption_val else
                                     "test" if rank < cfg.n_caption_val + cfg.n_caption_test else "restval")
    karpathy, grounding = _captions_and_grounding(recs, caption_split)
    write_json_atomic(stage / "captions" / "dataset_synth.json", karpathy)
    write_json_atomic(stage / "grounding.json", grounding)
    families = {s: dict(sorted(Counter(q.family for r in by_split[s] for q, _ in r["questions"]).items()))
                for s in SPLITS}
    counts = {"images": {s: len(by_split[s]) for s in SPLITS},
              "questions": {s: len(examples[s]) for s in SPLITS}, "families": families,
              "caption_images": dict(sorted(Counter(caption_split.values()).items())),
              "sentences": sum(len(r["captions"]) for r in recs)}
    files = {p.relative_to(stage).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size}
             for p in sorted(stage.rglob("*")) if p.is_file()}
    manifest = {"generator": GENERATOR, "generator_version": GENERATOR_VERSION, "profile": profile, "seed": seed,
                "config": dataclasses.asdict(cfg), "counts": counts,
                **_question_stats(examples["train2014"], examples["val2014"]), "files": files}
    write_json_atomic(stage / "manifest.json", manifest, indent=1)
