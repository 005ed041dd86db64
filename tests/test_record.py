"""Study records (dan.record): what a GPU session brings back for the book is complete, or an error."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from dan import record
from dan.io import DataError, repo_root, study_paths


def fake_study(root: Path, vqa_run, matching_run, total: bool = True) -> None:
    """A finished smoke study under ``root``: the two reference runs as the K = 2 dual runs, stage times."""
    paths = study_paths("smoke", root)
    for task, run in (("vqa", vqa_run), ("matching", matching_run)):
        shutil.copytree(run.run_dir, paths.runs / f"{task}-dual-K2-s0")
    times = {"01_data": 1.5, "02_features": 2.0, **({"total": 61.0} if total else {})}
    (paths.results / "study_times.json").write_text(json.dumps(times))
    (paths.results / "ablation_summary.csv").write_text("steps,metric,mean,task\n2,overall,40.5,vqa\n")


def test_record_of_a_finished_study(tmp_path, vqa_run, matching_run, monkeypatch):
    fake_study(tmp_path, vqa_run, matching_run)
    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    assert record.main(["--profile", "smoke"]) == 0
    rec = record.load(record.record_path("smoke", tmp_path))
    assert rec["format"] == record.FORMAT and rec["profile"] == "smoke"
    assert rec["runs"]["vqa"]["metrics"]["overall"] == vqa_run.metrics["overall"]
    assert rec["runs"]["matching"]["config"]["task"] == "matching"
    assert rec["ablation_summary"] == [{"steps": 2.0, "metric": "overall", "mean": 40.5, "task": "vqa"}]
    assert rec["machine"]["torch"] and rec["machine"]["cpus"] >= 1
    row = record.headline(rec)
    assert row["study minutes"] == round(61.0 / 60, 1)
    assert row["r-DAN overall (%)"] == round(vqa_run.metrics["overall"], 1)
    assert row["m-DAN i2t R@1 (%)"] == round(matching_run.metrics["i2t"]["r1"], 1)


def test_an_unfinished_study_gives_no_record(tmp_path, vqa_run, matching_run, capsys, monkeypatch):
    fake_study(tmp_path, vqa_run, matching_run, total=False)
    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    assert record.main(["--profile", "smoke"]) != 0
    err = capsys.readouterr().err
    assert "has no total: the smoke study did not run through (stages recorded: 01_data, 02_features)" in err
    assert not record.record_path("smoke", tmp_path).exists()
    # after a partial rerun (--only) the file keeps the last full run's total under its own name: still no record
    (study_paths("smoke", tmp_path).results / "study_times.json").write_text(
        '{"01_data": 1.5, "02_features": 2.0, "total of the last full run": 61.0}')
    with pytest.raises(DataError, match=r"study_times\.json has no total: its last smoke run was partial \(--only\), "
                                        r"which records no total; its 'total of the last full run' \(61\.0 s\) is "
                                        r"an earlier run's; rerun the whole study to record it"):
        record.collect("smoke", root=tmp_path)
    shutil.rmtree(study_paths("smoke", tmp_path).runs / "matching-dual-K2-s0")
    (study_paths("smoke", tmp_path).results / "study_times.json").write_text('{"total": 1}')
    with pytest.raises(DataError, match=r"matching-dual-K2-s0.metrics\.json"):
        record.collect("smoke", root=tmp_path)


def test_load_refuses_another_format_and_allows_none(tmp_path):
    assert record.load(tmp_path / "absent.json") is None
    (tmp_path / "r.json").write_text('{"format": "something/2"}')
    with pytest.raises(DataError, match=r"r\.json: field 'format' is 'something/2', expected 'dan-study-record/1'"):
        record.load(tmp_path / "r.json")
    (tmp_path / "r.json").write_text("[1, 2]")  # e.g. --amend given another JSON file
    with pytest.raises(DataError, match=r"r\.json: expected a record .* got a list"):
        record.load(tmp_path / "r.json")


def test_status_markdown_says_how_to_make_a_missing_record_and_summarises_one(tmp_path, vqa_run, matching_run,
                                                                               monkeypatch):
    text = record.status_markdown("full", tmp_path)
    assert "No run of the `full` profile is recorded yet" in text and "benchmarks/device_session.sh" in text
    assert "`records/full_profile.json`" in text
    fake_study(tmp_path, vqa_run, matching_run)
    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    record.main(["--profile", "smoke"])
    text = record.status_markdown("smoke", tmp_path)
    assert text.startswith("The `smoke` profile ran end to end on CPU (")
    assert f"r-DAN reached {round(vqa_run.metrics['overall'], 1)} % validation accuracy" in text
    assert "Note:" not in text
    record.main(["--profile", "smoke", "--note", "resumed in a second call"])
    assert record.status_markdown("smoke", tmp_path).endswith("Note: resumed in a second call.")


LOG = """[device] train-benchmark: rc 0 after 32 s
[device] full-study: start (limit 472 s) at 73 s
[study] 01_data.ipynb (profile full) ...
[study] 01_data.ipynb done in 51.4 s
[study] 02_features.ipynb (profile full) ...
[study] 02_features.ipynb done in 37.1 s
[study] 03_rdan.ipynb (profile full) ...
some traceback text [study] 03_rdan.ipynb done in 1.0 s
[device] full-study: rc 124 after 475 s
"""


def test_calls_from_log_reads_a_cut_off_call_and_skips_finished_ones():
    calls = record.calls_from_log(LOG)
    assert calls == [{"stage_seconds": {"01_data": 51.4, "02_features": 37.1}, "wall_seconds": 475.0, "rc": 124,
                      "interrupted": {"stage": "03_rdan", "seconds": 386.5}}]
    finished = LOG.replace("rc 124 after 475 s", "rc 0 after 475 s")
    assert record.calls_from_log(finished) == []
    assert record.calls_from_log(LOG + LOG) == calls * 2
    assert record.calls_from_log("[study] 01_data.ipynb done in 3 s\n") == []  # no study call around it


def test_the_committed_device_log_is_read_as_the_record_says():
    """records/logs/ holds the log of the H100 call that was cut off; the committed record was amended from it."""
    root = Path(__file__).resolve().parents[1]
    log = root / "records" / "logs" / "device_call1_session.log"
    rec = record.load(root / "records" / "full_profile.json")
    assert rec is not None and log.is_file()
    assert record.calls_from_log(log.read_text()) == rec["earlier_calls"]


def test_study_seconds_count_each_stage_once_over_calls():
    rec = {"stage_seconds": {"01_data": 5.0, "02_features": 4.0, "03_rdan": 30.0, "04_mdan": 20.0, "total": 59.0},
           "earlier_calls": record.calls_from_log(LOG)}
    sec = record.study_seconds(rec)
    assert sec == {"01_data": 51.4, "02_features": 37.1, "03_rdan": 386.5 + 30.0, "04_mdan": 20.0,
                   "total": pytest.approx(51.4 + 37.1 + 416.5 + 20.0)}  # the last call had no time outside stages
    rows = {r["stage"]: r for r in record.stage_rows(rec)}
    assert rows["03_rdan"] == {"stage": "03_rdan", "counted seconds": 416.5, "call 1 seconds": 386.5,
                               "call 2 seconds": 30.0}
    assert rows["04_mdan"]["call 1 seconds"] is None
    assert rows["total"]["call 1 seconds"] == 475.0 and rows["total"]["call 2 seconds"] == 59.0
    single = {"stage_seconds": {"01_data": 5.0, "total": 6.0}}  # 1 s outside stages (e.g. the book build)
    assert record.study_seconds(single) == {"01_data": 5.0, "total": 6.0}
    assert record.stage_rows(single) == [{"stage": "01_data", "counted seconds": 5.0},
                                         {"stage": "total", "counted seconds": 6.0}]


def test_a_stage_cut_off_in_one_earlier_call_and_finished_in_the_next_counts_both():
    """Three calls: the first is cut off 300 s into 03_rdan, the second finishes it (420 s) and is cut off in
    04_mdan, the last finishes the study. 03_rdan took 720 s of device time, 04_mdan its cut plus its finish."""
    calls = [{"stage_seconds": {"01_data": 5.0}, "wall_seconds": 310.0, "rc": 124,
              "interrupted": {"stage": "03_rdan", "seconds": 300.0}},
             {"stage_seconds": {"03_rdan": 420.0}, "wall_seconds": 600.0, "rc": 124,
              "interrupted": {"stage": "04_mdan", "seconds": 180.0}}]
    rec = {"stage_seconds": {"01_data": 1.0, "03_rdan": 1.0, "04_mdan": 50.0, "total": 52.0}, "earlier_calls": calls}
    sec = record.study_seconds(rec)
    assert sec["01_data"] == 5.0 and sec["03_rdan"] == 720.0 and sec["04_mdan"] == 230.0
    assert sec["total"] == pytest.approx(5.0 + 720.0 + 230.0)


def test_amend_sets_earlier_calls_and_headline_counts_them(tmp_path, vqa_run, matching_run, monkeypatch, capsys):
    fake_study(tmp_path, vqa_run, matching_run)
    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    assert record.main(["--profile", "smoke"]) == 0
    path = record.record_path("smoke", tmp_path)
    (tmp_path / "call1.log").write_text(LOG)
    assert record.main(["--amend", str(path), "--earlier-log", str(tmp_path / "call1.log"),
                        "--note", "second call"]) == 0
    rec = record.load(path)
    assert rec["note"] == "second call" and len(rec["earlier_calls"]) == 1
    row = record.headline(rec)
    assert row["device calls"] == 2 and row["study minutes"] == round((51.4 + 37.1 + 386.5 + 61.0 - 3.5) / 60, 1)
    assert "over 2 calls" in record.status_markdown("smoke", tmp_path)
    assert record.main(["--amend", str(path), "--earlier-log", str(tmp_path / "absent.log")]) != 0
    assert "absent.log: no such log" in capsys.readouterr().err
    assert record.main(["--amend", str(tmp_path / "none.json")]) != 0
    assert "none.json: no such record" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--run", "r", "--out", "o.json", "--command", "c", "--seed", "1"], "--run takes no --seed"),
    (["--run", "r", "--out", "o.json", "--command", "c", "--profile", "smoke", "--amend", "x.json"],
     "--run takes no --profile, --amend"),
    (["--run", "r", "--out", "o.json", "--command", "c", "--earlier-log", "l.log"], "--run takes no --earlier-log"),
    (["--amend", "x.json", "--profile", "smoke"], "--amend takes no --profile"),
    (["--profile", "smoke", "--command", "python -m dan.train"], "--command goes with --run"),
])
def test_record_refuses_options_that_its_mode_would_ignore(args, message, capsys) -> None:
    """--run records one run: a --profile, --seed, --amend or --earlier-log beside it was silently ignored, as were
    --amend's --profile and --seed (the record keeps its own) and a --command without --run."""
    with pytest.raises(SystemExit) as exc:
        record.main(args)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_a_single_run_record_keeps_the_run_and_the_command(tmp_path, matching_run, capsys):
    run = tmp_path / "run"
    shutil.copytree(matching_run.run_dir, run)
    out = tmp_path / "records" / "one_run.json"
    assert record.main(["--run", str(run), "--out", str(out), "--command", "python -m dan.train --epochs 6"]) == 0
    rec = record.load(out, record.RUN_FORMAT)
    assert record.load_run("one_run", tmp_path) == rec and record.load_run("absent", tmp_path) is None
    assert rec["command"] == "python -m dan.train --epochs 6" and rec["wall_seconds"] >= 0
    assert rec["metrics"]["i2t"]["r1"] == matching_run.metrics["i2t"]["r1"]
    assert [h["epoch"] for h in rec["history"]] == [h["epoch"] for h in matching_run.history]
    with pytest.raises(DataError, match="expected 'dan-study-record/1'"):
        record.load(out)  # a run record is not a study record
    (run / "metrics.json").unlink()
    assert record.main(["--run", str(run), "--out", str(tmp_path / "x.json"), "--command", "c"]) != 0
    assert "not a finished run (no metrics.json)" in capsys.readouterr().err
    assert not (tmp_path / "x.json").exists()


