"""One call at the top of every notebook: seeds, deterministic kernels, fixed threads, plot and table style."""

from __future__ import annotations

import ast
import os
import random
import warnings

import numpy as np

from dan.io import ConfigError, is_int


def setup(seed: int = 0, threads: int = 2) -> None:
    """Seed Python/NumPy/PyTorch, make CPU kernels deterministic, fix the thread count, style figures/tables; under
    papermill, refuse parameters the notebook does not take (:func:`check_parameters`). A ``seed`` that is not an
    integer in [0, 2**32) is a :class:`ConfigError` naming it (NumPy's own errors did not; ``True`` ran as 1), and so is
    a ``threads`` that is not an integer in [1, 1024]."""
    from dan.config import SEED_BITS  # the runs' bound (TrainConfig.validate)

    check_parameters()
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**SEED_BITS:
        raise ConfigError(f"seed must be an integer in [0, 2**{SEED_BITS}), got {seed!r}")
    if not is_int(threads) or not 1 <= threads <= 1024:  # torch's own errors
        raise ConfigError(f"threads must be an integer in [1, 1024], got {threads!r}")  # named no parameter
    import matplotlib
    import pandas as pd
    import seaborn as sns
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    # CPU kernels are deterministic (nbval compares outputs). On a GPU, cuBLAS needs a fixed workspace to be
    # deterministic, and some CUDA kernels have no deterministic version: those warn instead of failing.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=torch.cuda.is_available())
    # A running interpreter's string hashing is fixed at its start (dan.study starts kernels with PYTHONHASHSEED
    # set); here it only reaches the processes this kernel starts, e.g. the ablation sweep's workers.
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    sns.set_theme(style="whitegrid", context="notebook")
    matplotlib.rcParams["figure.dpi"] = 90
    pd.set_option("display.precision", 2)
    pd.set_option("display.max_columns", 30)
    pd.set_option("display.max_colwidth", 200)  # whole labels (e.g. the performance page's measurements)
    pd.set_option("display.width", 160)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")


def _assigned(source: str) -> list[str]:
    """Names a cell assigns at its top level (``name = ...``, ``a, b = ...``, ``name: T = ...``), in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    names: list[str] = []
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] \
            if isinstance(node, ast.AnnAssign) else []
        for target in targets:
            names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def check_parameters(history: list[str] | None = None) -> None:
    """Raise :class:`ConfigError` when papermill injected a parameter that the notebook's parameters cell does not
    define: papermill itself only warns and runs on with the default (``-p stepz 3`` would train K = 2 and say
    nothing). ``history``: the executed cells' sources in order (default: IPython's ``In``, whose entry 0 is
    empty). Checked only in a batch run, where the parameters cell ran first and papermill's injected cell
    (``# Parameters``) second; an interactive session that runs cells in another order is left alone, as are
    papermill's own ``PAPERMILL_*`` names (``--inject-paths``)."""
    if history is None:
        try:
            history = get_ipython().user_ns.get("In", [])  # type: ignore[name-defined]  # noqa: F821
        except NameError:  # not in IPython
            return
    if len(history) < 3 or not history[2].lstrip().startswith("# Parameters"):
        return
    taken = _assigned(history[1])
    unknown = [n for n in _assigned(history[2]) if n not in taken and not n.startswith("PAPERMILL_")]
    if taken and unknown:
        raise ConfigError(f"unknown notebook parameter(s) {', '.join(unknown)}: this notebook takes "
                          f"{', '.join(taken)} (its first code cell)")


def show_json(obj: dict, digits: int = 2) -> None:
    """Print a (nested) dict with floats rounded, one key per line: stable text for notebook CI."""
    def fmt(v):  # noqa: ANN001, ANN202
        if isinstance(v, float):
            return round(v, digits)
        if isinstance(v, dict):
            return {k: fmt(x) for k, x in v.items()}
        return v

    for k, v in obj.items():
        print(f"{k}: {fmt(v)}")
