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


# --- the wheel and the declared dependencies ------------------------------------------------------------------

def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _canon(name: str) -> str:
    import re

    return re.sub(r"[-_.]+", "-", name).lower()


def _declared(extras: tuple[str, ...]) -> set[str]:
    """Distribution names in ``dependencies`` and the given extras (a self-reference ``dan[x]`` adds extra x)."""
    import re

    project = _pyproject()["project"]
    reqs, todo, seen = list(project["dependencies"]), list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for req in project["optional-dependencies"][extra]:
            self_ref = re.fullmatch(r"dan\[([\w,\s-]+)\]", req.strip())
            if self_ref:
                todo += [e.strip() for e in self_ref.group(1).split(",")]
            else:
                reqs.append(req)
    return {_canon(re.match(r"[A-Za-z0-9._-]+", r).group(0)) for r in reqs}


def _imports(paths: list[Path]) -> dict[str, set[str]]:
    """Top-level names of the absolute imports in ``paths`` (.py files and notebooks' code cells) -> where."""
    import ast
    import json

    found: dict[str, set[str]] = {}
    for path in paths:
        if path.suffix == ".ipynb":
            cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
            sources = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
            sources = ["\n".join(line for line in s.splitlines() if not line.lstrip().startswith(("%", "!")))
                       for s in sources]
        else:
            sources = [path.read_text(encoding="utf-8")]
        for src in sources:
            for node in ast.walk(ast.parse(src)):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
                for name in names:
                    found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


# imported under try/except ImportError, where absent the code takes another path
OPTIONAL = {"triton": "dan.fuse and dan.resize's GPU kernels (torch's own dependency on Linux)"}


@pytest.mark.parametrize("where, extras", [
    (["dan"], ("study", "gpu")),
    (["notebooks"], ("study",)),
    (["tests"], ("dev",)),
    (["benchmarks", "data"], ("study",)),
])
def test_every_import_is_declared(where, extras):
    """A package that a module imports is named in pyproject.toml (its dependencies or the extra that the module's
    users install), not only reached through another package's requirements."""
    import importlib.metadata
    import sys

    dists = importlib.metadata.packages_distributions()
    files = [p for w in where for p in (ROOT / w).rglob("*") if p.suffix in (".py", ".ipynb")
             and "__pycache__" not in p.parts and p.parent != ROOT / "tests" / "notebooks"]
    local = {p.stem for p in files} | {"dan", "tests"}
    declared = _declared(extras)
    missing = {}
    for name, users in _imports(files).items():
        if name in sys.stdlib_module_names or name in local or name in OPTIONAL:
            continue
        owners = {_canon(d) for d in dists.get(name, [])}
        if not owners & declared:
            missing[name] = (sorted(owners) or ["not installed"], sorted(users)[:3])
    assert not missing, f"imported but not declared in dependencies or {extras}: {missing}"


# modules that import the study extra's packages (pandas, matplotlib, seaborn) when imported; every other module
# of dan imports with the base dependencies only (pip install dan, no extras)
NEEDS_STUDY = {"dan.ablation", "dan.analysis", "dan.analysis_outputs", "dan.claims", "dan.gallery", "dan.report",
               "dan.viz"}


def test_the_stages_import_with_the_base_dependencies_only(tmp_path):
    import subprocess
    import sys

    blocked = ["pandas", "matplotlib", "seaborn", "papermill", "nbformat", "nbclient", "jupyter_client", "IPython",
               "myst_nb", "ipywidgets", "jupyter_book"]
    modules = sorted(".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
                     for p in (ROOT / "dan").rglob("*.py") if p.name != "__main__.py" or p.parent.name == "data")
    script = f"""
import importlib, sys
sys.modules.update(dict.fromkeys({blocked!r}))  # None: as if not installed (find_spec gives None, import fails)
failed = []
for m in {modules!r}:
    try:
        importlib.import_module(m)
    except ModuleNotFoundError as exc:
        failed.append(m)
print(" ".join(failed))
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr
    assert set(proc.stdout.split()) == NEEDS_STUDY


def test_environment_yml_installs_the_same_pins_and_extras_as_make_env():
    import re

    yml = (ROOT / "environment.yml").read_text(encoding="utf-8")
    pins = {_canon(r.split("==")[0]): r for r in _pyproject()["project"]["dependencies"] if "==" in r}
    for name in ("torch", "torchvision"):
        assert re.search(rf"^\s*- {re.escape(pins[name])}\s*$", yml, flags=re.M), f"environment.yml: {pins[name]}"
    make = (ROOT / "Makefile").read_text(encoding="utf-8")
    extras = re.search(r"pip install --quiet -e '\.\[([\w,]+)\]'", make).group(1)
    assert re.search(rf"^\s*- -e \.\[{extras}\]\s*$", yml, flags=re.M), f"environment.yml: -e .[{extras}]"
    python = re.search(r"^\s*- python=(\d+)\.(\d+)\s*$", yml, flags=re.M)
    floor = re.fullmatch(r">=(\d+)\.(\d+)", _pyproject()["project"]["requires-python"])
    assert python and floor and tuple(map(int, python.groups())) >= tuple(map(int, floor.groups()))


def test_the_wheel_holds_every_file_of_the_package(tmp_path):
    """A non-editable install gets the package's files (every subpackage, and any data file it reads at run time),
    a license expression setuptools does not warn about with the license's text, and console scripts that point at
    real functions."""
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
    for name in ("pyproject.toml", "README.md", "LICENSE"):
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
    assert "License-File: LICENSE" in meta and any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "MIT License" in (ROOT / "LICENSE").read_text(encoding="utf-8")  # the text matches the expression
    targets = [line.split("=", 1)[1].strip() for line in scripts.splitlines() if "=" in line]
    assert targets, scripts
    for target in targets:
        module, func = target.split(":")
        assert callable(getattr(importlib.import_module(module), func)), target