def test_run_record_summary_names_the_command_and_both_runs_recalls(tmp_path, matching_run):
    from dan import report

    rec = record.collect_run(matching_run.run_dir, "python -m dan.train --epochs 6", note="a note.")
    first, last = rec["history"][0], rec["history"][-1]
    text = report.run_record_summary(rec, {"i2t": {"r1": 12.34}, "t2i": {"r1": 5.0}}, at_epoch=first["epoch"])
    assert "`python -m dan.train --epochs 6`" in text and "; a note)." in text
    assert f"after {first['epoch']} epochs {first['val_i2t_r1']:.1f} / {first['val_t2i_r1']:.1f}" in text
    assert f"after {last['epoch']} {last['val_i2t_r1']:.1f} / {last['val_t2i_r1']:.1f}" in text
    assert text.endswith("against 12.3 / 5.0.")
    assert "n/a (shorter run)" in report.run_record_summary(rec, {"i2t": {"r1": 1}, "t2i": {"r1": 1}}, at_epoch=99)


def test_a_recorded_command_is_shown_without_the_folders_of_the_machine_that_ran_it(tmp_path, matching_run):
    """The records keep the command as typed (``--out /tmp/checks/...``); the book printed that build machine's
    folder. It shows a placeholder instead, as the benchmark commands show ``$OUT``."""
    from dan import report

    assert report.shown_command("python -m dan.train --task vqa --lr 0.1 --out /tmp/checks/rdan_h512_sgd") == \
        "python -m dan.train --task vqa --lr 0.1 --out RUN_DIR"
    assert report.shown_command("x --out=/tmp/a --data '/tmp/d e' --feature-root /r/f --out results/x") == \
        "x --out=RUN_DIR --data DATA --feature-root FEATURE_ROOT --out results/x"  # a folder of the repo stays
    rec = record.collect_run(matching_run.run_dir, "python -m dan.train --epochs 6 --out /tmp/m60/paper60")
    text = report.run_record_summary(rec, {"i2t": {"r1": 1}, "t2i": {"r1": 1}}, at_epoch=1)
    assert "`python -m dan.train --epochs 6 --out RUN_DIR`" in text and "/tmp" not in text
    commands = [json.loads(p.read_text())["command"] for p in sorted((repo_root() / "records").glob("*.json"))
                if "command" in json.loads(p.read_text())]
    assert commands, "no committed single-run record"
    for command in commands:  # the committed records, as chapters 03 and 04 print them
        shown = report.shown_command(command)
        assert not re.search(r"\s['\"]?/", shown) and "/tmp" not in shown and "--out RUN_DIR" in shown, shown


