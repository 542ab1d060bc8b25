"""Neighbour graphs and the choice of (k, t)."""

import os
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedsecure.secagg.errors import ConfigurationError
from fedsecure.secagg.graph import build_graph, harary_graph
from fedsecure.secagg.params import binom_tail, choose_params, evaluate

FAST = settings(deadline=None, max_examples=40)


@FAST
@given(n=st.integers(3, 120), data=st.data())
def test_harary_graph_is_k_regular_symmetric_and_seed_determined(n, data):
    k = data.draw(st.integers(1, (n - 1) // 2)) * 2
    ids = data.draw(st.lists(st.integers(0, 10**6), min_size=n, max_size=n, unique=True))
    seed = data.draw(st.binary(min_size=32, max_size=32))
    g = harary_graph(ids, k, seed)
    assert set(g) == set(ids)
    for u, nb in g.items():
        assert nb.size == k and u not in nb and len(set(nb.tolist())) == k
        for v in nb.tolist():
            assert u in g[v]
    again = harary_graph(list(reversed(ids)), k, seed)
    assert all(np.array_equal(g[u], again[u]) for u in ids)


def test_graph_depends_on_seed_and_complete_graph():
    ids = list(range(200))
    a, b = harary_graph(ids, 10, os.urandom(32)), harary_graph(ids, 10, os.urandom(32))
    assert any(not np.array_equal(a[u], b[u]) for u in ids)
    c = build_graph("complete", range(5), 4, bytes(32))
    assert c[2].tolist() == [0, 1, 3, 4]
    with pytest.raises(ValueError, match="even"):
        harary_graph(ids, 7, bytes(32))


def test_binomial_tail_matches_direct_sum():
    from math import comb

    for k, p, a in [(10, 0.1, 3), (40, 0.3, 20), (5, 0.5, 0), (5, 0.5, 6)]:
        direct = sum(comb(k, j) * p**j * (1 - p) ** (k - j) for j in range(max(a, 0), k + 1))
        assert binom_tail(k, p, a) == pytest.approx(direct, rel=1e-9, abs=1e-300)


@FAST
@given(n=st.integers(50, 20000), dropout=st.floats(0.0, 0.3), corrupt=st.sampled_from([0.0, 0.01, 0.05]))
def test_chosen_parameters_meet_both_targets(n, dropout, corrupt):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p = choose_params(n, dropout_rate=dropout, corrupt_fraction=corrupt)
        except ConfigurationError:
            return
    assert 2 * p.t > p.k >= p.t >= 1
    assert p.privacy_failure_probability <= 2.0**-40
    if p.graph == "sparse":
        assert p.failure_probability <= 1e-6 and p.k % 2 == 0
    q = evaluate(n, p.k, p.t, graph=p.graph, dropout_rate=dropout, corrupt_fraction=corrupt)
    assert q.failure_probability == p.failure_probability


def test_sparse_degree_grows_like_log_n():
    ks = [choose_params(n, dropout_rate=0.1).k for n in (100, 1000, 10000)]
    assert ks == sorted(ks) and ks[-1] <= 50


def test_unsafe_or_unreliable_user_choices_are_refused_with_reasons():
    with pytest.raises(ConfigurationError, match="t > k/2"):
        choose_params(100, k=10, t=5)
    with pytest.raises(ConfigurationError, match="aborts a round"):
        choose_params(100, k=4, t=3, dropout_rate=0.1)  # a Flower-like tiny ring
    with pytest.raises(ConfigurationError, match="exposes an input"):
        choose_params(1000, k=20, t=11, corrupt_fraction=0.1, failure_target=1.0)
    with pytest.raises(ConfigurationError, match="even"):
        choose_params(100, k=9, t=6)
    ok = choose_params(100, k=40, t=21, dropout_rate=0.1)
    assert ok.k == 40 and ok.failure_probability <= 1e-6


def test_small_n_falls_back_to_the_complete_graph_with_a_warning():
    with pytest.warns(UserWarning, match="complete graph"):
        p = choose_params(8, dropout_rate=0.1)
    assert p.graph == "complete" and p.k == 7 and p.t == 4 and p.failure_probability > 1e-6
