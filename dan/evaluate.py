"""Evaluation with the official metrics, and the per-example outputs that analysis reads without retraining.

r-DAN: VQA accuracy (official per-question score) overall, by answer type and by question family; with
``save_to`` it writes ``predictions.csv`` (one row per question) and ``attention.npz`` (per-step visual
attention [Q, K, N] and textual attention [Q, K, T], fp16).
m-DAN: :mod:`dan.retrieval` (every image and caption embedded once; R@1/5/10 and median rank both ways).

A finished (or checkpointed) run is evaluated on another split without retraining by :func:`evaluate_run`, or
``python -m dan.evaluate RUN_DIR --split test-dev2015``: for VQA it writes the evaluation server's results file
(``[{"question_id": int, "answer": str}, ...]``) and scores the split when it has annotations (or a subset of its
questions: ``question_ids`` / ``--questions FILE``); for matching it gives the retrieval metrics of a Karpathy split
(or of a subset of its images, ``image_ids`` / ``--images FILE``; or in folds, ``folds`` / ``--folds 5``: COCO 1K).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dan.batches import FeatureBank, VQATensors, batch_text, vqa_tensors
from dan.checkpoint import CHECKPOINT, INPUTS, PROCESSING_KEYS
from dan.io import ConfigError, DataError, write_bytes_atomic, write_json_atomic
from dan.metrics import vqa_accuracy, vqa_score
from dan.retrieval import embed_split, evaluate_matching, pad_stack, save_npz  # noqa: F401 (m-DAN's, re-exported)

if TYPE_CHECKING:
    from dan.data.text import AnswerVocab
    from dan.prepare import Prepared


@torch.no_grad()
def predict_vqa(model: torch.nn.Module, data: VQATensors, bank: FeatureBank, answers: AnswerVocab, batch_size: int,
                device: torch.device | str | None = None,
                attention: bool = False) -> tuple[list[str], np.ndarray, list, list]:
    """The answer ``model`` gives to every question of ``data`` [Q] (strings), its softmax confidence [Q], and with
    ``attention`` the per-batch visual [b, K, N] and textual [b, K, T_b] maps (fp16; empty lists without).
    Questions and regions go to ``device`` (default: the bank's), which must be the model's."""
    device = bank.device if device is None else torch.device(device)
    model.eval()
    preds, confs, vis, txt = [], [], [], []
    for lo in range(0, len(data), batch_size):
        idx = np.arange(lo, min(lo + batch_size, len(data)))
        tokens, lengths = batch_text(data.tokens, data.lengths, idx, device)
        out = model(bank.fetch(data.rows[idx], device), tokens, lengths)
        conf, top = torch.softmax(out.logits.float(), dim=-1).max(dim=-1)
        preds.append(top.cpu().numpy())
        confs.append(conf.cpu().numpy())
        if attention:
            vis.append(out.visual_attention.half().cpu().numpy())
            txt.append(out.text_attention.half().cpu().numpy())
    return [answers.answers[i] for i in np.concatenate(preds)], np.concatenate(confs), vis, txt


def score_vqa(data: VQATensors, predicted: list[str], families: dict[int, str] | None = None,
              majority_answer: str | None = None) -> dict:
    """VQA accuracy (percent) of ``predicted`` (one answer per question of ``data``), by answer type and, with
    ``families``, by family; with ``majority_answer`` also the baseline of always giving it."""
    by_qid = dict(zip(data.question_ids.tolist(), predicted, strict=True))
    metrics = vqa_accuracy(by_qid, data.examples, group_by=families or None)
    if majority_answer is not None:
        metrics["majority_baseline"] = vqa_accuracy({q: majority_answer for q in by_qid}, data.examples)["overall"]
    return metrics


def evaluate_vqa(model: torch.nn.Module, prep: Prepared, batch_size: int, device: torch.device,
                 save_to: Path | None = None) -> dict:
    """Accuracy (percent) of ``model`` on ``prep.val``; see the module docstring for what ``save_to`` receives."""
    data = prep.val
    answers, confs, vis, txt = predict_vqa(model, data, prep.bank, prep.answers, batch_size, device,
                                           attention=save_to is not None)
    metrics = score_vqa(data, answers, prep.families, prep.majority_answer)
    if save_to is not None:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["question_id", "image_id", "question", "predicted", "confidence", "score",
                    "multiple_choice_answer", "answer_type", "family"])
        for e, a, c in zip(data.examples, answers, confs, strict=True):
            w.writerow([e.question_id, e.image_id, e.question, a, f"{c:.4f}", f"{vqa_score(a, e.answers):.4f}",
                        e.multiple_choice_answer, e.answer_type, prep.families.get(e.question_id, "")])
        write_bytes_atomic(save_to / "predictions.csv", buf.getvalue().encode("utf-8"))
        save_npz(save_to / "attention.npz", question_ids=data.question_ids,
                  image_ids=np.array([e.image_id for e in data.examples], dtype=np.int64),
                  visual=np.concatenate(vis), text=pad_stack(txt, data.tokens.shape[1]),
                  lengths=data.lengths, grid=np.array(prep.bank.meta.get("grid", [0, 0])))
    return metrics


@dataclass
class TrainedRun:
    """A run's model rebuilt from its checkpoint, in eval mode, with what it was trained with."""

    run_dir: Path
    cfg: object  # dan.config.TrainConfig
    model: torch.nn.Module
    vocab: object  # dan.data.text.Vocab
    answers: object | None  # dan.data.text.AnswerVocab (r-DAN) or None (m-DAN)
    visual_dim: int
    feature_meta: dict
    epochs_done: int  # epochs the checkpoint's weights were trained for (cfg.epochs when the run finished)


def load_trained_run(run_dir: str | Path, device: torch.device | str = "cpu") -> TrainedRun:
    """Rebuild the model of ``run_dir`` from its ``checkpoint.pt`` (config, vocabularies and weights it carries)."""
    from dan.checkpoint import load_checkpoint, saved_config
    from dan.data.text import AnswerVocab, Vocab
    from dan.models import build_model

    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir, map_location=str(device))
    cfg = saved_config(state, run_dir / "checkpoint.pt")
    vocab = Vocab.from_dict(state["vocab"], where=f"{run_dir}/checkpoint.pt vocabulary")
    answers = (AnswerVocab.from_dict(state["answers"], where=f"{run_dir}/checkpoint.pt answers")
               if state["answers"] is not None else None)
    model = build_model(cfg.task, len(vocab), state["visual_dim"],
                        num_answers=len(answers) if answers is not None else None, **cfg.model_options())
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:  # weights of another version's model (or no state dict)
        first = str(exc).strip().splitlines()
        raise DataError(f"{run_dir / 'checkpoint.pt'}: its weights do not fit the model this version of dan builds "
                        f"from its config ({' '.join(line.strip() for line in first[:3])})") from None
    model.to(device).eval()
    return TrainedRun(run_dir, cfg, model, vocab, answers, int(state["visual_dim"]), state["feature_meta"] or {},
                      int(state["epoch"]) + 1)


