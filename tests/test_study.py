"""The study command's bookkeeping, without running a kernel: which notebooks in which order, the cell a failure is
reported in, the paths stripped from executed copies, and the stage times recorded per run."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

import dan.study as study
from dan.io import ConfigError


def _touch_notebooks(root: Path, names: list[str]) -> None:
    (root / "notebooks").mkdir(parents=True, exist_ok=True)
    for name in names:
        (root / "notebooks" / name).write_text("{}")


def test_notebook_list_takes_the_numbered_notebooks_in_number_order_and_only_those_asked_for(tmp_path) -> None:
    # created out of order, beside files that are not study notebooks (no NN_ prefix, another suffix)
    _touch_notebooks(tmp_path, ["10_report.ipynb", "02_features.ipynb", "README.ipynb", "1_short.ipynb",
                                "01_data.ipynb", "03_notes.txt", "05_vqa.ipynb"])
    names = [p.name for p in study.notebook_list(tmp_path)]
    assert names == ["01_data.ipynb", "02_features.ipynb", "05_vqa.ipynb", "10_report.ipynb"]
    assert [p.name for p in study.notebook_list(tmp_path, ["vqa", "01"])] == ["01_data.ipynb", "05_vqa.ipynb"]
    with pytest.raises(ConfigError, match=r"no notebook matches \['nothing'\]; have: 01_data, 02_features, "
                                          r"05_vqa, 10_report"):
        study.notebook_list(tmp_path, ["nothing"])


def test_strip_root_makes_every_path_under_the_root_relative_and_leaves_other_paths(tmp_path) -> None:
    root = tmp_path / "study"
    nb = tmp_path / "executed.ipynb"
    text = (f'{{"input_path": "{root}/notebooks/01_data.ipynb", "out": "saved {root}/results/smoke/x.json", '
            f'"sibling": "{root}-old/keep.json"}}')
    nb.write_text(text, encoding="utf-8")
    for given in (root, Path(f"{root}/")):  # with or without a trailing slash
        study.strip_root(nb, given)
        got = nb.read_text(encoding="utf-8")
        assert got == (f'{{"input_path": "notebooks/01_data.ipynb", "out": "saved results/smoke/x.json", '
                       f'"sibling": "{root}-old/keep.json"}}')


def _executed(path: Path, cells: list[tuple[str, list[str]]]) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src, metadata={"tags": tags}) for src, tags in cells]
    nbformat.write(nb, path)
    return path


def test_failing_cell_counts_the_source_notebooks_cells_from_one(tmp_path) -> None:
    """papermill's index counts its injected-parameters cell and not the error banner it adds at the top later;
    the message counts the cells of the notebook as written (its parameters cell is cell 1)."""
    executed = _executed(tmp_path / "01_x.ipynb", [
        ("<span>An Exception was encountered at cell 4</span>", ["papermill-error-cell-tag"]),
        ("profile = 'default'", ["parameters"]),
        ("profile = 'smoke'", ["injected-parameters"]),
        ("print('fine')", []),
        ("\n\n  values = [1, 2]  \nvalues[5]", []),
    ])
    assert study._failing_cell(executed, 3) == "cell 3 (`values = [1, 2]`)"
    assert study._failing_cell(executed, 0) == "cell 1 (`profile = 'default'`)"
    (tmp_path / "broken.ipynb").write_text("not json")
    assert study._failing_cell(tmp_path / "broken.ipynb", 3) == "cell index 3"


@pytest.fixture
def fake_study(tmp_path, monkeypatch) -> tuple[Path, list[str]]:
    """A study root with three notebooks whose "execution" takes 1, 2 and 3 s and is logged; the book takes 5 s."""
    root = tmp_path / "study"
    _touch_notebooks(root, ["03_c.ipynb", "01_a.ipynb", "02_b.ipynb"])
    monkeypatch.setenv("DAN_ROOT", str(root))
    ran: list[str] = []

    def execute(nb: Path, out: Path, parameters: dict, cwd: Path) -> float:
        ran.append(nb.name)
        out.write_text(f"executed {nb.name} with {json.dumps(parameters)}")
        return float(nb.name[1])

    monkeypatch.setattr(study, "execute", execute)
    monkeypatch.setattr(study, "build_book", lambda root: 5.0)
    return root, ran


def test_run_study_runs_the_stages_in_order_and_records_their_times(fake_study) -> None:
    root, ran = fake_study
    times_file = root / "results" / "smoke" / "study_times.json"
    times_file.parent.mkdir(parents=True)
    times_file.write_text(json.dumps({"00_removed": 9.0, "01_a": 7.0, "book": 7.0, "total": 30.0}))
    times = study.run_study("smoke")
    assert ran == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"]
    # a complete run records its own stages only: not those of a notebook no longer in the study
    assert [k for k in times] == ["01_a", "02_b", "03_c", "book", "total"]
    assert [times[k] for k in ("01_a", "02_b", "03_c", "book")] == [1.0, 2.0, 3.0, 5.0]
    assert json.loads(times_file.read_text()) == times
    for name in ran:  # every executed copy is published for the book
        copy = root / "book" / "notebooks" / name
        assert copy.read_text() == f'executed {name} with {{"profile": "smoke"}}'


def test_a_partial_study_updates_its_stages_in_the_last_record_and_claims_no_total_or_book(fake_study) -> None:
    root, ran = fake_study
    times_file = root / "results" / "smoke" / "study_times.json"
    times_file.parent.mkdir(parents=True)
    times_file.write_text(json.dumps({"01_a": 7.0, "02_b": 8.0, "03_c": 9.0, "book": 7.0, "total": 31.0}))
    times = study.run_study("smoke", only=["02_b"], book=False)
    assert ran == ["02_b.ipynb"]
    assert times == {"01_a": 7.0, "02_b": 2.0, "03_c": 9.0}
    assert json.loads(times_file.read_text()) == times


def test_a_study_into_another_folder_records_times_only_when_asked_and_builds_no_book(fake_study, tmp_path,
                                                                                     monkeypatch) -> None:
    root, _ = fake_study

    def no_book(root: Path) -> float:
        raise AssertionError("the book is built from book/notebooks, which a study into another folder leaves")

    monkeypatch.setattr(study, "build_book", no_book)
    times_file = root / "results" / "smoke" / "study_times.json"
    study.run_study("smoke", out=tmp_path / "copies", book=True)
    assert not times_file.exists() and not (root / "book").exists()
    assert (tmp_path / "copies" / "03_c.ipynb").is_file()
    times = study.run_study("smoke", out=tmp_path / "copies", book=False, record_times=True)
    assert json.loads(times_file.read_text()) == times and "book" not in times
