"""Krum (Blanchard, El Mhamdi, Guerraoui and Stainer, NeurIPS 2017).

Score of row ``i``: the sum of the squared distances to its ``k`` nearest
other rows, ``k = n - f - 2`` in the paper; Krum returns the row of least
score. The paper's guarantee needs ``n > 2f + 2``, so the rule refuses
``n <= 2f + 2``.

Pairwise distances come from one Gram matrix product (float64, see
:func:`fedsecure.robust._common.pairwise_sq_distances`), the ``k`` nearest by
``np.partition`` on each row: no Python loop over clients. Ties go to the
lowest row index.

``neighbours`` overrides ``k`` as a function of the call: ``None`` is the
paper's ``n - f - 2``; ByzFL's ``Krum(f)`` scores with ``n - f - 1``
neighbours (a documented difference; ``neighbours="n-f-1"`` reproduces it).
Client weights are ignored (a Byzantine client could claim any weight).
"""

from __future__ import annotations

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


def stable_smallest(scores: np.ndarray, m: int) -> np.ndarray:
    """Indices of the ``m`` smallest scores, ties to the lowest index, in increasing score order."""
    return np.argsort(scores, kind="stable")[:m]


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
        best = int(stable_smallest(scores, 1)[0])
        return RuleResult(x[best].astype(np.float64), selected=[best],
                          extra={"scores": scores.tolist(), "neighbours": k})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "neighbours": self.neighbours}
