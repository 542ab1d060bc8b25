"""Neighbour graphs and the choice of (k, t)."""

import os
from math import comb
import warnings

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedsecure.secagg.errors import ConfigurationError
from fedsecure.secagg.graph import build_graph, harary_graph
from fedsecure.secagg.params import GRAPH_DRAWS, binom_tail, choose_params, disconnection_bound, evaluate

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
@given(n=st.integers(50, 20000), dropout=st.floats(0.0, 0.3), corrupt=st.sampled_from([0.0, 0.01, 0.05]),
       tm=st.sampled_from(["semi-honest", "active"]))
def test_chosen_parameters_meet_both_targets(n, dropout, corrupt, tm):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            p = choose_params(n, dropout_rate=dropout, corrupt_fraction=corrupt, threat_model=tm)
        except ConfigurationError:
            return
    assert p.k >= p.t >= 2 and p.threat_model == tm  # t = 1 (a share is the secret) is never chosen
    if tm == "active":
        assert 2 * p.t > p.k + 1  # one colluding neighbour tolerated whatever the fraction
    assert p.privacy_failure_probability <= 2.0**-40
    assert p.privacy_failure_probability == pytest.approx(p.collusion_probability + p.disconnection_probability)
    if p.graph == "sparse":
        assert p.failure_probability <= 1e-6 and p.k % 2 == 0
        # the bounds restated from the module docstring, independently of the implementation
        # (an active server may force up to GRAPH_DRAWS graph draws and keep the one it likes)
        q = min(1.0, dropout + corrupt)
        need = 2 * p.t - p.k if tm == "active" else p.t
        draws = GRAPH_DRAWS if tm == "active" else 1
        assert p.collusion_probability == pytest.approx(min(1.0, draws * n * binom_tail(p.k, corrupt, need)),
                                                        rel=1e-9, abs=0)
        assert p.disconnection_probability == pytest.approx(min(1.0, draws * comb(n, 2) * q**p.k), rel=1e-9,
                                                            abs=1e-300)
    q = evaluate(n, p.k, p.t, graph=p.graph, dropout_rate=dropout, corrupt_fraction=corrupt, threat_model=tm)
    assert q.failure_probability == p.failure_probability


def test_semi_honest_needs_a_smaller_degree_than_active_at_the_benchmark_setting():
    semi = choose_params(100, dropout_rate=0.1)
    act = choose_params(100, dropout_rate=0.1, threat_model="active")
    assert semi.threat_model == "semi-honest" and semi.k < act.k
    # k = 16 is the first even degree whose disconnection bound C(100, 2) 0.1^k meets 2^-40
    assert semi.k == 16 and comb(100, 2) * 0.1**14 > 2.0**-40 >= comb(100, 2) * 0.1**16
    # t is the largest reliable threshold: t + 1 would miss the round-failure target
    assert evaluate(100, 16, semi.t + 1, graph="sparse", dropout_rate=0.1).failure_probability > 1e-6
    assert (act.k, act.t) == (34, 18)


def test_disconnection_bound_is_an_upper_bound_of_the_exact_ring_probability():
    """Exact P[disconnected] on small rings, by enumerating every bad set, never exceeds C(n, 2) q^k."""
    for n, k, q in [(8, 2, 0.3), (10, 4, 0.2), (12, 4, 0.4), (12, 6, 0.5)]:
        h = k // 2
        exact = 0.0
        for mask in range(1 << n):
            bad = [(mask >> i) & 1 for i in range(n)]
            good = [i for i in range(n) if not bad[i]]
            if len(good) < 2:
                continue
            gaps = [(good[(j + 1) % len(good)] - good[j]) % n for j in range(len(good))]
            gaps = [g if g else n for g in gaps]
            if sum(g > h for g in gaps) >= 2:  # two consecutive good clients farther apart than h
                exact += q ** sum(bad) * (1 - q) ** (n - sum(bad))
        assert exact <= disconnection_bound(n, k, q) + 1e-15
        assert exact > 0


def test_sparse_degree_grows_like_log_n():
    for tm in ("semi-honest", "active"):
        ks = [choose_params(n, dropout_rate=0.1, threat_model=tm).k for n in (100, 1000, 10000)]
        assert ks == sorted(ks) and ks[-1] <= 50


def test_unsafe_or_unreliable_user_choices_are_refused_with_reasons():
    with pytest.raises(ConfigurationError, match=r"2t > k \+ 1"):
        choose_params(100, k=10, t=5, threat_model="active")
    with pytest.raises(ConfigurationError, match="a share is the secret itself"):
        choose_params(100, k=16, t=1, dropout_rate=0.1, privacy_target=1.0, failure_target=1.0)
    with pytest.raises(ConfigurationError, match="no threshold"):
        choose_params(2, graph="complete")  # either client would learn the other's input from the sum
    with pytest.raises(ConfigurationError, match="aborts a round"):
        choose_params(100, k=16, t=9, dropout_rate=0.1)
    with pytest.raises(ConfigurationError, match="split into separately summed groups"):
        choose_params(100, k=4, t=2, dropout_rate=0.1)  # a Flower-like tiny ring
    with pytest.raises(ConfigurationError, match="exposes an input"):
        choose_params(1000, k=20, t=11, corrupt_fraction=0.1, failure_target=1.0, threat_model="active")
    with pytest.raises(ConfigurationError, match="exposes an input"):
        choose_params(1000, k=40, t=3, corrupt_fraction=0.05, failure_target=1.0)
    with pytest.raises(ConfigurationError, match="even"):
        choose_params(100, k=9, t=6)
    with pytest.raises(ConfigurationError, match="threat_model"):
        choose_params(100, threat_model="malicious")
    ok = choose_params(100, k=40, t=21, dropout_rate=0.1, threat_model="active")
    assert ok.k == 40 and ok.failure_probability <= 1e-6
    ok = choose_params(100, k=16, t=5, dropout_rate=0.1)
    assert ok.threat_model == "semi-honest" and ok.privacy_failure_probability <= 2.0**-40


def test_small_n_falls_back_to_the_complete_graph_with_a_warning():
    with pytest.warns(UserWarning, match="complete graph"):
        p = choose_params(8, dropout_rate=0.1, threat_model="active")
    assert p.graph == "complete" and p.k == 7 and p.t == 5 and p.failure_probability > 1e-6  # 2t > k + 1
    semi = choose_params(8, dropout_rate=0.1, corrupt_fraction=0.1)  # one corrupt client: t >= 2
    assert semi.graph == "complete" and semi.t >= 2 and semi.privacy_failure_probability == 0.0


def test_an_active_round_refuses_semi_honest_parameters():
    from fedsecure.secagg import FixedPointEncoding, SecAggServer

    p = choose_params(20, dropout_rate=0.1, k=10, t=3, failure_target=1.0, privacy_target=1.0)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = {u: Ed25519PrivateKey.generate().public_key() for u in range(20)}
    with pytest.raises(ConfigurationError, match="active server"):
        SecAggServer(range(20), 4, p, FixedPointEncoding.for_sum(20, 1.0), active=True, identity_keys=pub)
