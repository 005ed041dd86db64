"""The study command's bookkeeping, without running a kernel: which notebooks in which order, the cell a failure is
reported in, the paths stripped from executed copies, and the stage times recorded per run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import nbformat
import pytest

import dan.study as study
from dan.io import ConfigError, DanError, DataError


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
    """A partial run's duration is no total of the study, and the total it found is no longer the record's: it was
    dropped, so the last full run's total was lost from the file; it is kept as what it is, the last full run's
    total (through later partial runs, until a full run records its own)."""
    root, ran = fake_study
    times_file = root / "results" / "smoke" / "study_times.json"
    times_file.parent.mkdir(parents=True)
    times_file.write_text(json.dumps({"01_a": 7.0, "02_b": 8.0, "03_c": 9.0, "book": 7.0, "total": 31.0}))
    times = study.run_study("smoke", only=["02_b"], book=False)
    assert ran == ["02_b.ipynb"]
    assert times == {"01_a": 7.0, "02_b": 2.0, "03_c": 9.0, "total of the last full run": 31.0}
    assert list(times)[-1] == study.LAST_FULL_TOTAL == "total of the last full run"
    assert json.loads(times_file.read_text()) == times
    times = study.run_study("smoke", only=["01_a"])  # a second partial run, this one building the book
    assert times == {"01_a": 1.0, "02_b": 2.0, "03_c": 9.0, "book": 5.0, "total of the last full run": 31.0}
    assert json.loads(times_file.read_text()) == times
    times = study.run_study("smoke")
    assert set(times) == {"01_a", "02_b", "03_c", "book", "total"} and json.loads(times_file.read_text()) == times


@pytest.mark.parametrize("content, message", [
    ('[1, 2]', "expected seconds per stage (an object of numbers), got [1, 2]"),
    ('{"01_a": 7.0, "02_b": "8 s"}', "got 02_b: '8 s'"),
    ('{"01_a": NaN, "02_b": -1}', "got 01_a: nan, 02_b: -1"),
    (None, "is a folder, not a file")])
def test_a_partial_study_over_times_that_are_not_seconds_names_the_file_and_runs_nothing(fake_study, content,
                                                                                           message) -> None:
    """A list raised AttributeError, a text value TypeError in the final summary (after every notebook ran), NaN
    went through to the record; a folder in the file's place raised IsADirectoryError over the DanError of its
    write. Each is an error naming the file before any notebook runs (found by fuzzing)."""
    root, ran = fake_study
    times_file = root / "results" / "smoke" / "study_times.json"
    times_file.parent.mkdir(parents=True)
    times_file.mkdir() if content is None else times_file.write_text(content)
    with pytest.raises(DanError, match=re.escape(f"{times_file}") + ".*" + re.escape(message)):
        study.run_study("smoke", only=["02_b"], book=False)
    assert ran == []


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


@pytest.mark.parametrize("where, message", [
    ("file", "--out {out} is a file, not a folder: give a folder for the executed notebooks (it is created if "
             "missing)"),
    ("file/sub", "--out {out}: cannot create this folder, {file} on its path is a file"),
    ("notebooks", "--out {out} is in {root}/notebooks, one of the study's own source folders: each executed copy "
                  "would replace the notebook it is executed from; give a folder outside notebooks, records, "
                  "benchmarks and the dan package"),
    ("records/x", "--out {out} is in {root}/records, one of the study's own source folders: the executed copies "
                  "would land among the files every stage's resume key hashes; give a folder outside notebooks, "
                  "records, benchmarks and the dan package"),
    ("package", "--out {out} is in {package}, one of the study's own source folders: the executed copies would "
                "land among the files every stage's resume key hashes; give a folder outside notebooks, records, "
                "benchmarks and the dan package")])
def test_an_out_that_is_no_folder_for_the_copies_is_one_line_and_runs_nothing(fake_study, tmp_path, capsys, where,
                                                                              message) -> None:
    """--out FILE ended in "[Errno 17] File exists: 'FILE'" (and a file on its path in "[Errno 20] Not a directory"
    naming the folder); --out notebooks executed every notebook into itself, each executed copy replacing its
    source; --out in dan/, records/ or benchmarks/ wrote the copies among the files the resume key hashes."""
    from dan.study_resume import PACKAGE

    root, ran = fake_study
    (tmp_path / "file").write_text("a file")
    sources = {name: (root / "notebooks" / name).read_bytes() for name in ("01_a.ipynb", "02_b.ipynb")}
    out = {"file": tmp_path / "file", "file/sub": tmp_path / "file" / "sub", "notebooks": root / "notebooks",
           "records/x": root / "records" / "x", "package": PACKAGE / "executed"}[where]
    assert study.main(["--profile", "smoke", "--out", str(out), "--no-book"]) == 2
    expected = message.format(out=out, file=tmp_path / "file", root=root, package=PACKAGE)
    assert capsys.readouterr().err == f"python -m dan.study: error: {expected}\n"
    assert ran == [] and (where == "notebooks" or not out.is_dir())  # nothing executed, no folder made
    assert {name: (root / "notebooks" / name).read_bytes() for name in sources} == sources


def _fake_papermill(monkeypatch, effect: Callable[[Path], None]) -> list[dict]:
    """papermill.execute_notebook replaced by ``effect(output path)``; returns the calls' arguments (with the
    PYTHONHASHSEED the kernel would inherit)."""
    import papermill

    calls: list[dict] = []

    def execute_notebook(input_path: str, output_path: str, **kwargs) -> None:
        calls.append({"input": input_path, "output": output_path, "hashseed": os.environ.get("PYTHONHASHSEED"),
                      **kwargs})
        effect(Path(output_path))

    monkeypatch.setattr(papermill, "execute_notebook", execute_notebook)
    return calls


def test_execute_gives_papermill_the_parameters_and_folder_and_strips_the_root_from_the_copy(tmp_path,
                                                                                           monkeypatch) -> None:
    """The kernel gets the parameters, the working folder asked for, python3 and string hashing fixed (unless set);
    the executed copy keeps no path of this machine; the time returned is the call's."""
    root = tmp_path / "study"
    monkeypatch.setenv("DAN_ROOT", str(root))
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)

    def run(out: Path) -> None:
        time.sleep(0.05)
        out.write_text(f'{{"input_path": "{root}/notebooks/01_a.ipynb", "output_path": "{out}"}}')

    calls = _fake_papermill(monkeypatch, run)
    nb, out = root / "notebooks" / "01_a.ipynb", tmp_path / "staging" / "01_a.ipynb"
    out.parent.mkdir()
    seconds = study.execute(nb, out, {"profile": "smoke", "epochs": 2}, cwd=tmp_path / "elsewhere")
    assert 0.05 <= seconds < 30
    (call,) = calls
    assert (call["input"], call["parameters"], call["cwd"], call["kernel_name"]) == (
        str(nb), {"profile": "smoke", "epochs": 2}, str(tmp_path / "elsewhere"), "python3")
    assert call["hashseed"] == "0"
    # papermill wrote a temp file beside the copy, which took the copy's name (and is named so in the copy)
    assert Path(call["output"]).parent == out.parent and call["output"].endswith(".tmp")
    assert out.read_text() == f'{{"input_path": "notebooks/01_a.ipynb", "output_path": "{out}"}}'
    assert [p.name for p in out.parent.iterdir()] == ["01_a.ipynb"]
    monkeypatch.setenv("PYTHONHASHSEED", "5")  # one set by the user is kept
    study.execute(nb, out, {"profile": "smoke"}, cwd=tmp_path)
    assert calls[-1]["hashseed"] == "5"


