"""Table cells (mean ± std over seeds, or a marker) and differences between learners across training seeds: Welch's t
interval (unequal variances)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

NOT_APPLICABLE, NOT_MEASURED, UNTRUSTED, UNCONVERGED = "n/a", "—", "non-finite", "unconverged"
MIXED = "mixed settings"  # seeds measured with different settings or versions: their mean is no number


@dataclass
class Stat:
    """One table cell: its text, and its mean (None unless numbers) for bolding the best and sorting."""
    text: str
    mean: float | None = None
    std: float | None = None
    digits: int = 1


def stat(values, digits: int) -> Stat:
    """mean ± sample std (n - 1, as in the Welch intervals) over the seeds that measured a value; no ± for one
    seed; the markers otherwise."""
    present = [v for v in values if not (isinstance(v, float) and math.isnan(v))]  # NaN here means absent
    if not present:
        return Stat(NOT_MEASURED)
    for marker in (UNTRUSTED, UNCONVERGED):  # one untrustworthy seed makes the mean untrustworthy
        if marker in present:
            return Stat(marker)
    numbers = np.array([v for v in present if not isinstance(v, str)], dtype=float)
    if not len(numbers):
        return Stat(NOT_APPLICABLE)
    mean = float(numbers.mean())
    return shown(mean, float(numbers.std(ddof=1)) if len(numbers) > 1 else None, digits)


def shown(mean: float, std: float | None, digits: int) -> Stat:
    """A mean and its std (None: one seed, no ±) as a cell."""
    return Stat(f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else ""), mean, std, digits)


@dataclass(frozen=True)
class Difference:
    """mean(b) - mean(a) with a two-sided confidence interval; None bounds when either side has < 2 seeds."""
    mean_a: float
    mean_b: float
    diff: float
    low: float | None
    high: float | None
    df: float | None
    n_a: int
    n_b: int

    @property
    def excludes_zero(self) -> bool | None:
        if self.low is None:
            return None
        return bool(self.low > 0 or self.high < 0)


def welch(a, b, confidence: float = 0.95) -> Difference:
    """Welch's t interval for mean(b) - mean(a) from two independent samples (one value per training seed)."""
    from scipy import stats
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(b.mean() - a.mean())
    if len(a) < 2 or len(b) < 2:
        return Difference(float(a.mean()), float(b.mean()), diff, None, None, None, len(a), len(b))
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:  # identical runs on both sides: the interval is the point
        return Difference(float(a.mean()), float(b.mean()), diff, diff, diff, float("inf"), len(a), len(b))
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return Difference(float(a.mean()), float(b.mean()), diff, diff - half, diff + half, float(df), len(a), len(b))