def _open_run_bank(run: TrainedRun, folders: set[str], device: torch.device) -> FeatureBank:
    """The feature stores of ``folders`` (under the run's, or the given, features root), checked to be the kind the
    run was trained on."""
    from dan.checkpoint import check_same_features
    from dan.prepare import features_root, open_bank

    features = features_root(run.cfg)
    bank = open_bank(run.cfg, folders, device)
    if bank.dim != run.visual_dim:
        raise DataError(f"{run.run_dir} expects {run.visual_dim}-d regions, the feature stores in {features} have "
                        f"{bank.dim}-d ({bank.meta.get('backbone')}); use the features it was trained on (--features)")
    check_same_features(run.feature_meta, bank.meta, run.run_dir, features,  # (--out is the results file here)
                        advice="use the features it was trained on (--features)")
    return bank


EXTRACTION_KEYS = (*PROCESSING_KEYS, "preprocessing")  # how, not what, the features were computed


def extraction_differences(trained: dict, now: dict) -> dict[str, dict]:
    """The ways (:data:`EXTRACTION_KEYS`) in which the stores a run is evaluated on were computed differently from
    the ones it was trained on: ``{key: {"trained": value, "now": value}}``, empty when they agree. Such features
    are the same kind (same backbone, weights, size, grid), so evaluating on them is allowed; the small numeric
    differences (bf16 vs float32, another JPEG decoder) can still move a score, so the result says so."""
    return {k: {"trained": trained.get(k), "now": now.get(k)} for k in EXTRACTION_KEYS
            if k in trained and trained.get(k) != now.get(k)}


def _differences(run: TrainedRun, bank: FeatureBank) -> dict:
    diff = extraction_differences(run.feature_meta, bank.meta)
    return {"features_computed_differently": diff} if diff else {}


