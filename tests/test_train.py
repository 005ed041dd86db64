"""Training and evaluation on the smoke data (issue 5): quality above baselines, determinism, resume after a stop
and after ``kill -9``, checkpoint contents, per-example outputs, bad configurations.

The reference runs (``vqa_run``, ``matching_run``, smoke preset, seed 0) come from ``conftest.py``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from math import comb
from pathlib import Path

import numpy as np
import pytest
import torch

from dan.batches import FeatureBank
from dan.config import preset
from dan.data.captions import load_karpathy
from dan.data.text import AnswerVocab, Vocab
from dan.data.vqa import load_vqa_split
from dan.evaluate import evaluate_vqa
from dan.io import ConfigError, DanError, DataError
from dan.models import build_model
from dan.prepare import prepare
from dan.store import FeatureStore
from dan.train import load_checkpoint, load_result, main, run_lock, train

ROOT = Path(__file__).resolve().parents[1]
# Margins (percentage points) over the baselines. Measured on the smoke preset, seeds 0-4: r-DAN 42-47 % vs a
# 20.7 % majority baseline (+21 at worst); m-DAN mean R@10 76-86 vs 56 by chance (+20 at worst).
VQA_MARGIN, R10_MARGIN = 12.0, 12.0


def chance_r10(n_images: int, n_captions: int) -> tuple[float, float]:
    """R@10 (percent) of a random ranking: image->text (any of its captions in the top 10) and text->image."""
    per = n_captions // n_images
    i2t = 1 - comb(n_captions - per, 10) / comb(n_captions, 10)
    return 100 * i2t, 100 * min(10 / n_images, 1.0)


def npz(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def assert_same_run(a: Path, b: Path) -> None:
    """Two finished run folders hold identical metrics, history and per-example outputs."""
    ra, rb = load_result(a), load_result(b)
    assert ra.metrics == rb.metrics and ra.history == rb.history
    for name in ("attention.npz", "embeddings.npz"):
        if (a / name).is_file() or (b / name).is_file():
            xa, xb = npz(a / name), npz(b / name)
            assert xa.keys() == xb.keys()
            for k in xa:
                np.testing.assert_array_equal(xa[k], xb[k], err_msg=f"{name}:{k}")
    if (a / "predictions.csv").is_file():
        assert (a / "predictions.csv").read_bytes() == (b / "predictions.csv").read_bytes()


def test_rdan_beats_the_majority_answer(vqa_run, smoke_data):
    m, cfg = vqa_run.metrics, vqa_run.config
    assert m["n"] == len(load_vqa_split(smoke_data, "val2014")) and 0 < m["majority_baseline"] < 50
    assert m["overall"] >= m["majority_baseline"] + VQA_MARGIN, (m["overall"], m["majority_baseline"])
    assert len(vqa_run.history) == cfg.epochs and vqa_run.history[-1]["loss"] < 0.7 * vqa_run.history[0]["loss"]
    assert set(m["groups"]) == {"single-hop", "multi-hop"}
    assert m["deviations_from_paper"]["hidden_dim"] == [32, 512]  # the shrunk profile says so in its output


def test_mdan_beats_chance_recall(matching_run, smoke_data):
    m = matching_run.metrics
    i2t, t2i = chance_r10(m["n_images"], m["n_captions"])
    test_images = [im for im in load_karpathy(smoke_data / "captions" / "dataset_synth.json") if im.split == "test"]
    assert (m["n_images"], m["n_captions"]) == (len(test_images), 5 * len(test_images)) and m["n_images"] >= 10
    mean_r10 = (m["i2t"]["r10"] + m["t2i"]["r10"]) / 2
    assert mean_r10 >= (i2t + t2i) / 2 + R10_MARGIN, (m["i2t"], m["t2i"], i2t, t2i)
    assert m["t2i"]["r10"] >= t2i + R10_MARGIN
    assert m["rsum"] == pytest.approx(sum(m[d][k] for d in ("i2t", "t2i") for k in ("r1", "r5", "r10")))
    assert set(m["val"]) >= {"i2t", "t2i", "rsum"}


def test_same_seed_gives_identical_results_and_another_seed_does_not(vqa_run, make_cfg, tmp_path):
    again = train(make_cfg("vqa", tmp_path / "again"), progress=False)
    assert_same_run(vqa_run.run_dir, again.run_dir)
    other = train(make_cfg("vqa", tmp_path / "seed1", seed=1, epochs=2), progress=False)
    first = make_cfg("vqa", tmp_path / "seed0", epochs=2)
    assert train(first, progress=False).history[0]["loss"] != other.history[0]["loss"]
    # a finished folder of the same configuration is returned without training; another configuration is refused
    assert train(make_cfg("vqa", tmp_path / "again"), progress=False).metrics == again.metrics
    with pytest.raises(ConfigError, match="finished run of another configuration"):
        train(make_cfg("vqa", tmp_path / "again", steps=1), progress=False)


def test_stop_and_resume_gives_the_uninterrupted_result(vqa_run, make_cfg, tmp_path):
    cfg = make_cfg("vqa", tmp_path / "resumed")
    part = train(cfg, stop_after_epoch=2, progress=False)
    assert len(part.history) == 2 and not (part.run_dir / "metrics.json").exists()
    assert load_checkpoint(part.run_dir)["epoch"] == 1
    full = train(cfg, progress=False)
    assert_same_run(vqa_run.run_dir, full.run_dir)


def test_resume_with_dropout_and_a_later_lr_drop_gives_the_uninterrupted_result(make_cfg, tmp_path):
    """The smoke preset has no dropout and no learning-rate drop, so the test above cannot see a resume that loses
    the scheduler's state or the epoch's dropout seed; the paper's recipe (SGD, dropout, a drop after the stop) can."""
    recipe = dict(epochs=4, optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, dropout=0.5,
                  lr_decay_epochs=[3])
    whole = train(make_cfg("vqa", tmp_path / "whole", **recipe), progress=False)
    assert whole.history[3]["lr"] == pytest.approx(0.005)  # the drop comes after the stop below
    cfg = make_cfg("vqa", tmp_path / "resumed", **recipe)
    train(cfg, stop_after_epoch=2, progress=False)
    assert load_checkpoint(cfg.out)["epoch"] == 1
    resumed = train(cfg, progress=False)
    assert_same_run(whole.run_dir, resumed.run_dir)


def test_kill_9_during_training_then_rerun_gives_the_same_metrics(matching_run, smoke_data, smoke_features,
                                                                    tmp_path, capsys):
    out = tmp_path / "killed"
    argv = ["--task", "matching", "--profile", "smoke", "--data", str(smoke_data), "--features",
            str(smoke_features), "--out", str(out), "--device", "cpu", "--no-progress"]
    proc = subprocess.Popen([sys.executable, "-m", "dan.train", *argv], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
    ckpt, deadline = out / "checkpoint.pt", time.time() + 120
    while time.time() < deadline and proc.poll() is None and not ckpt.is_file():
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    assert ckpt.is_file() and not (out / "metrics.json").exists(), "killed too late: the run had finished"
    assert load_checkpoint(out)["epoch"] < matching_run.config.epochs - 1
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["metrics"] == matching_run.metrics
    assert_same_run(matching_run.run_dir, out)
    assert not list(out.glob(".*.tmp")), "temp files of the killed run were left behind"


def test_a_second_process_on_a_run_folder_being_trained_is_refused_and_leaves_it_alone(vqa_run, make_cfg,
                                                                                      tmp_path):
    """Two trainings into one folder: the second used to delete the first's checkpoint being written (a temp file
    to it) and so end the first in "cannot write checkpoint.pt: No such file or directory"."""
    cfg = make_cfg("vqa", tmp_path / "busy")
    train(cfg, stop_after_epoch=1, progress=False)
    writing = cfg.out + "/.checkpoint.pt.abc123.tmp"  # the first process's checkpoint, half written
    Path(writing).write_bytes(b"partial")
    with run_lock(Path(cfg.out)):  # what the first process holds (flock: per open file, so this process conflicts)
        with pytest.raises(DanError, match=f"another process is training into the run folder {cfg.out} right now"):
            train(cfg, progress=False)
    assert Path(writing).read_bytes() == b"partial" and load_checkpoint(cfg.out)["epoch"] == 0
    from dan.io import _host_tag

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = Path(cfg.out) / f".metrics.json.{int(ended.stdout)}-{_host_tag()}.abc_12.tmp"  # a killed writer's
    dead.write_bytes(b"partial")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:  # a dan.evaluate writing its results into the run folder: its temp file is not the training's to remove
        evaluating = Path(cfg.out) / f".eval_test.json.{live.pid}-{_host_tag()}.xyz_34.tmp"
        evaluating.write_bytes(b"being written")
        assert train(cfg, progress=False).metrics == vqa_run.metrics  # once it has ended: resumed, same result
        assert evaluating.read_bytes() == b"being written"
    finally:
        live.kill()
        live.wait()
    evaluating.unlink()
    assert_same_run(vqa_run.run_dir, Path(cfg.out))
    assert not Path(writing).exists() and not dead.exists()  # killed runs' temp files: removed by the next one


def test_checkpoint_holds_everything_to_rebuild_the_model(vqa_run, smoke_features):
    cfg = vqa_run.config
    state = load_checkpoint(vqa_run.run_dir)
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "config", "vocab", "answers", "visual_dim",
            "feature_meta", "history"} <= set(state)
    assert state["epoch"] == cfg.epochs - 1 and state["history"] == vqa_run.history
    assert {k: v for k, v in state["config"].items() if k in cfg.identity()} == cfg.identity()
    assert state["optimizer"]["state"] and state["optimizer"]["param_groups"][0]["lr"] == cfg.lr
    assert state["scheduler"]["last_epoch"] == cfg.epochs
    assert set(state["rng"]) == {"python", "numpy", "torch"}
    store = FeatureStore(smoke_features / "train2014")  # the bank's meta is its first store's
    assert state["visual_dim"] == store.dim and state["feature_meta"] == store.meta
    vocab, answers = Vocab.from_dict(state["vocab"]), AnswerVocab.from_dict(state["answers"])
    assert 2 < len(answers) <= cfg.num_answers and len(vocab) > 10
    # the checkpoint alone restores the model: it reproduces the saved validation metrics
    model = build_model("vqa", len(vocab), state["visual_dim"], num_answers=len(answers), hidden_dim=cfg.hidden_dim,
                        steps=cfg.steps, attention=cfg.attention, dropout=cfg.dropout, embed_dim=cfg.embed_dim)
    model.load_state_dict(state["model"])
    cfg_eval = preset("smoke", "vqa", data=state["config"]["data"], features=state["config"]["features"])
    prep = prepare(cfg_eval, torch.device("cpu"))
    assert prep.vocab.itos == vocab.itos and prep.answers.answers == answers.answers
    m = evaluate_vqa(model, prep, 64, torch.device("cpu"))
    assert m["overall"] == pytest.approx(vqa_run.metrics["overall"], abs=1e-9)


