"""A study run condensed into one JSON record, so a run made on another machine can be shown in the book.

The ``full`` profile (paper sizes) needs a GPU; the book is built on a CPU machine. ``benchmarks/device_session.sh``
runs the full study on a lent GPU and calls ``python -m dan.record --profile full --out F``; the record
(stage times, the K = 2 dual runs' metrics, the ablation summary, the machine and library versions) is then
committed to ``records/`` and the reproduction summary and performance pages display it.

A record is only written from finished results: a missing run or a study that did not finish is an error,
so a half-done GPU session cannot be mistaken for a complete one. A study that a device call's time limit cut
off and a second call finished (reusing the data, features and runs already made) is recorded with the stage
times of both calls: ``--earlier-log`` reads the cut-off calls from ``device_session.sh``'s log, and
:func:`study_seconds` counts each stage's work once (the second call's quick passes over reused stages are left
out; the cut-off part of the interrupted stage is added to its finishing time).
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import platform
import re
import sys
from pathlib import Path

from dan.cli import OneLineParser, guard, nonempty, nonempty_path
from dan.config import PROFILES
from dan.io import ROOT_HELP, ConfigError, DataError, check_json, read_json, repo_root, study_paths, write_json_atomic
from dan.study import LAST_FULL_TOTAL, TOTAL, read_study_times

FORMAT = "dan-study-record/1"
RUN_FORMAT = "dan-run-record/1"  # one training run made outside the study (e.g. a longer schedule), see collect_run
RECORDS = "records"  # folder (under the repository root) of committed records

# The fields of a record that this module, dan.report and the book read (dan.io.check_json): a record missing one,
# or holding another type, is an error naming the field when it is loaded, not a KeyError in the chapter using it.
_MACHINE = {"gpu?": ("string", None), "cpus": ("int", None)}
_SECONDS = {"*": "number"}
SCHEMAS = {
    FORMAT: {"profile": "string", "date": "string", "machine": _MACHINE, "stage_seconds": _SECONDS,
             "earlier_calls?": [{"stage_seconds": _SECONDS, "wall_seconds?": ("number", None),
                                 "interrupted?": (None, {"stage": "string", "seconds": "number"})}],
             "runs": {"vqa": {"metrics": {"overall": "number", "majority_baseline": "number"}},
                      "matching": {"metrics": {"i2t": {"r1": "number"}, "t2i": {"r1": "number"}}}},
             "note?": ("string", None), "data_seed?": ("int", None)},
    RUN_FORMAT: {"config": {"epochs": "int"}, "wall_seconds": "number", "command?": "string", "date?": "string",
                 "machine?": _MACHINE, "metrics?": "object", "note?": ("string", None),
                 "history?": [{"epoch": "int", "val_i2t_r1?": "number", "val_t2i_r1?": "number"}]},
}


def machine() -> dict:
    """Where this process runs: host CPU count, GPU name and memory (if any), Python/PyTorch versions."""
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count(),
            "platform": platform.platform(terse=True)}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
    return info


def calls_from_log(text: str) -> list[dict]:
    """The study calls that were cut off (rc != 0) in a ``benchmarks/device_session.sh`` log.

    Each is ``{"stage_seconds": {stage: s, ...}, "interrupted": {"stage": name, "seconds": s} | None,
    "wall_seconds": s, "rc": n}``: the stages the call finished, and the one it was running when stopped, whose
    seconds are the call's study wall time less the finished stages (so process start-up is counted, not lost).
    A log may hold several calls (one appended after another); a call that finished (rc 0) is not returned."""
    calls: list[dict] = []
    current: dict | None = None
    for line in text.splitlines():
        if re.match(r"\[device\] full-study: start", line):
            current = {"stage_seconds": {}, "running": None}
        elif current is None:
            continue
        elif m := re.match(r"\[study\] (\S+)\.ipynb \(profile", line):
            current["running"] = m.group(1)
        elif m := re.match(r"\[study\] (\S+)\.ipynb done in ([\d.]+) s", line):
            current["stage_seconds"][m.group(1)] = float(m.group(2))
            current["running"] = None
        elif m := re.match(r"\[device\] full-study: rc (\d+) after ([\d.]+) s", line):
            rc, wall = int(m.group(1)), float(m.group(2))
            if rc != 0:
                done = sum(current["stage_seconds"].values())
                stage = current["running"]
                calls.append({"stage_seconds": current["stage_seconds"], "wall_seconds": wall, "rc": rc,
                              "interrupted": {"stage": stage, "seconds": round(max(wall - done, 0.0), 1)}
                              if stage else None})
            current = None
    return calls


def study_seconds(rec: dict) -> dict[str, float]:
    """Seconds of each stage of a recorded study, counted once over all its calls, and the ``total``.

    A stage that an earlier call finished counts with that call's time (a later call only found its outputs); the
    stage a call was cut off in counts its cut-off seconds plus the time of the call that finished it."""
    counted: dict[str, float] = {}
    finished: set[str] = set()  # stages some call finished: later calls only found their outputs

    def add(stage: str, sec: float) -> None:
        if stage not in finished:
            counted[stage] = counted.get(stage, 0.0) + sec

    for call in rec.get("earlier_calls", []):
        for stage, sec in call["stage_seconds"].items():
            add(stage, sec)  # after the cut-off seconds an earlier call spent on it, if any
            finished.add(stage)
        if call.get("interrupted"):
            add(call["interrupted"]["stage"], call["interrupted"]["seconds"])
    last = {k: v for k, v in rec["stage_seconds"].items() if k != "total"}
    for stage, sec in last.items():
        add(stage, sec)
    # the last call's time outside its stages (start-up; the book build when it made one) counts too
    outside = max(rec["stage_seconds"].get("total", 0.0) - sum(last.values()), 0.0)
    counted["total"] = sum(counted.values()) + outside
    return counted


def stage_rows(rec: dict) -> list[dict]:
    """One row per stage of a record: the seconds counted (:func:`study_seconds`) and each call's own seconds
    (a cut-off stage shows the seconds it ran before the cut; a stage a call did not reach is None)."""
    calls = [*rec.get("earlier_calls", []), {"stage_seconds": rec["stage_seconds"], "interrupted": None}]
    counted = study_seconds(rec)
    rows = []
    for stage, sec in counted.items():
        row = {"stage": stage, "counted seconds": round(sec, 1)}
        if len(calls) > 1:
            for n, call in enumerate(calls, 1):
                own = call["stage_seconds"].get(stage)
                cut = call.get("interrupted")
                if own is None and cut and cut["stage"] == stage:
                    own = cut["seconds"]
                if stage == "total":
                    own = call.get("wall_seconds", call["stage_seconds"].get("total"))
                row[f"call {n} seconds"] = None if own is None else round(own, 1)
        rows.append(row)
    return rows


def collect(profile: str, seed: int = 0, root: Path | None = None, note: str = "",
            earlier_calls: list[dict] | None = None) -> dict:
    """The record of ``profile``'s finished study under ``root`` (see the module docstring). ``seed`` picks the
    K = 2 dual runs recorded; ``data_seed`` says which draw of the generated data set the study ran on (the seed in
    its ``manifest.json``, :func:`dan.data.synth.generated_seed`, which also keys the results folder read,
    :func:`dan.io.study_paths`), or None: the real data sets have no draw, and a manifest that is missing or not
    this generator's leaves it unknown (the folder read is then ``results/<profile>``). Records written before
    the field existed lack it and are read as None, unknown: 01_data regenerated another draw in place then, so
    their absence does not mean draw 0 (the committed ``records/full_profile.json`` was made at draw 0)."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; accepted: {', '.join(PROFILES)}")
    paths = study_paths(profile, root or repo_root())
    data_seed = None
    if profile != "real":
        from dan.data.synth import generated_seed

        data_seed = generated_seed(paths.data, profile)
    times = read_study_times(paths.results / "study_times.json")
    if TOTAL not in times:
        if LAST_FULL_TOTAL in times:  # a partial rerun (--only) after a full one: stage times of two runs
            raise DataError(f"{paths.results / 'study_times.json'} has no total: its last {profile} run was partial "
                            f"(--only), which records no total; its {LAST_FULL_TOTAL!r} "
                            f"({times[LAST_FULL_TOTAL]:.1f} s) is an earlier run's; rerun the whole study to record "
                            f"it (a rerun reuses the notebooks that are current)")
        raise DataError(f"{paths.results / 'study_times.json'} has no total: the {profile} study did not run "
                        f"through (stages recorded: {', '.join(times) or 'none'})")
    runs = {task: _run_files(paths.runs / f"{task}-dual-K2-s{seed}", task) for task in ("vqa", "matching")}
    ablation = []
    summary = paths.results / "ablation_summary.csv"
    if summary.is_file():
        with open(summary, newline="", encoding="utf-8") as fh:
            ablation = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    return {"format": FORMAT, "profile": profile, "seed": seed, "data_seed": data_seed,
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "stage_seconds": times, "earlier_calls": earlier_calls or [], "runs": runs, "ablation_summary": ablation,
            "note": note}


