"""CLI misuse (issue 8): unknown profile, unknown attention type, K < 0, paths that do not exist, bad data ->
one line on stderr naming the accepted values, exit code != 0, no traceback; ``--debug`` shows the traceback.

Covers ``python -m dan.train``, ``dan.features``, ``dan.data`` and ``dan.study`` in process (fast) and each once as
a real subprocess (the ``-m`` entry points and what reaches the terminal).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from dan.data.__main__ import main as data_main
from dan.features import main as features_main
from dan.io import ConfigError, DanError
from dan.study import main as study_main
from dan.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]


def one_line_error(capsys, prog: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith(f"{prog}: error: ") or err.startswith("error: "), err
    return err


@pytest.fixture
def train_argv(smoke_data, smoke_features, tmp_path) -> list[str]:
    return ["--profile", "smoke", "--data", str(smoke_data), "--features", str(smoke_features),
            "--out", str(tmp_path / "run"), "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize("extra, message", [
    (["--profile", "huge"], "unknown profile 'huge'; accepted: smoke, default, full, real, paper"),
    (["--attention", "cross"], "unknown attention 'cross'; accepted: dual, visual, textual, none"),
    (["--steps", "-1"], "steps (K) must be an integer >= 0, got -1"),
    (["--steps", "two"], "argument --steps: invalid int value: 'two'"),
    (["--task", "captioning"], "unknown task 'captioning'; accepted: vqa, matching"),
    (["--data", "/nonexistent/data"], "--data folder not found: /nonexistent/data"),
    (["--features", "/nonexistent/features"], "--features folder not found: /nonexistent/features"),
    (["--soft-targets", "maybe"], "argument --soft-targets: expected true or false, got 'maybe'"),
    (["--lr", "nan"], "lr must be a finite number in (0, 100], got nan"),
    (["--max-train", "0"], "max_train must be an integer >= 1 (or unset), got 0"),
    # found by fuzzing: "" trained into the profile's default run folder; the others were tracebacks (a MemoryError
    # after K = 10**20 attention layers, torch's overflow, 100000 threads) or a silent second decay at one epoch
    (["--out", ""], "out must be a folder path or unset (None), got ''"),
    (["--data", ""], "data must be a folder path or unset (None), got ''"),
    (["--steps", "99999999999999999999"], "steps must be at most 100 (each step adds attention layers of its own"),
    (["--hidden-dim", "99999999999999999999"], "hidden_dim must be at most 65536"),
    (["--threads", "100000"], "threads must be at most 1024 (torch starts that many CPU threads), got 100000"),
    (["--lr-decay-epochs", "2", "2"], "lr_decay_epochs must be increasing epochs (each decays the lr once)"),
    # the other task's flags, and SGD's momentum beside Adam, were ignored (and named a run folder of their own);
    # refused by TrainConfig.validate (dan.config.check_ignored), and given at their defaults by the CLI too
    (["--negatives", "hardest"], "task 'vqa' takes no negatives 'hardest': it is for task 'matching' (a vqa run "
                                 "ignores it); leave it unset (default negatives 'sampled') or set task 'matching'"),
    (["--task", "vqa", "--margin", "5", "--captions-per-image", "2"],
     "task 'vqa' takes no margin 5.0, captions_per_image 2: they are for task 'matching'"),
    (["--task", "vqa", "--margin", "100"], "task 'vqa' takes no margin 100.0: it is for task 'matching'"),
    (["--task", "matching", "--soft-targets", "true"], "task 'matching' takes no soft_targets True: it is for task "
                                                        "'vqa'"),
    (["--task", "matching", "--val-split", "val2014"], "task 'matching' takes no val_split 'val2014'"),
    (["--optimizer", "adam", "--momentum", "0.5"], "momentum 0.5 is SGD's; the optimizer of this run is 'adam', which "
                                                   "would ignore it: leave momentum unset (default 0.9) or set "
                                                   "optimizer 'sgd'"),
    (["--momentum", "0.9"], "momentum 0.9 is SGD's; the optimizer of this run is 'adam'"),  # the smoke preset's
])
def test_train_cli_misuse(train_argv, tmp_path, capsys, extra, message):
    code = 2
    try:
        code = train_main([*train_argv, *extra])
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    assert code == 2
    assert message in one_line_error(capsys, "python -m dan.train")
    assert not (tmp_path / "run").exists()


def test_train_cli_debug_shows_the_error(train_argv):
    with pytest.raises(ConfigError, match="unknown attention"):
        train_main([*train_argv, "--attention", "cross", "--debug"])


def _copy_annotations(smoke_data: Path, dst: Path) -> Path:
    for rel in ("vqa", "captions"):
        (dst / rel).mkdir(parents=True)
        for p in (smoke_data / rel).iterdir():
            (dst / rel / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.mark.parametrize("case, message", [
    ("malformed", r"v2_OpenEnded_mscoco_val2014_questions\.json is not valid JSON \(line 1"),
    ("empty question", r"v2_OpenEnded_mscoco_val2014_questions\.json: question \d+ is empty after tokenisation: .\?!."),
    ("missing key", r"v2_OpenEnded_mscoco_val2014_questions\.json: question #0: missing key\(s\) 'image_id'"),
])
def test_train_cli_bad_data(smoke_data, train_argv, tmp_path, capsys, case, message):
    root = _copy_annotations(smoke_data, tmp_path / "data")
    path = root / "vqa" / "v2_OpenEnded_mscoco_val2014_questions.json"
    if case == "malformed":
        path.write_text(path.read_text()[:200])
    else:
        qs = json.loads(path.read_text())
        if case == "empty question":
            qs["questions"][0]["question"] = " ?! "
        else:
            del qs["questions"][0]["image_id"]
        path.write_text(json.dumps(qs))
    argv = [*train_argv]
    argv[argv.index("--data") + 1] = str(root)
    assert train_main(argv) == 2
    assert re.search(message, one_line_error(capsys, "python -m dan.train"))


def test_features_cli_misuse(tmp_path, capsys, smoke_data):
    with pytest.raises(SystemExit) as exc:
        features_main(["--data", str(smoke_data), "--out", str(tmp_path / "f"), "--profile", "huge"])
    assert exc.value.code == 2
    err = one_line_error(capsys, "python -m dan.features")
    assert "invalid choice: 'huge'" in err and "smoke" in err and "default" in err
    assert features_main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "f")]) == 2
    assert "--data folder not found" in one_line_error(capsys, "python -m dan.features")
    assert features_main(["--data", str(smoke_data), "--out", str(tmp_path / "f"), "--splits", "test2015"]) == 2
    assert "['test2015'] not in" in one_line_error(capsys, "python -m dan.features")
    with pytest.raises(DanError, match="--data folder not found"):
        features_main(["--data", str(tmp_path / "nope"), "--out", str(tmp_path / "f"), "--debug"])
    # 4097 DataLoader processes were started until the command was killed, leaving a partial store
    assert features_main(["--data", str(smoke_data), "--out", str(tmp_path / "f"), "--num-workers", "4097"]) == 2
    assert "num_workers must be at most 64 (each is a process), got 4097" in \
        one_line_error(capsys, "python -m dan.features")
    assert not (tmp_path / "f").exists()


def test_features_cli_bad_image_is_one_line_or_a_reported_skip(smoke_data, tmp_path, capsys):
    folder = tmp_path / "data" / "images" / "val2014"
    folder.mkdir(parents=True)
    good = sorted((smoke_data / "images" / "val2014").iterdir())[:2]
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    bad = folder / "COCO_val2014_000000999999.jpg"
    bad.write_bytes(good[0].read_bytes()[:300])  # a truncated JPEG
    argv = ["--data", str(tmp_path / "data"), "--out", str(tmp_path / "f"), "--profile", "smoke", "--image-size",
            "64", "--num-workers", "0", "--device", "cpu", "--quiet"]
    assert features_main(argv) == 2
    err = one_line_error(capsys, "python -m dan.features")
    assert f"cannot read image {bad} (image id 999999)" in err and "--skip-bad-images" in err
    assert not (tmp_path / "f" / "val2014" / "meta.json").exists()
    assert features_main([*argv, "--skip-bad-images"]) == 0
    out, err = capsys.readouterr()
    assert "val2014: 2 images" in out and "skipped 1" in out and bad.name in err


def test_data_cli_misuse(tmp_path, capsys):
    assert data_main(["check", "--root", str(tmp_path / "nope")]) == 2
    assert "data root not found" in one_line_error(capsys, "python -m dan.data")
    assert data_main(["info", "--profile", "huge"]) == 2
    err = one_line_error(capsys, "python -m dan.data")
    assert "unknown profile 'huge' (accepted: smoke, default, full, real)" in err
    with pytest.raises(SystemExit) as exc:
        data_main(["frobnicate"])
    assert exc.value.code == 2
    assert "invalid choice: 'frobnicate'" in one_line_error(capsys, "python -m dan.data")
    with pytest.raises(SystemExit):  # a subcommand's usage error is one line too
        data_main(["generate", "--seed", "abc"])
    assert "invalid int value: 'abc'" in one_line_error(capsys, "python -m dan.data generate")


def test_train_cli_out_naming_a_file_is_one_line(train_argv, tmp_path, capsys):
    from dan.train import main as train_main

    (tmp_path / "afile").write_text("not a folder")
    assert train_main([*train_argv, "--out", str(tmp_path / "afile")]) == 2
    assert "the run folder (--out) " in one_line_error(capsys, "python -m dan.train")
    assert (tmp_path / "afile").read_text() == "not a folder"


@pytest.mark.parametrize("prog, argv, flag", [
    # found by fuzzing: an empty path was read as "." (the notebooks executed into the current folder, features
    # stores written there) or as unset (the default output, profile or data root), and --only "" or --only with no
    # name ran every notebook of the study
    ("study", ["--out", ""], "--out"),
    ("study", ["--profile", ""], "--profile"),
    ("study", ["--only", ""], "--only"),
    ("study", ["--only"], "--only"),
    ("evaluate", ["run", "--split", "val2014", "--out", ""], "--out"),
    ("evaluate", ["run", "--split", "val2014", "--data", ""], "--data"),
    ("evaluate", ["", "--split", "val2014"], "run_dir"),
    ("record", ["--run", "r", "--out", "", "--command", "x"], "--out"),
    ("record", ["--run", "", "--out", "r.json", "--command", "x"], "--run"),
    ("features", ["--data", "d", "--out", ""], "--out"),
    ("features", ["--data", "d", "--out", "o", "--weights", ""], "--weights"),
    ("data", ["generate", "--profile", "smoke", "--out", ""], "--out"),
    ("data", ["check", "--root", ""], "--root"),
])
def test_an_empty_path_or_name_on_the_command_line_is_refused_naming_the_flag(prog, argv, flag, capsys, tmp_path,
                                                                              monkeypatch):
    from dan.evaluate import main as evaluate_main
    from dan.record import main as record_main

    monkeypatch.chdir(tmp_path)
    main = {"study": study_main, "evaluate": evaluate_main, "record": record_main, "features": features_main,
            "data": data_main}[prog]
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert f"argument {flag}: expected a non-empty value, got ''" in err or (
        flag == "--only" and "argument --only: expected at least one argument" in err), err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra, message", [
    (["--seed", str(2**32)], "seed must be below 2**32, got 4294967296"),
    (["--val-split", "train2014"], "val_split must differ from train_split (both 'train2014')"),
])
def test_train_cli_refuses_a_seed_or_split_that_would_mislead(train_argv, capsys, extra, message):
    from dan.train import main as train_main

    assert train_main([*train_argv, *extra]) == 2
    assert message in one_line_error(capsys, "python -m dan.train")


def test_study_cli_misuse(tmp_path, capsys, monkeypatch):
    root = tmp_path / "study"
    (root / "notebooks").mkdir(parents=True)
    (root / "notebooks" / "01_data.ipynb").write_text("{}")
    monkeypatch.setenv("DAN_ROOT", str(root))
    assert study_main(["--profile", "huge"]) == 2
    err = one_line_error(capsys, "python -m dan.study")
    assert "unknown profile 'huge'; accepted: smoke, default, full" in err
    assert study_main(["--profile", "real"]) == 2
    err = one_line_error(capsys, "python -m dan.study")
    assert "run the commands of book/real_data.md" in err and "study profiles: smoke, default, full" in err
    assert study_main(["--profile", "smoke", "--only", "99_nothing"]) == 2
    assert "no notebook matches ['99_nothing']; have: 01_data" in one_line_error(capsys, "python -m dan.study")
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert study_main(["--profile", "smoke", "--out", str(blocker / "out")]) == 2
    assert "a_file" in one_line_error(capsys, "python -m dan.study")
    monkeypatch.setenv("DAN_ROOT", str(tmp_path / "nowhere"))
    assert study_main(["--profile", "smoke"]) == 2
    assert "no notebooks (NN_name.ipynb) in" in one_line_error(capsys, "python -m dan.study")
    assert not (tmp_path / "nowhere").exists()
    with pytest.raises(ConfigError, match="unknown profile"):
        study_main(["--profile", "huge", "--debug"])


@pytest.mark.parametrize("argv, named", [
    (["--book-only", "--profile", "smoke"], "--profile"),
    (["--book-only", "--only", "03"], "--only"),
    (["--book-only", "--out", "x", "--no-book"], "--out, --no-book"),
    (["--record-times"], "--record-times is for --out runs"),
    (["--book-only", "--fresh"], "it takes no --fresh"),
    (["--only", "03", "--fresh"], "--only executes the notebooks it names anyway; it takes no --fresh"),
])
def test_study_cli_refuses_options_it_would_ignore(argv, named, capsys):
    with pytest.raises(SystemExit) as exc:
        study_main(argv)
    assert exc.value.code == 2
    assert named in one_line_error(capsys, "python -m dan.study")


@pytest.mark.parametrize("module, argv, message", [
    ("dan.train", ["--profile", "smoke", "--attention", "cross", "--out", "{tmp}/run"],
     "accepted: dual, visual, textual, none"),
    ("dan.features", ["--data", "{tmp}/nope", "--out", "{tmp}/f"], "--data folder not found"),
    ("dan.study", ["--profile", "huge"], "accepted: smoke, default, full"),
    ("dan.data", ["check", "--root", "{tmp}/nope"], "data root not found"),
    ("dan.evaluate", ["{tmp}/nope", "--split", "val"], "no checkpoint at"),
])
def test_real_processes_print_one_line_and_debug_the_traceback(tmp_path, module, argv, message):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DAN_ROOT": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, timeout=120,
                          env=env, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr and message in proc.stderr
    if module == "dan.study":  # --debug: the same mistake with its traceback (dan.cli.guard, shared with dan.train)
        proc = subprocess.run([sys.executable, "-m", module, *argv, "--debug"], capture_output=True, text=True,
                              timeout=120, env=env, cwd=tmp_path)
        assert proc.returncode != 0 and "Traceback (most recent call last)" in proc.stderr and message in proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "f").exists()


def test_the_real_data_commands_the_book_prints_are_accepted(tmp_path, monkeypatch):
    """dan.reference.REAL_COMMANDS (the reproduction summary prints them): each `python ...` step parses and reaches
    its work (the download, the extraction and the training are replaced by recorders here)."""
    import importlib.util
    import shlex

    import dan.features
    import dan.train
    from dan.reference import REAL_COMMANDS

    script = Path(__file__).parents[1] / "data" / "download.py"
    spec = importlib.util.spec_from_file_location("dan_download_cmd", script)
    dl = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "dan_download_cmd", dl)
    spec.loader.exec_module(dl)
    reached: list[str] = []
    monkeypatch.setattr(dl, "fetch", lambda items, *a, **k: reached.append(f"download {len(items)}") or {})
    monkeypatch.setattr(dan.features, "build_features", lambda *a, **k: reached.append("features") or {})
    monkeypatch.setattr(dan.train, "train", lambda cfg, **k: reached.append(f"train {cfg.task}") or
                        type("R", (), {"run_dir": tmp_path, "metrics": {}})())
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "real").mkdir(parents=True)
    mains = {"data/download.py": dl.main, "-m dan.features": dan.features.main, "-m dan.train": dan.train.main}
    for command in REAL_COMMANDS.values():
        steps = [s.strip() for s in command.split("&&") if s.strip().startswith("python ")]
        assert len(steps) == 3, command
        for step in steps:
            words = shlex.split(step)[1:]
            key = words[0] if words[0] != "-m" else f"-m {words[1]}"
            argv = words[1:] if words[0] != "-m" else words[2:]
            assert mains[key](argv) == 0, step
    assert [r.split()[0] for r in reached] == ["download", "features", "train"] * 2, reached
    assert reached[2] == "train vqa" and reached[5] == "train matching" and reached[3] != "download 0"


def test_the_real_profile_reads_data_real_and_flickr30k(tmp_path, capsys, monkeypatch):
    """Every command's real profile reads where data/download.py writes (data/real), and m-DAN's preset reads
    Flickr30K's Karpathy split, the paper's matching data set."""
    from dan.config import preset
    from dan.io import study_paths

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    assert study_paths("real").data == tmp_path / "data" / "real"
    assert study_paths("smoke").data == tmp_path / "data" / "generated" / "smoke"
    assert preset("real", "matching").captions_file == "captions/dataset_flickr30k.json"
    assert preset("default", "matching").captions_file == "captions/dataset_synth.json"
    assert train_main(["--task", "vqa", "--profile", "real"]) == 2
    assert f"no data set at {tmp_path / 'data' / 'real'} " in one_line_error(capsys, "python -m dan.train")


def test_a_misspelled_profile_creates_no_folder(tmp_path, monkeypatch):
    """Every notebook's first cell runs study_paths(profile).ensure(): -p profile smok made data/generated/smok and
    results/smok/{features,runs} before the error."""
    from dan.io import ConfigError, study_paths

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    with pytest.raises(ConfigError, match=r"unknown profile 'smok'; accepted: smoke, default, full, real"):
        study_paths("smok").ensure()
    assert list(tmp_path.iterdir()) == []
    assert study_paths("smoke").ensure().runs.is_dir()
    for profile in (1, None, ["smoke"]):  # -p profile 1: pathlib's TypeError in every notebook's first cell
        with pytest.raises(ConfigError, match=rf"unknown profile {re.escape(repr(profile))}; accepted: smoke"):
            study_paths(profile)


def test_train_cli_passes_every_flag_it_is_given_into_the_config(monkeypatch, capsys, tmp_path):
    """Each kind of flag reaches the config dan.train trains: a list (several values, or none), a boolean
    (true/false), an optional int, floats, strings; an unset flag keeps the profile's preset, and task and profile
    select the preset the flags override."""
    import dan.train
    from dan.config import preset

    seen = []

    def fake_train(cfg, progress=True):  # noqa: ANN001, ANN202
        seen.append((cfg, progress))
        return dan.train.RunResult(tmp_path, cfg, {"overall": 1.0}, [])

    monkeypatch.setattr(dan.train, "train", fake_train)
    argv = ["--task", "matching", "--profile", "smoke", "--lr-decay-epochs", "3", "5",
            "--embed-dim", "24", "--lr", "0.02", "--margin", "2.5", "--negatives", "hardest", "--seed", "7",
            "--clip-mode", "value", "--out", str(tmp_path / "run"), "--no-progress"]
    assert train_main(argv) == 0
    (cfg, progress), = seen
    assert json.loads(capsys.readouterr().out) == {"run_dir": str(tmp_path), "metrics": {"overall": 1.0}}
    assert not progress
    expected = preset("smoke", "matching", lr_decay_epochs=[3, 5], embed_dim=24, lr=0.02,
                      margin=2.5, negatives="hardest", seed=7, clip_mode="value", out=str(tmp_path / "run"))
    assert cfg == expected and cfg.hidden_dim == 32 and cfg.epochs == 6  # the rest: the smoke preset's
    seen.clear()
    assert train_main(["--profile", "smoke", "--soft-targets", "true", "--lr-decay-epochs"]) == 0
    (cfg, progress), = seen
    assert progress and cfg.task == "vqa" and cfg.soft_targets is True and cfg.lr_decay_epochs == []
    seen.clear()
    assert train_main(["--profile", "smoke", "--soft-targets", "false"]) == 0
    assert seen[0][0].soft_targets is False
    seen.clear()
    assert train_main([]) == 0  # no flag at all: the default profile's r-DAN preset
    assert seen[0][0] == preset("default", "vqa")


@dataclasses.dataclass
class _Commented:
    """Fields commented as TrainConfig's are (its source read by field_comments, so at module level)."""

    first: int = 1  # what the first
    # field does, continued
    plain: str = "x"
    third: float = 0.5  # third

    # not the third's: a blank line came before


