"""Study records (dan.record): what a GPU session brings back for the book is complete, or an error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dan import record
from dan.io import DataError, study_paths


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
    shutil.rmtree(study_paths("smoke", tmp_path).runs / "matching-dual-K2-s0")
    (study_paths("smoke", tmp_path).results / "study_times.json").write_text('{"total": 1}')
    with pytest.raises(DataError, match=r"matching-dual-K2-s0.metrics\.json"):
        record.collect("smoke", root=tmp_path)


def test_load_refuses_another_format_and_allows_none(tmp_path):
    assert record.load(tmp_path / "absent.json") is None
    (tmp_path / "r.json").write_text('{"format": "something/2"}')
    with pytest.raises(DataError, match=r"r\.json: field 'format' is 'something/2', expected 'dan-study-record/1'"):
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
