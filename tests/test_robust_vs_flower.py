"""fedsecure.robust against Flower's strategy aggregation functions (flwr.server.strategy.aggregate).

Flower has the coordinate-wise median, the trimmed mean, Krum / Multi-Krum
(the paper's ``n - f - 2`` neighbours, like fedsecure's default) and Bulyan
(repeated Krum, then the ``n - 4f`` values closest to the median). On the same
inputs fedsecure's defaults give the same aggregate within 1e-5 relative
error. Flower's trimmed mean takes a proportion: ``(f + 0.5) / n`` cuts ``f``
per side (``int(proportiontocut * n)``). Flower weights Multi-Krum's mean by
the clients' example counts: here every client reports 1.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedsecure.robust import make_rule

A = pytest.importorskip("flwr.server.strategy.aggregate", reason="flwr is not installed (pip install flwr)")

CASES = [(7, 1, 1), (9, 2, 5), (11, 2, 40), (15, 3, 30), (20, 4, 12)]


def inputs(n: int, f: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + rng.normal(size=d)
    x[:f] = x[:f] * -30 + 5
    # rows in lexicographic order: exact ties (one Krum neighbour) then go to the same row whether broken by
    # index (the peer) or by content (fedsecure)
    return x[np.lexsort(x.T[::-1])].astype(np.float32)


def flower_results(x: np.ndarray) -> list:
    return [([row], 1) for row in x]


def close(ours: np.ndarray, theirs) -> None:
    theirs = np.asarray(theirs, dtype=np.float64)
    assert np.linalg.norm(ours - theirs) <= 1e-5 * max(np.linalg.norm(theirs), 1e-12)


@pytest.mark.parametrize("n, f, d", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_median_and_trimmed_mean(n, f, d, seed):
    x = inputs(n, f, d, seed)
    close(make_rule("median", f=f).combine(x).aggregate, A.aggregate_median(flower_results(x))[0])
    close(make_rule("trimmed-mean", f=f).combine(x).aggregate,
          A.aggregate_trimmed_avg(flower_results(x), (f + 0.5) / n)[0])


@pytest.mark.parametrize("n, f, d", CASES)
@pytest.mark.parametrize("seed", [0, 1])
def test_krum_and_multi_krum(n, f, d, seed):
    x = inputs(n, f, d, seed)
    res = make_rule("krum", f=f).combine(x)
    theirs = A.aggregate_krum(flower_results(x), num_malicious=f, to_keep=0)[0]
    assert np.array_equal(x[res.selected[0]], theirs)
    for m in (1, 3, n - f):
        close(make_rule("multi-krum", f=f, m=m).combine(x).aggregate,
              A.aggregate_krum(flower_results(x), num_malicious=f, to_keep=m)[0])


@pytest.mark.parametrize("n, f, d", [(7, 1, 1), (11, 2, 40), (15, 3, 30), (16, 2, 9)])
@pytest.mark.parametrize("seed", [0, 1])
def test_bulyan(n, f, d, seed):
    x = inputs(n, f, d, seed)
    theirs = A.aggregate_bulyan(flower_results(x), num_malicious=f, aggregation_rule=A.aggregate_krum, to_keep=0)[0]
    close(make_rule("bulyan", f=f).combine(x).aggregate, theirs)


def test_bulyan_refusal_matches_flower():
    x = inputs(10, 2, 3, 0)  # n = 10 < 4f + 3 = 11
    with pytest.raises(ValueError, match="4 \\* num_malicious \\+ 3"):
        A.aggregate_bulyan(flower_results(x), num_malicious=2, aggregation_rule=A.aggregate_krum, to_keep=0)
    with pytest.raises(ValueError, match="bulyan with f=2 needs at least 11 updates, got 10"):
        make_rule("bulyan", f=2).combine(x)