def test_a_failing_cell_is_one_line_naming_notebook_cell_error_and_copy_and_the_copy_is_stripped(
        tmp_path, monkeypatch) -> None:
    """papermill's cell index (not the execution count) names the cell; a multi-line error value is one line;
    the executed copy with the error has this machine's paths stripped too."""
    from papermill.exceptions import PapermillExecutionError

    root = tmp_path / "study"
    monkeypatch.setenv("DAN_ROOT", str(root))

    def fail(out: Path) -> None:
        _executed(out, [("profile = 'smoke'", ["injected-parameters"]), (f"print('{root}/results')", []),
                        ("open('results/x.json')", [])])
        raise PapermillExecutionError(2, 7, "open(...)", "FileNotFoundError", "no such file:\n   x.json", [])

    _fake_papermill(monkeypatch, fail)
    out = tmp_path / "01_a.ipynb"
    with pytest.raises(DanError) as exc:
        study.execute(tmp_path / "notebooks" / "01_a.ipynb", out, {"profile": "smoke"}, cwd=tmp_path)
    assert str(exc.value) == (f"notebook 01_a.ipynb failed in cell 2 (`open('results/x.json')`): FileNotFoundError: "
                              f"no such file: x.json; the executed copy with the error is at {out}")
    assert str(root) not in out.read_text()


