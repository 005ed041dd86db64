"""One call at the top of every notebook: seeds, deterministic kernels, fixed threads, plot and table style."""

from __future__ import annotations

import ast
import os
import random
import warnings

import numpy as np

from dan.io import ConfigError


def setup(seed: int = 0, threads: int = 2) -> None:
    """Seed Python/NumPy/PyTorch, make CPU kernels deterministic, fix the thread count, style figures/tables; under
    papermill, refuse parameters the notebook does not take (:func:`check_parameters`)."""
    check_parameters()
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
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    sns.set_theme(style="whitegrid", context="notebook")
    matplotlib.rcParams["figure.dpi"] = 90
    pd.set_option("display.precision", 2)
    pd.set_option("display.max_columns", 30)
    pd.set_option("display.width", 160)
    warnings.filterwarnings("ignore", category=UserWarning, module="torch")


def _assigned(source: str) -> list[str]:
    """Names a cell assigns at its top level (``name = ...``), in order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [t.id for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
            for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]


def check_parameters(history: list[str] | None = None) -> None:
    """Raise :class:`ConfigError` when papermill injected a parameter that the notebook's parameters cell does not
    define: papermill itself only warns and runs on with the default (``-p stepz 3`` would train K = 2 and say
    nothing). ``history``: the executed cells' sources in order (default: IPython's ``In``); papermill's injected
    cell starts with ``# Parameters`` and follows the parameters cell. Outside papermill: nothing to check."""
    if history is None:
        try:
            history = get_ipython().user_ns.get("In", [])  # type: ignore[name-defined]  # noqa: F821
        except NameError:  # not in IPython
            return
    injected = [k for k, cell in enumerate(history) if k and cell.lstrip().startswith("# Parameters")]
    if not injected:
        return
    k = injected[-1]
    taken = _assigned(history[k - 1])
    unknown = [name for name in _assigned(history[k]) if name not in taken]
    if unknown:
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
