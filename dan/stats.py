"""Student's t intervals without SciPy: the quantiles come from the regularised incomplete beta function (its
continued fraction, modified Lentz) inverted by bisection; :func:`mean_ci` gives plain and cluster-robust intervals.

Used by the ablations (intervals over seeds, :mod:`dan.ablation`) and the attention analysis (intervals over
questions clustered by image, :mod:`dan.analysis`); NumPy only, so neither needs the other's imports.
"""

from __future__ import annotations

import math

import numpy as np


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz), converges for x < (a+1)/(a+b+2)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b) for a, b > 0 and 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _betacf(a, b, x) / a
    return 1.0 - math.exp(log_front) * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """CDF of Student's t distribution with ``df`` degrees of freedom."""
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t >= 0 else tail


def family_t_note(n_seeds: int, comparisons: int = 3) -> str:
    """How much a claim's family-wise (Bonferroni) intervals widen: the t quantile each of ``comparisons`` paired
    intervals uses over ``n_seeds`` seeds, against the ordinary 95 % one; or that one seed gives no interval."""
    if n_seeds < 2:
        return "with one seed there is no interval to widen"
    family = t_quantile(1.0 - 0.05 / (2 * comparisons), n_seeds - 1)
    single = t_quantile(0.975, n_seeds - 1)
    return (f"t = {family:.2f} instead of {single:.2f} for {comparisons} comparisons over {n_seeds} seeds")


def t_quantile(p: float, df: float) -> float:
    """Quantile of Student's t (inverse of :func:`t_cdf`, by bisection to 1e-12).

    ``df`` must be finite and positive (the intervals here use n - 1 >= 1). A bracket that passes 1e300 without
    reaching ``p`` is a ValueError rather than an endless loop or a number that only looks like a quantile.
    """
    if not 0.0 < p < 1.0 or not 0.0 < df < math.inf:  # also refuses NaN, which compares False
        raise ValueError(f"t_quantile needs 0 < p < 1 and a finite df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:  # bracket the quantile; doubling reaches 1e300 after about 1,000 steps
        if hi > 1e300:
            raise ValueError(f"the t quantile for p={p}, df={df} lies beyond 1e300")
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12:
            break
    return 0.5 * (lo + hi)


def mean_ci(values: np.ndarray | list[float], level: float = 0.95,
            clusters: np.ndarray | list | None = None) -> tuple[float, float, float]:
    """(mean, low, high): the t interval mean +- t_{(1+level)/2, n-1} * s / sqrt(n); NaN bounds when n < 2.

    With ``clusters`` (one label per value, e.g. the image a question is about), values in one cluster are not
    taken as independent: the half width is the cluster-robust one, t_{(1+level)/2, G-1} * SE with
    SE^2 = G / (G - 1) * sum_g (sum_{i in g} (x_i - mean))^2 / n^2 over the G clusters (NaN when G < 2). With
    one value per cluster it equals the plain interval.
    """
    x = np.asarray(values, dtype=np.float64)
    keep = ~np.isnan(x)
    x = x[keep]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if clusters is None:
        if len(x) < 2:
            return m, math.nan, math.nan
        half = t_quantile((1.0 + level) / 2.0, len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
        return m, m - half, m + half
    labels = np.asarray(clusters)
    if labels.shape != keep.shape:
        raise ValueError(f"mean_ci: {labels.shape[0] if labels.ndim else 0} cluster labels for {keep.shape[0]} "
                         f"values")
    _, group = np.unique(labels[keep], return_inverse=True)
    g = int(group.max()) + 1
    if g < 2:
        return m, math.nan, math.nan
    sums = np.bincount(group, weights=x - m, minlength=g)  # [G] residual sum per cluster
    se = math.sqrt(g / (g - 1) * float(np.sum(sums**2))) / len(x)
    half = t_quantile((1.0 + level) / 2.0, g - 1) * se
    return m, m - half, m + half
