"""One call at the top of every notebook: seeds, deterministic kernels, fixed threads, plot and table style."""

from __future__ import annotations

import os
import random
import warnings

import numpy as np


def setup(seed: int = 0, threads: int = 2) -> None:
    """Seed Python/NumPy/PyTorch, make CPU kernels deterministic, fix the thread count, style figures/tables."""
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
