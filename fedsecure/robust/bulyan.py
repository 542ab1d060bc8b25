"""Bulyan (El Mhamdi, Guerraoui and Rouault, ICML 2018).

1. Selection: ``theta = n - 2f`` rows, chosen one at a time by Krum over the
   rows not yet chosen (each time with ``max(r - f - 2, 1)`` neighbours among
   the ``r`` rows left, as in Flower's ``aggregate_bulyan`` over
   ``aggregate_krum``; exact ties, which one neighbour makes common, go to
   the lexicographically smaller row, Flower's to the lower index).
2. Aggregation, per coordinate: the mean of the ``beta = theta - 2f`` selected
   values closest to the selected values' median.

The paper's guarantee needs ``n >= 4f + 3``; the rule refuses fewer. The
pairwise distances are computed once (one Gram matrix product) and the
selection re-scores the shrinking sub-matrix; step 2 runs on blocks of
columns. Client weights are ignored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import Rule, column_blocks, pairwise_sq_distances
from .base import RuleResult
from .krum import krum_scores, smallest_scores


def bulyan_select(x: np.ndarray, dist: np.ndarray, f: int, theta: int) -> list[int]:
    """Row indices picked by ``theta`` rounds of Krum on the rows left (exact ties to the lexicographically smaller row)."""
    left = np.arange(dist.shape[0])
    chosen: list[int] = []
    for _ in range(theta):
        sub = dist[np.ix_(left, left)]
        scores = krum_scores(sub, max(left.size - f - 2, 1))
        j = int(smallest_scores(scores, 1, x, left)[0])
        chosen.append(int(left[j]))
        left = np.delete(left, j)
    return chosen


def closest_to_median_mean(x: np.ndarray, rows: list[int], beta: int) -> np.ndarray:
    """Per coordinate, the mean of the ``beta`` values of ``x[rows]`` closest to their median (block by block)."""
    rows_ = np.asarray(rows)
    d = x.shape[1]
    out = np.empty(d)
    for blk in column_blocks(rows_.size, d):
        b = x[rows_, blk]
        med = np.median(b, axis=0)
        idx = np.argpartition(np.abs(b - med), beta - 1, axis=0)[:beta]
        out[blk] = np.take_along_axis(b, idx, axis=0).mean(axis=0, dtype=np.float64)
    return out


class Bulyan(Rule):
    """Krum selection of ``n - 2f`` rows, then a coordinate-wise trimmed mean around the median; refuses ``n < 4f + 3``."""

    name = "bulyan"

    def _min_clients(self, f: int) -> int:
        return 4 * f + 3

    def _combine(self, x: np.ndarray, weights: np.ndarray | None, f: int, **_: Any) -> RuleResult:
        n = x.shape[0]
        theta = n - 2 * f
        beta = theta - 2 * f
        chosen = bulyan_select(x, pairwise_sq_distances(x), f, theta)
        agg = closest_to_median_mean(x, chosen, beta)
        return RuleResult(agg, selected=sorted(chosen), trimmed=theta - beta,
                          extra={"theta": theta, "beta": beta, "selection_order": chosen})
