"""Intervals and paired comparisons (fedsecure.stats): the properties every reported number relies on."""

import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedsecure.stats import bootstrap_users, over_seeds, paired_seeds, paired_users, rerun_interval, with_interval


def test_user_bootstrap_covers_the_true_rate_about_95_percent_of_the_time():
    """Coverage of the bootstrap interval on Bernoulli(p) hits, one row per user, against the known p."""
    rng = np.random.default_rng(1)
    p, users, trials, covered = 0.05, 610, 200, 0
    for i in range(trials):
        hits = (rng.random(users) < p).astype(float)
        lo, hi = bootstrap_users(np.arange(users), hits, reps=400, seed=i)
        covered += lo <= p <= hi
    assert 0.89 <= covered / trials <= 0.99
    # and its width is the textbook 2 * 1.96 * sqrt(p (1 - p) / U) within 25 %
    lo, hi = bootstrap_users(np.arange(users), (rng.random(users) < p).astype(float), reps=2000)
    assert (hi - lo) == pytest.approx(2 * 1.96 * math.sqrt(p * (1 - p) / users), rel=0.25)


def test_user_bootstrap_resamples_users_not_rows():
    """A user's rows move together: duplicating every row of each user leaves the interval unchanged."""
    rng = np.random.default_rng(2)
    users = np.arange(300)
    values = rng.random(300)
    a = bootstrap_users(users, values, seed=5)
    b = bootstrap_users(np.repeat(users, 3), np.repeat(values, 3), seed=5)
    assert a == pytest.approx(b)


@settings(deadline=None, max_examples=30)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=12))
def test_seed_interval_is_the_student_t_interval(values):
    s = over_seeds(values)
    v = np.asarray(values)
    assert s.mean == pytest.approx(v.mean(), abs=1e-9)
    assert s.ci95[0] <= s.mean <= s.ci95[1]
    from scipy.stats import t

    half = t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size)
    assert s.ci95[1] - s.mean == pytest.approx(half, abs=1e-9)
    assert s.as_dict()["values"] == list(map(float, values))


def test_one_seed_has_an_unbounded_interval():
    s = over_seeds([0.05])
    assert s.ci95 == (-math.inf, math.inf) and math.isnan(s.sd)


@pytest.mark.parametrize("n,m", [(10, 1), (10, 10), (4, 4)])
def test_a_rerun_on_new_seeds_lands_in_the_rerun_interval_95_percent_of_the_time(n, m):
    """The interval of the mean does not cover another run's mean 95% of the time; the rerun interval does."""
    rng = np.random.default_rng(11)
    trials, in_rerun, in_mean = 4000, 0, 0
    for _ in range(trials):
        first, rerun = rng.normal(-0.004, 0.011, n), float(rng.normal(-0.004, 0.011, m).mean())
        lo, hi = rerun_interval(first, m)
        in_rerun += lo <= rerun <= hi
        mlo, mhi = over_seeds(first).ci95
        in_mean += mlo <= rerun <= mhi
        assert lo <= mlo and mhi <= hi  # never narrower than the interval of the mean
    assert 0.93 <= in_rerun / trials <= 0.97
    assert in_mean / trials < 0.90  # the mean's interval is the wrong yardstick for a rerun


def test_rerun_interval_tends_to_the_interval_of_the_mean_and_refuses_bad_input():
    v = [0.01, -0.02, 0.005, 0.0, -0.01]
    lo, hi = rerun_interval(v, 10**9)
    assert (lo, hi) == pytest.approx(over_seeds(v).ci95, abs=1e-9)
    with pytest.raises(ValueError, match="at least one new seed"):
        rerun_interval(v, 0)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        rerun_interval([0.1], 1)


def test_paired_seeds_resolves_a_consistent_small_gap_that_unpaired_intervals_do_not():
    """Seed-to-seed spread hides a 10 % gap in unpaired intervals; pairing by seed removes it."""
    base = {s: 0.05 + 0.01 * (s % 5 - 2) for s in range(10)}  # large spread between seeds
    better = {s: v * 1.1 for s, v in base.items()}  # +10 % on every seed
    a, b = over_seeds(list(better.values())), over_seeds(list(base.values()))
    assert a.ci95[0] < b.ci95[1]  # the unpaired intervals overlap
    c = paired_seeds("hr@10", better, base)
    assert c.resolved and c.difference > 0 and c.relative == pytest.approx(0.1)
    assert "above" in c.verdict("federated", "central")


def test_paired_seeds_does_not_resolve_noise():
    rng = np.random.default_rng(3)
    a = {s: float(rng.normal(0.05, 0.01)) for s in range(5)}
    b = {s: float(rng.normal(0.05, 0.01)) for s in range(5)}
    c = paired_seeds("hr@10", a, b)
    assert c.ci95[0] <= c.difference <= c.ci95[1]
    with pytest.raises(ValueError, match="at least 2 shared seeds"):
        paired_seeds("hr@10", {0: 1.0}, {0: 1.0, 1: 2.0})


def test_paired_users_resolves_a_real_difference_and_not_an_identical_run():
    rng = np.random.default_rng(4)
    users = np.arange(2000)
    b = (rng.random(2000) < 0.3).astype(float)
    a = np.maximum(b, (rng.random(2000) < 0.1).astype(float))  # a hits wherever b does, and more
    c = paired_users("hr@10", users, a, b)
    assert c.resolved and c.difference > 0 and c.n == 2000
    same = paired_users("hr@10", users, b, b)
    assert same.difference == 0 and same.ci95 == (0.0, 0.0) and not same.resolved


def test_with_interval_shows_the_interval_beside_the_value_only_when_it_is_there():
    assert with_interval({"hr@10": 0.05, "hr@10_ci95": [0.04, 0.061]}, "hr@10") == "0.0500 [0.0400, 0.0610]"
    assert with_interval({"hr@10": 0.05}, "hr@10") == "0.0500"
    assert with_interval({"epsilon": math.inf}, "epsilon") == "inf"
