"""Tables and claim checks over an ablation sweep's runs (one row per run, :func:`dan.ablation.run_sweep`): mean and
t interval per setting over seeds, paired differences over seeds, and the one sentence a claim check gives.

The intervals come from Student's t distribution (:mod:`dan.stats`, without SciPy); :mod:`dan.ablation` re-exports
every name here, which is where the notebooks call them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from dan.stats import mean_ci


def summarize(df: pd.DataFrame, by: list[str] | str, metrics: list[str], level: float = 0.95) -> pd.DataFrame:
    """Mean and ``level`` confidence interval of each metric per group (rows = seeds): tidy, one row per
    (group, metric) with columns n, mean, std, ci (half width), low, high."""
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for key, grp in df.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        for m in metrics:
            vals = grp[m].to_numpy(dtype=np.float64)
            vals = vals[~np.isnan(vals)]
            if len(vals) == 0:
                continue
            mean, low, high = mean_ci(vals, level)
            rows.append({**dict(zip(by, key, strict=True)), "metric": m, "n": len(vals), "mean": mean,
                         "std": float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
                         "ci": (high - mean) if not math.isnan(high) else math.nan, "low": low, "high": high})
    return pd.DataFrame(rows)


def ci_table(summary: pd.DataFrame, index: list[str] | str, digits: int = 1) -> pd.DataFrame:
    """A wide display table from :func:`summarize`: one column per metric, cells "mean ± ci"."""
    index = [index] if isinstance(index, str) else list(index)
    s = summary.copy()
    s["cell"] = [f"{m:.{digits}f}" + ("" if math.isnan(c) else f" ± {c:.{digits}f}")
                 for m, c in zip(s["mean"], s["ci"], strict=True)]
    order = list(dict.fromkeys(s["metric"]))
    return s.pivot(index=index, columns="metric", values="cell")[order]


def paired_differences(df: pd.DataFrame, factor: str, reference, metric: str, level: float = 0.95,
                       family: bool = False) -> pd.DataFrame:
    """``metric`` of ``factor`` = ``reference`` minus each other level, paired by seed: one row per other level
    with n (seeds present in both), mean difference and its t interval (low, high) at ``level``.

    ``family``: the intervals hold at ``level`` *together* (Bonferroni: each at ``1 - (1 - level) / m`` for the
    m other levels), as a claim about all m comparisons at once needs; otherwise each holds on its own."""
    ref = df[df[factor] == reference].set_index("seed")[metric]
    others = sorted(set(df[factor]) - {reference}, key=str)
    each = 1 - (1 - level) / len(others) if family and others else level
    rows = []
    for other_level in others:
        other = df[df[factor] == other_level].set_index("seed")[metric]
        diff = (ref - other).dropna()
        mean, low, high = mean_ci(diff.to_numpy(), level=each)
        rows.append({factor: other_level, "n": len(diff), "difference": mean, "low": low, "high": high})
    return pd.DataFrame(rows, columns=[factor, "n", "difference", "low", "high"])  # the columns even with no row


def claim_check(df: pd.DataFrame, factor: str, claimed, metric: str, label: str | None = None,
                digits: int = 1) -> tuple[pd.DataFrame, str]:
    """Test "``claimed`` is the best level of ``factor``" on ``metric`` (higher is better) over seeds.

    Returns the paired differences (claimed minus each other level) and one sentence that says, from these
    numbers only, which levels the claimed one beats, which beat it, and which it cannot be told apart from
    (the interval of the paired difference includes 0, or fewer than two seeds). "Best" is a claim about all
    the other levels at once, so the intervals hold at 95 % together (Bonferroni over the comparisons:
    :func:`paired_differences` with ``family=True``), not each on its own.
    """
    label = label or factor
    means = df.groupby(factor)[metric].mean()
    if claimed not in means.index:
        return pd.DataFrame(), f"{label} = {claimed} is not part of this sweep."
    best = means.idxmax()
    diffs = paired_differences(df, factor, claimed, metric, family=True)
    m = len(diffs)
    if m == 0:  # e.g. the notebook's attention_list: [dual]
        return diffs, f"{label} = {claimed} is the only {label} of this sweep, so there is nothing to compare it with."
    conf = "at 95 % confidence" if m <= 1 else f"at 95 % confidence over the {m} comparisons together"

    def names(mask: pd.Series) -> str:
        return ", ".join(f"{label} = {v}" for v in diffs.loc[mask, factor])

    beats, loses = diffs.low > 0, diffs.high < 0
    no_interval = diffs.n < 2  # one seed: no interval at all, so nothing can be told apart
    unclear = ~(beats | loses | no_interval)
    if best == claimed:
        parts = [f"{label} = {claimed} has the highest mean ({means[claimed]:.{digits}f})"]
    elif f"{means[claimed]:.{digits}f}" == f"{means[best]:.{digits}f}":
        parts = [f"{label} = {claimed} averages {means[claimed]:.{digits}f}, level (at this precision) with "
                 f"the highest mean, {label} = {best}"]
    else:
        parts = [f"{label} = {claimed} averages {means[claimed]:.{digits}f}, below the highest mean, "
                 f"{label} = {best} ({means[best]:.{digits}f})"]
    if beats.any():
        parts.append(f"{conf} it beats {names(beats)}")
    if loses.any():
        parts.append(f"{names(loses)} beat{'s' if loses.sum() == 1 else ''} it {conf}")
    if unclear.any():
        parts.append(f"it cannot be told apart from {names(unclear)} (the interval of the paired difference "
                     f"includes 0)")
    if no_interval.any():
        parts.append(f"against {names(no_interval)} there are fewer than two paired seeds, so no interval and no "
                     f"verdict")
    return diffs, "; ".join(parts) + "."
