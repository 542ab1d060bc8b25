"""The Byzantine-robust rules of fedsecure.robust: worked examples, properties, refusals, and the aggregator seam."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.fl.aggregation import AggregationError, ClientUpdate
from fedsecure.robust import RULES, RobustAggregator, RobustConfigError, make_rule
from fedsecure.robust.base import byzantine_count
from fedsecure.robust.bulyan import Bulyan
from fedsecure.robust.centered_clipping import CenteredClipping
from fedsecure.robust.fltrust import FLTrust
from fedsecure.robust.geomed import GeometricMedian
from fedsecure.robust.krum import Krum
from fedsecure.robust.median import CoordinateMedian
from fedsecure.robust.multi_krum import MultiKrum
from fedsecure.robust.norm_bounding import NormBounding
from fedsecure.robust.trimmed_mean import TrimmedMean

ALL = sorted(RULES)


def col(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)[:, None]


def run(rule, x, **kw):
    if isinstance(rule, FLTrust) and rule.reference is None:
        rule.set_reference(np.ones(np.shape(x)[1]))
    return rule.combine(np.asarray(x), **kw)


# ---------------------------------------------------------------- registry


def test_registry_names_and_classes():
    assert set(RULES) == {"median", "trimmed-mean", "krum", "multi-krum", "bulyan", "geomed",
                          "centered-clipping", "norm-bounding", "fltrust"}
    assert "fedavg" not in RULES
    for name in RULES:
        rule = make_rule(name, f=1)
        assert rule.name == name and rule.f == 1
        assert rule.describe()["name"] == name


def test_make_rule_unknown_name_lists_the_choices():
    with pytest.raises(RobustConfigError, match="unknown aggregator 'fedavg'; choose one of bulyan"):
        make_rule("fedavg")


# ---------------------------------------------------------------- worked examples


def test_median_worked():
    x = np.array([[1, 10], [2, 20], [100, -5]], dtype=np.float32)
    assert CoordinateMedian(f=1).combine(x).aggregate.tolist() == [2.0, 10.0]
    assert CoordinateMedian().combine(col(1, 2, 3, 4)).aggregate.tolist() == [2.5]  # even n: mean of the middles


def test_trimmed_mean_worked():
    res = TrimmedMean(f=1).combine(col(1, 2, 3, 4, 100))
    assert res.aggregate.tolist() == [3.0] and res.trimmed == 2
    assert TrimmedMean(f=1, trim=2).combine(col(-50, 1, 2, 3, 100)).aggregate.tolist() == [2.0]
    assert TrimmedMean(f=0).combine(col(1, 2, 6)).aggregate.tolist() == [3.0]


def test_krum_worked():
    # n=5, f=1: each row scored by its n-f-2 = 2 nearest; scores 5, 2, 5, 13, 96^2+98^2
    res = Krum(f=1).combine(col(0, 1, 2, 4, 100))
    assert res.aggregate.tolist() == [1.0] and res.selected == [1]
    assert res.extra["scores"] == pytest.approx([5.0, 2.0, 5.0, 13.0, 98.0**2 + 96.0**2], rel=1e-12)


def test_multi_krum_worked():
    res = MultiKrum(f=1).combine(col(0, 1, 2, 4, 100))  # m = n - f = 4 best: rows 1, 0, 2, 3
    assert res.selected == [0, 1, 2, 3] and res.aggregate.tolist() == [1.75]
    res = MultiKrum(f=1, m=2).combine(col(2, 1, 0, 4, 100))  # scores 5, 2, 5: the tie goes to the smaller row
    assert res.selected == [1, 2] and res.aggregate.tolist() == [0.5]


def test_bulyan_worked():
    # n=7, f=1: theta = 5 rows by repeated Krum (max(r - 3, 1) neighbours among the r rows left), then per
    # coordinate the mean of the beta = 3 selected values closest to their median.
    x = np.array([[0, 4.5], [1.1, -3], [2, 0], [3.3, 1], [4, 2], [5.6, 40], [100, -100]])
    # scores, r=7, 4 neighbours: 127.1 121.52 44.75 48.16 65.15 5877.42 77966.1 -> row 2
    #         r=6, 3 neighbours: rows 0 1 3 4 5 6: 102.85 111.71 45.47 57.15 ... -> row 3
    #         r=5, 2 neighbours: rows 0 1 4 5 6: 79.71 90.87 55.66 ... -> row 4
    #         r=4, 1 neighbour:  rows 0 1 5 6: 57.46 57.46 (mutual nearest) ... -> row 0 (the lower)
    #         r=3, 1 neighbour:  rows 1 5 6: 1869.25 1869.25 19190.21 -> row 1
    res = Bulyan(f=1).combine(x)
    assert res.extra["selection_order"] == [2, 3, 4, 0, 1]  # exact ties to the lexicographically smaller row
    assert res.selected == [0, 1, 2, 3, 4] and res.trimmed == 2
    # column 0: 0 1.1 2 3.3 4, median 2 -> 2, 1.1, 3.3; column 1: -3 0 1 2 4.5, median 1 -> 1, 0, 2
    np.testing.assert_allclose(res.aggregate, [6.4 / 3, 1.0], rtol=1e-12)


def test_geomed_worked():
    # the Fermat point of an equilateral triangle is its centroid; of a square, its centre
    c = np.array([1.0, 2.0])
    tri = c + np.array([[0, 1], [np.sqrt(3) / 2, -0.5], [-np.sqrt(3) / 2, -0.5]])
    res = GeometricMedian(tol=1e-12, max_iter=1000).combine(tri)
    np.testing.assert_allclose(res.aggregate, c, atol=1e-9)
    sq = np.array([[0, 0], [2, 0], [0, 2], [2, 2], [1, 1]], dtype=np.float64)
    np.testing.assert_allclose(GeometricMedian().combine(sq).aggregate, [1, 1], atol=1e-9)
    # three collinear points: the middle one (the smoothing nu keeps the weights finite there)
    res = GeometricMedian(tol=1e-14, max_iter=10_000).combine(col(0, 1, 10))
    assert abs(res.aggregate[0] - 1.0) < 1e-4
    assert res.extra["converged"] is True and 1 <= res.extra["iterations"] <= 10_000
    assert len(res.weights) == 3 and abs(sum(res.weights) - 1) < 1e-12


def test_geomed_reports_no_convergence_when_iterations_run_out():
    res = GeometricMedian(tol=1e-15, max_iter=2).combine(col(0, 1, 10))
    assert res.extra == {"iterations": 2, "converged": False, "objective": pytest.approx(res.extra["objective"])}


def test_centered_clipping_worked_and_keeps_its_centre():
    x = np.array([[3, 4], [0, 0.5], [0, -0.5]])
    rule = CenteredClipping(tau=1.0)
    res = rule.combine(x)  # centre 0: row 0 clipped to (0.6, 0.8)
    np.testing.assert_allclose(res.aggregate, [0.2, 0.8 / 3])
    assert res.clipped == [0]
    np.testing.assert_allclose(rule.centre, [0.2, 0.8 / 3])
    res2 = rule.combine(x)  # now around the previous aggregate
    v = np.array([0.2, 0.8 / 3])
    diffs = x - v
    norms = np.linalg.norm(diffs, axis=1)
    expect = v + (diffs * np.minimum(1, 1.0 / norms)[:, None]).mean(axis=0)
    np.testing.assert_allclose(res2.aggregate, expect)
    rule.reset()
    np.testing.assert_allclose(rule.combine(x).aggregate, res.aggregate)


def test_centered_clipping_default_tau_is_the_median_distance():
    x = np.array([[3, 4], [0, 1], [0, 2]])
    res = CenteredClipping().combine(x)
    assert res.extra["tau"] == 2.0
    np.testing.assert_allclose(res.aggregate, [0.4, (1.6 + 1 + 2) / 3])


def test_norm_bounding_worked():
    res = NormBounding(bound=1.0).combine(np.array([[3, 4], [0, 0.5]]))
    np.testing.assert_allclose(res.aggregate, [0.3, 0.65])
    assert res.clipped == [0]
    res = NormBounding().combine(np.array([[3, 4], [0, 1], [0, 2]]))  # bound = median norm = 2
    assert res.extra["bound"] == 2.0
    np.testing.assert_allclose(res.aggregate, [0.4, (1.6 + 1 + 2) / 3])


def test_norm_bounding_weighted_worked():
    x = np.array([[3.0, 4.0], [0.0, 1.0], [0.0, 2.0]])  # norms 5, 1, 2: bound = median = 2, row 0 scaled by 2/5
    res = NormBounding(weighted=True).combine(x, np.array([1.0, 2.0, 1.0]))
    np.testing.assert_allclose(res.aggregate, (np.array([1.2, 1.6]) + 2 * np.array([0, 1]) + np.array([0, 2])) / 4)
    assert res.clipped == [0] and res.extra["bound"] == 2.0
    # a weight above the cap counts as the cap: claiming 1e6 gains no more than claiming max_weight
    big = NormBounding(weighted=True, max_weight=4.0).combine(x, np.array([1e6, 2.0, 1.0])).aggregate
    capped = NormBounding(weighted=True, max_weight=4.0).combine(x, np.array([4.0, 2.0, 1.0])).aggregate
    np.testing.assert_allclose(big, capped)
    with pytest.raises(RobustConfigError, match="weighted=True needs the clients' weights"):
        NormBounding(weighted=True).combine(x)
    # max_weight=None caps at the median weight (2 here): a claim of 1e6 counts as 2
    res = NormBounding(weighted=True, max_weight=None).combine(x, np.array([1e6, 2.0, 1.0]))
    assert res.extra["weight_cap"] == 2.0
    np.testing.assert_allclose(res.aggregate, (2 * np.array([1.2, 1.6]) + 2 * np.array([0, 1]) + np.array([0, 2])) / 5)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 12), d=st.integers(1, 10), scale=st.floats(1e-3, 1e6))
def test_norm_bounding_weighted_equal_weights_is_the_unweighted_rule_and_stays_in_the_bound(seed, n, d, scale):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * scale
    w = np.full(n, 7.0)
    np.testing.assert_allclose(NormBounding(weighted=True).combine(x, w).aggregate, NormBounding().combine(x).aggregate,
                               rtol=1e-9, atol=1e-12 * scale)
    w = rng.uniform(0.0, 3.0, size=n) + 1e-3
    res = NormBounding(weighted=True).combine(x, w)
    assert np.linalg.norm(res.aggregate) <= res.extra["bound"] * (1 + 1e-9)  # a convex combination of clipped rows


def test_fltrust_worked():
    rule = FLTrust()
    rule.set_reference(np.array([1.0, 0.0]))
    res = rule.combine(np.array([[2, 0], [1, 1], [-1, 0]]))
    h = np.sqrt(0.5)
    np.testing.assert_allclose(res.weights, [1.0, h, 0.0])
    np.testing.assert_allclose(res.aggregate, np.array([1 + h * h, h * h]) / (1 + h))
    # the reference serves one round
    with pytest.raises(RobustConfigError, match="no reference update for this round; call set_reference"):
        rule.combine(np.array([[2.0, 0.0]]))


def test_fltrust_all_untrusted_gives_the_zero_update():
    rule = FLTrust()
    rule.set_reference(np.array([1.0, 0.0]))
    res = rule.combine(np.array([[-1.0, 0.0], [0.0, 0.0], [0.0, 3.0]]))
    assert res.aggregate.tolist() == [0.0, 0.0] and res.extra["all_untrusted"] is True


# ---------------------------------------------------------------- row-aware form


def test_row_aware_median_and_trimmed_mean_worked():
    # 5 clients, f=1. Column 0 touched by 3 (1, 2, 3); column 1 by 2 only; column 2 by nobody; column 3 by all
    x = np.array([[1, 7, 0, 1],
                  [2, 0, 0, 2],
                  [3, 0, 0, 3],
                  [0, 9, 0, 4],
                  [0, 0, 0, 50]], dtype=np.float32)
    dense = CoordinateMedian(f=1).combine(x).aggregate
    assert dense.tolist() == [1.0, 0.0, 0.0, 3.0]
    res = CoordinateMedian(f=1, row_aware=True).combine(x)
    assert res.aggregate.tolist() == [2.0, 0.0, 0.0, 3.0]  # column 1: 2 < min_touch = 2f + 1 = 3
    assert res.extra["coordinates_untouched"] == 1 and res.extra["coordinates_below_min_touch"] == 1
    assert CoordinateMedian(f=1, row_aware=True, min_touch=2).combine(x).aggregate.tolist() == [2.0, 8.0, 0.0, 3.0]
    tm = TrimmedMean(f=1, row_aware=True).combine(x).aggregate
    assert tm.tolist() == [2.0, 0.0, 0.0, 3.0]
    # with min_touch lowered the trim shrinks to what the column can afford: 2 touches -> no trim
    assert TrimmedMean(f=1, row_aware=True, min_touch=2).combine(x).aggregate.tolist() == [2.0, 8.0, 0.0, 3.0]


def test_row_aware_explicit_touched_mask_counts_a_touched_zero():
    x = np.array([[0, 1], [0, 2], [5, 3]], dtype=np.float64)
    touched = np.array([[True, True], [True, True], [True, True]])
    assert CoordinateMedian(row_aware=True).combine(x).aggregate.tolist() == [5.0, 2.0]
    assert CoordinateMedian(row_aware=True).combine(x, touched=touched).aggregate.tolist() == [0.0, 2.0]
    with pytest.raises(ValueError, match="touched= is only used with row_aware=True"):
        CoordinateMedian().combine(x, touched=touched)
    with pytest.raises(ValueError, match="touched must have the shape of the updates"):
        CoordinateMedian(row_aware=True).combine(x, touched=touched[:2])


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), f=st.integers(0, 3), honest_touch=st.integers(0, 6), d=st.integers(1, 12),
       trimmed=st.booleans())
def test_row_aware_stays_within_the_honest_touched_values(seed, f, honest_touch, d, trimmed):
    # Byzantine clients touch every coordinate with arbitrary values; honest ones touch some.
    rng = np.random.default_rng(seed)
    h = 2 * f + 1 + honest_touch
    honest = rng.normal(size=(h, d)) * (rng.random((h, d)) < 0.6)
    byz = rng.choice([-1e9, 1e9], size=(f, d)) * rng.random((f, d)) + 1.0
    x = np.vstack([byz, honest])
    rule = (TrimmedMean if trimmed else CoordinateMedian)(f=f, row_aware=True)
    agg = rule.combine(x).aggregate
    touched = honest != 0
    k = touched.sum(axis=0) + f
    for j in range(d):
        if k[j] < 2 * f + 1:
            assert agg[j] == 0.0
        elif touched[:, j].any():
            vals = honest[touched[:, j], j]
            assert vals.min() - 1e-12 <= agg[j] <= vals.max() + 1e-12


# ---------------------------------------------------------------- properties

def rule_for(name: str, f: int):
    options = {"geomed": {"tol": 1e-12, "max_iter": 500}, "centered-clipping": {"tau": 1.5, "iterations": 3}}
    return make_rule(name, f=f, **options.get(name, {}))


@settings(max_examples=15, deadline=None)
@given(name=st.sampled_from(ALL), seed=st.integers(0, 2**31), f=st.integers(0, 2), extra=st.integers(0, 4),
       d=st.integers(1, 20))
def test_every_rule_is_permutation_invariant(name, seed, f, extra, d):
    # continuous random data: no exact ties, so tie-breaking by row index never decides
    rng = np.random.default_rng(seed)
    n = make_rule(name, f=f).min_clients() + extra
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=(n, 1))
    perm = rng.permutation(n)
    ref = rng.normal(size=d)
    a, b = rule_for(name, f), rule_for(name, f)
    if name == "fltrust":
        a.set_reference(ref)
        b.set_reference(ref)
    ra, rb = a.combine(x), b.combine(x[perm])
    np.testing.assert_allclose(ra.aggregate, rb.aggregate, rtol=1e-9, atol=1e-9)
    if ra.selected is not None:
        assert sorted(perm[rb.selected].tolist()) == ra.selected
    if ra.clipped is not None:
        assert sorted(perm[rb.clipped].tolist()) == ra.clipped
    if ra.weights is not None:
        np.testing.assert_allclose(np.asarray(rb.weights), np.asarray(ra.weights)[perm], rtol=1e-7, atol=1e-12)


outlier = st.one_of(st.floats(-1e12, 1e12, allow_nan=False), st.sampled_from([-1e30, 1e30, 0.0]))


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), f=st.integers(0, 4), extra=st.integers(0, 4), d=st.integers(1, 8),
       data=st.data(), trimmed=st.booleans())
def test_median_and_trimmed_mean_ignore_f_arbitrary_outliers(seed, f, extra, d, data, trimmed):
    rng = np.random.default_rng(seed)
    h = f + 1 + extra  # n = h + f >= 2f + 1
    honest = rng.normal(size=(h, d))
    byz = np.array(data.draw(st.lists(st.lists(outlier, min_size=d, max_size=d), min_size=f, max_size=f)),
                   dtype=np.float64).reshape(f, d)
    x = np.vstack([byz, honest])[rng.permutation(h + f)]
    agg = (TrimmedMean if trimmed else CoordinateMedian)(f=f).combine(x).aggregate
    assert np.all(agg >= honest.min(axis=0) - 1e-12) and np.all(agg <= honest.max(axis=0) + 1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), f=st.integers(1, 4), extra=st.integers(0, 5), d=st.integers(1, 30),
       clustered=st.booleans(), multi=st.booleans())
def test_krum_picks_honest_updates_when_outliers_are_far(seed, f, extra, d, clustered, multi):
    rng = np.random.default_rng(seed)
    n = 2 * f + 3 + extra
    honest = rng.normal(size=(n - f, d))
    far = 1e3 * (np.ones((f, d)) if clustered else rng.normal(size=(f, d)) + 5)
    x = np.vstack([far, honest])
    perm = rng.permutation(n)
    x = x[perm]
    byz_rows = set(np.flatnonzero(perm < f).tolist())
    res = (MultiKrum if multi else Krum)(f=f).combine(x)
    assert not set(res.selected) & byz_rows
    if not multi:
        assert res.aggregate.tolist() == x[res.selected[0]].tolist()


@pytest.mark.parametrize("big", [1e6, 1e20, 3e37])
def test_krum_distances_stay_exact_next_to_huge_outliers(big):
    # the Gram identity cancels: a translation by the column mean would let f rows of 3e37 wash out the
    # honest distances; the median-norm row keeps them exact
    from fedsecure.robust._common import pairwise_sq_distances

    rng = np.random.default_rng(11)
    x = rng.normal(size=(15, 300)).astype(np.float32)
    x[:4] = big * np.sign(rng.normal(size=(4, 300)))
    h = x[4:].astype(np.float64)
    exact = ((h[:, None, :] - h[None, :, :]) ** 2).sum(axis=-1)
    np.testing.assert_allclose(pairwise_sq_distances(x)[4:, 4:], exact, rtol=1e-12, atol=1e-9)
    k = 15 - 4 - 2
    scores = np.sort(exact + np.diag([np.inf] * 11), axis=1)[:, :k].sum(axis=1)
    assert Krum(f=4).combine(x).selected == [4 + int(np.argmin(scores))]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 7), d=st.integers(1, 3))
def test_geomed_matches_a_brute_force_optimum(seed, n, d):
    from scipy.optimize import minimize

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * rng.uniform(0.5, 3)

    def g(v):
        return np.linalg.norm(x - v, axis=1).sum()

    res = GeometricMedian(nu=1e-12, tol=1e-14, max_iter=5_000).combine(x)
    # the optimum of a convex function: Nelder-Mead from the mean, the coordinate median and the best data point
    starts = [x.mean(axis=0), np.median(x, axis=0), x[np.argmin([g(p) for p in x])]]
    brute = min((minimize(g, s, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 5_000})
                 for s in starts), key=lambda r: r.fun)
    assert g(res.aggregate) <= brute.fun * (1 + 1e-6) + 1e-9
    # the reported objective is sum_i a_i ||x_i - v|| with uniform a_i = 1/n
    assert g(res.aggregate) / n == pytest.approx(res.extra["objective"], rel=1e-9, abs=1e-12)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 12), d=st.integers(1, 10), tau=st.floats(1e-3, 10),
       iterations=st.integers(1, 5), scale=st.floats(1e-3, 1e6))
def test_centered_clipping_moves_at_most_iterations_times_tau(seed, n, d, tau, iterations, scale):
    rng = np.random.default_rng(seed)
    rule = CenteredClipping(tau=tau, iterations=iterations)
    for _ in range(2):  # second round: around the kept centre
        centre = np.zeros(d) if rule.centre is None else rule.centre.copy()
        x = rng.normal(size=(n, d)) * scale
        out = rule.combine(x).aggregate
        assert np.linalg.norm(out - centre) <= iterations * tau * (1 + 1e-9)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 12), d=st.integers(1, 10),
       bound=st.one_of(st.none(), st.floats(1e-3, 10)), scale=st.floats(1e-3, 1e6))
def test_norm_bounding_output_norm_at_most_the_bound(seed, n, d, bound, scale):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) * scale
    res = NormBounding(bound=bound).combine(x)
    assert np.linalg.norm(res.aggregate) <= res.extra["bound"] * (1 + 1e-9)
    norms, b = np.linalg.norm(x, axis=1), res.extra["bound"]
    assert set(np.flatnonzero(norms > b * (1 + 1e-12))) <= set(res.clipped) <= set(np.flatnonzero(norms > b * (1 - 1e-12)))


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 10), d=st.integers(2, 10))
def test_fltrust_gives_zero_weight_to_negatively_aligned_updates(seed, n, d):
    rng = np.random.default_rng(seed)
    g0 = rng.normal(size=d)
    x = rng.normal(size=(n, d))
    bad = rng.integers(n)
    x[bad] = -rng.uniform(0.1, 100) * g0 + 1e-3 * rng.normal(size=d)  # points away from g0
    rule = FLTrust()
    rule.set_reference(g0)
    res = rule.combine(x)
    neg = (x @ g0) < 0
    assert neg[bad]
    assert all(res.weights[i] == 0.0 for i in np.flatnonzero(neg))
    assert all(0.0 < res.weights[i] <= 1.0 for i in np.flatnonzero(~neg))
    if not res.extra["all_untrusted"]:  # a convex combination of updates rescaled to ||g0||
        assert np.linalg.norm(res.aggregate) <= np.linalg.norm(g0) * (1 + 1e-9)


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("name, f, n_refused, needed", [
    ("median", 2, 4, 5), ("trimmed-mean", 2, 4, 5), ("krum", 2, 6, 7), ("multi-krum", 2, 6, 7),
    ("bulyan", 2, 10, 11), ("geomed", 2, 4, 5), ("centered-clipping", 2, 4, 5), ("norm-bounding", 2, 4, 5),
])
def test_refuses_what_it_cannot_defend(name, f, n_refused, needed):
    rule = make_rule(name, f=f)
    assert rule.min_clients() == needed
    x = np.random.default_rng(0).normal(size=(n_refused, 3))
    msg = f"{name} with f={f} needs at least {needed} updates, got {n_refused}"
    with pytest.raises(RobustConfigError, match=msg):
        rule.check(n_refused)
    with pytest.raises(RobustConfigError, match=msg):
        rule.combine(x)
    rule.check(needed)
    run(rule, np.random.default_rng(0).normal(size=(needed, 3)))


def test_published_conditions():
    for f in range(5):
        assert Krum(f=f).min_clients() == 2 * f + 3  # refuses n <= 2f + 2
        assert MultiKrum(f=f).min_clients() == 2 * f + 3
        assert Bulyan(f=f).min_clients() == 4 * f + 3
        assert CoordinateMedian(f=f).min_clients() == 2 * f + 1
        assert TrimmedMean(f=f).min_clients() == 2 * f + 1
        assert NormBounding(f=f, bound=1.0).min_clients() == f + 1
        assert FLTrust(f=f).min_clients() == f + 1
    assert TrimmedMean(f=1, trim=3).min_clients() == 7
    assert MultiKrum(f=1, m=9).min_clients() == 9


@pytest.mark.parametrize("name", ALL)
def test_the_largest_defended_f_is_found_for_every_rule(name):
    # the aggregator's default f searches upwards until min_clients() exceeds n: every rule's condition
    # must grow with f (FLTrust: f + 1; trimmed mean with a trim margin: 2 (f + margin) + 1)
    for rule in (make_rule(name), *([TrimmedMean(f=1, trim=2)] if name == "trimmed-mean" else [])):
        for n in range(1, 30):
            f = byzantine_count(rule, None, n)
            rule.f = f
            assert rule.min_clients() <= n or f == 0
            rule.f = f + 1
            assert rule.min_clients() > n


@pytest.mark.parametrize("build, msg", [
    (lambda: make_rule("median", f=-1), r"f \(Byzantine clients tolerated\) must be an integer >= 0"),
    (lambda: TrimmedMean(f=2, trim=1), "trim=1 removes fewer values per side than f=2"),
    (lambda: MultiKrum(f=1, m=0), "multi-krum: m must be > 0"),
    (lambda: Krum(f=1, neighbours="n-f"), "krum: neighbours must be an integer >= 1 or one of"),
    (lambda: GeometricMedian(nu=0.0), "geomed: nu must be > 0"),
    (lambda: GeometricMedian(init="median"), "geomed: init must be one of"),
    (lambda: GeometricMedian(tol=float("nan")), "geomed: tol must be a finite number"),
    (lambda: CenteredClipping(tau=-1.0), "centered-clipping: tau must be > 0"),
    (lambda: CenteredClipping(iterations=0), "centered-clipping: iterations must be > 0"),
    (lambda: NormBounding(bound=0), "norm-bounding: bound must be > 0"),
    (lambda: CoordinateMedian(min_touch=True), "median: min_touch must be a finite integer"),
])
def test_bad_options_are_refused_by_name(build, msg):
    with pytest.raises(RobustConfigError, match=msg):
        build()


def test_fltrust_refusals():
    rule = FLTrust()
    with pytest.raises(RobustConfigError, match="no reference update for this round"):
        rule.combine(np.ones((3, 2)))
    with pytest.raises(RobustConfigError, match="reference update is zero"):
        rule.set_reference(np.zeros(2))
    with pytest.raises(RobustConfigError, match="non-finite"):
        rule.set_reference(np.array([1.0, np.nan]))
    with pytest.raises(RobustConfigError, match="non-empty 1-D"):
        rule.set_reference(np.ones((2, 2)))
    rule.set_reference(np.ones(3))
    with pytest.raises(RobustConfigError, match="reference update has 3 coordinates, the client updates 2"):
        rule.combine(np.ones((3, 2)))


def test_bad_input_shapes():
    with pytest.raises(ValueError, match="median: updates must be an n x d matrix"):
        CoordinateMedian().combine(np.ones(3))
    with pytest.raises(ValueError, match="weights must have shape"):
        CoordinateMedian().combine(np.ones((3, 2)), np.ones(2))
    rule = CenteredClipping(tau=1.0)
    rule.combine(np.ones((3, 2)))
    with pytest.raises(ValueError, match="kept centre has 2 coordinates, the updates 3"):
        rule.combine(np.ones((3, 3)))


@pytest.mark.parametrize("name", ALL)
def test_non_finite_rows_are_dropped_not_fatal(name):
    f = 1
    rule = make_rule(name, f=f)
    n = rule.min_clients()
    rng = np.random.default_rng(3)
    x = rng.normal(size=(n, 4))
    x[1, 2] = np.nan
    res = run(rule, x)
    assert res.extra["non_finite_rows"] == [1]
    assert np.isfinite(res.aggregate).all()
    if res.selected is not None:
        assert not {1} & set(res.selected)
    if res.weights is not None:
        assert res.weights[1] == 0.0 and len(res.weights) == n


# ---------------------------------------------------------------- memory


@pytest.mark.parametrize("name", ALL)
def test_no_full_copy_of_the_matrix(name, monkeypatch):
    # blocks of 1 MB (float64) over a 16 MB float32 matrix: the peak of everything allocated stays a
    # fraction of the matrix (numpy reports its allocations to tracemalloc)
    monkeypatch.setattr("fedsecure.robust._common.CHUNK_BYTES", 1 << 20)
    x = np.random.default_rng(0).normal(size=(100, 40_000)).astype(np.float32)
    rule = make_rule(name, f=2, **({"max_iter": 3} if name == "geomed" else {}))
    if name == "fltrust":
        rule.set_reference(np.ones(x.shape[1]))
    tracemalloc.start()
    try:
        rule.combine(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes / 2, f"{name}: peak {peak / 1e6:.1f} MB for a {x.nbytes / 1e6:.1f} MB matrix"


# ---------------------------------------------------------------- the aggregator seam


def updates(x: np.ndarray, ids=None) -> list[ClientUpdate]:
    ids = range(100, 100 + len(x)) if ids is None else ids
    return [ClientUpdate(client_id=c, delta=row, weight=1.0) for c, row in zip(ids, x)]


def test_robust_aggregator_end_to_end_with_krum():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(7, 20)).astype(np.float32)
    x[3] = 1e4  # client 103 is Byzantine
    agg = RobustAggregator(make_rule("krum"), byzantine=2)
    res = agg.aggregate(updates(x), round_index=4)
    assert res.included == tuple(range(100, 107))
    assert res.stats["selected"] != [103] and len(res.stats["selected"]) == 1
    assert res.stats["rule"] == {"name": "krum", "f": 2, "neighbours": None}
    assert res.stats["matrix_bytes"] == x.nbytes and res.delta.dtype == np.float64
    chosen = res.stats["selected"][0] - 100
    np.testing.assert_array_equal(res.delta, x[chosen])


def test_robust_aggregator_dropouts_refusal_and_diagnostics_by_client_id():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(6, 10))
    agg = RobustAggregator(make_rule("krum"), byzantine=2)
    with pytest.raises(AggregationError, match="round 1: krum with f=2 needs at least 7 updates, got 6"):
        agg.aggregate(updates(x), round_index=1)
    agg = RobustAggregator(make_rule("krum"))  # default: the largest f Krum defends at n = 6, 2f + 3 <= 6
    assert agg.aggregate(updates(x), round_index=1).stats["rule"]["f"] == 1
    agg = RobustAggregator(make_rule("centered-clipping", tau=0.5), byzantine=1)
    res = agg.aggregate(updates(x), round_index=2, dropouts={101: "upload"})
    assert 101 not in res.included and res.excluded == {101: "dropped at upload"}
    assert set(res.stats["clipped"]) <= set(res.included) and res.stats["tau"] == 0.5


def test_robust_aggregator_fltrust_and_geomed_weights_by_client_id():
    x = np.array([[2, 0], [1, 1], [-1, 0]], dtype=np.float32)
    agg = RobustAggregator(make_rule("fltrust"))
    agg.set_reference(np.array([1.0, 0.0]))  # what the engine calls each round
    res = agg.aggregate(updates(x, ids=[7, 8, 9]), round_index=0)
    assert res.stats["weights"][9] == 0.0 and res.stats["weights"][7] == 1.0
    assert res.stats["rule"]["f"] == 2  # FLTrust needs one update beyond the f Byzantine ones
    with pytest.raises(RobustConfigError, match="no reference update for this round"):
        agg.aggregate(updates(x, ids=[7, 8, 9]), round_index=1)
    res = RobustAggregator(make_rule("geomed"), byzantine=1).aggregate(updates(x, ids=[7, 8, 9]), round_index=0)
    assert set(res.stats["weights"]) == {7, 8, 9} and isinstance(res.stats["converged"], bool)


def test_robust_aggregator_excludes_a_nan_client_without_aborting():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(5, 8))
    x[2, 0] = np.inf
    res = RobustAggregator(make_rule("median"), byzantine=2).aggregate(updates(x), round_index=3)
    assert res.stats["non_finite_rows"] == [updates(x)[2].client_id] and np.isfinite(res.delta).all()
    np.testing.assert_allclose(res.delta, np.median(np.delete(x, 2, axis=0), axis=0), rtol=1e-6)


@pytest.mark.parametrize("big", [1e15, 1e25, 3e37])
def test_float32_fast_paths_fall_back_to_float64_past_float32_range(big):
    # distances and weighted sums of float32 input run partly in float32; past its range they are redone in
    # float64, so a row of 3e37 is still clipped to tau in its own direction, not dropped
    x = np.zeros((5, 1000), dtype=np.float32)
    x[1:] = np.random.default_rng(2).normal(size=(4, 1000))
    x[0] = big
    r32 = CenteredClipping(tau=1.0).combine(x)
    r64 = CenteredClipping(tau=1.0).combine(x.astype(np.float64))
    np.testing.assert_allclose(r32.aggregate, r64.aggregate, rtol=1e-5, atol=1e-7)
    assert r32.aggregate[0] > 1.0 / 5 / np.sqrt(1000) * 0.5  # row 0 pulls (clipped) along +1
    np.testing.assert_allclose(NormBounding(bound=2.0).combine(x).aggregate,
                               NormBounding(bound=2.0).combine(x.astype(np.float64)).aggregate, rtol=1e-5, atol=1e-7)
