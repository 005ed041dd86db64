"""Checkpoints of :mod:`dan.train`: what one holds, writing it atomically, reading it back with one-line errors,
and the checks that keep a run from resuming (or a finished run from being reused) on other inputs.

A checkpoint (``checkpoint.pt``, written after every epoch) holds the model, optimiser and scheduler states, the
epoch, the RNG states, the run's config, its vocabulary and answer list, the feature stores' meta and the history.
``inputs.json`` beside it records, per feature store the run trained on, the fields a model depends on
(:data:`FEATURE_KEYS`), so that a finished run (whose checkpoint is not loaded to be reused) is checked too.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dan.io import ConfigError, DanError, DataError, atomic_path, first_line, read_json, sha256_file
from dan.store import IDS, META

if TYPE_CHECKING:
    from dan.config import TrainConfig
    from dan.prepare import Prepared

CHECKPOINT = "checkpoint.pt"
OTHER_RUN = "another run folder (--out; TrainConfig.out in a notebook)"  # the way out of a clash with a run


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _canonical(obj):  # noqa: ANN001, ANN202 - any part of a checkpoint's state
    """``obj`` with every string interned, and the plain dicts, lists and tuples holding them rebuilt: pickle writes
    a second reference to one object as a back-reference, so the bytes of a checkpoint depended on which equal
    strings were one object. A resumed run's are not: the optimizer's and scheduler's keys, the history's, come
    from the unpickled checkpoint, a fresh run's are interned literals; its final checkpoint held the same state in
    other bytes. Tensors and other objects (the model's ``OrderedDict``, made anew by every save) are kept."""
    kind = type(obj)
    if kind is str:
        return sys.intern(obj)
    if kind is dict:
        return {_canonical(k): _canonical(v) for k, v in obj.items()}
    if kind is list:
        return [_canonical(v) for v in obj]
    if kind is tuple:
        return tuple(_canonical(v) for v in obj)
    return obj


def save_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, epoch: int, cfg: TrainConfig, prep: Prepared,
                    history: list[dict]) -> None:
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
             "epoch": epoch, "rng": rng_state(), "config": cfg.to_dict(), "vocab": prep.vocab.to_dict(),
             "answers": prep.answers.to_dict() if prep.answers is not None else None,
             "visual_dim": prep.bank.dim, "feature_meta": prep.bank.meta, "history": history}
    state = _canonical(state)
    with atomic_path(path) as tmp:
        try:
            with open(tmp, "wb") as fh:  # a file object: the archive's records are named "archive/...", not after
                torch.save(state, fh)    # the random temp name, so equal states give byte-identical checkpoints
        except (OSError, RuntimeError) as exc:  # torch reports a full disk as RuntimeError; the old file is kept
            raise DanError(f"cannot write checkpoint {path}: {exc}") from exc


def load_checkpoint(run_dir: str | Path, map_location: str = "cpu") -> dict:
    """The raw checkpoint dict of a run (model state, config, vocabularies, answers, history)."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        raise DanError(f"no checkpoint at {path}")
    return read_checkpoint(path, map_location)


CHECKPOINT_KEYS = ("model", "optimizer", "scheduler", "epoch", "config", "vocab", "answers", "visual_dim",
                   "feature_meta", "history")


def read_checkpoint(path: Path, map_location) -> dict:  # noqa: ANN001 - str or torch.device
    """``torch.load`` of a checkpoint file; a damaged or foreign file is one :class:`DataError` naming it."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as exc:  # noqa: BLE001 - truncated zip, random bytes, empty file: the file's fault
        first = first_line(exc)
        raise DataError(f"cannot read checkpoint {path}: {first}; delete it to train this run from the start") \
            from exc
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise DataError(f"{path} is not a checkpoint of dan.train (missing {', '.join(missing[:4])}); delete it "
                        f"to train this run from the start")
    return state


def saved_config(state: dict, path: Path) -> TrainConfig:
    """The :class:`~dan.config.TrainConfig` a checkpoint was saved with; a config this version cannot read (another
    version's fields, or no config object) is a :class:`DataError` naming ``path``."""
    from dan.config import TrainConfig

    try:
        return TrainConfig.from_dict(state["config"])
    except (DanError, TypeError) as exc:  # ConfigError: unknown fields; TypeError: not a mapping
        raise DataError(f"{path}: its config is not one this version of dan reads ({exc})") from None


FEATURE_KEYS = ("backbone", "layer", "image_size", "grid", "dim", "weights_sha256")  # what a model was fitted to
# how a store was computed (dan.features.processing, in its meta.json): one run's stores must agree on it
PROCESSING_KEYS = ("precision", "decode", "inference")


def feature_summary(meta: dict) -> dict:
    """The fields of a feature store's meta that a trained model depends on (:data:`FEATURE_KEYS`)."""
    return {k: meta.get(k) for k in FEATURE_KEYS}


INPUTS = "inputs.json"  # per feature store the run trained on: feature_summary(meta); and what its data was


def data_files(cfg: TrainConfig) -> dict[str, Path]:
    """The data files a run of ``cfg`` reads, by their name under the data root: VQA's question and annotation
    files of both splits, or the captions file; and ``grounding.json`` where the data set has one."""
    from dan.data.vqa import vqa_files
    from dan.prepare import data_root

    root = data_root(cfg)
    if cfg.task == "vqa":
        paths = []
        for split in (cfg.train_split, cfg.val_split):
            try:
                paths += [f for f in vqa_files(root, split) if f is not None]
            except DataError:  # not there (a run kept without its data): nothing to compare
                continue
    else:
        paths = [root / cfg.captions_file]
    paths += [root / "grounding.json"] if (root / "grounding.json").is_file() else []
    return {str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else str(p): Path(p) for p in paths}