def _run_files(run: Path, what: str) -> dict:
    return {"metrics": read_json(run / "metrics.json", f"{what} run metrics"),
            "config": read_json(run / "config.json", f"{what} run config"),
            "history": read_json(run / "history.json", f"{what} run history")}


def collect_run(run_dir: str | Path, command: str, note: str = "") -> dict:
    """The record of one finished training run (``python -m dan.train ... --out run_dir``): its config, per-epoch
    history and final metrics, the command that made it, the machine, and ``wall_seconds`` (from ``config.json``,
    written at the start, to ``metrics.json``, written last; a resumed run counts its pause too)."""
    run = Path(run_dir)
    if not (run / "metrics.json").is_file():
        raise DataError(f"{run}: not a finished run (no metrics.json); finish it first (rerunning resumes it)")
    wall = (run / "metrics.json").stat().st_mtime - (run / "config.json").stat().st_mtime
    return {"format": RUN_FORMAT, "command": command, "note": note, "wall_seconds": round(wall, 1),
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            **_run_files(run, "the")}


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def load(path: str | Path, fmt: str = FORMAT) -> dict | None:
    """A committed record (a study's, or with ``fmt=RUN_FORMAT`` a single run's), or None when there is none; a
    file of another format is an error."""
    path = Path(path)
    if not path.is_file():
        return None
    rec = read_json(path, "study record" if fmt == FORMAT else "run record")
    if not isinstance(rec, dict):
        raise DataError(f"{path}: expected a record (a JSON object with 'format' {fmt!r}), got a "
                        f"{type(rec).__name__}")
    if rec.get("format") != fmt:
        raise DataError(f"{path}: field 'format' is {rec.get('format')!r}, expected {fmt!r}")
    check_json(rec, SCHEMAS[fmt], str(path))
    return rec