def _started(path: Path, started: list[bool]) -> Path:
    """An executed copy whose cells papermill started (``start_time`` set) or not."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(f"cell_{i} = {i}", metadata={
        "tags": ["injected-parameters"] if i == 0 else [],
        "papermill": {"start_time": "2024-01-01T00:00:00" if s else None,
                      "end_time": "2024-01-01T00:00:01" if s and i + 1 < len(started) and started[i + 1] else None}})
        for i, s in enumerate(started)]
    nbformat.write(nb, path)
    return path


def test_a_dead_kernel_names_the_cell_it_was_running_or_a_cell_without_a_copy(tmp_path, monkeypatch) -> None:
    """The cell named is the last one papermill started (it has no end time); with no executed copy, or none of
    its cells started, the message says "a cell" and is still the study's one-line error (not a missing file)."""
    from nbclient.exceptions import DeadKernelError

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    copies = {"running": [True, True, True, False], "unstarted": [False, False], "none": None}
    assert study._last_started_cell(_started(tmp_path / "running.ipynb", copies["running"])) == 2
    assert study._last_started_cell(_started(tmp_path / "unstarted.ipynb", copies["unstarted"])) is None
    for name, started in copies.items():
        def die(out: Path, started: list[bool] | None = started) -> None:
            if started is not None:
                _started(out, started)
            raise DeadKernelError("Kernel died")

        _fake_papermill(monkeypatch, die)
        with pytest.raises(DanError, match=r"^notebook 01_a.ipynb: its kernel died in (\S+ \S+)") as exc:
            study.execute(tmp_path / "01_a.ipynb", tmp_path / f"{name}-out.ipynb", {}, cwd=tmp_path)
        where = "cell 2 (`cell_2 = 2`)" if name == "running" else "a cell"
        assert str(exc.value).startswith(f"notebook 01_a.ipynb: its kernel died in {where} (killed from outside")


def test_failing_cell_without_a_parameters_cell_and_with_a_long_first_line(tmp_path) -> None:
    """papermill injects its parameters at the top of a notebook without a parameters cell: that injected cell is
    not counted, but a "parameters" cell of the notebook's own is; the first line is cut at 80 characters."""
    long = "x = " + "1 + " * 30 + "1"
    executed = _executed(tmp_path / "01_x.ipynb", [
        ("profile = 'smoke'", ["injected-parameters"]),
        ("print('fine')", []),
        (long, []),
    ])
    assert study._failing_cell(executed, 2) == f"cell 2 (`{long[:80]}`)"
    own = _executed(tmp_path / "02_x.ipynb", [("steps = 2", ["parameters"]), ("1 / 0", [])])
    assert study._failing_cell(own, 1) == "cell 2 (`1 / 0`)"


@pytest.fixture
def fake_jupyter_book(tmp_path, monkeypatch) -> tuple[Path, list, dict]:
    """A study root with a last good book, a jupyter-book beside the interpreter, and subprocess.run replaced by
    a build (of 0.02 s) that writes ``index.html`` and ``intro.html`` into the folder it is given (unless
    ``result["writes"]`` is False) and exits with ``result["returncode"]``."""
    root = tmp_path / "study"
    (root / "_build" / "html").mkdir(parents=True)
    (root / "_build" / "html" / "marker").write_text("last good book")
    (root / "_config.yml").write_text("title: t\n")
    (root / "_toc.yml").write_text("root: intro\n")
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "jupyter-book").write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "executable", str(venv / "python"))
    calls: list = []
    result = {"returncode": 0, "stdout": "", "stderr": "", "writes": True}

    def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
        calls.append((cmd, kwargs))
        time.sleep(0.02)
        html = Path(cmd[cmd.index("--path-output") + 1]) / "_build" / "html"
        html.mkdir(parents=True, exist_ok=True)
        if result["writes"]:
            (html / "index.html").write_text("redirect")
            (html / "intro.html").write_text("new book")
        return subprocess.CompletedProcess(cmd, result["returncode"], result["stdout"], result["stderr"])

    monkeypatch.setattr(study.subprocess, "run", run)
    return root, calls, result


def test_build_book_builds_strictly_into_a_fresh_folder_and_then_replaces_the_book(fake_jupyter_book,
                                                                                   tmp_path) -> None:
    """The build is jupyter-book's beside the interpreter, strict (warnings are errors), of every page, into a
    staging folder emptied first (a killed build's pages do not reach the book); the new book replaces the old
    one whole, and neither the staging folder nor the old book (nor a killed swap's html.old) is left."""
    root, calls, _ = fake_jupyter_book
    stale = root / "_build" / "book-staging" / "_build" / "html"
    stale.mkdir(parents=True)
    (stale / "removed_page.html").write_text("from a killed build")
    (root / "_build" / "html.old").mkdir()
    assert study.build_book(root) >= 0.02  # the build's wall time, recorded as the "book" stage
    ((cmd, kwargs),) = calls
    staging = root / "_build" / "book-staging"
    assert cmd == [str(tmp_path / "venv" / "bin" / "jupyter-book"), "build", str(root), "--path-output", str(staging),
                   "--all", "-W", "-n", "--keep-going"]
    assert kwargs == {"cwd": root, "capture_output": True, "text": True}
    assert sorted(p.name for p in (root / "_build").iterdir()) == ["html"]
    assert sorted(p.name for p in (root / "_build" / "html").iterdir()) == ["index.html", "intro.html"]
    study.build_book(root, strict=False)
    assert calls[-1][0][-1] == "--all"


