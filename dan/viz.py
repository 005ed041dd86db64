"""Figures shared by the notebooks (matplotlib/seaborn). Every function returns the figure it drew."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from PIL import Image

from dan.io import DataError


def show_images(paths: Sequence[Path], titles: Sequence[str], ncols: int = 4, width: float = 3.2) -> plt.Figure:
    """A grid of images, each under its title, which is wrapped to the image's width (``width``: inches per image)
    so that neighbouring titles never run into each other."""
    n = len(paths)
    chars = max(12, int(width * 72 / (8 * 0.62)))  # characters of a 8 pt line that fit ``width`` inches
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, width * 1.05 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, path, title in zip(axes.ravel(), paths, titles, strict=False):
        ax.imshow(Image.open(path).convert("RGB"))
        lines = [textwrap.fill(line, chars) for line in str(title).split("\n")]
        ax.set_title("\n".join(lines), fontsize=8)
    fig.tight_layout()
    return fig


def plot_history(history: list[dict] | dict[str, list[dict]], metrics: Sequence[str],
                 labels: dict[str, str] | None = None) -> plt.Figure:
    """Training curves: one panel per metric in ``metrics`` (keys of the history records), x = epoch.

    ``history`` is one run's list of per-epoch records, or {run label: records} for several runs.
    """
    runs = history if isinstance(history, dict) else {"": history}
    have = {k for recs in runs.values() for r in recs for k in r}
    missing = [m for m in metrics if m not in have]
    if missing or not metrics:
        raise DataError(f"no history record has the metric(s) {missing or '(none asked)'}; the records have "
                        f"{sorted(have - {'epoch'}) or 'nothing (an empty history)'}")
    rows = [{"run": name, "epoch": r["epoch"], "metric": m, "value": r[m]}
            for name, recs in runs.items() for r in recs for m in metrics if m in r]
    df = pd.DataFrame(rows)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        sub = df[df.metric == m]
        sns.lineplot(data=sub, x="epoch", y="value", hue="run" if len(runs) > 1 else None, marker="o", ax=ax)
        ax.set_title((labels or {}).get(m, m))
        ax.set_ylabel("")
        if ax.get_legend() is not None:  # one legend for all panels, below them, off the curves
            ax.get_legend().remove()
    if len(runs) > 1:
        handles, names = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, names, loc="lower center", ncol=min(len(runs), 2), frameon=False)
        fig.tight_layout(rect=(0, 0.12, 1, 1))
    else:
        fig.tight_layout()
    return fig


def attention_overlay(ax: plt.Axes, image: Image.Image, weights: np.ndarray, grid: Sequence[int],
                      title: str = "", boxes: Sequence[Sequence[float]] = (), *, stride: int | None = None,
                      image_size: int | None = None) -> None:
    """Draw ``image`` with the region attention ``weights`` [gh*gw] upsampled over it, and optional boxes [x,y,w,h].

    The cells are the feature grid's, as the grounding scores take them (:func:`dan.data.grounding.cell_edges`):
    without ``stride`` and ``image_size``, equal cells over the whole image; with the backbone's ``stride`` and the
    input size the whole image was resized to, cells of ``stride`` input pixels from the top left, so that a
    padded backbone's last cell runs past the image (only its part in the image shows) and a cropping one's grid
    ends before the image does (the pixels past it, in no cell, are left bare). Where the stride divides the size
    the two are the same cells, and the same figure.
    """
    from dan.data.grounding import check_grid

    gh, gw = int(grid[0]), int(grid[1])
    w, h = image.size
    ax.imshow(image)
    att = np.asarray(weights, dtype=np.float32).reshape(gh, gw)
    right, bottom = w, h
    if stride is not None or image_size is not None:
        check_grid((gh, gw), stride, image_size)  # the grid must be one these features give
        if gw * stride != image_size:  # whole cells of the resized input, scaled back to the image's pixels
            right = gw * stride * (w / image_size)
        if gh * stride != image_size:
            bottom = gh * stride * (h / image_size)
    ax.imshow(att / max(float(att.max()), 1e-12), cmap="inferno", alpha=0.55, extent=(0, right, bottom, 0),
              interpolation="bilinear")
    if (right, bottom) != (w, h):
        ax.set_xlim(0, w)  # the image's own extent, not the grid's
        ax.set_ylim(h, 0)
    for x, y, bw, bh in boxes:
        ax.add_patch(plt.Rectangle((x, y), bw, bh, fill=False, edgecolor="cyan", linewidth=1.5))
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def text_attention_html(words: Sequence[str], weights: np.ndarray) -> str:
    """Words shaded by their attention weight, as HTML (for ``IPython.display.HTML``); each word is escaped, so
    the vocabulary's ``<unk>`` shows as a word rather than vanishing as an unknown tag."""
    import html

    top = max(float(np.max(weights)), 1e-12) if len(weights) else 1.0
    spans = [f'<span style="background: rgba(255,140,0,{float(a) / top:.2f}); padding: 1px 2px">'
             f'{html.escape(word)}</span>'
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


def _t_interval(values: np.ndarray) -> tuple[float, float]:
    """95 % Student-t interval of the mean (seaborn ``errorbar`` callable); a single value gives no bar."""
    from dan.stats import mean_ci

    m, lo, hi = mean_ci(values)
    return (m, m) if np.isnan(lo) else (lo, hi)


def ablation_panels(df: pd.DataFrame, x: str, metrics: Sequence[str], labels: dict[str, str] | None = None,
                    order: Sequence | None = None, hue: str | None = None, kind: str = "line",
                    title: str = "") -> plt.Figure:
    """One panel per metric: mean over the rows (seeds) per ``x`` with 95 % t-interval error bars.

    ``kind``: "line" joins the means (an ordered axis such as K), "point" leaves them apart (categories such
    as the attention type), "bar" draws bars from 0. Individual seeds are overlaid as grey dots.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.6 * len(metrics), 3.3), squeeze=False)
    for ax, m in zip(axes[0], metrics, strict=True):
        sub = df.dropna(subset=[m])
        if kind == "bar":
            sns.barplot(data=sub, x=x, y=m, hue=hue, order=order, errorbar=_t_interval, capsize=0.15, ax=ax,
                        alpha=0.85)
        else:
            sns.pointplot(data=sub, x=x, y=m, hue=hue, order=order, errorbar=_t_interval, capsize=0.15, ax=ax,
                          dodge=0.3 if hue else False, linestyle="-" if kind == "line" else "none")
        # the seeds on top of the means, beside them (jitter) and outlined, so that a seed on its mean still shows
        sns.stripplot(data=sub, x=x, y=m, order=order, color="0.55", size=5, linewidth=0.8, edgecolor="0.1",
                      ax=ax, jitter=0.12, legend=False, zorder=4)
        ax.set_title((labels or {}).get(m, m), fontsize=10)
        ax.set_ylabel("")
        ax.set_xlabel((labels or {}).get(x, x))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def shaded_words(ax: plt.Axes, words: Sequence[str], weights: np.ndarray, fontsize: float = 8.5,
                 cmap: str = "Oranges") -> None:
    """Write ``words`` left to right (wrapping) on ``ax`` with a background shaded by ``weights`` [len(words)]
    relative to their maximum; the axes frame is hidden."""
    ax.axis("off")
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    colours = plt.get_cmap(cmap)
    top = max(float(np.max(weights)), 1e-12) if len(weights) else 1.0
    x, y, line_h = 0.0, 0.85, 0.0
    ax_box = ax.get_window_extent(renderer)
    for word, w in zip(words, weights, strict=False):
        shade = float(w) / top
        txt = ax.text(x, y, word, transform=ax.transAxes, fontsize=fontsize, va="top", ha="left",
                      color="black" if shade < 0.7 else "white",
                      bbox=dict(boxstyle="square,pad=0.15", facecolor=colours(0.1 + 0.85 * shade), edgecolor="none"))
        ext = txt.get_window_extent(renderer)
        width, line_h = ext.width / ax_box.width, max(line_h, ext.height / ax_box.height)
        if x > 0 and x + width > 1.0:  # wrap to the next line
            x, y = 0.0, y - 1.45 * line_h
            txt.set_position((x, y))
        x += width + 0.02


def grounding_bars(df: pd.DataFrame, x: str = "step", hue: str | None = "family", title: str = "",
                   what: str = "objects") -> plt.Figure:
    """Pointing-game hit rate and attention mass on ``what`` (the objects, or the key words) in %, per ``x``
    (and ``hue``), with the 95 % intervals of :func:`dan.analysis.grounding_summary`: cluster-robust over images
    where ``df`` has an ``image_id`` column (the examples about one image are not independent), else plain t
    intervals over the examples; black ticks mark uniform attention (chance).
    ``df``: a tidy table of :mod:`dan.analysis` (columns hit, chance_hit, mass, chance_mass)."""
    from dan.stats import mean_ci

    xs = sorted(df[x].unique())
    hues = sorted(df[hue].unique()) if hue else [None]
    colours = sns.color_palette(n_colors=len(hues))
    width = 0.8 / len(hues)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.3))
    pointing = "most attended word is a key word (%)" if what == "key words" else "pointing game (%)"
    for ax, (score, chance, name) in zip(axes, (("hit", "chance_hit", pointing),
                                                ("mass", "chance_mass", f"attention mass on {what} (%)")),
                                         strict=True):
        for j, (level, colour) in enumerate(zip(hues, colours, strict=True)):
            for i, xv in enumerate(xs):
                grp = df[(df[x] == xv) & ((df[hue] == level) if hue else True)]
                if grp.empty:
                    continue
                clusters = grp["image_id"].to_numpy() if "image_id" in grp else None
                m, lo, hi = (100 * v for v in mean_ci(grp[score].to_numpy(), clusters=clusters))
                centre = i - 0.4 + width * (j + 0.5)
                ax.bar(centre, m, width=width, color=colour, alpha=0.85, edgecolor="white",
                       label=str(level) if i == 0 and hue else None)
                if np.isfinite(lo):
                    ax.errorbar(centre, m, yerr=[[m - lo], [hi - m]], color="0.25", capsize=4, linewidth=1.5)
                ax.hlines(100 * float(grp[chance].mean()), centre - 0.35 * width, centre + 0.35 * width,
                          color="black", linewidth=2.5, zorder=3)
        ax.set_xticks(range(len(xs)), [str(v) for v in xs])
        ax.grid(axis="x", visible=False)  # a tick line would run between the bars of one step
        ax.set_xlabel(x)
        ax.set_title(name, fontsize=10)
        ax.set_ylabel("")
        ax.set_ylim(bottom=0)
    handles, labels = axes[0].get_legend_handles_labels()
    handles.append(plt.Line2D([], [], color="black", linewidth=2.5))
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.legend(handles, [*labels, "uniform attention (chance)"], loc="upper center", ncol=len(handles), fontsize=9,
               bbox_to_anchor=(0.5, 0.0), frameon=False)
    return fig
