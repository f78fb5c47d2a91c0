"""Welch's interval against known answers."""
import pytest

from repbench.report.stats import welch


def test_welch_matches_a_hand_computed_interval():
    # a: mean 1, var 1 (n 3); b: mean 4, var 4 (n 3): se^2 = 1/3 + 4/3 = 5/3; df = (5/3)^2 / ((1/9 + 16/9) / 2)
    d = welch([0.0, 1.0, 2.0], [2.0, 4.0, 6.0])
    df = (5 / 3) ** 2 / ((1 / 9 + 16 / 9) / 2)
    from scipy import stats
    half = stats.t.ppf(0.975, df) * (5 / 3) ** 0.5
    assert d.diff == 3.0 and d.df == pytest.approx(df) and d.low == pytest.approx(3 - half)
    assert d.high == pytest.approx(3 + half) and d.excludes_zero is bool(3 - half > 0)


def test_identical_samples_give_an_interval_around_zero_that_includes_it():
    d = welch([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert d.diff == 0 and d.low < 0 < d.high and d.excludes_zero is False


def test_one_seed_gives_no_interval():
    d = welch([1.0], [2.0, 3.0])
    assert d.low is None and d.excludes_zero is None and d.diff == 1.5
