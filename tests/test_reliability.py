"""Reliability (issue 8): every bad input and every interruption ends in a clear message and loses nothing.

Where each case of issue 8 is tested (file::test; "this file" = tests/test_reliability.py):

Images
- truncated JPEG, zero-byte, not an image, missing file for an id -> clear error naming file and id:
  test_features.py::test_bad_image_is_an_error_naming_file_and_id
  (counted, reported skip when asked: test_features.py::test_bad_images_are_counted_and_reported_when_skipping;
  the loaders' checks: test_data_loaders.py::test_image_file_checks; through the CLI, error and skip:
  test_cli.py::test_features_cli_bad_image_is_one_line_or_a_reported_skip)
- CMYK, grayscale, PNG with alpha -> handled: test_features_backbones.py::test_image_modes_are_converted_to_rgb
Annotations
- malformed JSON, missing keys, duplicate ids, question with an unknown image, empty question:
  test_data_loaders.py::test_vqa_bad_files_and_annotations,
  test_data_loaders.py::test_vqa_bad_questions_name_file_and_id, test_data_loaders.py::test_karpathy_bad_input;
  through the training CLI: test_cli.py::test_train_cli_bad_data
- question of only unknown words (kept as <unk>); answers outside the answer vocabulary at validation time
  (scored, no crash): this file::test_unknown_words_and_answers_outside_the_vocabulary_are_scored
Features
- store missing ids: this file::test_store_missing_ids_is_named,
  test_features.py::test_store_shapes_ids_and_region_layout
- store from another backbone than the checkpoint (dimension mismatch message):
  test_train.py::test_features_of_another_dimension_than_the_checkpoint_are_refused,
  test_features.py::test_store_rejects_inconsistent_files_and_other_backbones
- half-written store from a killed run, detected and resumed:
  this file::test_kill_9_during_the_feature_cli_is_detected_and_resumed_byte_identical,
  test_features.py::test_kill_9_during_extraction_then_rerun_gives_identical_store
Interruptions
- kill -9 during feature extraction, then rerun -> identical store: the two tests above
  (its forked loader workers do not keep its lock, so the rerun right after the kill is not refused:
  test_features.py::test_the_lock_of_a_killed_extraction_is_not_held_by_its_forked_loader_workers)
- kill -9 during training, then rerun -> same final metrics:
  test_train.py::test_kill_9_during_training_then_rerun_gives_the_same_metrics,
  test_train.py::test_stop_and_resume_gives_the_uninterrupted_result
- failing notebook in the study command (last good book kept, notebook and cell named):
  this file::test_a_failing_notebook_is_named_and_the_last_good_book_kept; its kernel killed (out of memory):
  this file::test_a_notebook_whose_kernel_dies_is_named_in_one_line
- Ctrl-C during the study: one line, and the kernel's processes end:
  this file::test_ctrl_c_during_a_notebook_is_one_line_and_ends_what_its_kernel_started
- Ctrl-C while a command is still starting (importing torch): one line:
  this file::test_ctrl_c_while_a_command_starts_is_one_line (for dan's modules only, other exceptions to the
  hook installed before: this file::test_the_one_line_hook_is_for_dan_commands_only)
- kill -9 of the process running an ablation sweep: its workers end too:
  test_ablation.py::test_sweep_workers_end_when_the_sweep_process_is_killed
- a second training into a run folder being trained: refused, the first one untouched:
  test_train.py::test_a_second_process_on_a_run_folder_being_trained_is_refused_and_leaves_it_alone
Disk
- a failing write (full or read-only target, a path under a file) -> clear message, no corrupt file:
  this file::test_full_disk_during_a_checkpoint_keeps_the_last_one,
  this file::test_read_only_target_for_metrics_is_one_line_and_leaves_nothing,
  this file::test_atomic_writes_leave_nothing_behind_on_failure,
  this file::test_atomic_writes_reach_the_disk_before_the_rename,
  this file::test_a_killed_writers_temp_file_is_removed_by_the_next_write (not another machine's:
  this file::test_a_temp_file_written_on_another_machine_is_kept),
  test_features.py::test_a_failing_disk_write_is_reported_and_the_rerun_completes,
  test_features.py::test_unwritable_target_gives_a_clear_error
CLI misuse (unknown profile / attention type, K < 0, missing paths -> one line naming the accepted values,
exit code 2, no traceback; --debug shows it): every test in test_cli.py, also
  test_data_synth.py::test_cli_errors_are_one_line,
  test_features.py::test_cli_builds_stores_and_reports_user_mistakes_in_one_line
"""