def test_recorded_checks_label_the_records_that_exist_in_order(tmp_path, matching_run):
    from dan import report

    for name in ("b_check", "a_check"):
        assert record.main(["--run", str(matching_run.run_dir), "--out", str(tmp_path / "records" / f"{name}.json"),
                            "--command", f"python -m dan.train # {name}"]) == 0
    checks = report.recorded_checks({"b_check": "second", "missing": "absent", "a_check": "first"}, tmp_path)
    epochs = matching_run.config.epochs
    assert [label.split(" (")[0] for label in checks] == ["second", "first"]  # the given order; no record, no row
    assert all(f"({epochs} epochs, " in label for label in checks)
    assert [rec["command"] for rec in checks.values()] == ["python -m dan.train # b_check",
                                                           "python -m dan.train # a_check"]


def test_study_times_that_are_not_seconds_are_named(tmp_path, vqa_run, matching_run, capsys, monkeypatch):
    fake_study(tmp_path, vqa_run, matching_run)
    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    (study_paths("smoke", tmp_path).results / "study_times.json").write_text('{"01_data": 2.0, "total": "x"}')
    assert record.main(["--profile", "smoke"]) != 0
    err = capsys.readouterr().err
    assert "study_times.json: expected seconds per stage (an object of numbers), got total: 'x'" in err
    assert not record.record_path("smoke", tmp_path).exists()


