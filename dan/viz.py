"""Figures shared by the notebooks (matplotlib/seaborn). Every function returns the figure it drew."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image


def show_images(paths: Sequence[Path], titles: Sequence[str], ncols: int = 4, width: float = 3.2) -> plt.Figure:
    """A grid of images with a (wrapped) title under each."""
    n = len(paths)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, width * 1.05 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, path, title in zip(axes.ravel(), paths, titles, strict=False):
        ax.imshow(Image.open(path).convert("RGB"))
        ax.set_title(title, fontsize=8, wrap=True)
    fig.tight_layout()
    return fig


def plot_history(history: list[dict] | dict[str, list[dict]], metrics: Sequence[str],
                 labels: dict[str, str] | None = None) -> plt.Figure:
    """Training curves: one panel per metric in ``metrics`` (keys of the history records), x = epoch.

    ``history`` is one run's list of per-epoch records, or {run label: records} for several runs.
    """
    runs = history if isinstance(history, dict) else {"": history}
    rows = [{"run": name, "epoch": r["epoch"], "metric": m, "value": r[m]}
            for name, recs in runs.items() for r in recs for m in metrics if m in r]
    df = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        sub = df[df.metric == m]
        sns.lineplot(data=sub, x="epoch", y="value", hue="run" if len(runs) > 1 else None, marker="o", ax=ax)
        ax.set_title((labels or {}).get(m, m))
        ax.set_ylabel("")
    fig.tight_layout()
    return fig


def attention_overlay(ax: plt.Axes, image: Image.Image, weights: np.ndarray, grid: Sequence[int],
                      title: str = "", boxes: Sequence[Sequence[float]] = ()) -> None:
    """Draw ``image`` with the region attention ``weights`` [gh*gw] upsampled over it, and optional boxes [x,y,w,h]."""
    gh, gw = int(grid[0]), int(grid[1])
    w, h = image.size
    ax.imshow(image)
    att = np.asarray(weights, dtype=np.float32).reshape(gh, gw)
    ax.imshow(att / max(float(att.max()), 1e-12), cmap="inferno", alpha=0.55, extent=(0, w, h, 0),
              interpolation="bilinear")
    for x, y, bw, bh in boxes:
        ax.add_patch(plt.Rectangle((x, y), bw, bh, fill=False, edgecolor="cyan", linewidth=1.5))
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def text_attention_html(words: Sequence[str], weights: np.ndarray) -> str:
    """Words shaded by their attention weight, as HTML (for ``IPython.display.HTML``)."""
    top = max(float(np.max(weights)), 1e-12) if len(weights) else 1.0
    spans = [f'<span style="background: rgba(255,140,0,{float(a) / top:.2f}); padding: 1px 2px">{word}</span>'
             for word, a in zip(words, weights, strict=False)]
    return " ".join(spans)


def bar_with_ci(df: pd.DataFrame, x: str, y: str, hue: str | None = None, title: str = "",
                ax: plt.Axes | None = None) -> plt.Figure:
    """Mean of ``y`` per ``x`` (per ``hue``) with 95% confidence intervals over the rows (seeds)."""
    if ax is None:
        fig, ax = plt.subplots(figsize=(5.5, 3.4))
    else:
        fig = ax.figure
    sns.barplot(data=df, x=x, y=y, hue=hue, errorbar=("ci", 95), capsize=0.15, ax=ax, seed=0)
    ax.set_title(title)
    fig.tight_layout()
    return fig
