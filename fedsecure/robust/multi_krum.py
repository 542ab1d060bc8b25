"""Multi-Krum (Blanchard et al., NeurIPS 2017): the mean of the ``m`` rows of least Krum score.

``m`` defaults to ``n - f`` (as in ByzFL's ``MultiKrum(f)``); ``m = 1`` is
Krum. Scores are Krum's (:mod:`fedsecure.robust.krum`: ``n - f - 2``
neighbours by default, ``neighbours="n-f-1"`` for ByzFL's convention). Refuses
``n <= 2f + 2`` like Krum. The mean is unweighted (client weights are
ignored: a Byzantine client could claim any weight).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import Rule, check_positive, pairwise_sq_distances, weighted_row_sum
from .base import RuleResult
from .krum import krum_scores, neighbour_count, resolve_neighbours, smallest_scores


class MultiKrum(Rule):
    """Mean of the ``m`` best-scored updates (default ``m = n - f``); refuses ``n <= 2f + 2`` and ``n < m``."""

    name = "multi-krum"

    def __init__(self, f: int = 0, m: int | None = None, neighbours: int | str | None = None) -> None:
        super().__init__(f)
        self.m = check_positive(self.name, "m", m, allow_none=True, integer=True)
        self.neighbours = resolve_neighbours(self.name, neighbours)

    def _min_clients(self, f: int) -> int:
        return max(2 * f + 3, self.m or 0)

    def _combine(self, x: np.ndarray, weights: np.ndarray | None, f: int, **_: Any) -> RuleResult:
        n = x.shape[0]
        m = n - f if self.m is None else self.m
        k = neighbour_count(self.neighbours, n, f)
        scores = krum_scores(pairwise_sq_distances(x), k)
        chosen = smallest_scores(scores, m, x)
        w = np.zeros(n)
        w[chosen] = 1.0 / m
        return RuleResult(weighted_row_sum(x, w), selected=sorted(int(i) for i in chosen),
                          extra={"scores": scores.tolist(), "neighbours": k, "m": m})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "m": self.m, "neighbours": self.neighbours}
