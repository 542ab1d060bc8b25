"""Krum (Blanchard, El Mhamdi, Guerraoui and Stainer, NeurIPS 2017).

Score of row ``i``: the sum of the squared distances to its ``k`` nearest
other rows, ``k = n - f - 2`` in the paper; Krum returns the row of least
score (exact ties to the lexicographically smaller row). The paper's guarantee needs ``n > 2f + 2``, so the rule refuses
``n <= 2f + 2``.

Pairwise distances come from one Gram matrix product (float64, see
:func:`fedsecure.robust._common.pairwise_sq_distances`), the ``k`` nearest by
``np.partition`` on each row: no Python loop over clients. Exact ties go to
the lexicographically smaller row (by content, so the rule does not depend on
the order of the clients; ByzFL and Flower take the lower index).

``neighbours`` overrides ``k`` as a function of the call: ``None`` is the
paper's ``n - f - 2``; ByzFL's ``Krum(f)`` scores with ``n - f - 1``
neighbours (a documented difference; ``neighbours="n-f-1"`` reproduces it).
Client weights are ignored (a Byzantine client could claim any weight).
"""

from __future__ import annotations

from functools import cmp_to_key
from typing import Any

import numpy as np

from ._common import Rule, check_positive, pairwise_sq_distances
from .base import RobustConfigError, RuleResult

NEIGHBOUR_CONVENTIONS = ("n-f-2", "n-f-1")


def krum_scores(dist: np.ndarray, k: int) -> np.ndarray:
    """Sum of each row's ``k`` smallest off-diagonal entries of ``dist`` (squared distances)."""
    n = dist.shape[0]
    if k <= 0:
        return np.zeros(n)
    off = dist.copy()
    np.fill_diagonal(off, np.inf)
    if k >= n - 1:
        return np.where(np.isinf(off), 0.0, off).sum(axis=1)
    return np.partition(off, k - 1, axis=1)[:, :k].sum(axis=1)


def resolve_neighbours(name: str, neighbours: Any) -> Any:
    if neighbours is None or neighbours in NEIGHBOUR_CONVENTIONS:
        return neighbours
    if isinstance(neighbours, str):
        raise RobustConfigError(f"{name}: neighbours must be an integer >= 1 or one of {NEIGHBOUR_CONVENTIONS}, "
                                f"got {neighbours!r}")
    return check_positive(name, "neighbours", neighbours, integer=True)


def neighbour_count(neighbours: Any, n: int, f: int) -> int:
    if neighbours is None or neighbours == "n-f-2":
        return max(n - f - 2, 1)
    if neighbours == "n-f-1":
        return max(n - f - 1, 1)
    return min(int(neighbours), n - 1)


def smallest_scores(scores: np.ndarray, m: int, x: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``m`` smallest ``scores``; exact ties at the cut go to the lexicographically smaller row.

    ``x[rows[i]]`` is the row scored ``scores[i]`` (``rows`` defaults to all
    rows in order). Breaking ties by content, not by position, keeps the rule
    invariant under a permutation of the clients; exact ties are the rule, not
    the exception, with one neighbour (two mutual nearest neighbours score the
    same, and the distance matrix is exactly symmetric).
    """
    order = np.argsort(scores, kind="stable")
    if m >= scores.size:
        return order
    cut = scores[order[m - 1]]
    tied = np.flatnonzero(scores == cut)
    below = order[scores[order] < cut]
    if below.size + tied.size <= m:  # the whole tie fits: nothing to break
        return order[:m]
    r = tied if rows is None else rows[tied]

    def lexicographic(i: int, j: int) -> int:  # the first coordinate where rows r[i] and r[j] differ decides
        diff = np.flatnonzero(x[r[i]] != x[r[j]])
        if diff.size == 0:
            return i - j  # identical rows: either gives the same aggregate
        k = diff[0]
        return -1 if x[r[i], k] < x[r[j], k] else 1

    lex = sorted(range(tied.size), key=cmp_to_key(lexicographic))  # a handful of tied rows, O(d) per comparison
    return np.concatenate([below, tied[lex][: m - below.size]])


class Krum(Rule):
    """The update of least Krum score; refuses ``n <= 2f + 2``."""

    name = "krum"

    def __init__(self, f: int = 0, neighbours: int | str | None = None) -> None:
        super().__init__(f)
        self.neighbours = resolve_neighbours(self.name, neighbours)

    def _min_clients(self, f: int) -> int:
        return 2 * f + 3

    def _combine(self, x: np.ndarray, weights: np.ndarray | None, f: int, **_: Any) -> RuleResult:
        n = x.shape[0]
        k = neighbour_count(self.neighbours, n, f)
        scores = krum_scores(pairwise_sq_distances(x), k)
        best = int(smallest_scores(scores, 1, x)[0])
        return RuleResult(x[best].astype(np.float64), selected=[best],
                          extra={"scores": scores.tolist(), "neighbours": k})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "neighbours": self.neighbours}