def test_per_example_outputs_have_the_documented_shapes(vqa_run, matching_run, smoke_features):
    grid = FeatureStore(smoke_features / "val2014").meta["grid"]
    K, N = vqa_run.config.steps, grid[0] * grid[1]
    att = npz(vqa_run.run_dir / "attention.npz")
    Q = vqa_run.metrics["n"]
    T = att["text"].shape[2]
    assert att["visual"].shape == (Q, K, N) and att["visual"].dtype == np.float16
    assert att["text"].shape == (Q, K, T) and att["lengths"].shape == (Q,) and att["lengths"].max() == T
    assert att["grid"].tolist() == grid and len(set(att["question_ids"].tolist())) == Q
    np.testing.assert_allclose(att["visual"].astype(np.float32).sum(-1), 1.0, atol=1e-2)
    beyond = np.arange(T)[None, None, :] >= att["lengths"][:, None, None]  # [Q, 1, T]
    assert not np.any(att["text"] * beyond), "text attention is not zero beyond each question's length"
    np.testing.assert_allclose(att["text"].astype(np.float32).sum(-1), 1.0, atol=1e-2)
    lines = (vqa_run.run_dir / "predictions.csv").read_text().splitlines()
    assert lines[0] == ("question_id,image_id,question,predicted,confidence,score,multiple_choice_answer,"
                        "answer_type,family")
    assert len(lines) == Q + 1 and [int(r.split(",")[0]) for r in lines[1:]] == att["question_ids"].tolist()
    emb = npz(matching_run.run_dir / "embeddings.npz")
    I, C, H = matching_run.metrics["n_images"], matching_run.metrics["n_captions"], matching_run.config.hidden_dim
    Tc = emb["text_attention"].shape[2]
    assert emb["image_embedding"].shape == (I, (K + 1) * H) and emb["text_embedding"].shape == (C, (K + 1) * H)
    assert emb["image_attention"].shape == (I, K, N) and emb["text_attention"].shape == (C, K, Tc)
    assert emb["image_ids"].shape == (I,) and emb["sentence_ids"].shape == (C,) and emb["lengths"].max() == Tc
    beyond = np.arange(Tc)[None, None, :] >= emb["lengths"][:, None, None]
    assert not np.any(emb["text_attention"] * beyond)


