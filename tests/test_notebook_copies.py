"""The executed notebooks (the book's, book/notebooks/, and notebook CI's, tests/notebooks/) are the sources in
notebooks/ as they ran: the same cells, text and code. An edit to a source that was not re-executed (make study /
make refresh-nbval) would leave the book or the CI showing the old one."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "notebooks").glob("*.ipynb"))


def cells(path: Path) -> list[tuple[str, str]]:
    """(type, source) of each cell, leaving out the parameters cell papermill injects."""
    return [(c["cell_type"], "".join(c["source"])) for c in json.loads(path.read_text())["cells"]
            if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]


@pytest.mark.parametrize("copies", ["book/notebooks", "tests/notebooks"])
def test_executed_copies_hold_the_sources_cells(copies):
    assert len(SOURCES) == 8
    for src in SOURCES:
        copy = ROOT / copies / src.name
        assert copy.is_file(), f"{copies}/{src.name} is missing"
        want, got = cells(src), cells(copy)
        differ = [k for k, (a, b) in enumerate(zip(want, got, strict=False)) if a != b]
        assert len(want) == len(got) and not differ, (
            f"{copies}/{src.name} differs from notebooks/{src.name} (cells {differ or 'count'}): re-execute it "
            f"({'make refresh-nbval' if copies.startswith('tests') else 'python -m dan.study --only ...'})")


def test_an_unknown_papermill_parameter_is_an_error_naming_what_the_notebook_takes(tmp_path):
    """papermill only warns about a parameter the notebook does not define and runs on with the default;
    dan.notebook.setup refuses it."""
    import nbformat
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError

    from dan.io import ConfigError
    from dan.notebook import check_parameters

    check_parameters(["", "profile = 'default'\nseed = 0", "# Parameters\nprofile = 'smoke'\n", "setup()"])
    with pytest.raises(ConfigError, match="parameter\\(s\\) stepz: this notebook takes profile, seed"):
        check_parameters(["", "profile = 'default'\nseed = 0", "# Parameters\nprofile = 'smoke'\nstepz = 3\n"])
    check_parameters(["", "profile = 'default'", "x = 1"])  # not run by papermill: nothing to check
    check_parameters(["", "steps, seed = 2, 0", "# Parameters\nsteps = 3\n"])  # tuple targets are parameters
    check_parameters(["", "seed: int = 0", "# Parameters\nseed = 1\nPAPERMILL_INPUT_PATH = 'a'\n"])
    # an interactive session re-running the injected cell later, after other cells: not a batch run, left alone
    check_parameters(["", "profile = 'default'", "# Parameters\nprofile = 'smoke'\n", "setup()", "x = 1",
                      "# Parameters\nprofile = 'smoke'\n", "setup()"])
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                           "language": "python"}})
    params = nbformat.v4.new_code_cell("steps = 2\nseed = 0")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell("from dan import notebook\nnotebook.setup(seed)\nprint(steps)")]
    src, out = tmp_path / "nb.ipynb", tmp_path / "out.ipynb"
    nbformat.write(nb, src)
    pm.execute_notebook(str(src), str(out), parameters={"steps": 3}, kernel_name="python3", progress_bar=False)
    assert "3" in nbformat.read(out, as_version=4).cells[-1].outputs[0]["text"]
    with pytest.raises(PapermillExecutionError, match="unknown notebook parameter\\(s\\) stepz"):
        pm.execute_notebook(str(src), str(out), parameters={"stepz": 3}, kernel_name="python3", progress_bar=False)


def test_a_notebook_whose_first_cell_assigns_nothing_takes_no_parameter_check():
    """Only a first cell that assigns names is a parameters cell; without one (e.g. imports only) papermill's
    injected cell is not checked against it."""
    from dan.notebook import check_parameters

    check_parameters(["", "import os", "# Parameters\nprofile = 'smoke'\n"])


@pytest.mark.parametrize("seed", [-1, 1.5, "abc", True, 2**32])
def test_a_bad_seed_parameter_is_one_error_naming_it(seed, tmp_path):
    """Every notebook's first cell is notebook.setup(seed): -p seed -1 ended in NumPy's 'Seed must be between 0 and
    2**32 - 1', -p seed 1.5 or abc in a TypeError about casting dtypes, and -p seed True ran as seed 1 (01_data then
    reused the seed-1 data set, True == 1)."""
    from dan.data.synth import generate
    from dan.io import ConfigError
    from dan.notebook import setup

    with pytest.raises(ConfigError, match=rf"seed must be an integer in \[0, 2\*\*32\), got {re.escape(repr(seed))}"):
        setup(seed)
    if seed != 2**32:  # a data seed may be larger (NumPy's generators take any); not a bool, a float or a string
        with pytest.raises(ConfigError, match=r"seed must be a non-negative integer"):
            generate("smoke", out=tmp_path / "data", seed=seed, progress=False)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("threads", [0, "2", 2.0, None, True, 10**20])
def test_a_bad_thread_count_is_one_error_naming_it(threads, tmp_path):
    """setup(threads=...) went to torch.set_num_threads unchecked: "set_num_threads expects an int, but got str",
    "Overflow when unpacking long long"; generate()'s workers likewise ("'<' not supported between 'str' and
    'int'", or a float reaching multiprocessing)."""
    from dan.data.synth import generate
    from dan.io import ConfigError
    from dan.notebook import setup

    value = re.escape(repr(threads))
    with pytest.raises(ConfigError, match=rf"threads must be an integer in \[1, 1024\], got {value}"):
        setup(0, threads=threads)
    if threads is not None:  # workers None: automatic
        with pytest.raises(ConfigError, match=rf"workers must be an integer in \[1, 64\] \(or unset\), got {value}"):
            generate("smoke", out=tmp_path / "data", workers=threads, progress=False)
    assert not (tmp_path / "data").exists()


def test_notebook_setup_seeds_python_numpy_and_torch_with_its_seed(monkeypatch):
    """``setup(seed)``: the next draws of Python's, NumPy's and torch's global generators are those of a generator
    of their own seeded with ``seed`` (and another seed gives other draws); it also fixes the thread count."""
    import random

    import numpy as np
    import torch

    from dan.notebook import setup

    monkeypatch.delenv("PYTHONHASHSEED", raising=False)  # setup sets both when unset
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    draws = {}
    for seed in (5, 6):
        setup(seed=seed, threads=1)
        draws[seed] = (random.random(), float(np.random.random()), torch.rand(3))
    assert draws[5][0] == random.Random(5).random()
    assert draws[5][1] == np.random.RandomState(5).random_sample()
    assert torch.equal(draws[5][2], torch.rand(3, generator=torch.Generator().manual_seed(5)))
    assert draws[6][0] != draws[5][0] and draws[6][1] != draws[5][1] and not torch.equal(draws[6][2], draws[5][2])
    assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
