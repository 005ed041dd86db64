"""The package outside this checkout: installed from a wheel (site-packages) and run from any folder."""

from __future__ import annotations

from pathlib import Path

import pytest

import dan.io
from dan.io import repo_root, study_paths

ROOT = Path(__file__).resolve().parents[1]


def _fake_package(parent: Path) -> Path:
    (parent / "dan").mkdir(parents=True)
    (parent / "dan" / "__init__.py").write_text("")
    return parent / "dan" / "io.py"


def test_an_installed_package_puts_its_defaults_under_the_current_directory(tmp_path, monkeypatch):
    """A wheel's dan/ lies in site-packages: the default data and results folders were resolved next to it
    (site-packages/data/generated/<profile>, site-packages/results/...), from any working directory."""
    monkeypatch.delenv("DAN_ROOT", raising=False)
    monkeypatch.setattr(dan.io, "__file__", str(_fake_package(tmp_path / "site-packages")))
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert repo_root() == work.resolve()
    assert study_paths("smoke").data == work.resolve() / "data" / "generated" / "smoke"
    assert study_paths("smoke").runs == work.resolve() / "results" / "smoke" / "runs"


def test_a_checkout_is_still_found_from_inside_it_or_from_its_editable_install(tmp_path, monkeypatch):
    monkeypatch.delenv("DAN_ROOT", raising=False)
    checkout = tmp_path / "checkout"
    monkeypatch.setattr(dan.io, "__file__", str(_fake_package(checkout)))
    (checkout / "pyproject.toml").write_text("")
    (checkout / "notebooks").mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # an editable install used from another folder: the checkout, as before
    assert repo_root() == checkout.resolve()
    monkeypatch.chdir(checkout / "notebooks")  # a notebook's kernel: the nearest checkout above it
    assert repo_root() == checkout.resolve()
    monkeypatch.setenv("DAN_ROOT", str(elsewhere))
    assert repo_root() == elsewhere.resolve()


@pytest.mark.parametrize("module", ["dan.data.__main__", "dan.cli", "dan.study", "dan.record"])
def test_help_says_where_relative_defaults_go(module, capsys):
    import importlib

    mod = importlib.import_module(module)
    main = mod.run_train_cli if module == "dan.cli" else mod.main
    argv = ["generate", "--help"] if module == "dan.data.__main__" else ["--help"]
    with pytest.raises(SystemExit):
        main(argv)
    assert "$DAN_ROOT" in " ".join(capsys.readouterr().out.split())


# --- the wheel -------------------------------------------------------------------------------------------------

def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))



def test_the_wheel_holds_every_file_of_the_package(tmp_path):
    """A non-editable install gets the package's files (every subpackage, and any data file it reads at run time),
    a license expression setuptools does not warn about, and console scripts that point at real functions."""
    import importlib
    import shutil
    import subprocess
    import sys
    import zipfile

    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (pyproject.toml's build requirement)")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "dan", src / "dan", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "deprecated" not in (proc.stdout + proc.stderr).lower(), proc.stdout + proc.stderr
    (wheel,) = (tmp_path / "dist").glob("dan-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        meta = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
        scripts = zf.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    package = {p.relative_to(src).as_posix() for p in (src / "dan").rglob("*") if p.is_file()}
    assert package - names == set(), f"files of dan/ missing from the wheel: {sorted(package - names)}"
    assert "License-Expression: MIT" in meta and "Requires-Python: >=3.11" in meta
    targets = [line.split("=", 1)[1].strip() for line in scripts.splitlines() if "=" in line]
    assert targets, scripts
    for target in targets:
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target