def load_run(name: str, root: Path | None = None) -> dict | None:
    """The committed single-run record ``records/<name>.json`` (:func:`collect_run`), or None when there is none."""
    return load((root or repo_root()) / RECORDS / f"{name}.json", RUN_FORMAT)


def record_path(profile: str, root: Path | None = None) -> Path:
    """Where the committed record of ``profile`` lives: ``records/<profile>_profile.json``."""
    return (root or repo_root()) / RECORDS / f"{profile}_profile.json"


def headline(rec: dict) -> dict:
    """One flat row of a record: machine, total minutes, r-DAN accuracy, m-DAN R@1 both ways."""
    vqa = rec["runs"]["vqa"]["metrics"]
    mat = rec["runs"]["matching"]["metrics"]
    m = rec["machine"]
    return {"profile": rec["profile"], "machine": m.get("gpu") or f"CPU ({m.get('cpus')} cores)",
            "date": rec["date"], "study minutes": round(study_seconds(rec)["total"] / 60, 1),
            "device calls": 1 + len(rec.get("earlier_calls", [])),
            "r-DAN overall (%)": round(vqa["overall"], 1), "majority (%)": round(vqa["majority_baseline"], 1),
            "m-DAN i2t R@1 (%)": round(mat["i2t"]["r1"], 1), "m-DAN t2i R@1 (%)": round(mat["t2i"]["r1"], 1)}