def test_recorded_checks_give_the_wall_time_in_minutes(tmp_path):
    from dan import report

    (tmp_path / "records").mkdir()
    rec = {"format": record.RUN_FORMAT, "config": {"epochs": 6}, "wall_seconds": 5400.0}
    (tmp_path / "records" / "long.json").write_text(json.dumps(rec))
    assert list(report.recorded_checks({"long": "m-DAN"}, tmp_path)) == ["m-DAN (6 epochs, 90 min)"]


def test_paper_deviations_name_every_changed_setting_of_a_record():
    """The r-DAN SGD check ran without the paper's weight decay: its line must say so."""
    from dan import report
    from dan.config import preset

    sgd = preset("default", "vqa", hidden_dim=512, optimizer="sgd", lr=0.1, dropout=0.5, grad_clip=0.1).to_dict()
    assert report.paper_deviations(sgd) == "epochs 8 (paper 60), lr_decay_epochs [6] (paper [30]), weight_decay 0.0 " \
                                           "(paper 0.0005)"
    assert report.paper_deviations(preset("real", "matching").to_dict()) == "nothing (the paper's setting)"


def test_headline_takes_each_number_from_its_own_field():
    """Every column of the headline row from a hand-written record with a different value in every field, so
    that one column read from another field (majority from overall, t2i from i2t) shows."""
    rec = {"profile": "full", "date": "2026-01-01 00:00 UTC", "machine": {"gpu": "H100", "cpus": 16},
           "stage_seconds": {"01_data": 60.0, "total": 330.0},
           "earlier_calls": [{"stage_seconds": {"02_features": 120.0}, "interrupted": None}],
           "runs": {"vqa": {"metrics": {"overall": 61.26, "majority_baseline": 22.04}},
                    "matching": {"metrics": {"i2t": {"r1": 33.35}, "t2i": {"r1": 24.44}}}}}
    assert record.headline(rec) == {
        "profile": "full", "machine": "H100", "date": "2026-01-01 00:00 UTC", "study minutes": 7.5,
        "device calls": 2, "r-DAN overall (%)": 61.3, "majority (%)": 22.0, "m-DAN i2t R@1 (%)": 33.4,
        "m-DAN t2i R@1 (%)": 24.4}
    assert record.headline({**rec, "machine": {"cpus": 8}})["machine"] == "CPU (8 cores)"