def select_ids(items: list, ids: Iterable[int], what: str, where: str) -> tuple[list, str]:
    """The ``items`` (questions or images, with ``.question_id`` / ``.image_id``) whose ids are in ``ids``, in their
    order in ``items``, and the results file's name part for them (``_subset-<n>q-<hash>``, ``-<n>i-`` for images);
    an id not among them (or none at all) is a :class:`DataError` naming ``where``."""
    id_of = (lambda x: x.question_id) if what == "question" else (lambda x: x.image_id)
    want = {int(i) for i in ids}
    chosen = [x for x in items if id_of(x) in want]
    missing = sorted(want - {id_of(x) for x in chosen})
    if missing or not want:
        raise DataError(f"{what} ids not in {where} ({len(items)} {what}s): "
                        f"{', '.join(map(str, missing[:5])) or 'none given'}{' ...' if len(missing) > 5 else ''}")
    digest = hashlib.sha256(",".join(map(str, sorted(want))).encode()).hexdigest()[:8]
    return chosen, f"_subset-{len(chosen)}{what[0]}-{digest}"


def _read_ids(path: str, what: str = "question ids") -> list[int]:
    """Ids from a text file: integers separated by whitespace or commas (one per line, or a JSON list)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read {what} from {path}: {getattr(exc, 'strerror', None) or exc}") from None
    words = [w for w in re.split(r"[\s,\[\]]+", text) if w]
    bad = [w for w in words if not re.fullmatch(r"\d+", w)]
    if bad:
        raise DataError(f"{path}: {what} must be integers, got {bad[0]!r}")
    return [int(w) for w in words]


# the files dan.train writes into a run folder: an evaluation's results file (out) must not replace one of them
RUN_FILES = (CHECKPOINT, "config.json", INPUTS, "metrics.json", "history.json", "predictions.csv", "attention.npz",
             "embeddings.npz")


def check_out_path(run_dir: str | Path, out: str | Path | None) -> None:
    """Refuse a results file ``out`` that is one of the run's own files (:data:`RUN_FILES`): ``--out
    RUN/metrics.json`` replaced the run's metrics with the answers list (and dan.train then reused the run and
    reported that list as its metrics), ``--out RUN/checkpoint.pt`` the trained model."""
    if out is None:
        return
    path, run = Path(out), Path(run_dir)
    if path.name in RUN_FILES and path.parent.resolve() == run.resolve():
        raise ConfigError(f"--out {out} would replace the run's own {path.name} in {run_dir}; write the results "
                          f"to another file (default: one named after the split, in the run folder)")


@torch.no_grad()
def evaluate_run(run_dir: str | Path, split: str, data: str | Path | None = None, features: str | Path | None = None,
                 out: str | Path | None = None, device: str = "auto", batch_size: int | None = None,
                 question_ids: Iterable[int] | None = None, image_ids: Iterable[int] | None = None,
                 folds: int = 1) -> dict:
    """Evaluate the checkpoint of ``run_dir`` on ``split`` (``data``/``features``: roots, if not the run's own).

    r-DAN: ``split`` is a VQA split (``val2014``, ``test-dev2015``, ``test2015``, or an alias such as
    ``test-dev``); the answers go to ``out`` (default ``RUN_DIR/vqa_OpenEnded_mscoco_<split>_dan_results.json``,
    the evaluation server's format) and, where the split has annotations, the accuracy (percent) is returned.
    m-DAN: ``split`` is ``train``, ``val`` or ``test`` of the run's Karpathy file; returns R@1/5/10 (percent),
    median ranks and rsum, also written to ``out`` (default ``RUN_DIR/eval_<split>.json``); ``image_ids``: only these
    images and their captions are ranked (default file ``eval_<split>_subset-<n>i-<hash>.json``); ``folds``: the
    images in that many consecutive folds, each ranked alone, the metrics averaged and each fold's under ``folds``
    (default file ``eval_<split>_<folds>folds.json``; COCO's "1K test" is ``split="test", folds=5``).
    ``question_ids`` (r-DAN): only these questions of the split (any order; an id not in it is an error), scored as
    the split is (by answer type, family), the answers to ``out`` (default
    ``RUN_DIR/vqa_OpenEnded_mscoco_<split>_subset-<n>q-<hash>_dan_results.json``, not the whole split's file).
    Stores of the run's kind that were computed another way (:func:`extraction_differences`) are evaluated, and the
    result names the differences under ``features_computed_differently``.
    """
    from dan.data.vqa import SPLIT_ALIASES, image_folder, load_vqa_split, vqa_files
    from dan.host import resolve_device
    from dan.prepare import existing_data_root, question_families

    check_out_path(run_dir, out)
    dev = resolve_device(device)
    run = load_trained_run(run_dir, dev)
    cfg = run.cfg
    if data is not None:
        cfg.data = str(data)
    if features is not None:
        cfg.features = str(features)
    root = existing_data_root(cfg)
    bs = batch_size or cfg.eval_batch_size
    trained = {"epochs_trained": run.epochs_done, "epochs": cfg.epochs}  # a run still training: fewer than epochs
    if cfg.task == "vqa":
        if image_ids is not None or folds != 1:
            raise ConfigError(f"image_ids (--images) and folds (--folds) are for matching runs; {run.run_dir} is a "
                              f"VQA run (question_ids, --questions: a subset of its questions)")
        split = SPLIT_ALIASES.get(split, split)
        examples = load_vqa_split(root, split)
        subset = ""
        if question_ids is not None:
            examples, subset = select_ids(examples, question_ids, "question", f"split {split!r}")
        folder = image_folder(split)
        bank = _open_run_bank(run, {folder}, dev)
        where = str(vqa_files(root, split)[0])
        tensors = vqa_tensors(examples, run.vocab, run.answers, bank, folder, where=where)
        answers, _, _, _ = predict_vqa(run.model, tensors, bank, run.answers, bs, dev)
        path = Path(out) if out else run.run_dir / f"vqa_OpenEnded_mscoco_{split}{subset}_dan_results.json"
        write_json_atomic(path, [{"answer": a, "question_id": int(q)}
                                 for q, a in zip(tensors.question_ids.tolist(), answers, strict=True)])
        result = {"task": "vqa", "split": split, "questions": len(examples), "results_file": str(path), **trained,
                  **_differences(run, bank)}
        if any(e.answers for e in examples):  # families: the embedded benchmark's; majority: as dan.prepare takes it
            result["metrics"] = score_vqa(tensors, answers, question_families(root), run.answers.answers[0])
        return result
    from dan.retrieval import evaluate_matching_run

    if question_ids is not None:
        raise ConfigError(f"question_ids (--questions) selects VQA questions; {run.run_dir} is a matching run "
                          f"(image_ids, --images: a subset of its images)")
    result, name, bank = evaluate_matching_run(run, root, split, lambda folders: _open_run_bank(run, folders, dev),
                                               bs, dev, image_ids=image_ids, folds=folds)
    path = Path(out) if out else run.run_dir / f"eval_{split}{name}.json"
    result = {**result, "results_file": str(path), **trained, **_differences(run, bank)}
    write_json_atomic(path, result, indent=1)
    return result


def main(argv: list[str] | None = None) -> int:
    from dan.cli import OneLineParser, guard, nonempty

    p = OneLineParser(prog="python -m dan.evaluate",
                      description="Evaluate a trained run's checkpoint on a split, without retraining. r-DAN: writes "
                                  "the VQA evaluation server's results file and scores annotated splits; m-DAN: "
                                  "retrieval metrics of a Karpathy split.")
    p.add_argument("run_dir", type=nonempty, help="a run folder of dan.train (holds checkpoint.pt)")
    p.add_argument("--split", type=nonempty, required=True,
                   help="VQA: val2014, test-dev2015, test2015 (or val, test-dev, test); matching: train, val, test")
    p.add_argument("--data", type=nonempty, help="data root (default: the one the run was trained on)")
    p.add_argument("--features", type=nonempty, help="feature stores' root (default: the run's)")
    p.add_argument("--out", type=nonempty, help="output file (default: in the run folder)")
    p.add_argument("--questions", type=nonempty, metavar="FILE",
                   help="VQA: only these question ids of the split (a file, one id per line); the results file's "
                        "default name then says subset")
    p.add_argument("--images", type=nonempty, metavar="FILE",
                   help="matching: only these image ids of the split and their captions (a file, one id per line); "
                        "the default output name then says subset")
    p.add_argument("--folds", type=int, default=1, help="matching: rank the split's images in this many consecutive "
                   "folds and average the metrics (COCO 1K test: --split test --folds 5); default 1")
    p.add_argument("--device", default="auto", type=nonempty, help="auto, cpu, cuda, cuda:N")
    p.add_argument("--batch-size", type=int, help="default: the run's eval_batch_size")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    ns = p.parse_args(argv)
    if ns.folds < 1:
        p.error(f"--folds must be a positive integer, got {ns.folds}")
    if ns.batch_size is not None and ns.batch_size < 1:
        p.error(f"--batch-size must be a positive integer, got {ns.batch_size}")

    def go() -> int:
        result = evaluate_run(ns.run_dir, ns.split, data=ns.data, features=ns.features, out=ns.out,
                              device=ns.device, batch_size=ns.batch_size,
                              question_ids=_read_ids(ns.questions) if ns.questions else None,
                              image_ids=_read_ids(ns.images, "image ids") if ns.images else None, folds=ns.folds)
        print(json.dumps(result, indent=1))
        for key, d in result.get("features_computed_differently", {}).items():
            print(f"note: the features were computed with {key}={d['now']!r}, the run trained on {key}="
                  f"{d['trained']!r}", file=sys.stderr)
        return 0

    return guard(go, ns.debug, p.prog)


if __name__ == "__main__":
    sys.exit(main())