_DIGESTS: dict[tuple, str] = {}  # (path, size, mtime) -> sha256: a sweep reuses dozens of runs on the same files


def _digest(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def input_digests(cfg: TrainConfig, stores: list[str]) -> dict:
    """What a run of ``cfg`` learns from, by content: sha256 of each of its data files (:func:`data_files`) and of
    each feature store's image ids (``stores``: image folders under the features root). Recorded in
    ``inputs.json``; a finished run is reused, or a run resumed, only on the same."""
    from dan.prepare import features_root

    root = features_root(cfg)
    ids = {name: _digest(root / name / IDS) for name in sorted(stores) if (root / name / IDS).is_file()}
    return {"data": {name: _digest(path) for name, path in data_files(cfg).items() if path.is_file()},
            "feature_ids": ids}


def check_recorded_inputs(run_dir: Path, cfg: TrainConfig) -> None:
    """Before a run is resumed or a finished one reused: the feature stores it recorded (``inputs.json``) that
    exist must be the same features, the data files and stores' image ids that exist the same content, and no
    other data file may be read now (a run kept without its data or stores, or from before the record, passes as
    it is). Otherwise a :class:`DataError` names the first
    difference: reusing the run would report results of other data as this data's."""
    from dan.prepare import data_root, features_root

    path = run_dir / INPUTS
    if not path.is_file():
        return
    recorded = read_json(path, "run inputs")
    recorded = recorded if isinstance(recorded, dict) else {}
    root = features_root(cfg)
    stores = recorded.get("features")
    for name, summary in (stores if isinstance(stores, dict) else {}).items():
        meta = root / name / META
        if meta.is_file() and isinstance(summary, dict):
            check_same_features(summary, feature_summary(read_json(meta, "feature store meta")), run_dir, root)
    if not isinstance(recorded.get("data"), dict):
        return  # recorded before data digests were
    ids = recorded.get("feature_ids") or {}
    if not isinstance(ids, dict):  # written with "data" since it was: anything else is a damaged file
        raise DataError(f"{path}: field 'feature_ids' must be an object (store -> sha256 of its image ids), got "
                        f"{ids!r}; the record of what {run_dir} was trained on is damaged: choose {OTHER_RUN} (or "
                        f"delete that folder)")
    now = input_digests(cfg, list(ids))
    for kind, where in (("data", data_root(cfg)), ("feature_ids", root)):
        saved = recorded.get(kind) or {}
        for name in sorted(set(saved) | set(now[kind])):
            if name not in now[kind]:
                continue  # gone now (a run kept without its data or stores): nothing to compare
            if saved.get(name) != now[kind][name]:
                what = f"data file {where / name}" if kind == "data" else \
                    f"the image ids of feature store {where / name}"
                state = "was not read by it" if name not in saved else "has other content now"
                raise DataError(f"{run_dir} was trained on other data: {what} {state}; use the data it was "
                                f"trained on, or {OTHER_RUN} (or delete that folder) to train on this data")


def check_same_features(saved: dict, current: dict, where: Path, root: Path,
                        advice: str = f"use the features it was trained on (--features) or {OTHER_RUN}") -> None:
    """Raise :class:`DataError` naming the first field in which the features ``where`` was trained on differ."""
    for k in FEATURE_KEYS:
        if k in saved and k in current and saved[k] != current[k]:
            raise DataError(f"{where} was trained on features with {k}={saved[k]!r}, but the feature stores in "
                            f"{root} have {k}={current[k]!r}; {advice}")


def check_resumable(state: dict, ckpt_path: Path, cfg: TrainConfig, prep: Prepared) -> None:
    """Raise unless the checkpoint ``state`` (read from ``ckpt_path``) can resume the run of ``cfg`` on ``prep``: the
    same configuration, feature dimension and kind of features, vocabulary and answer list (:class:`ConfigError`
    for another configuration, :class:`DataError` for other inputs, each naming the file and what to do)."""
    from dan.prepare import data_root, features_root

    try:
        same = cfg.same_identity(saved_config(state, ckpt_path).identity())
    except DataError:  # a config another version wrote is another configuration, not a mistake in the flags
        same = False
    if not same:
        changes = cfg.identity_changes(state["config"], where="the checkpoint")
        raise ConfigError(f"{ckpt_path} is a checkpoint of another configuration; choose {OTHER_RUN} "
                          f"or delete it{' (' + changes + ')' if changes else ''}")
    if state["visual_dim"] != prep.bank.dim:
        raise DataError(f"feature dimension mismatch: {ckpt_path} expects {state['visual_dim']}-d regions "
                        f"({(state.get('feature_meta') or {}).get('backbone')}), the feature stores in "
                        f"{features_root(cfg)} have {prep.bank.dim}-d ({prep.bank.meta.get('backbone')}); "
                        f"use the features it was trained on or {OTHER_RUN}")
    check_same_features(state["feature_meta"] or {}, prep.bank.meta, ckpt_path, features_root(cfg))
    for what, saved, now in (("vocabulary", state["vocab"], prep.vocab.to_dict()),
                             ("answer list", state["answers"],
                              prep.answers.to_dict() if prep.answers is not None else None)):
        if saved != now:
            raise DataError(f"{ckpt_path} was trained with another {what} than the training data in "
                            f"{data_root(cfg)} gives (the questions/captions or --max-train differ); use the "
                            f"data it was trained on (--data) or {OTHER_RUN}")
