"""dan.report's tables and Markdown that only the notebooks called before: each one checked against numbers
computed here from the raw files or written by hand."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections import Counter
from pathlib import Path

import pytest

from dan import report
from dan.io import ConfigError, DataError
from dan.reference import REAL_COMMANDS


def test_data_overview_counts_the_raw_files(smoke_data):
    table = report.data_overview(smoke_data)
    grounding = json.loads((smoke_data / "grounding.json").read_text())["questions"]
    for split in ("train2014", "val2014"):
        anns = json.loads((smoke_data / "vqa" / f"v2_mscoco_{split}_annotations.json").read_text())["annotations"]
        row = table.loc[split]
        assert row["questions"] == len(anns)
        assert row["images"] == len({a["image_id"] for a in anns})
        types = Counter(a["answer_type"] for a in anns)
        assert [row[f"q {t}"] for t in ("yes/no", "number", "other")] == [types[t] for t in ("yes/no", "number",
                                                                                             "other")]
        fams = Counter(grounding[str(a["question_id"])]["family"] for a in anns)
        assert len(fams) >= 2 and all(row[f"q {f}"] == n for f, n in fams.items())
        assert row["captions"] == 0 and row["caption images"] == 0
    images = json.loads((smoke_data / "captions" / "dataset_synth.json").read_text())["images"]
    for split in ("train", "val", "test"):
        mine = [im for im in images if im["split"] == split]
        row = table.loc[f"captions {split}"]
        assert (row["caption images"], row["captions"]) == (len(mine), sum(len(im["sentences"]) for im in mine))
        assert row["questions"] == 0
    assert (table.dtypes == "int64").all()


def test_data_overview_without_grounding_or_captions_has_no_family_or_caption_rows(smoke_data, tmp_path):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(smoke_data / "vqa", root / "vqa")
    table = report.data_overview(root, splits=("val2014",))
    assert list(table.index) == ["val2014"]
    assert "q n/a" in table.columns and table.loc["val2014", "q n/a"] == table.loc["val2014", "questions"]
    assert "captions" not in table.columns


def test_a_counted_noun_takes_the_number_of_its_count():
    """05_ablations read "1 seeds per setting" with one seed; its glued phrases now come from counted."""
    assert [report.counted(n, "seed") for n in (0, 1, 3)] == ["0 seeds", "1 seed", "3 seeds"]
    assert report.counted(1, "distinct run") == "1 distinct run" and report.counted(1200, "run") == "1,200 runs"
    assert report.counted(2, "family", "families") == "2 families"


def test_vqa_table_rows_columns_groups_and_baseline():
    metrics = {
        "dual": {"overall": 51.234, "yes/no": 70.0, "number": 30.0, "other": 40.0, "majority_baseline": 20.456,
                 "groups": {"single-hop": {"overall": 60.0, "n": 5}, "multi-hop": 41.111}},
        "visual": {"overall": 45.0, "yes/no": 65.0, "number": 25.0, "other": 35.0},
    }
    table = report.vqa_table(metrics)
    assert list(table.index) == ["dual", "visual"]
    assert list(table.columns[:4]) == report.VQA_COLUMNS
    dual = table.loc["dual"]
    assert (dual["overall"], dual["multi-hop"], dual["single-hop"], dual["majority baseline"]) == (51.23, 41.11,
                                                                                                  60.0, 20.46)
    assert table.loc["visual", "overall"] == 45.0 and table.loc["visual", "number"] == 25.0
    assert table.loc["visual", ["multi-hop", "single-hop", "majority baseline"]].isna().all()


def _run_block(block: str, tmp_path, fail: str | None = None) -> list[str]:
    """Run a Markdown bash block with `python` replaced by a recorder (which fails for a step containing ``fail``);
    return the recorded argument lists."""
    log = tmp_path / "calls.txt"
    log.unlink(missing_ok=True)
    stub = (f'python() {{ printf "%s\\n" "$*" >> {shlex.quote(str(log))}; '
            f'case "$*" in *{shlex.quote(fail or "@@none@@")}*) return 1;; esac; }}\n')
    subprocess.run(["bash", "-c", stub + block], check=False, timeout=30)
    return log.read_text().splitlines() if log.exists() else []


def test_real_runs_markdown_blocks_run_every_step_in_order_and_stop_at_a_failure(tmp_path):
    text = report.real_runs_markdown()
    blocks = {}
    for task in REAL_COMMANDS:
        head = f"**{task}**\n\n```bash\n"
        assert head in text
        blocks[task] = text.split(head, 1)[1].split("\n```", 1)[0]
        assert subprocess.run(["bash", "-n", "-c", blocks[task]]).returncode == 0
    assert set(blocks) == {"vqa", "matching"}
    for task, command in REAL_COMMANDS.items():
        steps = [s.strip() for s in command.split("&&") if s.strip().startswith("python ")]
        assert _run_block(blocks[task], tmp_path) == [s.removeprefix("python ") for s in steps]
        # a failed extraction stops the training after it (the same && chain)
        calls = _run_block(blocks[task], tmp_path, fail="dan.features")
        assert calls[-1].startswith("-m dan.features") and not any("dan.train" in c for c in calls)
    vqa_calls = _run_block(blocks["vqa"], tmp_path, fail="download.py")
    assert len(vqa_calls) == 1


def test_real_runs_markdown_turns_a_manual_step_into_a_comment_that_ends_the_chain():
    block = report.real_runs_markdown().split("**matching**", 1)[1]
    lines = block.splitlines()
    manual = [i for i, line in enumerate(lines) if line.startswith("#")]
    assert len(manual) == 1 and "flickr30k-images" in lines[manual[0]]
    assert not lines[manual[0] - 1].rstrip().endswith("&&")  # the download ends before the manual step
    assert "(" not in "".join(line for line in lines if line.startswith("python") or line.startswith("  python"))


@pytest.mark.parametrize("task", list(REAL_COMMANDS))
def test_real_runs_markdown_keeps_every_argument(task):
    block = report.real_runs_markdown().split(f"**{task}**", 1)[1].split("```", 2)[1]
    words = [w for line in block.splitlines() if not line.lstrip().startswith("#") for w in shlex.split(line)
             if w not in ("&&", "bash")]
    expected = [w for part in REAL_COMMANDS[task].split("&&") if not part.strip().startswith("(")
                for w in shlex.split(part)]
    assert words == expected


def test_a_chapter_run_with_other_parameters_is_labelled_with_them() -> None:
    """03/04 set their run beside recorded K = 2 dual runs as "this chapter (smoke data, adam, hidden 32, 6
    epochs)": a notebook run with -p steps 3 -p attention visual (or 04's negatives, margin) carried the same label."""
    from dan.config import preset
    from dan.report import chapter_label

    assert chapter_label(preset("smoke", "vqa")) == "this chapter (smoke data, adam, hidden 32, 6 epochs)"
    assert chapter_label(preset("default", "matching"), hidden=False) == "this chapter (default data, adam, 8 epochs)"
    assert chapter_label(preset("smoke", "vqa", steps=3, attention="visual", epochs=2)) == \
        "this chapter (K=3, attention visual, smoke data, adam, hidden 32, 2 epochs)"
    assert chapter_label(preset("smoke", "matching", negatives="hardest", margin=0.5, hidden_dim=64), hidden=False) == \
        "this chapter (hidden 64, margin 0.5, negatives hardest, smoke data, adam, 6 epochs)"
    root = Path(__file__).resolve().parents[1] / "notebooks"
    for name in ("03_rdan.ipynb", "04_mdan.ipynb"):
        code = "".join("".join(c["source"]) for c in json.loads((root / name).read_text())["cells"]
                       if c["cell_type"] == "code")
        assert '"this chapter (' not in code and "report.chapter_label(cfg" in code, name


