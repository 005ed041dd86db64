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