def test_a_flags_help_is_its_whole_field_comment_with_the_lines_that_continue_it():
    """``field_comments``: the comment after a field, joined with the comment lines right below it (as
    TrainConfig's ``threads`` and ``eval_batch_size`` explain themselves over two lines); a blank or code line ends
    it, and a field without a comment has no entry."""
    from dan.cli import field_comments

    assert field_comments(_Commented) == {"first": "what the first field does, continued", "third": "third"}


def test_a_notebook_opened_before_the_one_it_needs_names_what_to_run_first(smoke_data, tmp_path, monkeypatch):
    """JupyterLab users open the chapters in any order. Every notebook's first cell runs study_paths(profile).ensure(),
    which made an empty data/generated/<profile>: 03_rdan opened before 01_data then failed with "no VQA questions
    file for split 'train2014'; looked for: ..." (four paths) and 02_features with "no images/ folder in ...",
    where a missing data set is "no data set at ...: generate it with ...". The feature and summary errors name
    the notebook that makes what is missing too."""
    from dan.config import preset
    from dan.features import build_features
    from dan.io import DataError, study_paths
    from dan.report import preset_run_metrics
    from dan.train import train

    monkeypatch.setenv("DAN_ROOT", str(tmp_path))
    paths = study_paths("smoke").ensure()  # the first cell of 02..08
    assert paths.runs.is_dir() and paths.features.is_dir() and not paths.data.exists()
    with pytest.raises(DataError, match=r"no data set at .*smoke .*generate it with `python -m dan.data generate "
                                        r"--profile smoke`"):
        train(dataclasses.replace(preset("smoke", "vqa"), device="cpu"), progress=False)
    with pytest.raises(DataError, match=r"no data set at .*smoke \(no such folder\): make it first, with the "
                                        r"notebook 01_data"):
        build_features(paths.data, paths.features, progress=False)
    with pytest.raises(DataError, match=r"vqa-dual-K2-s0 has not finished \(no metrics.json\); train it first: "
                                        r"the notebook 03_rdan \(profile 'smoke', seed 0\), or `python -m dan.train "
                                        r"--task vqa --profile smoke --seed 0`"):
        preset_run_metrics("smoke", "vqa")
    with pytest.raises(DataError, match=r"04_mdan .*--task matching"):
        preset_run_metrics("smoke", "matching")
    (tmp_path / "nofeatures").mkdir()  # 02_features not run: the folder (made by ensure) holds no store
    cfg = dataclasses.replace(preset("smoke", "vqa"), data=str(smoke_data), features=str(tmp_path / "nofeatures"),
                              device="cpu", out=str(tmp_path / "run"))
    # the command names the profile and every missing folder: without them dan.features would extract all the
    # folders with the default profile's backbone, replacing stores of another kind (a real run's ResNet-152 ones)
    with pytest.raises(DataError, match=r"no complete feature store .*dan\.features .* --profile smoke --splits "
                                        r"train2014 val2014` \(or the notebook 02_features\) first"):
        train(cfg, progress=False)