from __future__ import annotations

import contextlib
import csv
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch

import dan.features
from dan.io import DanError, DataError, _host_tag, atomic_path, write_bytes_atomic, write_json_atomic
from dan.prepare import prepare
from dan.store import PARTIAL, PROGRESS, FeatureStore
from dan.train import load_checkpoint, load_result, main, train

ROOT = Path(__file__).resolve().parents[1]
QUESTIONS, ANNOTATIONS = "v2_OpenEnded_mscoco_val2014_questions.json", "v2_mscoco_val2014_annotations.json"


def annotations_copy(smoke_data: Path, dst: Path) -> Path:
    """A data root with the smoke annotations (no images: training reads the feature stores)."""
    for rel in ("vqa", "captions"):
        shutil.copytree(smoke_data / rel, dst / rel)
    shutil.copyfile(smoke_data / "grounding.json", dst / "grounding.json")
    return dst


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_unknown_words_and_answers_outside_the_vocabulary_are_scored(smoke_data, make_cfg, tmp_path):
    root = annotations_copy(smoke_data, tmp_path / "data")
    qs = json.loads((root / "vqa" / QUESTIONS).read_text())
    anns = json.loads((root / "vqa" / ANNOTATIONS).read_text())
    q_unk, q_new = qs["questions"][0], qs["questions"][1]
    q_unk["question"] = "Zorblax quixotic flumph?"
    a_new = next(a for a in anns["annotations"] if a["question_id"] == q_new["question_id"])
    a_new["multiple_choice_answer"] = "purple elephant"
    a_new["answers"] = [{**a, "answer": "purple elephant"} for a in a_new["answers"]]
    (root / "vqa" / QUESTIONS).write_text(json.dumps(qs))
    (root / "vqa" / ANNOTATIONS).write_text(json.dumps(anns))
    cfg = make_cfg("vqa", tmp_path / "run", data=str(root), epochs=1, num_answers=4)
    prep = prepare(cfg, torch.device("cpu"))
    i = prep.val.question_ids.tolist().index(q_unk["question_id"])
    assert prep.val.lengths[i] == 3 and prep.val.tokens[i, :3].tolist() == [1, 1, 1]  # three <unk>, kept
    j = prep.val.question_ids.tolist().index(q_new["question_id"])
    assert prep.val.targets[j] == -1 and (prep.val.targets == -1).sum() > 10  # outside the top-4 answers
    result = train(cfg, progress=False)
    assert result.metrics["n"] == len(prep.val) and 0 <= result.metrics["overall"] <= 100
    with open(result.run_dir / "predictions.csv", newline="") as fh:
        rows = {int(r["question_id"]): r for r in csv.DictReader(fh)}
    assert len(rows) == len(prep.val) and rows[q_unk["question_id"]]["question"] == "Zorblax quixotic flumph?"
    scored = rows[q_new["question_id"]]
    assert scored["multiple_choice_answer"] == "purple elephant" and float(scored["score"]) == 0.0