def test_a_failed_book_build_keeps_the_last_good_book_and_shows_the_end_of_its_output(fake_jupyter_book,
                                                                                      monkeypatch) -> None:
    """A build that fails (or is killed by a signal: a negative exit code) raises with the last 25 lines of its
    output and leaves ``_build/html`` as it was; without a jupyter-book beside the interpreter, the one on PATH
    is run."""
    root, calls, result = fake_jupyter_book
    result.update(stdout="".join(f"line {i}\n" for i in range(20)),
                  stderr="".join(f"line {i}\n" for i in range(20, 30)))
    for returncode in (1, -9):
        result["returncode"] = returncode
        with pytest.raises(DanError, match=r"the book build failed \(the previous book in _build/html is kept\):\n"
                                           r"line 5\nline 6\n(.|\n)*line 19\nline 20\n(.|\n)*line 29$"):
            study.build_book(root)
        assert [p.name for p in (root / "_build" / "html").iterdir()] == ["marker"]
        assert not (root / "_build" / "html.old").exists()
    monkeypatch.setattr(sys, "executable", str(root / "elsewhere" / "python"))
    monkeypatch.setattr(study.shutil, "which", lambda name: f"/opt/jb/bin/{name}")
    with pytest.raises(DanError):
        study.build_book(root)
    assert calls[-1][0][0] == "/opt/jb/bin/jupyter-book"