def run_notebook_code(name: str, params: dict) -> dict:
    """The code cells of ``notebooks/<name>`` run as papermill would, ``params`` injected after the parameters cell
    (no kernel; figures on Agg); returns the namespace."""
    import matplotlib

    matplotlib.use("Agg")
    nb = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / name).read_text())
    ns: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), name, "exec"), ns)  # noqa: S102
            if "parameters" in cell["metadata"].get("tags", []):
                ns.update(params)
    return ns


def _summary_study(tmp_path: Path, smoke_data: Path, smoke_features: Path, vqa_run, matching_run) -> Path:
    """A study folder (for $DAN_ROOT) holding the smoke data, its features and the two preset runs of seed 0."""
    import shutil

    shutil.copytree(smoke_data, tmp_path / "data" / "generated" / "smoke")
    shutil.copytree(smoke_features, tmp_path / "results" / "smoke" / "features")
    for run in (vqa_run, matching_run):
        shutil.copytree(run.run_dir, tmp_path / "results" / "smoke" / "runs" / run.config.run_name())
    return tmp_path


def test_the_summary_refuses_runs_trained_on_other_data_or_settings(smoke_data, smoke_features, vqa_run,
                                                                    matching_run, monkeypatch, tmp_path) -> None:
    """07_summary read runs/<task>-dual-K2-s<seed>/metrics.json as it was: after 01_data regenerated the data with
    another seed (in place), the summary reported the old data's runs as this data's, where 03/04/05/06 refuse
    to reuse them (dan.checkpoint.check_recorded_inputs); a folder of another configuration was read too."""
    import shutil

    from dan import notebook

    root = _summary_study(tmp_path, smoke_data, smoke_features, vqa_run, matching_run)
    monkeypatch.setenv("DAN_ROOT", str(root))
    monkeypatch.setattr(notebook, "setup", lambda *a, **k: None)
    ns = run_notebook_code("07_summary.ipynb", {"profile": "smoke", "seed": 0})
    assert ns["vqa"] == vqa_run.metrics and ns["match"] == matching_run.metrics  # the same data: read back
    ann = next((root / "data" / "generated" / "smoke" / "vqa").glob("*val2014_annotations.json"))
    original = ann.read_text()
    content = json.loads(original)
    content["annotations"][0]["answers"][0]["answer"] = "zebra"  # as if regenerated with another seed
    ann.write_text(json.dumps(content))
    with pytest.raises(DataError, match=r"vqa-dual-K2-s0 was trained on other data: data file "
                                        r".*val2014_annotations\.json has other content now"):
        run_notebook_code("07_summary.ipynb", {"profile": "smoke", "seed": 0})
    ann.write_text(original)  # the data as trained on again: the next check is the configuration's
    runs = root / "results" / "smoke" / "runs"
    shutil.rmtree(runs / "vqa-dual-K2-s0")
    shutil.copytree(matching_run.run_dir, runs / "vqa-dual-K2-s0")  # another configuration under the name
    with pytest.raises(ConfigError, match=r"vqa-dual-K2-s0 holds a finished run of another configuration"):
        report.preset_run_metrics("smoke", "vqa", 0)