def test_store_missing_ids_is_named(smoke_data, smoke_features, make_cfg, tmp_path):
    root = annotations_copy(smoke_data, tmp_path / "data")
    for name, key in ((QUESTIONS, "questions"), (ANNOTATIONS, "annotations")):
        obj = json.loads((root / "vqa" / name).read_text())
        obj[key][5]["image_id"] = 987654  # an image neither the data set nor the store has
        (root / "vqa" / name).write_text(json.dumps(obj))
    cfg = make_cfg("vqa", tmp_path / "run", data=str(root))
    store = smoke_features / "val2014"
    with pytest.raises(DataError, match=rf"1 image id\(s\) not in feature store {store}.*987654"):
        prepare(cfg, torch.device("cpu"))
    assert not (tmp_path / "run").exists()


def test_kill_9_during_the_feature_cli_is_detected_and_resumed_byte_identical(smoke_data, smoke_features, make_cfg,
                                                                              tmp_path, monkeypatch):
    out = tmp_path / "features"
    argv = ["--data", str(smoke_data), "--out", str(out), "--profile", "smoke", "--splits", "train2014",
            "--batch-size", "8", "--num-workers", "0", "--device", "cpu", "--quiet"]
    # `python -m dan.features` committing after every batch (the CLI's default is every 256 MB / 30 s)
    code = ("import sys\nfrom dataclasses import replace\nimport dan.features as f\n"
            "f.FEATURE_PROFILES['smoke'] = replace(f.FEATURE_PROFILES['smoke'], commit_every_mb=0.0)\n"
            "sys.exit(f.main(sys.argv[1:]))\n")
    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    progress, deadline = out / "train2014" / PARTIAL / PROGRESS, time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if progress.is_file() and json.loads(progress.read_text())["done"] >= 16:
            break
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    done = json.loads(progress.read_text())["done"]
    assert 16 <= done < 48 and not FeatureStore.exists(out / "train2014"), "killed too late"
    # detected: neither the store nor a training run accepts the half-written folder
    with pytest.raises(DataError, match="stopped before finishing; rerunning it resumes where it stopped"):
        FeatureStore(out / "train2014")
    with pytest.raises(DataError, match=r"no complete feature store for image folder 'train2014'.*dan\.features"):
        prepare(make_cfg("vqa", tmp_path / "run", features=str(out)), torch.device("cpu"))
    # resumed: the rerun starts after the committed images and ends byte-identical to a clean extraction
    starts, real = [], dan.features.run_pipeline

    def spy(items, start, *args, **kwargs):
        starts.append(start)
        return real(items, start, *args, **kwargs)

    monkeypatch.setattr(dan.features, "run_pipeline", spy)
    torch.set_num_threads(1)
    assert dan.features.main(argv) == 0
    assert starts == [done]
    assert files_of(out / "train2014") == files_of(smoke_features / "train2014")
    assert not (out / "train2014" / PARTIAL).exists()


def test_full_disk_during_a_checkpoint_keeps_the_last_one(vqa_run, make_cfg, tmp_path, monkeypatch):
    cfg = make_cfg("vqa", tmp_path / "run")
    real_save, calls = torch.save, []

    def full_disk(obj, f, *args, **kwargs):
        calls.append(f)
        if len(calls) == 2:  # the second epoch's checkpoint: half written, then the disk is full
            f.write(b"\x80\x02partial")  # (a file object: dan.checkpoint writes through one)
            raise RuntimeError("[enforce fail at inline_container.cc] . PytorchStreamWriter failed writing file "
                               "data/3: file write failed (No space left on device)")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(DanError, match=r"cannot write checkpoint .*run/checkpoint\.pt: .*No space left on device"):
        train(cfg, progress=False)
    run = tmp_path / "run"
    assert load_checkpoint(run)["epoch"] == 0  # the last good checkpoint is intact
    assert not list(run.glob(".*.tmp")) and not (run / "metrics.json").exists()
    monkeypatch.setattr(torch, "save", real_save)
    assert train(cfg, progress=False).metrics == vqa_run.metrics  # the rerun resumes and ends the same
    assert load_result(run).history == vqa_run.history


