"""Differences between learners across training seeds: Welch's t interval (unequal variances)."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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