def test_a_record_of_another_seed_reads_that_seeds_runs(tmp_path, vqa_run, matching_run):
    """``--seed 1`` records the K = 2 dual runs of seed 1 (``*-dual-K2-s1``), not seed 0's."""
    fake_study(tmp_path, vqa_run, matching_run)
    runs = study_paths("smoke", tmp_path).runs
    for task in ("vqa", "matching"):
        (runs / f"{task}-dual-K2-s0").rename(runs / f"{task}-dual-K2-s1")
    rec = record.collect("smoke", seed=1, root=tmp_path)
    assert rec["seed"] == 1 and rec["runs"]["vqa"]["metrics"] == vqa_run.metrics
    with pytest.raises(DataError, match=r"vqa-dual-K2-s0.metrics\.json"):
        record.collect("smoke", seed=0, root=tmp_path)


def test_a_resumed_runs_record_counts_its_wall_time_from_the_first_start(tmp_path, make_cfg):
    """``collect_run``'s wall time runs from ``config.json`` (written when the run starts) to ``metrics.json``
    (written last), so a resumed run counts its pause too: the resume must not rewrite ``config.json``. Here the
    first start is set 1,000 s back; training rewrote the file on every resume, so the record counted only the
    last part of the run."""
    import os

    from dan.train import train

    cfg = make_cfg("vqa", tmp_path / "run", epochs=2)
    train(cfg, stop_after_epoch=1, progress=False)
    config = tmp_path / "run" / "config.json"
    first = config.stat().st_mtime - 1000.0
    os.utime(config, (first, first))
    train(cfg, progress=False)
    assert config.stat().st_mtime == first
    rec = record.collect_run(tmp_path / "run", "python -m dan.train (resumed)")
    assert rec["wall_seconds"] >= 1000.0


def test_a_record_missing_or_mistyping_a_field_it_is_read_by_is_named_on_load(tmp_path):
    """The book's readers (headline, study_seconds, recorded_checks) indexed a loaded record's fields: a record with
    one missing or of another type raised KeyError/TypeError/AttributeError deep in them (found by fuzzing)."""
    rec = {"format": record.FORMAT, "profile": "full", "date": "d", "machine": {"gpu": "H100", "cpus": 16},
           "stage_seconds": {"01_data": 60.0, "total": 330.0},
           "earlier_calls": [{"stage_seconds": {"02_features": 120.0}, "interrupted": None}],
           "runs": {"vqa": {"metrics": {"overall": 61.26, "majority_baseline": 22.04}},
                    "matching": {"metrics": {"i2t": {"r1": 33.35}, "t2i": {"r1": 24.44}}}}}
    path = tmp_path / "full_profile.json"
    path.write_text(json.dumps(rec))
    assert record.load(path) == rec
    bad = [({**rec, "runs": {"vqa": rec["runs"]["vqa"]}}, "missing field 'runs.matching'"),
           ({**rec, "stage_seconds": {"01_data": "60"}},
            "field 'stage_seconds.01_data' must be a finite number, got '60'"),
           ({**rec, "earlier_calls": [{"stage_seconds": {}, "interrupted": {"stage": "05_abl", "seconds": None}}]},
            "field 'earlier_calls[0].interrupted.seconds' must be a finite number, got None"),
           ({**rec, "machine": ["H100"]}, "field 'machine' must be an object, got ['H100']")]
    for doc, message in bad:
        path.write_text(json.dumps(doc))
        with pytest.raises(DataError, match=re.escape(f"{path}: {message}")):
            record.load(path)
    run = tmp_path / "records" / "check.json"
    run.parent.mkdir()
    run.write_text(json.dumps({"format": record.RUN_FORMAT, "config": {"epochs": "6"}, "wall_seconds": 60.0}))
    with pytest.raises(DataError, match=re.escape(f"{run}: field 'config.epochs' must be an integer, got '6'")):
        record.load_run("check", tmp_path)