def test_read_only_target_for_metrics_is_one_line_and_leaves_nothing(smoke_data, smoke_features, tmp_path,
                                                                     monkeypatch, capsys):
    out = tmp_path / "run"
    base = ["--task", "vqa", "--profile", "smoke", "--data", str(smoke_data), "--features", str(smoke_features),
            "--epochs", "1", "--device", "cpu", "--no-progress"]
    argv = [*base, "--out", str(out)]
    real_replace = os.replace

    def read_only(src, dst, *args, **kwargs):
        if Path(dst).name == "metrics.json":
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(dst))
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", read_only)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("python -m dan.train: error:") and "Read-only file system" in err and "metrics.json" in err
    assert not (out / "metrics.json").exists() and not list(out.glob(".*.tmp"))
    assert load_checkpoint(out)["epoch"] == 0  # the trained model is kept: a rerun only evaluates
    monkeypatch.setattr(os, "replace", real_replace)
    assert main(argv) == 0 and (out / "metrics.json").is_file()
    capsys.readouterr()
    blocker = tmp_path / "a_file"
    blocker.write_text("keep")
    assert main([*base, "--out", str(blocker / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "a_file" in err and "Traceback" not in err
    assert blocker.read_text() == "keep"


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_atomic_writes_leave_nothing_behind_on_failure(tmp_path, monkeypatch, code):
    target = tmp_path / "out.json"
    write_json_atomic(target, {"old": 1})
    real_fsync = os.fsync

    def failing_fsync(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(DanError, match=rf"cannot write {target}: {os.strerror(code)}"):
        write_json_atomic(target, {"new": 2})
    monkeypatch.setattr(os, "fsync", real_fsync)
    assert json.loads(target.read_text()) == {"old": 1} and [p.name for p in tmp_path.iterdir()] == ["out.json"]
    with pytest.raises(DanError, match="cannot write"):
        write_bytes_atomic(target / "below_a_file.bin", b"x")  # a path under a file
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


def test_atomic_writes_reach_the_disk_before_the_rename(tmp_path, monkeypatch):
    events: list[tuple] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "checkpoint.pt"
    with atomic_path(target) as tmp:
        torch.save({"step": 1}, tmp)  # a writer that does not sync its own file
    assert events == [("fsync", str(tmp)), ("replace", str(tmp), str(target)), ("fsync", str(tmp_path))]


def test_atomic_json_is_the_same_bytes_for_equal_objects_and_gets_the_usual_permissions(tmp_path):
    """Keys sorted (equal objects written in another key order give byte-identical files: reruns compare by bytes),
    text kept as UTF-8, and the file readable as any other the process writes (mkstemp's temp files are 0600)."""
    a = write_json_atomic(tmp_path / "a.json", {"b": 1, "a": {"é": [2, 1], "c": None}})
    b = write_json_atomic(tmp_path / "b.json", {"a": {"c": None, "é": [2, 1]}, "b": 1})
    assert a.read_bytes() == b.read_bytes() == '{"a": {"c": null, "é": [2, 1]}, "b": 1}'.encode()
    old = os.umask(0o022)
    try:
        mode = write_bytes_atomic(tmp_path / "c.bin", b"x").stat().st_mode & 0o777
    finally:
        os.umask(old)
    assert mode == 0o644

def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "metrics.json"
    killed = ("import os, signal, sys\nfrom dan.io import atomic_path\nwith atomic_path(sys.argv[1]) as tmp:\n"
              "    tmp.write_text('half')\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", killed, str(target)]).returncode == -signal.SIGKILL
    (left,) = tmp_path.glob(".metrics.json.*.tmp")
    assert not target.exists() and left.read_text() == "half"
    other = tmp_path / left.name.replace("metrics.json", "other.json")  # another file's: not this write's business
    other.write_text("x")
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        writing = tmp_path / f".metrics.json.{live.pid}-{_host_tag()}.abc_12.tmp"  # a running writer's
        writing.write_text("being written")
        write_json_atomic(target, {"a": 1})
        assert json.loads(target.read_text()) == {"a": 1}
        assert not left.exists() and writing.exists() and other.exists()
    finally:
        live.kill()
        live.wait()


def test_a_temp_file_written_on_another_machine_is_kept(tmp_path):
    """A run folder shared over NFS: a writer on another host has a pid that means nothing here (no process of that
    number on this machine), so its temp file, being written, must not be removed as a killed writer's."""
    target = tmp_path / "metrics.json"
    elsewhere = ("import os, signal, socket, sys\nsocket.gethostname = lambda: 'another-host'\n"
                 "from dan.io import atomic_path\nwith atomic_path(sys.argv[1]) as tmp:\n"
                 "    tmp.write_text('half')\n    os.kill(os.getpid(), signal.SIGKILL)\n")
    assert subprocess.run([sys.executable, "-c", elsewhere, str(target)]).returncode == -signal.SIGKILL
    (theirs,) = tmp_path.glob(".metrics.json.*.tmp")  # its pid is not running here, as another host's need not be
    huge = tmp_path / f".metrics.json.{10**30}-{_host_tag()}.abc.tmp"  # no pid at all: kept, not an OverflowError
    huge.write_text("x")
    write_json_atomic(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    assert theirs.exists() and theirs.read_text() == "half" and huge.exists()


def _notebook(path: Path, cells: list[str]) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("profile = 'default'", metadata={"tags": ["parameters"]})]
    nb.cells += [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


def test_a_failing_notebook_is_named_and_the_last_good_book_kept(tmp_path, monkeypatch, capsys):
    from dan.study import main as study_main

    root = tmp_path / "study"
    _notebook(root / "notebooks" / "01_broken.ipynb",
              ["print('first cell runs')", "values = [1, 2]\nvalues[5]", "print('never reached')"])
    (root / "_build" / "html").mkdir(parents=True)
    (root / "_build" / "html" / "marker").write_text("last good book")
    (root / "book" / "notebooks").mkdir(parents=True)
    (root / "book" / "notebooks" / "01_broken.ipynb").write_text("last good executed copy")
    monkeypatch.setenv("DAN_ROOT", str(root))
    assert study_main(["--profile", "smoke"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]  # (a kernel may warn on lines of its own before)
    assert err.startswith("python -m dan.study: error: notebook 01_broken.ipynb failed in cell 3 (`values = [1, 2]`)")
    assert "IndexError: list index out of range" in err
    assert (root / "_build" / "html" / "marker").read_text() == "last good book"
    assert (root / "book" / "notebooks" / "01_broken.ipynb").read_text() == "last good executed copy"
    assert not (root / "results").exists()  # no study_times.json for a failed run


def test_a_failed_study_keeps_the_last_complete_stage_times(tmp_path, monkeypatch, capsys):
    from dan.study import main as study_main

    root = tmp_path / "study"
    _notebook(root / "notebooks" / "01_fine.ipynb", ["print('ok')"])
    _notebook(root / "notebooks" / "02_broken.ipynb", ["raise ValueError('broken')"])
    times = root / "results" / "smoke" / "study_times.json"
    times.parent.mkdir(parents=True)
    times.write_text('{"01_fine": 1.0, "02_broken": 2.0, "total": 3.0}')
    monkeypatch.setenv("DAN_ROOT", str(root))
    assert study_main(["--profile", "smoke"]) == 2
    assert "02_broken.ipynb failed" in capsys.readouterr().err
    assert times.read_text() == '{"01_fine": 1.0, "02_broken": 2.0, "total": 3.0}'  # not {"01_fine": ...} alone


def test_a_rerun_after_a_failing_notebook_reuses_the_executed_copies_before_it(tmp_path, monkeypatch, capsys):
    """With papermill and a kernel: the first notebook's copy, renamed into place whole and naming itself (not its
    temp file), is reused by the rerun after the second notebook is fixed; nothing half-written is left."""
    from dan.study import main as study_main

    root = tmp_path / "study"
    _notebook(root / "notebooks" / "01_fine.ipynb", ["print('ok')"])
    _notebook(root / "notebooks" / "02_fixed.ipynb", ["raise ValueError('broken')"])
    monkeypatch.setenv("DAN_ROOT", str(root))
    assert study_main(["--profile", "smoke", "--no-book"]) == 2
    assert "02_fixed.ipynb failed in cell 2" in capsys.readouterr().err
    _notebook(root / "notebooks" / "02_fixed.ipynb", ["print('fixed')"])
    assert study_main(["--profile", "smoke", "--no-book"]) == 0
    out = capsys.readouterr().out
    assert "[study] 01_fine.ipynb reused: current" in out and "[study] 01_fine.ipynb (profile" not in out
    assert "[study] executing from 02_fixed.ipynb: no completed executed copy of it" in out
    staging = root / "_build" / "staging" / "smoke"
    assert sorted(p.name for p in staging.iterdir()) == [".study-resume.json", "01_fine.ipynb", "02_fixed.ipynb"]
    for name in ("01_fine", "02_fixed"):
        executed = nbformat.read(staging / f"{name}.ipynb", as_version=4)
        assert executed.metadata.papermill.output_path == f"_build/staging/smoke/{name}.ipynb"


def test_a_notebook_whose_kernel_dies_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    from dan.study import main as study_main

    root = tmp_path / "study"
    _notebook(root / "notebooks" / "01_dies.ipynb",
              ["print('first cell runs')", "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)", "print('never')"])
    monkeypatch.setenv("DAN_ROOT", str(root))
    assert study_main(["--profile", "smoke"]) == 2  # was a DeadKernelError's traceback, exit code 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith(
        "python -m dan.study: error: notebook 01_dies.ipynb: its kernel died in cell 3 (`import os, signal`) "
        "(killed from outside, or out of memory); rerun the same command to resume")


def test_ctrl_c_during_a_notebook_is_one_line_and_ends_what_its_kernel_started(tmp_path):
    """Ctrl-C used to reach the kernel's process group as SIGINT (papermill's shutdown interrupts first): the cell's
    error, the kernel's errors on its closing sockets and its children's (sweep workers') tracebacks followed the
    one-line message. Now the kernel's group is killed, as kill -9 would, which every stage resumes from."""
    root, started = tmp_path / "study", tmp_path / "child.pid"
    _notebook(root / "notebooks" / "01_long.ipynb", [
        "import pathlib, subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'])  # a sweep worker, say\n"
        f"pathlib.Path({str(started)!r}).write_text(str(child.pid))\n"
        "time.sleep(120)"])
    proc = subprocess.Popen([sys.executable, "-m", "dan.study", "--profile", "smoke"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "DAN_ROOT": str(root), "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not started.is_file():
        time.sleep(0.05)
    time.sleep(0.5)  # the child has started its interpreter
    proc.send_signal(signal.SIGINT)  # what Ctrl-C in a terminal sends (the kernel runs in a session of its own)
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(started.read_text()), signal.SIGKILL)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("[IPKernelApp] WARNING")]
    assert proc.returncode == 130 and lines == ["python -m dan.study: interrupted; rerun the same command to resume"], \
        err[-3000:]
    child = int(started.read_text())
    deadline = time.time() + 10
    while time.time() < deadline and _alive(child):
        time.sleep(0.1)
    assert not _alive(child), "the kernel's child process outlived the interrupted study"


def test_ctrl_c_while_a_command_starts_is_one_line(tmp_path):
    """Each stage's ``guard`` turns Ctrl-C into one line, but only once its module has imported torch (seconds on
    a loaded machine); before that Python printed the import machinery's traceback."""
    code = ("import sys\nsys.argv[:1] = ['-m']\nimport dan\n"  # what runpy does for python -m dan.data
            "sys.argv[0] = dan.__file__.replace('__init__.py', 'data/__main__.py')\nraise KeyboardInterrupt\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stderr == "python -m dan.data: interrupted\n" and done.returncode == -signal.SIGINT
    started = subprocess.Popen([sys.executable, "-m", "dan.train", "--task", "vqa", "--out", str(tmp_path / "run")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.3)  # inside the imports
    started.send_signal(signal.SIGINT)
    err = started.communicate(timeout=60)[1]
    assert err.strip() in ("python -m dan.train: interrupted",
                           "python -m dan.train: interrupted; rerun the same command to resume"), err


def test_ctrl_c_while_a_console_script_starts_is_one_line_too():
    """``pip install .`` puts pyproject.toml's console scripts on PATH (dan-train, ...); a Ctrl-C while one was still
    importing torch printed the import machinery's traceback (25-33 lines), which ``python -m dan.train`` did not."""
    import tomllib

    import dan

    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]
    assert {name: target.split(":")[0].removesuffix(".__main__") for name, target in scripts.items()} == dan._SCRIPTS
    for name, module in dan._SCRIPTS.items():
        code = f"import sys\nsys.argv[0] = '/venv/bin/{name}'\nimport dan\nraise KeyboardInterrupt\n"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert done.stderr == f"python -m {module}: interrupted\n" and done.returncode == -signal.SIGINT, done.stderr
    code = "import sys\nsys.argv[0] = '/venv/bin/other-tool'\nimport dan\nraise KeyboardInterrupt\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "Traceback" in done.stderr  # a program of one's own that imports dan keeps its traceback


def test_the_one_line_hook_is_for_dan_commands_only(tmp_path):
    """The hook dan installs under ``python -m`` prints one line for a ``dan`` module only: a package of one's own
    that imports dan and is run with ``-m`` keeps its traceback; an exception hook installed before dan (e.g. by
    sitecustomize) still gets every other exception; and a Ctrl-C while runpy is still importing a dan package
    (``argv[0]`` still "-m") names the module from the command line, not "-m"."""
    (tmp_path / "mytool").mkdir()
    (tmp_path / "mytool" / "__init__.py").write_text("import dan\n", encoding="utf-8")
    (tmp_path / "mytool" / "__main__.py").write_text("raise KeyboardInterrupt\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])}
    done = subprocess.run([sys.executable, "-m", "mytool"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert "Traceback" in done.stderr and "KeyboardInterrupt" in done.stderr and "python -m" not in done.stderr
    chained = ("import sys\nsys.excepthook = lambda *a: print('own hook:', a[0].__name__, file=sys.stderr)\n"
               "sys.argv[:1] = ['-m']\nimport dan\n"
               "sys.argv[0] = dan.__file__.replace('__init__.py', 'train.py')\nraise ValueError\n")
    done = subprocess.run([sys.executable, "-c", chained], capture_output=True, text=True)
    assert done.stderr == "own hook: ValueError\n"
    early = ("import sys\nsys.orig_argv = [sys.executable, '-m', 'dan.data', 'generate']\nsys.argv[:1] = ['-m']\n"
             "import dan\nraise KeyboardInterrupt\n")  # Ctrl-C while dan/data/__init__.py is imported
    done = subprocess.run([sys.executable, "-c", early], capture_output=True, text=True, cwd=tmp_path)
    assert done.stderr == "python -m dan.data: interrupted\n"


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def test_the_case_map_above_names_existing_tests():
    here = Path(__file__)
    refs = re.findall(r"(this file|test_\w+\.py)::(test_\w+)", __doc__)
    assert len(refs) >= 25
    for file, name in refs:
        path = here if file == "this file" else here.with_name(file)
        assert re.search(rf"^def {name}\(", path.read_text(), re.M), f"{file}::{name} does not exist"
