"""Data-parallel training (issue 5): ``torchrun --nproc_per_node 2`` on the CPU with gloo trains the smoke r-DAN,
and its quality matches the single-process run of the same configuration."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from dan.train import load_checkpoint, load_result

ROOT = Path(__file__).resolve().parents[1]


def torchrun() -> list[str]:
    exe = Path(sys.executable).with_name("torchrun")
    return [str(exe)] if exe.is_file() else [shutil.which("torchrun") or "torchrun"]


def test_two_process_gloo_run_matches_the_single_process_one(vqa_run, smoke_data, smoke_features, tmp_path):
    out = tmp_path / "ddp"
    cmd = [*torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "dan.train", "--task", "vqa", "--profile",
           "smoke", "--data", str(smoke_data), "--features", str(smoke_features), "--out", str(out),
           "--device", "cpu", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    printed = json.loads(proc.stdout)  # one JSON document: only rank 0 reports
    ddp, single = load_result(out), vqa_run
    assert printed["metrics"] == ddp.metrics and len(ddp.history) == single.config.epochs
    # really two ranks: rank 0 logs the loss of its half of every batch, which is not the whole-batch loss
    assert [h["loss"] for h in ddp.history] != [h["loss"] for h in single.history]
    # the same global batch, gradients averaged over the ranks: the quality of the single-process run
    assert abs(ddp.metrics["overall"] - single.metrics["overall"]) <= 3.0, (ddp.metrics, single.metrics)
    assert ddp.metrics["overall"] >= ddp.metrics["majority_baseline"] + 12.0
    for name in ("checkpoint.pt", "attention.npz", "predictions.csv"):
        assert (out / name).is_file()
    assert load_checkpoint(out)["epoch"] == single.config.epochs - 1
    assert not list(out.glob(".*.tmp"))