def test_run_record_summary_names_a_missing_recall_of_the_record():
    from dan import report

    rec = {"command": "python -m dan.train", "date": "d", "machine": {"cpus": 2}, "wall_seconds": 60.0,
           "metrics": {"i2t": {"r1": 1.0}, "t2i": {"r1": 2.0}},
           "history": [{"epoch": 1, "val_i2t_r1": 1.0, "val_t2i_r1": 2.0}, {"epoch": 2, "val_acc": 50.0}]}
    with pytest.raises(DataError, match=re.escape("the record of `python -m dan.train`: missing field "
                                                  "'history[1].val_i2t_r1'")):
        report.run_record_summary(rec, {"i2t": {"r1": 1}, "t2i": {"r1": 1}}, at_epoch=1)


def _manifest(root: Path, profile: str, seed: int) -> None:
    from dan.data import synth

    folder = root / "data" / "generated" / profile
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({"generator": synth.GENERATOR, "profile": profile,
                                                      "generator_version": synth.GENERATOR_VERSION, "seed": seed}))


def test_a_record_says_which_draw_of_the_generated_data_it_describes(tmp_path, vqa_run, matching_run, monkeypatch):
    """A record said nothing of the data set's draw, though a draw k != 0 has its own study in
    results/<profile>-seed<k>: ``data_seed`` is the draw the study read (the manifest's seed, which picks that
    folder), None where it is unknown (no manifest: results/<profile>) or there is none (real data)."""
    for seed in (0, 3):
        root = tmp_path / f"draw{seed}"
        _manifest(root, "smoke", seed)
        fake_study(root, vqa_run, matching_run)
        assert study_paths("smoke", root).results.name == ("smoke" if seed == 0 else "smoke-seed3")
        monkeypatch.setenv("DAN_ROOT", str(root))
        assert record.main(["--profile", "smoke"]) == 0
        rec = record.load(record.record_path("smoke", root))
        assert rec["data_seed"] == seed and rec["seed"] == 0
        text = record.status_markdown("smoke", root)
        assert ("on draw 3 of its generated data (`01_data -p seed 3`)" in text) == (seed == 3)
    root = tmp_path / "unknown"
    fake_study(root, vqa_run, matching_run)  # no manifest: draw unknown
    assert record.collect("smoke", root=root)["data_seed"] is None
    (root / "results" / "smoke").rename(root / "results" / "real")
    assert record.collect("real", root=root)["data_seed"] is None  # real data: no draw
    rec = record.collect("smoke", root=tmp_path / "draw3")
    path = tmp_path / "r.json"
    for value, ok in ((None, True), (2, True), ("3", False), (True, False)):
        path.write_text(json.dumps({**rec, "data_seed": value}))
        if ok:
            assert record.load(path)["data_seed"] == value
        else:
            with pytest.raises(DataError, match=r"field 'data_seed' must be "):
                record.load(path)


def test_the_committed_study_records_without_a_data_seed_are_still_read():
    """The committed records predate ``data_seed``: they load as before, their draw unknown (None; the full
    profile's was made at draw 0), and the book's paragraph on them is unchanged (no draw named)."""
    committed = sorted((repo_root() / record.RECORDS).glob("*_profile.json"))
    assert committed
    for path in committed:
        rec = record.load(path)
        assert "data_seed" not in rec and rec.get("data_seed") is None
        assert " draw " not in record.status_markdown(rec["profile"])
