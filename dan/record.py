"""A study run condensed into one JSON record, so a run made on another machine can be shown in the book.

The ``full`` profile (paper sizes) needs a GPU; the book is built on a CPU machine. ``benchmarks/device_session.sh``
runs the full study on a lent GPU and calls ``python -m dan.record --profile full --out F``; the record
(stage times, the K = 2 dual runs' metrics, the ablation summary, the machine and library versions) is then
committed to ``records/`` and the reproduction summary and performance pages display it.

A record is only written from finished results: a missing run or a study that did not finish is an error,
so a half-done GPU session cannot be mistaken for a complete one.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
import sys
from pathlib import Path

from dan.cli import OneLineParser, guard
from dan.config import PROFILES
from dan.io import ConfigError, DataError, read_json, repo_root, study_paths, write_json_atomic

FORMAT = "dan-study-record/1"
RECORDS = "records"  # folder (under the repository root) of committed records


def machine() -> dict:
    """Where this process runs: host CPU count, GPU name and memory (if any), Python/PyTorch versions."""
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "platform": platform.platform(terse=True)}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


def collect(profile: str, seed: int = 0, root: Path | None = None, note: str = "") -> dict:
    """The record of ``profile``'s finished study under ``root`` (see the module docstring)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; accepted: {', '.join(PROFILES)}")
    paths = study_paths(profile, root or repo_root())
    times = read_json(paths.results / "study_times.json", "study times")
    if "total" not in times:
        raise DataError(f"{paths.results / 'study_times.json'} has no total: the {profile} study did not run "
                        f"through (stages recorded: {', '.join(times) or 'none'})")
    runs = {}
    for task in ("vqa", "matching"):
        run = paths.runs / f"{task}-dual-K2-s{seed}"
        runs[task] = {"metrics": read_json(run / "metrics.json", f"{task} run metrics"),
                      "config": read_json(run / "config.json", f"{task} run config"),
                      "history": read_json(run / "history.json", f"{task} run history")}
    ablation = []
    summary = paths.results / "ablation_summary.csv"
    if summary.is_file():
        with open(summary, newline="", encoding="utf-8") as fh:
            ablation = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    return {"format": FORMAT, "profile": profile, "seed": seed,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "stage_seconds": times, "runs": runs, "ablation_summary": ablation, "note": note}


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def load(path: str | Path) -> dict | None:
    """A committed record, or None when there is none; a file of another format is an error."""
    path = Path(path)
    if not path.is_file():
        return None
    rec = read_json(path, "study record")
    if rec.get("format") != FORMAT:
        raise DataError(f"{path}: field 'format' is {rec.get('format')!r}, expected {FORMAT!r}")
    return rec


def record_path(profile: str, root: Path | None = None) -> Path:
    """Where the committed record of ``profile`` lives: ``records/<profile>_profile.json``."""
    return (root or repo_root()) / RECORDS / f"{profile}_profile.json"


def headline(rec: dict) -> dict:
    """One flat row of a record: machine, total minutes, r-DAN accuracy, m-DAN R@1 both ways."""
    vqa = rec["runs"]["vqa"]["metrics"]
    mat = rec["runs"]["matching"]["metrics"]
    m = rec["machine"]
    return {"profile": rec["profile"], "machine": m.get("gpu") or f"CPU ({m.get('cpus')} cores)",
            "date": rec["date"], "study minutes": round(rec["stage_seconds"]["total"] / 60, 1),
            "r-DAN overall (%)": round(vqa["overall"], 1), "majority (%)": round(vqa["majority_baseline"], 1),
            "m-DAN i2t R@1 (%)": round(mat["i2t"]["r1"], 1), "m-DAN t2i R@1 (%)": round(mat["t2i"]["r1"], 1)}


def status_markdown(profile: str = "full", root: Path | None = None) -> str:
    """One paragraph for the book: what the committed record of ``profile`` says, or how to make it."""
    path = record_path(profile, root)
    rec = load(path)
    if rec is None:
        return (f"No run of the `{profile}` profile is recorded yet. It trains at the paper's sizes and needs a "
                f"GPU: on a machine with one, run `bash benchmarks/device_session.sh` (sized for a 10-minute budget on "
                f"one H100/H200, not yet measured; offline, the wheels it needs come from "
                f"`bash benchmarks/device_wheels.sh`), then commit its "
                f"`{profile}_profile.json` as `{path.relative_to(root or repo_root())}`.")
    h = headline(rec)
    return (f"The `{profile}` profile ran end to end on {h['machine']} ({h['date']}) in {h['study minutes']} "
            f"minutes: r-DAN reached {h['r-DAN overall (%)']} % validation accuracy (majority answer "
            f"{h['majority (%)']} %), m-DAN {h['m-DAN i2t R@1 (%)']} % image-to-text and {h['m-DAN t2i R@1 (%)']} % "
            f"text-to-image R@1. Source: `{path.relative_to(root or repo_root())}`."
            + (f" Note: {rec['note']}." if rec.get("note") else ""))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m dan.record", description=__doc__.split("\n\n")[0])
    parser.add_argument("--profile", default="full", help=f"one of {', '.join(PROFILES)} (default: full)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the K = 2 dual runs to record")
    parser.add_argument("--out", type=Path, help="record file (default: records/<profile>_profile.json)")
    parser.add_argument("--note", default="", help="a remark kept with the record (e.g. that the run was resumed)")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    ns = parser.parse_args(argv)

    def go() -> int:
        out = ns.out or record_path(ns.profile)
        rec = collect(ns.profile, ns.seed, note=ns.note)
        write_json_atomic(out, rec, indent=1)
        print(f"[record] {out}: " + ", ".join(f"{k} {v}" for k, v in headline(rec).items()))
        return 0

    return guard(go, ns.debug, parser.prog)


if __name__ == "__main__":
    sys.exit(main())