def test_a_book_build_outside_a_study_or_without_jupyter_book_says_what_is_missing(fake_jupyter_book, monkeypatch,
                                                                                   tmp_path, capsys) -> None:
    """Installed from a wheel and run outside a checkout, --book-only ran jupyter-book on the current folder (its
    traceback: "Couldn't find a Table of Contents file"); without the study extra it was "[Errno 2] No such file or
    directory: 'jupyter-book'". Both are now one line saying what is missing, and nothing is run."""
    root, calls, _ = fake_jupyter_book
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(DanError, match=r"no book \(_config\.yml, _toc\.yml\) in .*elsewhere; run from the study's "
                                       r"folder or set DAN_ROOT to it"):
        study.build_book(elsewhere)
    monkeypatch.setenv("DAN_ROOT", str(elsewhere))
    assert study.main(["--book-only"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    monkeypatch.setattr(sys, "executable", str(tmp_path / "bare" / "python"))
    monkeypatch.setattr(study.shutil, "which", lambda name: None)
    with pytest.raises(DanError, match=r"needs jupyter-book, which is neither beside .* nor on PATH; install the "
                                       r"study extra in the repository: pip install '\.\[study\]'"):
        study.build_book(root)
    assert calls == [] and [p.name for p in (root / "_build" / "html").iterdir()] == ["marker"]


def test_executing_without_papermill_names_the_study_extra(tmp_path, monkeypatch) -> None:
    """``pip install .`` (no extras) then ``python -m dan.study`` in a checkout: a ModuleNotFoundError traceback."""
    monkeypatch.setitem(sys.modules, "papermill", None)  # as if not installed
    with pytest.raises(DanError, match=r"executing the notebooks needs papermill \(.*\); install the study extra "
                                       r"in the repository: pip install '\.\[study\]'"):
        study.execute(tmp_path / "01_a.ipynb", tmp_path / "out.ipynb", {"profile": "smoke"}, cwd=tmp_path)


def test_a_book_build_that_exits_0_without_writing_a_book_keeps_the_last_one(fake_jupyter_book) -> None:
    """jupyter-book exiting 0 with no index.html: the old book was moved to html.old before the swap raised a
    FileNotFoundError, so _build/html was gone. Now a clear error, with the old book in place and no staging left."""
    root, _, result = fake_jupyter_book
    result.update(writes=False, stdout="building...\nno pages\n")
    with pytest.raises(DanError, match=r"jupyter-book exited 0 but wrote no .*index\.html \(the previous book in "
                                       r"_build/html is kept\); its output ended:\nbuilding\.\.\.\nno pages$"):
        study.build_book(root)
    assert sorted(p.name for p in (root / "_build").iterdir()) == ["html"]
    assert [p.name for p in (root / "_build" / "html").iterdir()] == ["marker"]


def test_run_study_gives_each_notebook_the_extra_parameters_its_folder_and_the_root_and_stages_per_profile(
        fake_study, monkeypatch) -> None:
    """Every notebook runs in its own folder with the extra parameters beside the profile, DAN_ROOT set to the
    study's root for its kernel, and its executed copy staged under _build/staging/<profile>."""
    root, _ = fake_study
    seen: list[tuple] = []

    def execute(nb: Path, out: Path, parameters: dict, cwd: Path) -> float:
        seen.append((nb.name, out, parameters, cwd, os.environ.get("DAN_ROOT")))
        out.write_text("executed")
        return 1.0

    monkeypatch.setattr(study, "execute", execute)
    monkeypatch.delenv("DAN_ROOT")
    monkeypatch.setattr(study, "repo_root", lambda: root)
    study.run_study("smoke", extra={"epochs": 2}, book=False)
    staging = root / "_build" / "staging" / "smoke"
    assert seen == [(name, staging / name, {"profile": "smoke", "epochs": 2}, root / "notebooks", str(root))
                    for name in ("01_a.ipynb", "02_b.ipynb", "03_c.ipynb")]


@pytest.mark.parametrize("last", ['{"01_a": 7.0, "02_b": 8.0, "03_c": 9.0, "total": 24.0}', None])
@pytest.mark.parametrize("stop", [ValueError("broken"), KeyboardInterrupt()])
def test_a_study_stopped_by_an_error_or_ctrl_c_restores_the_last_record_and_publishes_nothing(
        fake_study, monkeypatch, stop, last) -> None:
    """Each finished stage's time is written at once (the later notebooks show this run's times so far); a run
    that stops (an error, or Ctrl-C) puts the last complete record back (or leaves none if there was none) and
    leaves book/notebooks as it was."""
    root, _ = fake_study
    times_file = root / "results" / "smoke" / "study_times.json"
    times_file.parent.mkdir(parents=True)
    if last is not None:
        times_file.write_text(last)
    (root / "book" / "notebooks").mkdir(parents=True)
    (root / "book" / "notebooks" / "01_a.ipynb").write_text("last good copy")
    seen: dict[str, dict] = {}

    def execute(nb: Path, out: Path, parameters: dict, cwd: Path) -> float:
        seen[nb.stem] = json.loads(times_file.read_text()) if times_file.exists() else {}
        out.write_text("executed")
        if nb.stem == "03_c":
            raise stop
        return 1.0

    monkeypatch.setattr(study, "execute", execute)
    with pytest.raises(type(stop)):
        study.run_study("smoke")
    assert seen["02_b"] == {"01_a": 1.0} and seen["03_c"] == {"01_a": 1.0, "02_b": 1.0}
    assert (times_file.read_text() if times_file.exists() else None) == last
    assert [p.name for p in (root / "book" / "notebooks").iterdir()] == ["01_a.ipynb"]
    assert (root / "book" / "notebooks" / "01_a.ipynb").read_text() == "last good copy"


def test_the_study_command_passes_its_options_to_the_run(fake_study, tmp_path, monkeypatch, capsys) -> None:
    """``python -m dan.study``: the default profile unless one is given, --only, --out and --no-book reach the run,
    a run without --out records its times, and --book-only builds the book (strict) from the root and runs
    nothing."""
    root, ran = fake_study
    books: list[tuple] = []
    monkeypatch.setattr(study, "build_book", lambda *args, **kwargs: books.append((args, kwargs)) or 5.0)
    assert study.main(["--only", "01"]) == 0
    assert ran == ["01_a.ipynb"] and books == [((root,), {})]
    assert (root / "book" / "notebooks" / "01_a.ipynb").read_text() == 'executed 01_a.ipynb with {"profile": "default"}'
    assert json.loads((root / "results" / "default" / "study_times.json").read_text()) == {"01_a": 1.0, "book": 5.0}
    assert study.main(["--profile", "smoke", "--no-book"]) == 0
    assert len(books) == 1 and ran[1:] == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"]
    assert set(json.loads((root / "results" / "smoke" / "study_times.json").read_text())) == {"01_a", "02_b", "03_c",
                                                                                             "total"}
    assert study.main(["--profile", "smoke", "--only", "02", "--out", str(tmp_path / "copies")]) == 0
    assert [p.name for p in (tmp_path / "copies").glob("*.ipynb")] == ["02_b.ipynb"] and len(books) == 1
    del ran[:]
    assert study.main(["--book-only"]) == 0
    assert ran == [] and books[1:] == [((root,), {})]
    assert "[study] book built in 5.0 s" in capsys.readouterr().out


def test_a_failed_book_builds_output_keeps_its_last_stdout_line_apart_from_its_first_stderr_line(
        fake_jupyter_book) -> None:
    """stdout without a final newline was glued to stderr's first line ("line 19line 20") in the error's tail,
    which then also showed one line too many of the start."""
    root, _, result = fake_jupyter_book
    result.update(returncode=1, stdout="\n".join(f"line {i}" for i in range(20)),
                  stderr="\n".join(f"line {i}" for i in range(20, 30)))
    with pytest.raises(DanError) as exc:
        study.build_book(root)
    assert str(exc.value).splitlines()[1:] == [f"line {i}" for i in range(5, 30)]


@pytest.fixture
def attempt(fake_study, monkeypatch) -> Callable[..., list[str]]:
    """``attempt(**run_study's arguments)`` runs the fake study once more and returns the stages it executed. The
    n-th attempt's stage i takes 10 n + i s, writes ``results/<profile>/<stage>.txt`` and its executed copy;
    ``fail="02_b"`` stops that stage with ``stop`` after it wrote half its copy and a file of partial work, as a
    failing, interrupted or killed notebook does."""
    root, _ = fake_study
    attempts: list[list[str]] = []

    def go(fail: str | None = None, stop: BaseException | None = None, profile: str = "smoke",
           **kwargs) -> list[str]:
        ran: list[str] = []
        attempts.append(ran)

        def execute(nb: Path, out: Path, parameters: dict, cwd: Path) -> float:
            ran.append(nb.stem)
            results = root / "results" / parameters["profile"]
            results.mkdir(parents=True, exist_ok=True)
            if nb.stem == fail:
                (results / f"{nb.stem}.partial").write_text("partial work")
                out.write_text("half a copy")
                raise stop or KeyboardInterrupt()
            (results / f"{nb.stem}.txt").write_text(f"{nb.stem} of attempt {len(attempts)}")
            out.write_text(f"{nb.stem} executed in attempt {len(attempts)} with {json.dumps(parameters)}")
            return 10.0 * len(attempts) + int(nb.stem[1])

        monkeypatch.setattr(study, "execute", execute)
        try:
            study.run_study(profile, **kwargs)
        except (KeyboardInterrupt, ValueError):
            assert fail is not None
        return ran

    return go


ALL = ["01_a", "02_b", "03_c"]


@pytest.mark.parametrize("stop", [ValueError("a failing cell"), KeyboardInterrupt()])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_rerun_after_a_failure_at_stage_k_executes_exactly_k_and_later_and_keeps_the_earlier_times(
        attempt, fake_study, capsys, k, stop) -> None:
    """Stages 1..k-1 are reused from the failed attempt (their copies are the ones published, their times the ones
    recorded, the total counts them once), stage k and every later one execute; the rerun says which."""
    root, _ = fake_study
    assert attempt(fail=ALL[k - 1], stop=stop) == ALL[:k]
    capsys.readouterr()
    assert attempt() == ALL[k - 1:]
    out = capsys.readouterr().out
    times = json.loads((root / "results" / "smoke" / "study_times.json").read_text())
    for i, stem in enumerate(ALL, 1):
        executed_in = 1 if i < k else 2
        assert times[stem] == 10.0 * executed_in + i
        assert (root / "book" / "notebooks" / f"{stem}.ipynb").read_text().startswith(
            f"{stem} executed in attempt {executed_in} ")
        assert (f"[study] {stem}.ipynb reused: current (its earlier time kept: {10.0 + i:.1f} s)" in out) == (i < k)
    assert f"[study] executing from {ALL[k - 1]}.ipynb: no completed executed copy of it" in out
    reused = sum(10.0 + i for i in range(1, k))
    assert times["book"] == 5.0 and reused <= times["total"] < reused + 20
    assert attempt() == []  # a third run reuses every stage
    assert "executing from" not in capsys.readouterr().out


def test_a_changed_notebook_re_executes_it_and_every_later_stage_and_its_mtime_alone_does_not(attempt,
                                                                                           fake_study) -> None:
    root, _ = fake_study
    assert attempt() == ALL
    os.utime(root / "notebooks" / "01_a.ipynb", (1, 1))  # touched, not changed
    assert attempt() == []
    (root / "notebooks" / "02_b.ipynb").write_text('{"cells": []}')
    assert attempt() == ["02_b", "03_c"]
    assert attempt() == []


@pytest.mark.parametrize("first, second", [
    ({"profile": "smoke"}, {"profile": "default"}),
    ({"extra": {"epochs": 2}}, {"extra": {"epochs": 3}}),
    ({"extra": {"epochs": 2}}, {}),
])
def test_a_changed_profile_or_parameter_re_executes_every_stage(attempt, tmp_path, first, second) -> None:
    """Into the same folder (``--out``): a profile of its own does not reach another profile's staging otherwise."""
    assert attempt(out=tmp_path / "copies", **first) == ALL
    assert attempt(out=tmp_path / "copies", **first) == []
    assert attempt(out=tmp_path / "copies", **second) == ALL
    assert (tmp_path / "copies" / "01_a.ipynb").read_text().startswith("01_a executed in attempt 3 ")


def test_a_half_written_or_changed_executed_copy_is_not_reused(attempt, fake_study) -> None:
    """A stage that stops leaves no stamp, even over the stamp of an earlier attempt that completed it (its copy
    then holds half a copy here, as papermill's progressive writes left it before); a completed copy changed
    since is not the one that completed."""
    root, _ = fake_study
    staging = root / "_build" / "staging" / "smoke"
    assert attempt() == ALL
    assert attempt(fresh=True, fail="02_b") == ["01_a", "02_b"]
    assert (staging / "02_b.ipynb").read_text() == "half a copy"
    assert attempt() == ["02_b", "03_c"]
    (staging / "03_c.ipynb").write_text((staging / "03_c.ipynb").read_text()[:10])
    assert attempt() == ["03_c"]
    (staging / "01_a.ipynb").unlink()
    assert attempt() == ALL


def test_fresh_executes_every_stage(attempt, fake_study, capsys, monkeypatch) -> None:
    root, _ = fake_study
    assert attempt() == ALL
    assert attempt(fresh=True) == ALL
    assert "[study] executing from 01_a.ipynb: --fresh" in capsys.readouterr().out
    ran: list[str] = []
    monkeypatch.setattr(study, "execute", lambda nb, out, parameters, cwd: ran.append(nb.stem) or 1.0)
    assert study.main(["--profile", "smoke", "--fresh", "--no-book"]) == 0
    assert ran == ALL


def test_only_executes_what_it_names_and_a_whole_rerun_then_executes_it_and_every_later_stage(attempt) -> None:
    """``--only`` re-executes a current stage; the whole study after it reuses the stages before that one only
    (the later stages' copies were made from what the re-executed stage wrote before)."""
    assert attempt() == ALL
    assert attempt(only=["02_b"]) == ["02_b"]
    assert attempt() == ["02_b", "03_c"]
    assert attempt(only=["01_a", "02_b"]) == ["01_a", "02_b"]
    assert attempt() == ["03_c"]  # the stages --only executed from the first one on form the study's chain


def test_data_changed_since_a_stage_finished_shrinks_the_reuse_and_added_files_do_not(attempt,
                                                                                      fake_study) -> None:
    """Files the interrupted stage added (its partial work) leave the reuse as it was; a file an earlier stage
    wrote that changed or went since re-executes from that stage (and the study's own times file is no data)."""
    root, _ = fake_study
    results = root / "results" / "smoke"
    assert attempt(fail="03_c") == ALL
    assert (results / "03_c.partial").is_file()
    assert attempt(fail="03_c") == ["03_c"]
    (results / "02_b.txt").write_text("changed by hand")
    assert attempt(fail="03_c") == ["02_b", "03_c"]
    (results / "01_a.txt").unlink()
    assert attempt() == ALL
    (results / "elsewhere.txt").write_text("added later")
    assert attempt() == []


def test_a_stage_executing_after_an_earlier_stages_file_went_leaves_that_stage_unreusable(attempt,
                                                                                        fake_study) -> None:
    """An ``--only`` run does not check what it does not reuse; the ledger it leaves must not make 01 and 02
    reusable when 01's file went before it (it records the data as they are after 03)."""
    root, _ = fake_study
    assert attempt() == ALL
    assert attempt() == []
    (root / "results" / "smoke" / "01_a.txt").unlink()
    assert attempt(only=["03_c"]) == ["03_c"]
    assert attempt() == ALL


def test_a_changed_package_input_or_environment_re_executes_every_stage(attempt, fake_study, tmp_path,
                                                                         monkeypatch) -> None:
    """The dan package's source, the records and benchmarks the notebooks read, and the installed packages."""
    import dan.study_resume as resume

    root, _ = fake_study
    package = tmp_path / "dan"
    package.mkdir()
    (package / "models.py").write_text("K = 2\n")
    monkeypatch.setattr(resume, "PACKAGE", package)
    (root / "benchmarks" / "results").mkdir(parents=True)
    (root / "benchmarks" / "results" / "train_gpu.json").write_text("{}")
    (root / "benchmarks" / "device_session.sh").write_text("echo\n")
    assert attempt() == ALL
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "models.cpython-311.pyc").write_text("cache")
    (root / "benchmarks" / "device_session.sh").write_text("echo again\n")  # no notebook runs it
    assert attempt() == []
    (package / "models.py").write_text("K = 3\n")
    assert attempt() == ALL
    (root / "benchmarks" / "results" / "train_gpu.json").write_text('{"new": 1}')
    assert attempt() == ALL
    (root / "records").mkdir()
    (root / "records" / "full_profile.json").write_text("{}")
    assert attempt() == ALL
    monkeypatch.setattr(resume, "_environment", lambda: "another")
    assert attempt() == ALL
    assert attempt() == []


@pytest.mark.parametrize("ledger", ["not json", '{"format": "dan-study-resume/1", "stages": [{"name": 1}]}', None])
def test_an_unreadable_or_foreign_ledger_reuses_nothing(attempt, fake_study, ledger) -> None:
    root, _ = fake_study
    assert attempt() == ALL
    path = root / "_build" / "staging" / "smoke" / ".study-resume.json"
    path.unlink()
    path.mkdir() if ledger is None else path.write_text(ledger)
    if ledger is None:  # a folder in its place: the first stage cannot drop its stamp there
        with pytest.raises(DanError, match="cannot write"):
            attempt()
    else:
        assert attempt() == ALL


def test_execute_never_leaves_a_half_written_copy_under_the_copys_name(tmp_path, monkeypatch) -> None:
    """While papermill writes, and when it is stopped (Ctrl-C), the copy's name holds the last complete copy; the
    interrupted one is removed."""
    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    out = tmp_path / "01_a.ipynb"
    out.write_text("the last complete copy")
    seen: list[str] = []

    def stopped(partial: Path) -> None:
        partial.write_text('{"cells": [')
        seen.append(out.read_text())
        raise KeyboardInterrupt

    _fake_papermill(monkeypatch, stopped)
    with pytest.raises(KeyboardInterrupt):
        study.execute(tmp_path / "notebooks" / "01_a.ipynb", out, {"profile": "smoke"}, cwd=tmp_path)
    assert seen == ["the last complete copy"] and out.read_text() == "the last complete copy"
    assert [p.name for p in tmp_path.iterdir()] == ["01_a.ipynb"]


def _found_at_draw_1(root: Path) -> tuple[Path, dict, Path]:
    """A fake study root whose smoke data set is draw 1 (its manifest) and whose draw 1 has a stage-times record:
    (the manifest, the manifest's fields but the seed, draw 1's record)."""
    manifest = root / "data" / "generated" / "smoke" / "manifest.json"
    manifest.parent.mkdir(parents=True)
    draw = {"generator": "dan.data.synth", "profile": "smoke"}
    manifest.write_text(json.dumps({**draw, "seed": 1}))
    draw1 = root / "results" / "smoke-seed1" / "study_times.json"
    draw1.parent.mkdir(parents=True)
    draw1.write_text('{"01_a": 9.0, "total": 9.0}')
    return manifest, draw, draw1


def test_a_study_that_generates_draw_0_again_records_and_resumes_in_draw_0s_folder(fake_study, monkeypatch) -> None:
    """After ``01_data -p seed 1`` (results/smoke-seed1), the study's 01 generates draw 0 again: its stage times go
    to draw 0's results/smoke, not to the folder of the draw found before it ran (draw 1's record is left as it
    was), and a rerun reuses every stage (the record of either draw is the runner's own, no notebook's output)."""
    root, _ = fake_study
    manifest, draw, draw1 = _found_at_draw_1(root)
    ran: list[str] = []

    def execute(nb: Path, out: Path, parameters: dict, cwd: Path) -> float:
        ran.append(nb.stem)
        if nb.stem == "01_a":  # generates the data set of its seed (0 unless given)
            manifest.write_text(json.dumps({**draw, "seed": parameters.get("seed", 0)}))
        results = study.study_paths("smoke").results
        results.mkdir(parents=True, exist_ok=True)
        (results / f"{nb.stem}.txt").write_text("written")
        if nb.stem == "03_c":  # the times so far are this draw's
            assert json.loads((results / "study_times.json").read_text()) == {"01_a": 1.0, "02_b": 2.0}
        out.write_text("executed")
        return float(nb.stem[1])

    monkeypatch.setattr(study, "execute", execute)
    study.run_study("smoke", book=False)
    assert ran == ["01_a", "02_b", "03_c"]
    assert json.loads((root / "results" / "smoke" / "study_times.json").read_text()).keys() == {
        "01_a", "02_b", "03_c", "total"}
    assert draw1.read_text() == '{"01_a": 9.0, "total": 9.0}'
    assert sorted(p.name for p in (root / "results" / "smoke").iterdir()) == ["01_a.txt", "02_b.txt", "03_c.txt",
                                                                               "study_times.json"]
    del ran[:]
    study.run_study("smoke", book=False)
    assert ran == []


@pytest.mark.parametrize("draw0_record", ["damaged", "folder"])
def test_a_bad_record_of_the_draw_01_generated_is_refused_and_neither_record_is_overwritten(fake_study, monkeypatch,
                                                                                            draw0_record) -> None:
    """A partial run whose 01 generated draw 0 over draw 1 reads draw 0's record; one that is damaged (or a folder)
    is a DataError naming it. The path of the record was switched before it was read, so the failed run's clean-up
    wrote draw 1's record into draw 0's file (or failed on the folder with an OSError that hid the message)."""
    root, _ = fake_study
    manifest, draw, draw1 = _found_at_draw_1(root)
    draw0 = root / "results" / "smoke" / "study_times.json"
    if draw0_record == "damaged":
        draw0.parent.mkdir(parents=True)
        draw0.write_text('{"01_a": "x"}')
    else:
        draw0.mkdir(parents=True)

    def execute(nb: Path, out: Path, parameters: dict, cwd: Path) -> float:
        manifest.write_text(json.dumps({**draw, "seed": 0}))  # 01 generates draw 0
        out.write_text("executed")
        return 1.0

    monkeypatch.setattr(study, "execute", execute)
    with pytest.raises(DataError, match=re.escape(str(draw0))):
        study.run_study("smoke", only=["01_a"], book=False)
    assert draw1.read_text() == '{"01_a": 9.0, "total": 9.0}'
    if draw0_record == "damaged":
        assert draw0.read_text() == '{"01_a": "x"}'
    else:
        assert draw0.is_dir()