def status_markdown(profile: str = "full", root: Path | None = None) -> str:
    """One paragraph for the book: what the committed record of ``profile`` says, or how to make it."""
    path = record_path(profile, root)
    rec = load(path)
    if rec is None:
        return (f"No run of the `{profile}` profile is recorded yet. It trains at the paper's sizes and needs a "
                f"GPU: on a machine with one, run `bash benchmarks/device_session.sh` (sized for a 10-minute budget on "
                f"one H100/H200; offline, the wheels it needs come from "
                f"`bash benchmarks/device_wheels.sh`), then commit its "
                f"`{profile}_profile.json` as `{path.relative_to(root or repo_root())}`.")
    h = headline(rec)
    calls = ""
    if h["device calls"] > 1:
        calls = (f" (over {h['device calls']} calls: a call's time limit cut the study off and the next one finished "
                 f"it, reusing what was done; each stage's work is counted once)")
    draw = rec.get("data_seed")
    draw = f" on draw {draw} of its generated data (`01_data -p seed {draw}`)" if draw else ""
    return (f"The `{profile}` profile ran end to end{draw} on {h['machine']} ({h['date']}) in {h['study minutes']} "
            f"minutes{calls}: r-DAN reached {h['r-DAN overall (%)']} % validation accuracy (majority answer "
            f"{h['majority (%)']} %), m-DAN {h['m-DAN i2t R@1 (%)']} % image-to-text and {h['m-DAN t2i R@1 (%)']} % "
            f"text-to-image R@1. Source: `{path.relative_to(root or repo_root())}`."
            + (f" Note: {rec['note']}." if rec.get("note") else ""))


def main(argv: list[str] | None = None) -> int:
    parser = OneLineParser(prog="python -m dan.record", description=__doc__.split("\n\n")[0], epilog=ROOT_HELP)
    parser.add_argument("--profile", type=nonempty,
                        help=f"one of {', '.join(PROFILES)} (default: full)")
    parser.add_argument("--seed", type=int, help="seed of the K = 2 dual runs to record (default: 0)")
    parser.add_argument("--out", type=nonempty_path, help="record file (default: records/<profile>_profile.json)")
    parser.add_argument("--note", default="", help="a remark kept with the record (e.g. that the run was resumed)")
    parser.add_argument("--earlier-log", type=nonempty_path, action="append", default=[],
                        help="a device_session.sh log whose cut-off study calls this study finished (repeatable)")
    parser.add_argument("--amend", type=nonempty_path, metavar="RECORD",
                        help="set the earlier calls (--earlier-log) of an existing record instead of collecting one")
    parser.add_argument("--run", type=nonempty_path, metavar="RUN_DIR",
                        help="record this one finished training run instead of a study (needs --out and --command)")
    parser.add_argument("--command", help="with --run: the command that made the run")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    ns = parser.parse_args(argv)
    given = {"--profile": ns.profile is not None, "--seed": ns.seed is not None, "--amend": ns.amend is not None,
             "--earlier-log": bool(ns.earlier_log), "--command": ns.command is not None}
    ignored = {"--run": ("--profile", "--seed", "--amend", "--earlier-log"),  # a run record has none of these
               "--amend": ("--profile", "--seed")}  # an amended record keeps its own
    for mode, flags in ignored.items():
        if getattr(ns, mode[2:]) is not None and any(given[f] for f in flags):
            parser.error(f"{mode} takes no {', '.join(f for f in flags if given[f])} (they would be ignored)")
    if ns.command is not None and ns.run is None:
        parser.error("--command goes with --run (the command that made the run it records)")
    profile, seed = ns.profile or "full", 0 if ns.seed is None else ns.seed

    def go() -> int:
        earlier = []
        for log in ns.earlier_log:
            if not log.is_file():
                raise DataError(f"{log}: no such log")
            earlier += calls_from_log(log.read_text(encoding="utf-8", errors="replace"))
        if ns.run is not None:
            if ns.out is None or not ns.command:
                raise ConfigError("--run needs --out (the record file) and --command (what made the run)")
            rec = collect_run(ns.run, ns.command, ns.note)
            write_json_atomic(ns.out, rec, indent=1)
            print(f"[record] {ns.out}: run {ns.run} ({len(rec['history'])} epochs, {rec['wall_seconds']:.0f} s)")
            return 0
        if ns.amend is not None:
            rec = load(ns.amend)
            if rec is None:
                raise DataError(f"{ns.amend}: no such record")
            rec["earlier_calls"] = earlier
            if ns.note:
                rec["note"] = ns.note
            out = ns.out or ns.amend
        else:
            out = ns.out or record_path(profile)
            rec = collect(profile, seed, note=ns.note, earlier_calls=earlier)
        write_json_atomic(out, rec, indent=1)
        print(f"[record] {out}: " + ", ".join(f"{k} {v}" for k, v in headline(rec).items()))
        return 0

    return guard(go, ns.debug, parser.prog)


if __name__ == "__main__":
    sys.exit(main())