@pytest.mark.parametrize("override, message", [
    (dict(attention="cross"), r"unknown attention 'cross'; accepted: dual, visual, textual, none"),
    (dict(steps=-1), r"steps \(K\) must be an integer >= 0, got -1"),
    (dict(task="captioning"), r"unknown task 'captioning'; accepted: vqa, matching"),
    (dict(profile="huge"), r"unknown profile 'huge'; accepted: smoke, default, full, real"),
    (dict(negatives="semi-hard"), r"unknown negatives 'semi-hard'; accepted: sampled, hardest"),
    (dict(lr=float("nan")), r"lr must be a finite number in \(0, 100\], got nan"),
    (dict(lr=1e300), r"lr must be a finite number in \(0, 100\], got 1e\+300"),
    (dict(momentum=-1.0), r"momentum must be a finite number in \[0, 1\), got -1.0"),
    (dict(weight_decay=-1.0), r"weight_decay must be a finite number in \[0, 1\]"),
    (dict(lr_decay=0.0), r"lr_decay must be a finite number in \(0, 1\]"),
    (dict(grad_clip=-1.0), r"grad_clip must be a finite number in \[0, inf\)"),
    (dict(margin=-1.0), r"margin must be a finite number in \(0, inf\)"),
    (dict(lr_decay_epochs=[-5]), r"lr_decay_epochs must be epochs >= 1, got \[-5\]"),
    (dict(seed=-1), r"seed must be an integer >= 0, got -1"),
    (dict(threads=-1), r"threads must be an integer >= 1 \(or unset\), got -1"),
    (dict(max_train=-5), r"max_train must be an integer >= 1 \(or unset\), got -5"),
    (dict(epochs="two"), r"epochs must be an integer > 0, got 'two'"),
    (dict(hidden_dim=16.5), r"hidden_dim must be an integer > 0, got 16.5"),
    (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
    # bools are ints to isinstance: -p steps True trained K = 1 as vqa-dual-KTrue-s0; "0.5" was a TypeError
    (dict(steps=True), r"steps \(K\) must be an integer >= 0, got True"),
    (dict(seed=False), r"seed must be an integer >= 0, got False"),
    (dict(margin=True), r"margin must be a finite number in \(0, inf\), got True"),
    (dict(dropout="0.5"), r"dropout must be in \[0, 1\), got '0.5'"),
    (dict(lr_decay_epochs=[True]), r"lr_decay_epochs must be epochs >= 1, got \[True\]"),
    # found by fuzzing: a TypeError, a MemoryError or a torch overflow traceback, or a run that silently did otherwise
    (dict(lr_decay_epochs=30), r"lr_decay_epochs must be a list of epochs >= 1 \(e\.g\. \[30\]\), got 30"),
    (dict(lr_decay_epochs=[2, 2]), r"lr_decay_epochs must be increasing epochs \(each decays the lr once\), got "
                                   r"\[2, 2\]"),
    (dict(soft_targets="false"), r"soft_targets must be True or False, got 'false'"),
    (dict(device=0), r"device must be a non-empty string, got 0"),  # None: the preset's, as for every field
    (dict(val_split=""), r"val_split must be a non-empty string, got ''"),
    (dict(captions_file=3), r"captions_file must be a non-empty string, got 3"),
    (dict(out=""), r"out must be a folder path or unset \(None\), got ''"),
    (dict(data=3), r"data must be a folder path or unset \(None\), got 3"),
    (dict(attention=np.array(["dual", "none"])), r"unknown attention array\(\['dual', 'none'\]"),
    (dict(steps=10**20), r"steps must be at most 100 \(each step adds attention layers of its own; the paper takes "
                         r"2\), got 100000000000000000000"),
    (dict(hidden_dim=10**18), r"hidden_dim must be at most 65536 \(the LSTM's 4H x H weights alone would take 64 "
                              r"GiB\)"),
    (dict(embed_dim=65537), r"embed_dim must be at most 65536 \(as hidden_dim\), got 65537"),
    (dict(threads=100_000), r"threads must be at most 1024 \(torch starts that many CPU threads\), got 100000"),
])
def test_bad_configs_get_clear_errors(override, message):
    kwargs = {"profile": "smoke", "task": "vqa", **override}
    with pytest.raises(ConfigError, match=message):
        preset(kwargs.pop("profile"), kwargs.pop("task"), **kwargs)


@pytest.mark.parametrize("profile, task, message", [
    (["smoke"], "vqa", r"unknown profile \['smoke'\]; accepted: smoke, default, full, real, paper"),
    ("smoke", ["vqa"], r"unknown task \['vqa'\]; accepted: vqa, matching"),
    (None, "vqa", r"unknown profile None; accepted"),
])
def test_a_profile_or_task_that_is_no_string_is_named(profile, task, message):
    """-y profile: [smoke] was "unhashable type: 'list'" from the preset's dict lookup."""
    with pytest.raises(ConfigError, match=message):
        preset(profile, task)


def test_numpy_scalars_become_python_numbers_and_a_numpy_bool_is_still_refused(tmp_path):
    """``for k in np.arange(4): preset(..., steps=k)`` was refused (np.int64 is no int) and np.float64 values could
    not be told from float ones in config.json; now each field holds the Python number, written like any other."""
    cfg = preset("smoke", "vqa", steps=np.int64(3), hidden_dim=np.int32(16), lr=np.float32(0.5),
                 grad_clip=np.float64(2.0), lr_decay_epochs=[np.int64(2), 4], seed=np.uint8(7))
    values = (cfg.steps, cfg.hidden_dim, cfg.lr, cfg.grad_clip, cfg.lr_decay_epochs, cfg.seed)
    assert values == (3, 16, 0.5, 2.0, [2, 4], 7)
    assert [type(v) for v in values] == [int, int, float, float, list, int] and type(cfg.lr_decay_epochs[0]) is int
    assert json.loads(json.dumps(cfg.to_dict()))["steps"] == 3
    assert type(dataclasses.replace(cfg, steps=np.int16(1)).steps) is int
    with pytest.raises(ConfigError, match=r"steps \(K\) must be an integer >= 0, got True"):
        preset("smoke", "vqa", steps=np.bool_(True))


# Each value at the edge of what validate() accepts: (field, value, accepted). Only the error message's text told
# an open bound from a closed one before (lr=nan, margin=-1.0 fail either way).
EDGES = [
    ("lr", 0.0, False), ("lr", 1e-12, True), ("lr", 100.0, True), ("lr", 100.5, False),
    ("momentum", 0.0, True), ("momentum", 0.999, True), ("momentum", 1.0, False),
    ("weight_decay", 0.0, True), ("weight_decay", 1.0, True), ("weight_decay", 1.01, False),
    ("lr_decay", 1.0, True), ("lr_decay", 1e-9, True), ("lr_decay", 0.0, False),
    ("grad_clip", 0.0, True), ("grad_clip", float("inf"), False),
    ("margin", 0.0, False), ("margin", 1e-9, True), ("margin", float("inf"), False),
    ("dropout", 0.0, True), ("dropout", 0.99, True), ("dropout", 1.0, False),
    ("steps", 0, True), ("seed", 0, True), ("seed", 2**32 - 1, True), ("seed", 2**32, False),
    ("lr_decay_epochs", [1], True), ("lr_decay_epochs", [0], False), ("lr_decay_epochs", [], True),
    ("lr_decay_epochs", (3, 5), True), ("lr_decay_epochs", [5, 3], False), ("lr_decay_epochs", 5, False),
    ("steps", 100, True), ("steps", 101, False), ("hidden_dim", 65536, True), ("hidden_dim", 65537, False),
    ("embed_dim", 65536, True), ("embed_dim", 65537, False), ("threads", 1024, True), ("threads", 1025, False),
    ("soft_targets", True, True), ("soft_targets", 1, False), ("device", "cuda:1", True), ("device", "", False),
    ("out", Path("runs/a"), True), ("out", None, True), ("out", " ", False),
    ("min_word_count", 1, True), ("min_word_count", 0, False),
    *((name, 0, False) for name in ("hidden_dim", "epochs", "batch_size", "num_answers", "captions_per_image",
                                    "eval_batch_size", "threads", "max_train", "embed_dim")),
    *((name, 1, True) for name in ("hidden_dim", "epochs", "batch_size", "num_answers", "captions_per_image",
                                   "eval_batch_size", "threads", "max_train", "embed_dim")),
]


@pytest.mark.parametrize("name, value, accepted", EDGES)
def test_config_bounds_accept_and_refuse_exactly_their_edges(name, value, accepted):
    from dan.config import TASK_ONLY, TrainConfig

    task = "matching" if name in TASK_ONLY["matching"] else "vqa"  # an r-DAN run refuses m-DAN's fields
    cfg = TrainConfig(task=task, **{name: value})  # the dataclass defaults (the paper's) around the one value
    if accepted:
        assert cfg.validate() is cfg
    else:
        with pytest.raises(ConfigError, match=name):
            cfg.validate()


def test_the_paper_preset_is_the_paper_md_table():
    """PAPER.md's hyperparameter table, typed here from the paper (not read from dan.config.PAPER, which the
    deviations are measured against and so cannot check itself): K 2, hidden 512, SGD lr 0.1, momentum 0.9, weight
    decay 5e-4, 60 epochs with lr 0.01 after epoch 30, dropout 0.5, clipping 0.1, batch 128, 2000 answers, margin
    100."""
    for task in ("vqa", "matching"):
        cfg = preset("paper", task)
        assert (cfg.steps, cfg.attention, cfg.hidden_dim, cfg.embed_dim or cfg.hidden_dim) == (2, "dual", 512, 512)
        assert (cfg.optimizer, cfg.lr, cfg.momentum, cfg.weight_decay) == ("sgd", 0.1, 0.9, 5e-4)
        assert (cfg.epochs, cfg.lr_decay_epochs, cfg.lr * cfg.lr_decay) == (60, [30], pytest.approx(0.01))
        assert (cfg.dropout, cfg.grad_clip, cfg.batch_size) == (0.5, 0.1, 128)
        assert (cfg.num_answers, cfg.margin, cfg.negatives, cfg.soft_targets) == (2000, 100.0, "sampled", False)


def other_backbone_store(src: Path, dst: Path, dim: int = 64) -> None:
    """Copy the stores under ``src`` to ``dst`` as if extracted by another backbone with ``dim`` channels."""
    for split in ("train2014", "val2014"):
        store = FeatureStore(src / split)
        (dst / split).mkdir(parents=True)
        np.save(dst / split / "features.npy", np.ascontiguousarray(store.load_all()[:, :, :dim]))
        np.save(dst / split / "ids.npy", store.ids)
        meta = {**store.meta, "dim": dim, "backbone": "other-net", "layer": "last"}
        (dst / split / "meta.json").write_text(json.dumps(meta))


def test_features_of_another_dimension_than_the_checkpoint_are_refused(make_cfg, smoke_features, tmp_path):
    cfg = make_cfg("vqa", tmp_path / "run", epochs=2)
    train(cfg, stop_after_epoch=1, progress=False)
    ref = FeatureStore(smoke_features / "train2014")
    dim, backbone = ref.dim, ref.meta["backbone"]
    other_backbone_store(smoke_features, tmp_path / "other", dim=dim // 2)
    assert FeatureBank({"x": FeatureStore(tmp_path / "other" / "val2014")}).dim == dim // 2
    moved = make_cfg("vqa", tmp_path / "run", epochs=2, features=str(tmp_path / "other"))
    with pytest.raises(DataError, match=rf"feature dimension mismatch: .*checkpoint\.pt expects {dim}-d regions "
                                        rf"\({backbone}\).* have {dim // 2}-d \(other-net\)"):
        train(moved, progress=False)
    assert load_checkpoint(tmp_path / "run")["epoch"] == 0  # the checkpoint is untouched


def test_a_resume_or_reuse_on_other_inputs_is_refused(make_cfg, smoke_data, smoke_features, tmp_path):
    import shutil

    cfg = make_cfg("vqa", tmp_path / "run", epochs=2)
    train(cfg, stop_after_epoch=1, progress=False)
    # same dimension, another image size: only the checkpoint's feature meta tells them apart
    other = tmp_path / "other"
    shutil.copytree(smoke_features, other)
    for split in ("train2014", "val2014"):
        meta = json.loads((other / split / "meta.json").read_text())
        (other / split / "meta.json").write_text(json.dumps({**meta, "image_size": 224}))
    with pytest.raises(DataError, match=r"checkpoint\.pt was trained on features with image_size=\d+, but the "
                                        r"feature stores in .*other have image_size=224"):
        train(make_cfg("vqa", tmp_path / "run", epochs=2, features=str(other)), progress=False)
    val_only = tmp_path / "val_only"  # only the second store differs: the checkpoint's meta is the first's
    shutil.copytree(smoke_features, val_only)
    meta = json.loads((val_only / "val2014" / "meta.json").read_text())
    (val_only / "val2014" / "meta.json").write_text(json.dumps({**meta, "image_size": 224}))
    with pytest.raises(DataError, match=r"the feature stores disagree on image_size: .*val_only/train2014 has \d+, "
                                        r".*val_only/val2014 has 224"):  # refused before the checkpoint is read
        train(make_cfg("vqa", tmp_path / "run", epochs=2, features=str(val_only)), progress=False)
    # other training questions: another vocabulary (the same size would only scramble the embedding rows)
    data = tmp_path / "data"
    shutil.copytree(smoke_data, data)
    qfile = next((data / "vqa").glob("*train2014_questions.json"))
    questions = json.loads(qfile.read_text())
    for q in questions["questions"]:
        q["question"] = q["question"].replace("what", "which")
    qfile.write_text(json.dumps(questions))
    with pytest.raises(DataError, match=r"checkpoint\.pt was trained with another vocabulary than the training "
                                        r"data in .*data gives"):
        train(make_cfg("vqa", tmp_path / "run", epochs=2, data=str(data)), progress=False)
    assert load_checkpoint(tmp_path / "run")["epoch"] == 0  # untouched
    done = train(cfg, progress=False)  # the run's own inputs: it finishes
    assert (done.run_dir / "inputs.json").is_file()
    with pytest.raises(DataError, match=r"run was trained on features with image_size=\d+, but .*other have "
                                        r"image_size=224"):
        train(make_cfg("vqa", tmp_path / "run", epochs=2, features=str(other)), progress=False)  # finished, reused?
    assert train(cfg, progress=False).metrics == done.metrics


def test_a_damaged_checkpoint_is_a_one_line_error(make_cfg, tmp_path):
    cfg = make_cfg("vqa", tmp_path / "run", epochs=2)
    train(cfg, stop_after_epoch=1, progress=False)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    good = ckpt.read_bytes()
    for damage in (good[: len(good) // 2], b"", np.random.default_rng(0).bytes(2048)):
        ckpt.write_bytes(damage)
        with pytest.raises(DataError, match=r"cannot read checkpoint .*checkpoint\.pt: .*; delete it") as err:
            train(cfg, progress=False)
        assert "\n" not in str(err.value)
    torch.save({"model": {}}, ckpt)
    with pytest.raises(DataError, match=r"checkpoint\.pt is not a checkpoint of dan\.train \(missing optimizer"):
        train(cfg, progress=False)
    ckpt.write_bytes(good)
    state = torch.load(ckpt, weights_only=False)
    for config in ({**state["config"], "warmup_epochs": 3}, ["task"]):  # another version's field; no object at all
        torch.save({**state, "config": config}, ckpt)
        with pytest.raises(ConfigError, match=r"checkpoint\.pt is a checkpoint of another configuration; choose "
                                              r"another run folder \(--out; TrainConfig\.out in a notebook\)"):
            train(cfg, progress=False)
    (tmp_path / "run" / "metrics.json").write_text("{}")  # a finished run whose config.json is not an object
    (tmp_path / "run" / "config.json").write_text("[]")
    with pytest.raises(ConfigError, match="finished run of another configuration"):
        train(cfg, progress=False)


def test_runs_that_cannot_train_or_validate_are_refused_before_writing(make_cfg, smoke_data, tmp_path):
    import shutil

    with pytest.raises(ConfigError, match=r"no training step possible: \d+ training images in batches of 1 give no "
                                          r"batch of at least 2"):
        train(make_cfg("matching", tmp_path / "m", epochs=1, batch_size=1), progress=False)
    assert not (tmp_path / "m").exists()
    data = tmp_path / "data"
    shutil.copytree(smoke_data, data)
    for ann in (data / "vqa").glob("*val2014_annotations.json"):
        ann.unlink()
    with pytest.raises(DataError, match=r"validation split 'val2014' has \d+ questions without annotations .*not "
                                        r"found next to .*val2014_questions\.json"):
        train(make_cfg("vqa", tmp_path / "v", epochs=1, data=str(data)), progress=False)
    assert not (tmp_path / "v").exists()


def test_adam_applies_weight_decay_and_the_cpu_profiles_say_they_use_none(make_cfg, tmp_path):
    from dan.config import deviations
    from dan.train import build_optimizer

    cfg = preset("default", "vqa")
    assert cfg.optimizer == "adam" and cfg.weight_decay == 0.0 and deviations(cfg)["weight_decay"] == (0.0, 5e-4)
    p = torch.nn.Parameter(torch.ones(3))
    opt = build_optimizer(preset("default", "vqa", weight_decay=0.1), [p], torch.device("cpu"))
    assert opt.param_groups[0]["weight_decay"] == 0.1
    p.grad = torch.zeros(3)
    opt.step()  # no gradient: only the decay moves the weights
    assert torch.all(p.detach() < 1.0)


def test_an_overridden_run_gets_its_own_folder_and_the_preset_keeps_its_own(monkeypatch, tmp_path):
    from dan.train import run_dir_for

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    (tmp_path / "_toc.yml").write_text("")
    (tmp_path / "dan").mkdir()
    plain = run_dir_for(preset("smoke", "vqa"))
    assert plain.name == "vqa-dual-K2-s0"
    assert run_dir_for(preset("smoke", "vqa", steps=3, seed=1)).name == "vqa-dual-K3-s1"  # in the name already
    assert run_dir_for(preset("smoke", "vqa", threads=2, device="cpu")).name == "vqa-dual-K2-s0"  # not identity
    one = run_dir_for(preset("smoke", "vqa", epochs=1))
    assert one.parent == plain.parent and one.name.startswith("vqa-dual-K2-s0-") and len(one.name) == 23
    assert run_dir_for(preset("smoke", "vqa", epochs=1)) == one  # the same override: the same folder
    assert run_dir_for(preset("smoke", "vqa", epochs=2)) != one and run_dir_for(preset("smoke", "vqa", lr=1e-3)) != one


def test_bf16_autocast_training_runs_and_is_recorded(vqa_run, make_cfg, tmp_path):
    """The GPU default (bf16 autocast) exercised on the CPU: the step, the fp32 loss and the recorded precision."""
    assert vqa_run.metrics["training_precision"] == "fp32"  # amp "auto" is fp32 on the CPU
    cfg = make_cfg("vqa", tmp_path / "bf16", epochs=2, amp="bf16")
    res = train(cfg, progress=False)
    assert res.metrics["training_precision"] == "bf16 autocast"
    assert all(np.isfinite(h["loss"]) for h in res.history)
    assert res.history[-1]["loss"] < res.history[0]["loss"] * 1.05  # it trains, not diverges
    with pytest.raises(ConfigError, match=r"unknown amp 'fp8'; accepted: auto, bf16, off"):
        make_cfg("vqa", tmp_path / "x", amp="fp8")


def test_a_run_written_before_a_config_field_existed_is_still_reused(vqa_run, tmp_path):
    """``config.json`` of an older version lacks newer fields (e.g. ``amp``): they count as their defaults."""
    saved = json.loads((vqa_run.run_dir / "config.json").read_text())
    old = {k: v for k, v in saved.items() if k != "amp"}
    assert vqa_run.config.same_identity(old)
    assert not vqa_run.config.same_identity({**old, "amp": "bf16"})
    assert not vqa_run.config.same_identity({**old, "seed": 99})


def test_features_stay_resident_on_a_gpu_only_when_they_fit(smoke_features, monkeypatch, capsys):
    from dan.prepare import want_resident

    stores = {n: FeatureStore(smoke_features / n) for n in ("train2014", "val2014")}
    need = sum(s.nbytes for s in stores.values())
    assert need == sum(s.load_all().nbytes for s in stores.values())
    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert want_resident("yes", stores, cpu) and not want_resident("no", stores, gpu)
    assert not want_resident("auto", stores, cpu)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * need, 4 * need))  # fits
    assert want_resident("auto", stores, gpu)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (need, 4 * need))  # would take all
    assert not want_resident("auto", stores, gpu)
    assert "stay in host memory" in capsys.readouterr().err


def test_full_profile_preset_trains_on_cpu_at_toy_scale(smoke_data, tmp_path):
    """The `full` profile's code path (14x14x1280 EfficientNet-Lite0 448 px features, the paper's sizes, SGD,
    dropout, clipping) runs end to end on the smoke images, so the GPU session is not the first to try it."""
    from dataclasses import replace

    from dan.features import FEATURE_PROFILES, build_features

    torch.set_num_threads(2)
    stores = build_features(smoke_data, tmp_path / "features",
                            replace(FEATURE_PROFILES["full"], batch_size=8, num_workers=0, device="cpu"),
                            progress=False)
    assert {s.grid for s in stores.values()} == {(14, 14)} and {s.dim for s in stores.values()} == {1280}
    for task in ("vqa", "matching"):
        cfg = preset("full", task, data=str(smoke_data), features=str(tmp_path / "features"), device="cpu",
                     out=str(tmp_path / task), epochs=1, max_train=64 if task == "vqa" else None)
        assert (cfg.hidden_dim, cfg.optimizer, cfg.dropout, cfg.steps) == (512, "sgd", 0.5, 2)
        res = train(cfg, progress=False)
        assert res.metrics["training_precision"] == "fp32"
        assert np.isfinite(res.history[0]["loss"])
        assert "epochs" in res.metrics["deviations_from_paper"]


def test_compiled_training_step_matches_the_eager_one(make_cfg, tmp_path):
    """``compile="default"`` (torch.compile of the step, inductor on the CPU) trains the same model: the first
    epoch's loss agrees with eager training to rounding, and the run records the setting."""
    eager = train(make_cfg("vqa", tmp_path / "eager", epochs=1, max_train=256), progress=False)
    compiled = train(make_cfg("vqa", tmp_path / "compiled", epochs=1, max_train=256, compile="default"),
                     progress=False)
    assert compiled.metrics["compile"] == "default" and "compile" not in eager.metrics
    assert compiled.history[0]["loss"] == pytest.approx(eager.history[0]["loss"], rel=1e-3)
    assert compiled.metrics["overall"] == pytest.approx(eager.metrics["overall"], abs=2.0)
    assert compiled.config.same_identity(eager.config.identity())  # a speed setting, not a different run
    with pytest.raises(ConfigError, match=r"unknown compile 'fast'; accepted: off, default, reduce-overhead"):
        make_cfg("vqa", tmp_path / "x", compile="fast")


def test_gpu_optimizer_is_the_fused_kernel_with_the_same_updates_and_resumes_anywhere():
    from dan.config import TrainConfig
    from dan.train import build_optimizer, load_optimizer_state

    cfg = TrainConfig(task="vqa", optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4)
    torch.manual_seed(0)
    init = [torch.randn(7, 5), torch.randn(5)]
    grads = [[torch.randn_like(t) for t in init] for _ in range(3)]
    finals = {}
    for name in ("cpu", "cuda"):  # fused SGD also runs on CPU tensors, so the "GPU" choice is checked here
        params = [torch.nn.Parameter(t.clone()) for t in init]
        opt = build_optimizer(cfg, params, torch.device(name))
        assert bool(opt.param_groups[0].get("fused")) == (name == "cuda")
        for g in grads:
            for p, gi in zip(params, g, strict=True):
                p.grad = gi.clone()
            opt.step()
        finals[name] = (params, opt.state_dict())
    for a, b in zip(finals["cpu"][0], finals["cuda"][0], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    params = [torch.nn.Parameter(t.clone()) for t in init]
    opt = build_optimizer(cfg, params, torch.device("cpu"))
    load_optimizer_state(opt, finals["cuda"][1], torch.device("cpu"))  # a GPU checkpoint resumed on the CPU
    assert not opt.param_groups[0]["fused"] and opt.state[params[0]]["momentum_buffer"].shape == (7, 5)


def test_a_finished_run_is_not_reused_on_other_data(vqa_run, make_cfg, smoke_data, tmp_path):
    """Same configuration, same vocabulary, but one validation answer changed (e.g. the data regenerated with
    another seed in place): reusing the run would report the old data's accuracy as this data's."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(smoke_data, data)
    ann = next((data / "vqa").glob("*val2014_annotations.json"))
    content = json.loads(ann.read_text())
    content["annotations"][0]["answers"][0]["answer"] = "zebra"
    ann.write_text(json.dumps(content))
    cfg = make_cfg("vqa", vqa_run.run_dir, data=str(data))  # the reference run's folder, other data
    with pytest.raises(DataError, match=r"was trained on other data: data file .*val2014_annotations\.json has "
                                        r"other content now; use the data it was trained on, or another run folder "
                                        r"\(--out; TrainConfig\.out in a notebook\)"):
        train(cfg, progress=False)
    recorded = json.loads((vqa_run.run_dir / "inputs.json").read_text())
    assert set(recorded["feature_ids"]) == {"train2014", "val2014"} and len(recorded["data"]) >= 4
    assert train(make_cfg("vqa", vqa_run.run_dir), progress=False).metrics == vqa_run.metrics  # its own data
    (tmp_path / "elsewhere").mkdir()  # a run kept without its data: nothing to compare, reused as it is
    kept = train(make_cfg("vqa", vqa_run.run_dir, data=str(tmp_path / "elsewhere")), progress=False)
    assert kept.metrics == vqa_run.metrics


def test_a_finished_run_is_not_reused_on_feature_stores_with_other_image_ids(vqa_run, make_cfg, smoke_features,
                                                                             tmp_path):
    """Stores of the same kind and size but another image list (the last id replaced by one no question is
    about): rows would no longer belong to the images the run was trained on."""
    import shutil

    import numpy as np

    features = tmp_path / "features"
    shutil.copytree(smoke_features, features)
    ids_file = features / "val2014" / "ids.npy"
    ids = np.load(ids_file)
    ids[-1] = ids.max() + 1000  # still sorted and unique: the store opens as before
    np.save(ids_file, ids)
    with pytest.raises(DataError, match=r"was trained on other data: the image ids of feature store .*val2014 has "
                                        r"other content now"):
        train(make_cfg("vqa", vqa_run.run_dir, features=str(features)), progress=False)


def test_feature_stores_of_different_kinds_are_not_mixed_in_one_run(make_cfg, smoke_features, tmp_path):
    import shutil

    mixed = tmp_path / "features"
    shutil.copytree(smoke_features, mixed)
    meta = json.loads((mixed / "val2014" / "meta.json").read_text())
    (mixed / "val2014" / "meta.json").write_text(json.dumps({**meta, "weights_sha256": "random"}))
    with pytest.raises(DataError, match=r"the feature stores disagree on weights_sha256: .*train2014 has '[0-9a-f]+', "
                                        r".*val2014 has 'random'"):
        train(make_cfg("vqa", tmp_path / "run", epochs=1, features=str(mixed)), progress=False)
    assert not (tmp_path / "run").exists()


def test_deviations_also_name_embeddings_negatives_and_soft_targets():
    from dan.config import deviations

    assert deviations(preset("paper", "vqa")) == {} and deviations(preset("paper", "matching")) == {}
    assert deviations(preset("paper", "vqa", embed_dim=300, soft_targets=True)) == {
        "embed_dim": (300, 512), "soft_targets": (True, False)}
    assert deviations(preset("paper", "matching", negatives="hardest")) == {"negatives": ("hardest", "sampled")}
    assert deviations(preset("paper", "vqa", hidden_dim=256))["embed_dim"] == (256, 512)  # unset: follows hidden


def test_vqa_tensors_hold_every_soft_score_and_batches_trim_to_their_longest_question(tmp_path):
    from dan.batches import batch_text, vqa_tensors
    from dan.bench import write_random_store
    from dan.data.vqa import VQAExample

    bank = FeatureBank({"val2014": write_random_store(tmp_path / "s", num_images=3, grid=(1, 2), dim=4)})
    answers = AnswerVocab(["red", "blue", "green", "gray", "pink"])
    vocab = Vocab(["<pad>", "<unk>", "what", "is", "it", "why"])
    four = ["red"] + ["blue"] * 2 + ["green"] * 3 + ["gray"] * 4  # 1, 2, 3, 4 of 10: 0.3, 0.6, 0.9, 1.0
    examples = [VQAExample(7, 2, "what is it", four, "gray", "other", None),
                VQAExample(8, 0, "why", ["zz"] * 10, "zz", "other", None)]  # no answer in the vocabulary
    t = vqa_tensors(examples, vocab, answers, bank, "val2014", "test")
    assert t.rows.tolist() == [2, 0] and t.targets.tolist() == [3, -1]
    soft = t.soft_targets(np.array([0, 1]), len(answers))
    assert torch.allclose(soft, torch.tensor([[0.3, 0.6, 0.9, 1.0, 0.0], [0.0] * 5]))
    tokens, lengths = batch_text(t.tokens, t.lengths, np.array([1]), torch.device("cpu"))
    assert tokens.tolist() == [[5]] and lengths.tolist() == [1]  # 1 column, not the 3 of the longest question
    tokens, _ = batch_text(t.tokens, t.lengths, np.array([1, 0]), torch.device("cpu"))
    assert tokens.tolist() == [[5, 0, 0], [2, 3, 4]]


def test_epoch_batches_cover_the_data_once_in_a_new_order_each_epoch():
    from types import SimpleNamespace

    from dan.step import epoch_batches

    cfg = preset("smoke", "vqa", batch_size=4)
    epochs = [np.concatenate(epoch_batches(10, cfg, e, None)) for e in range(3)]
    assert all(sorted(order.tolist()) == list(range(10)) for order in epochs)
    assert [len(b) for b in epoch_batches(10, cfg, 0, None)] == [4, 4, 2]
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])
    assert np.array_equal(epochs[1], np.concatenate(epoch_batches(10, cfg, 1, None)))  # a function of the epoch
    prep = SimpleNamespace(train=SimpleNamespace(per_image=3))
    cfg = preset("smoke", "matching", batch_size=3)
    batches = epoch_batches(8, cfg, 0, prep)  # 3 rounds of 8 images in batches of 3, 3, 2
    images = np.concatenate([b[0] for b in batches])
    captions = np.concatenate([b[1] for b in batches])
    assert sorted(captions.tolist()) == list(range(24))  # every caption once per epoch
    assert np.array_equal(captions // 3, images)  # each with its own image
    assert all(len(set(b[0].tolist())) == b.shape[1] for b in batches)  # never two captions of one image
    assert all(b.shape[1] > 1 for b in epoch_batches(7, cfg, 0, prep))  # a one-pair tail has no negative


@pytest.mark.parametrize("clip_mode", ["value", "norm"])
def test_a_step_uses_the_soft_targets_and_the_clip_mode_asked_for(make_cfg, tmp_path, monkeypatch, clip_mode):
    import dan.step as step_module

    calls: dict[str, list] = {"loss": [], "value": [], "norm": []}

    def spy_loss(logits, targets, soft=None):
        loss = vqa_loss(logits, targets, soft)
        calls["loss"].append((soft, tuple(logits.shape), loss.item()))
        return loss

    from dan.losses import vqa_loss

    real_value, real_norm = torch.nn.utils.clip_grad_value_, torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(step_module, "vqa_loss", spy_loss)  # the step's loss (dan.step.StepLoss)
    monkeypatch.setattr(torch.nn.utils, "clip_grad_value_",
                        lambda p, v, **kw: calls["value"].append(v) or real_value(p, v, **kw))
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_",
                        lambda p, v, **kw: calls["norm"].append(v) or real_norm(p, v, **kw))
    cfg = make_cfg("vqa", tmp_path / clip_mode, epochs=1, max_train=70, soft_targets=True, clip_mode=clip_mode,
                   grad_clip=0.5)
    run = train(cfg, progress=False)
    sizes = [shape[0] for _, shape, _ in calls["loss"]]
    assert sizes == [32, 32, 6]
    assert all(s is not None and s.shape == shape and bool((s.sum(1) > 0).any()) for s, shape, _ in calls["loss"])
    assert calls[clip_mode] == [0.5] * 3 and calls["norm" if clip_mode == "value" else "value"] == []
    # the epoch's loss is the mean over questions, so the 6-question tail weighs 6/70, not 1/3
    per_question = sum(shape[0] * loss for _, shape, loss in calls["loss"]) / sum(sizes)
    assert run.history[0]["loss"] == pytest.approx(per_question, rel=1e-6)


def test_identity_leaves_out_only_the_settings_that_do_not_change_the_result():
    """Every field of TrainConfig defines a run's result except where it runs and how fast (device, threads,
    resident features, evaluation batch, compile) and where its folders are: a field dropped from the identity
    (e.g. ``max_train``) would let a finished run be reused for another setting."""
    import dataclasses

    from dan.config import TrainConfig

    cfg = preset("smoke", "vqa")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert fields - set(cfg.identity()) == {"device", "threads", "resident_features", "eval_batch_size", "out",
                                            "data", "features", "compile"}
    assert not cfg.same_identity(preset("smoke", "vqa", max_train=10).identity())


def test_the_paper_preset_runs_on_the_real_profiles_folders_and_its_deviations_follow_the_task():
    from dan.config import deviations

    assert preset("paper", "vqa").profile == "real" and preset("paper", "matching").profile == "real"
    for task in ("vqa", "matching"):  # the paper's data too: m-DAN on Flickr30K's Karpathy split
        assert preset("paper", task) == preset("real", task)
    assert preset("paper", "matching").captions_file == "captions/dataset_flickr30k.json"
    # refused by validate (a run would ignore them), and so set here without it, as an older config.json may hold
    assert deviations(dataclasses.replace(preset("paper", "vqa"), negatives="hardest")) == {}  # r-DAN: no negatives
    assert deviations(dataclasses.replace(preset("paper", "matching"), soft_targets=True)) == {}  # m-DAN: no answers


def test_a_data_file_the_run_did_not_read_or_one_rewritten_in_place_is_a_difference(make_cfg, smoke_data, tmp_path):
    """``check_recorded_inputs``: a data file that exists now but is not in the run's record (here the grounding
    file, which the run would now read) is refused; and a file rewritten with the same size is seen by its
    content, also within one process (the digest cache is keyed by modification time too)."""
    import hashlib
    import shutil

    from dan.checkpoint import INPUTS, _digest, check_recorded_inputs, data_files, input_digests

    data = tmp_path / "data"
    shutil.copytree(smoke_data, data)
    cfg = make_cfg("vqa", tmp_path / "run", data=str(data))
    assert "grounding.json" in data_files(cfg)
    run = tmp_path / "run"
    run.mkdir()
    recorded = input_digests(cfg, [])
    (run / INPUTS).write_text(json.dumps(recorded))
    check_recorded_inputs(run, cfg)  # the same inputs: passes
    del recorded["data"]["grounding.json"]
    (run / INPUTS).write_text(json.dumps(recorded))
    with pytest.raises(DataError, match=r"other data: data file .*grounding\.json was not read by it"):
        check_recorded_inputs(run, cfg)

    path = data / "grounding.json"
    before = _digest(path)
    assert before == hashlib.sha256(path.read_bytes()).hexdigest()
    content = path.read_bytes()
    k = content.index(b'"width"')
    path.write_bytes(content[:k] + b'"w1dth"' + content[k + 7:])  # same size, other content
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert path.stat().st_size == len(content)
    assert _digest(path) == hashlib.sha256(path.read_bytes()).hexdigest() != before


def test_feature_stores_decoded_another_way_are_not_mixed_in_one_run(make_cfg, smoke_features, tmp_path):
    """One split decoded on the device (torchvision), the other by PIL: same backbone, size and weights, but not
    the same pixels; ``check_one_kind`` names the difference."""
    import shutil

    mixed = tmp_path / "features"
    shutil.copytree(smoke_features, mixed)
    meta = json.loads((mixed / "val2014" / "meta.json").read_text())
    other = "torchvision.io.decode_jpeg on the device, pil resize"
    assert meta["decode"] != other
    (mixed / "val2014" / "meta.json").write_text(json.dumps({**meta, "decode": other}))
    with pytest.raises(DataError, match=r"the feature stores disagree on decode: .*val2014 has 'torchvision"):
        train(make_cfg("vqa", tmp_path / "run", epochs=1, features=str(mixed)), progress=False)
    assert not (tmp_path / "run").exists()


def test_equal_states_give_byte_identical_checkpoints(tmp_path) -> None:
    """torch.save given a path names the archive's records after it: written through the atomic temp file, two
    saves of one state differed in bytes (``.checkpoint.pt.<pid>.<random>/data.pkl``). Written through a file
    object they are ``archive/...`` and a rerun's checkpoint is byte for byte the first one's."""
    import types
    import zipfile

    from dan.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1])
    prep = types.SimpleNamespace(vocab=Vocab.build([["a", "b"]], min_count=1), answers=None,
                                 bank=types.SimpleNamespace(dim=3, meta={"backbone": "x"}))
    cfg = preset("smoke", "matching")
    paths = [tmp_path / name / "checkpoint.pt" for name in ("one", "two")]
    for path in paths:
        save_checkpoint(path, model, opt, sched, 0, cfg, prep, [{"epoch": 1}])
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert all(n.startswith("archive/") for n in zipfile.ZipFile(paths[0]).namelist())


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_resumed_runs_checkpoint_is_byte_identical_to_the_uninterrupted_runs(tmp_path, optimizer) -> None:
    """A state resumed from a checkpoint (optimizer and scheduler loaded, history read back) saves the same
    bytes as the same state never written: the unpickled strings (the optimizer's 'lr', 'weight_decay', ...) are
    not the interned ones of a fresh run, and pickle shares only identical objects, so a run killed and resumed
    ended with an equal state in a checkpoint.pt of other bytes (sha256 sums of the two runs disagreed)."""
    import types

    from dan.checkpoint import read_checkpoint, save_checkpoint
    from dan.step import build_optimizer, load_optimizer_state

    cfg = preset("smoke", "vqa", optimizer=optimizer, lr_decay_epochs=[1])
    prep = types.SimpleNamespace(vocab=Vocab.build([["a", "b"]], min_count=1), answers=None,
                                 bank=types.SimpleNamespace(dim=3, meta={"backbone": "x"}))

    def fresh():
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 2)
        opt = build_optimizer(cfg, list(model.parameters()), torch.device("cpu"))
        return model, opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[1])

    def epoch(model, opt, sched, history, k):
        opt.zero_grad()
        model(torch.ones(4, 3)).sum().backward()
        opt.step()
        sched.step()
        history.append({"epoch": k + 1, "loss": 0.5, "lr": opt.param_groups[0]["lr"]})

    model, opt, sched = fresh()  # uninterrupted: two epochs
    history: list[dict] = []
    for k in range(2):
        epoch(model, opt, sched, history, k)
        save_checkpoint(tmp_path / "whole" / "checkpoint.pt", model, opt, sched, k, cfg, prep, history)
    first = tmp_path / "first" / "checkpoint.pt"  # resumed: the first epoch's checkpoint read back
    model, opt, sched = fresh()
    epoch(model, opt, sched, [], 0)
    save_checkpoint(first, model, opt, sched, 0, cfg, prep, [dict(history[0])])
    state = read_checkpoint(first, "cpu")
    model, opt, sched = fresh()
    model.load_state_dict(state["model"])
    load_optimizer_state(opt, state["optimizer"], torch.device("cpu"))
    sched.load_state_dict(state["scheduler"])
    resumed = state["history"]
    epoch(model, opt, sched, resumed, 1)
    save_checkpoint(tmp_path / "resumed" / "checkpoint.pt", model, opt, sched, 1, cfg, prep, resumed)
    whole, resumed_file = tmp_path / "whole" / "checkpoint.pt", tmp_path / "resumed" / "checkpoint.pt"
    assert resumed_file.read_bytes() == whole.read_bytes()


def test_training_applies_the_sgd_recipe_step_by_step(make_cfg, tmp_path, monkeypatch):
    """Two epochs of SGD replayed by hand from the same initial weights and batches: each step's gradient of the
    batch loss alone (not added to the last step's), clipped to a total norm of ``grad_clip`` before the update,
    then ``d = g + wd * p``, ``buf = momentum * buf + d``, ``p -= lr * buf``; the learning rate ``lr`` in epoch 1
    and ``lr * lr_decay`` after ``lr_decay_epochs=[1]``; a one-question tail batch trained too. The final weights
    must be the run's, each epoch's loss the question-weighted mean of its steps' losses, and the history's lr the
    one each epoch trained with. Every step runs the model in training mode."""
    from dan.losses import vqa_loss
    from dan.step import StepLoss, epoch_batches, seed_everything

    lr, momentum, wd, clip, decay = 0.05, 0.9, 0.01, 0.05, 0.5
    cfg = make_cfg("vqa", tmp_path / "run", epochs=2, max_train=65, batch_size=32, optimizer="sgd", lr=lr,
                   momentum=momentum, weight_decay=wd, grad_clip=clip, clip_mode="norm", lr_decay_epochs=[1],
                   lr_decay=decay, dropout=0.0)
    modes: list[bool] = []
    forward = StepLoss.forward

    def spy(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        modes.append(self.model.training)
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(StepLoss, "forward", spy)
    run = train(cfg, progress=False)
    assert modes == [True] * 6  # 65 questions: batches of 32, 32 and 1, in each of 2 epochs

    cpu = torch.device("cpu")
    seed_everything(cfg.seed)  # as train() starts: the same initial weights
    prep = prepare(cfg, cpu)
    model = prep.build_model(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    bufs: list[torch.Tensor | None] = [None] * len(params)
    model.train()
    for epoch, epoch_lr in enumerate([lr, lr * decay]):
        losses, sizes = [], []
        for idx in epoch_batches(len(prep.train), cfg, epoch, prep):
            regions, tokens, lengths, targets = prep.train.batch(idx, prep.bank, cpu)
            loss = vqa_loss(model(regions, tokens, lengths).logits.float(), targets)
            grads = torch.autograd.grad(loss, params)
            norm = torch.sqrt(sum((g.double() ** 2).sum() for g in grads)).item()
            scale = min(clip / (norm + 1e-6), 1.0)
            with torch.no_grad():
                for i, (p, g) in enumerate(zip(params, grads, strict=True)):
                    d = g * scale + wd * p
                    bufs[i] = d.clone() if bufs[i] is None else momentum * bufs[i] + d
                    p -= epoch_lr * bufs[i]
            losses.append(loss.item())
            sizes.append(len(idx))
        assert sizes == [32, 32, 1]
        assert run.history[epoch]["loss"] == pytest.approx(np.dot(losses, sizes) / sum(sizes), rel=1e-5)
        assert run.history[epoch]["lr"] == pytest.approx(epoch_lr)  # the lr this epoch trained with
    saved = load_checkpoint(run.run_dir)["model"]
    for name, value in model.state_dict().items():
        torch.testing.assert_close(saved[name], value, rtol=1e-4, atol=1e-6, msg=name)


def test_the_matching_step_loss_uses_the_configured_margin_and_negatives():
    """``StepLoss`` on m-DAN: the bidirectional hinge of PAPER.md with the config's margin and negatives, written
    out pair by pair on a 3 x 3 similarity matrix (the smoke preset's margin of 1 and sampled negatives are the
    losses' defaults' kind: a step that dropped either would pass the training tests)."""
    from types import SimpleNamespace

    from dan.step import StepLoss

    class Toy(torch.nn.Module):
        def encode_image(self, regions):  # noqa: ANN001, ANN202
            return SimpleNamespace(embedding=regions)

        def encode_text(self, tokens, lengths):  # noqa: ANN001, ANN202
            return SimpleNamespace(embedding=tokens)

        def similarity(self, a, b):  # noqa: ANN001, ANN202
            return a @ b.T

    img = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    txt = torch.tensor([[3.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    S = (img @ txt.T).tolist()
    margin = 2.5
    expected = 0.0
    for i in range(3):
        neg_caption = max(S[i][j] for j in range(3) if j != i)
        neg_image = max(S[j][i] for j in range(3) if j != i)
        expected += max(0.0, margin - S[i][i] + neg_caption) + max(0.0, margin - S[i][i] + neg_image)
    cfg = preset("smoke", "matching", margin=margin, negatives="hardest")
    loss = StepLoss(Toy(), cfg)(img, txt, None, None, None)
    assert loss.item() == pytest.approx(expected / 3)


def test_sampled_negatives_are_drawn_afresh_each_epoch(make_cfg, tmp_path, monkeypatch):
    """m-DAN's sampled negatives come from a generator seeded per (seed, epoch): the second epoch draws other
    negatives than the first (seeded per seed alone, every epoch repeated the same draws)."""
    import dan.losses

    drawn: list[torch.Tensor] = []
    sample = dan.losses.sample_negatives

    def spy(batch, generator=None, device=None):  # noqa: ANN001, ANN202
        picks = sample(batch, generator, device)
        drawn.append(torch.stack(picks))
        return picks

    monkeypatch.setattr(dan.losses, "sample_negatives", spy)
    train(make_cfg("matching", tmp_path / "run", epochs=2), progress=False)
    half = len(drawn) // 2
    assert len(drawn) == 2 * half > 0 and [d.shape for d in drawn[:half]] == [d.shape for d in drawn[half:]]
    assert any(not torch.equal(a, b) for a, b in zip(drawn[:half], drawn[half:], strict=True))


@pytest.mark.parametrize("amp, device, expected", [("auto", "cuda", True), ("auto", "cpu", False),
                                                   ("off", "cuda", False), ("bf16", "cpu", True),
                                                   ("bf16", "cuda", True)])
def test_bf16_autocast_is_on_where_the_amp_setting_says(amp, device, expected):
    """``amp="auto"``: bf16 autocast on a GPU (the GPU profiles' speed), fp32 on the CPU; "off" and "bf16" anywhere.
    The GPU rows need no GPU: a ``torch.device`` is only a name."""
    from dan.step import use_amp

    assert use_amp(preset("smoke", "vqa", amp=amp), torch.device(device)) is expected


def test_cpu_training_numerics_are_deterministic_kernels():
    """``configure_device`` on the CPU turns on deterministic algorithms (a rerun reproduces a run's bits); the
    fixture of conftest restores the flag afterwards."""
    from dan.step import configure_device

    torch.use_deterministic_algorithms(False)
    configure_device(torch.device("cpu"))
    assert torch.are_deterministic_algorithms_enabled()


def test_the_matching_epoch_loss_is_the_mean_over_pairs(make_cfg, tmp_path, monkeypatch):
    """m-DAN's epoch loss weighs each batch by its image-caption pairs (a batch is [2, B] indices: its length is 2
    whatever B), so the smaller tail batches of each caption round weigh less than the full ones."""
    import dan.step as step_module
    from dan.losses import matching_loss

    calls: list[tuple[int, float]] = []

    def spy(S, **kwargs):  # noqa: ANN001, ANN003, ANN202
        loss = matching_loss(S, **kwargs)
        calls.append((S.shape[0], loss.item()))
        return loss

    monkeypatch.setattr(step_module, "matching_loss", spy)
    run = train(make_cfg("matching", tmp_path / "run", epochs=1, batch_size=20), progress=False)
    sizes = [n for n, _ in calls]
    assert len(set(sizes)) > 1  # full batches and tails
    per_pair = sum(n * loss for n, loss in calls) / sum(sizes)
    assert run.history[0]["loss"] == pytest.approx(per_pair, rel=1e-6)


def test_a_checkpoint_resumes_only_with_the_same_vocabulary_and_answer_list(tmp_path):
    """check_resumable compares the checkpoint's vocabulary and answer list with the ones the data gives now: another
    answer list of the same size would train the old output layer against other answers without a word."""
    from types import SimpleNamespace

    from dan.checkpoint import check_resumable

    cfg = preset("smoke", "vqa", out=str(tmp_path / "run"), data=str(tmp_path / "data"),
                 features=str(tmp_path / "feat"), device="cpu")
    vocab, answers = Vocab(["<pad>", "<unk>", "what", "color"]), AnswerVocab(["yes", "no", "red"])
    meta = {"backbone": "b", "layer": "l", "image_size": 8, "grid": [1, 2], "dim": 4, "weights_sha256": "w"}
    state = {"config": cfg.to_dict(), "visual_dim": 4, "feature_meta": meta, "vocab": vocab.to_dict(),
             "answers": answers.to_dict()}

    def prep(vocab: Vocab, answers: AnswerVocab) -> SimpleNamespace:
        return SimpleNamespace(bank=SimpleNamespace(dim=4, meta=meta), vocab=vocab, answers=answers)

    ckpt = tmp_path / "run" / "checkpoint.pt"
    check_resumable(state, ckpt, cfg, prep(vocab, answers))  # the same inputs: resumes
    with pytest.raises(DataError, match=r"checkpoint\.pt was trained with another answer list than the training data"):
        check_resumable(state, ckpt, cfg, prep(vocab, AnswerVocab(["yes", "no", "blue"])))
    with pytest.raises(DataError, match=r"checkpoint\.pt was trained with another vocabulary than the training data"):
        check_resumable(state, ckpt, cfg, prep(Vocab(["<pad>", "<unk>", "which", "color"]), answers))
    with pytest.raises(DataError, match=r"checkpoint\.pt was trained on features with weights_sha256='v', but the "
                                        r"feature stores in .*feat have weights_sha256='w'"):
        check_resumable({**state, "feature_meta": {**meta, "weights_sha256": "v"}}, ckpt, cfg, prep(vocab, answers))


def _store_of(folder: Path, ids: list[int]) -> np.ndarray:
    """A feature store written by hand (1 x 2 grid, 3-d): image ids[k]'s regions all hold the value 10 * ids[k]."""
    rows = np.repeat(10.0 * np.asarray(ids, dtype=np.float16)[:, None, None], 6).reshape(len(ids), 2, 3)
    folder.mkdir(parents=True)
    np.save(folder / "features.npy", rows.astype(np.float16))
    np.save(folder / "ids.npy", np.asarray(ids, dtype=np.int64))
    (folder / "meta.json").write_text(json.dumps({
        "backbone": "hand", "layer": "none", "weights_sha256": "none", "image_size": 8, "grid": [1, 2], "dim": 3,
        "dtype": "float16", "preprocessing": {}, "num_images": len(ids), "skipped": [], "fingerprint": "x"}))
    return rows


def _vqa_files(root: Path, split: str, rows: list[tuple[int, int, str, str]], annotated: bool = True) -> None:
    """Official-format question (and annotation) files: (question id, image id, question, the ten answers')."""
    (root / "vqa").mkdir(parents=True, exist_ok=True)
    (root / "vqa" / f"v2_OpenEnded_mscoco_{split}_questions.json").write_text(json.dumps({"questions": [
        {"question_id": q, "image_id": i, "question": t} for q, i, t, _ in rows]}))
    if annotated:
        (root / "vqa" / f"v2_mscoco_{split}_annotations.json").write_text(json.dumps({"annotations": [
            {"question_id": q, "image_id": i, "multiple_choice_answer": a, "answer_type": "other",
             "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k in range(10)]}
            for q, i, _, a in rows]}))


def test_prepare_vqa_on_hand_made_files_gives_the_expected_answers_targets_and_rows(tmp_path, monkeypatch):
    """Three training questions (answers red, red, yes) about images 12, 10, 11 and one val question (blue, outside
    the training answers) about image 20, with stores written by hand: the majority answer, the targets and the
    feature rows each question reads are known in advance."""
    root, feat = tmp_path / "data", tmp_path / "feat"
    _vqa_files(root, "train2014", [(1, 12, "What color is the ball?", "red"), (2, 10, "What color is the box?", "red"),
                                   (3, 11, "Is it a cube?", "yes")])
    _vqa_files(root, "val2014", [(4, 20, "What color is the cone?", "blue")])
    _store_of(feat / "train2014", [10, 11, 12])
    _store_of(feat / "val2014", [20])
    cfg = preset("smoke", "vqa", out=str(tmp_path / "run"), data=str(root), features=str(feat), device="cpu")
    prep = prepare(cfg, torch.device("cpu"))
    assert prep.answers.answers == ["red", "yes"] and prep.majority_answer == "red"
    assert prep.train.targets.tolist() == [0, 0, 1] and prep.val.targets.tolist() == [-1]
    assert prep.train.rows.tolist() == [2, 0, 1] and prep.val.rows.tolist() == [3]  # val2014 after train2014's 3
    regions = prep.bank.fetch(np.array([3, 2, 0, 1]))  # unsorted rows, two stores: each image its own regions
    assert regions[:, 0, 0].tolist() == [200.0, 120.0, 100.0, 110.0]
    assert "cone" not in prep.vocab and "ball" in prep.vocab  # the vocabulary is the training questions'
    from dan.prepare import want_resident

    need = sum(s.nbytes for s in prep.bank.stores.values())  # 4 images x 2 x 3 fp16
    gpu = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(need / 0.59), 10 * need))
    assert need == 48 and want_resident("auto", prep.bank.stores, gpu)  # under 60 % of the free memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (int(need / 0.61), 10 * need))
    assert not want_resident("auto", prep.bank.stores, gpu)
    _vqa_files(root, "train2014", [(1, 12, "What color is the ball?", "red")], annotated=False)
    (root / "vqa" / "v2_mscoco_train2014_annotations.json").unlink()
    with pytest.raises(DataError, match=r"training split 'train2014' has 1 questions without annotations \(first: "
                                        r"question_id 1\)"):
        prepare(cfg, torch.device("cpu"))


def test_prepare_matching_trains_on_train_and_restval_and_needs_enough_captions_per_image(tmp_path):
    root, feat = tmp_path / "data", tmp_path / "feat"
    images = [(1, "train"), (2, "restval"), (3, "val"), (4, "test")]
    karpathy = {"dataset": "hand", "images": [
        {"filepath": "imgs", "filename": f"{i}.jpg", "imgid": k, "split": split, "sentences": [
            {"raw": f"A red ball number {i} .", "sentid": 10 * i}, {"raw": f"A ball {i} .", "sentid": 10 * i + 1}]}
        for k, (i, split) in enumerate(images)]}
    karpathy["images"][0]["sentences"].append({"raw": "A zebra .", "sentid": 12})  # a third: not read (2 per image)
    (root / "captions").mkdir(parents=True)
    (root / "captions" / "dataset_hand.json").write_text(json.dumps(karpathy))
    _store_of(feat / "imgs", [1, 2, 3, 4])
    cfg = preset("smoke", "matching", out=str(tmp_path / "run"), data=str(root), features=str(feat), device="cpu",
                 captions_file="captions/dataset_hand.json", captions_per_image=2)
    prep = prepare(cfg, torch.device("cpu"))
    assert (prep.train.image_ids.tolist(), prep.val.image_ids.tolist(), prep.test.image_ids.tolist()) == \
        ([1, 2], [3], [4])
    assert prep.train.sentence_ids.tolist() == [10, 11, 20, 21] and prep.val.rows.tolist() == [2]
    assert "ball" in prep.vocab and "zebra" not in prep.vocab
    regions, tokens, lengths = prep.train.batch(np.array([1, 0]), prep.bank, captions=np.array([3, 0]))
    assert regions[:, 0, 0].tolist() == [20.0, 10.0] and lengths.tolist() == [3, 5]  # "a ball 2", "a red ball number 1"
    with pytest.raises(DataError, match=r"captions must be one caption row per image, of that image"):
        prep.train.batch(np.array([0, 1]), prep.bank, captions=np.array([2, 1]))  # rows of the other image
    karpathy["images"][2]["sentences"].pop()  # a val image with one caption
    (root / "captions" / "dataset_hand.json").write_text(json.dumps(karpathy))
    with pytest.raises(DataError, match=r"split 'val'.*: image 3 \(3\.jpg\) has 1 captions, 2 needed"):
        prepare(cfg, torch.device("cpu"))


def test_a_run_folder_with_a_damaged_config_or_inputs_record_names_the_file(tmp_path):
    """config.json that is not an object raised TypeError in load_result, one with an unknown field a ConfigError
    that did not say which file; inputs.json whose feature_ids is not an object raised TypeError in
    finished_metrics (found by fuzzing)."""
    from dan.checkpoint import INPUTS
    from dan.train import finished_metrics, load_result

    run = tmp_path / "run"
    run.mkdir()
    cfg = preset("smoke", "vqa", out=str(run), data=str(tmp_path), features=str(tmp_path))
    for name, content in (("metrics.json", {"overall": 50.0}), ("history.json", [])):
        (run / name).write_text(json.dumps(content))
    for content, message in (([1, 2], "expected a run's configuration (a JSON object), got list"),
                             ({**cfg.identity(), "stepz": 2}, "unknown config field(s): stepz")):
        (run / "config.json").write_text(json.dumps(content))
        with pytest.raises(DataError, match=re.escape(f"{run / 'config.json'}: {message}")):
            load_result(run)
    (run / "config.json").write_text(json.dumps(cfg.identity()))
    assert load_result(run).config.identity() == cfg.identity()
    (run / INPUTS).write_text(json.dumps({"data": {}, "feature_ids": 7}))
    with pytest.raises(DataError, match=re.escape(f"{run / INPUTS}: field 'feature_ids' must be an object")):
        finished_metrics(cfg)
    (run / INPUTS).write_text(json.dumps({"data": {}, "feature_ids": {}}))
    assert finished_metrics(cfg) == {"overall": 50.0}


def test_a_folder_with_other_files_is_refused_as_a_run_folder(make_cfg, smoke_data, tmp_path):
    """--out naming a folder that holds files but no config.json (the data set's folder, say) trained into it beside
    its files; now it is refused before anything is written there. A killed writer's temp file does not count, so a
    run killed before its config.json still starts."""
    cfg = make_cfg("vqa", smoke_data)
    before = sorted(p.name for p in smoke_data.iterdir())
    with pytest.raises(ConfigError, match=r"holds .* but no config\.json, so it is not a run folder of dan\.train; "
                                          r"choose another run folder"):
        train(cfg, progress=False)
    assert sorted(p.name for p in smoke_data.iterdir()) == before
    many = tmp_path / "many"
    many.mkdir()
    for name in ("a.txt", "b.txt", "c.txt", "d.txt", ".config.json.123-host.abc.tmp"):
        (many / name).write_text("x")
    with pytest.raises(ConfigError, match=r"holds a\.txt, b\.txt, c\.txt and 1 more but no config\.json"):
        train(make_cfg("vqa", many), progress=False)
    killed = tmp_path / "killed"
    killed.mkdir()
    (killed / ".config.json.123-host.abc.tmp").write_text("{")
    from dan.train import _check_run_folder

    _check_run_folder(killed)  # only a temp file: a run may start here


def test_a_run_of_another_configuration_is_refused_naming_what_differs(vqa_run, make_cfg, tmp_path):
    """Resuming or reusing a run folder under a changed config said only "another configuration": which of some
    30 fields differed (a flag given by mistake, a preset changed since) was left to find by hand."""
    import shutil

    run = tmp_path / "run"
    shutil.copytree(vqa_run.run_dir, run)
    with pytest.raises(ConfigError, match=r"finished run of another configuration than vqa-dual-K3-s0 \(profile "
                                          r"'smoke': steps 2 in its config\.json, 3 now; lr 0\.003 in its "
                                          r"config\.json, 0\.01 now\); choose"):
        train(make_cfg("vqa", run, steps=3, lr=0.01), progress=False)
    (run / "metrics.json").unlink()  # unfinished: its checkpoint is compared
    with pytest.raises(ConfigError, match=r"checkpoint\.pt is a checkpoint of another configuration; choose .* or "
                                          r"delete it \(epochs 6 in the checkpoint, 7 now\)$"):
        train(make_cfg("vqa", run, epochs=7), progress=False)
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    torch.save({**state, "config": {**state["config"], "warmup_epochs": 3}}, run / "checkpoint.pt")
    with pytest.raises(ConfigError, match=r"\(warmup_epochs 3 in the checkpoint, unknown to this version of dan\)$"):
        train(make_cfg("vqa", run), progress=False)


@pytest.mark.parametrize("task", ["vqa", "matching"])
def test_a_min_word_count_that_leaves_no_word_is_refused(make_cfg, tmp_path, task):
    """min_word_count above every word's count made a vocabulary of <pad> and <unk> only: the run trained on text that
    was all <unk>, without a word. Refused before training, naming the setting and the largest count that works."""
    from dan.io import ConfigError
    from dan.prepare import prepare

    with pytest.raises(ConfigError, match=r"min_word_count 1000000 leaves no word in the vocabulary of .*the most "
                                          r"frequent word occurs (\d+) times\); choose a min_word_count of at most \1"):
        prepare(make_cfg(task, tmp_path / "run", min_word_count=1_000_000), torch.device("cpu"))
    assert not (tmp_path / "run").exists()


class _BarMade(Exception):
    """Raised by the stubbed tqdm once train() has made its progress bar."""


def test_the_progress_bar_names_the_run_folder_of_a_run_with_overrides(smoke_data, smoke_features, monkeypatch,
                                                                          tmp_path, capsys) -> None:
    """papermill notebooks/03_rdan.ipynb ... -p profile smoke -p epochs 2 trains into vqa-dual-K2-s0-63b46a19
    (run_dir_for: a folder of its own), but its bar read "vqa-dual-K2-s0:  50%|..." and its note "[vqa-dual-K2-s0]
    profile 'smoke' departs from the paper in: ...": the name of the preset run, another configuration."""
    from dan import train as train_module
    from dan.train import run_dir_for

    made = []

    def fake_tqdm(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        made.append(kwargs["desc"])
        raise _BarMade

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    monkeypatch.setattr(train_module, "tqdm", fake_tqdm)
    cfg = preset("smoke", "vqa", data=str(smoke_data), features=str(smoke_features), device="cpu", epochs=2)
    folder = run_dir_for(cfg).name
    assert re.fullmatch(r"vqa-dual-K2-s0-[0-9a-f]{8}", folder) and run_dir_for(cfg).parent.is_relative_to(tmp_path)
    with pytest.raises(_BarMade):
        train(cfg)
    assert made == [folder]
    assert capsys.readouterr().err.startswith(f"[{folder}] profile 'smoke' departs from the paper in: ")
    with pytest.raises(_BarMade):  # --out: the folder given
        train(dataclasses.replace(cfg, out=str(tmp_path / "mine")))
    assert made[-1] == "mine"
