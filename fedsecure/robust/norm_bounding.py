"""Norm bounding (Sun, Kairouz, Suresh and McMahan, "Can you really backdoor federated learning?", 2019).

Each update is scaled down to L2 norm at most ``bound``
(``x_i min(1, bound / ||x_i||)``) and the results are averaged, so the output
norm is at most ``bound`` and each client moves it by at most ``bound / n``.
``bound=None`` takes the median of the round's update norms, which lies among
the honest norms only with an honest majority: the rule then refuses
``n < 2f + 1``; with an explicit bound it needs one honest update,
``n >= f + 1``. The mean is unweighted (a Byzantine client could claim any
weight).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import Rule, check_positive, row_norms, weighted_row_sum
from .base import RuleResult


class NormBounding(Rule):
    """Clip each update's L2 norm to ``bound`` (default: the median norm), then average."""

    name = "norm-bounding"

    def __init__(self, f: int = 0, bound: float | None = None) -> None:
        super().__init__(f)
        self.bound = check_positive(self.name, "bound", bound, allow_none=True)

    def _min_clients(self, f: int) -> int:
        return 2 * f + 1 if self.bound is None else f + 1

    def _combine(self, x: np.ndarray, weights: np.ndarray | None, f: int, **_: Any) -> RuleResult:
        n = x.shape[0]
        norms = row_norms(x)
        bound = float(np.median(norms)) if self.bound is None else self.bound
        over = norms > bound
        scale = np.ones(n)
        scale[over] = bound / norms[over]
        return RuleResult(weighted_row_sum(x, scale / n), clipped=[int(i) for i in np.flatnonzero(over)],
                          extra={"bound": bound})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "bound": self.bound}
