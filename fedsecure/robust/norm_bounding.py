"""Norm bounding (Sun, Kairouz, Suresh and McMahan, "Can you really backdoor federated learning?", 2019).

Each update is scaled down to L2 norm at most ``bound``
(``x_i min(1, bound / ||x_i||)``) and the results are averaged, so the output
norm is at most ``bound`` and each client moves it by at most ``bound / n``.
``bound=None`` takes the median of the round's update norms, which lies among
the honest norms only with an honest majority: the rule then refuses
``n < 2f + 1``; with an explicit bound it needs one honest update,
``n >= f + 1``. By default the mean is unweighted (a Byzantine client could
claim any weight).

``weighted=True`` averages the clipped updates with FedAvg's weights instead,
``sum_i w~_i c_i x_i / sum_i w~_i`` with ``w~_i = min(w_i, max_weight)``
(the capped example counts of DP-FedAvg, McMahan et al. 2018, and of
:class:`~fedsecure.fl.aggregation.FedAvg`). Clipping is unchanged, so the
output norm is still at most ``bound``; a client's share is at most
``bound * max_weight / sum_i w~_i``, so a client that lies about its weight
gains at most the cap; ``max_weight=None`` caps at the median of the round's
weights (with an honest majority, an honest client's weight), so a lie buys
at most the median. Why it matters: on recommender updates the unweighted
mean counts a user with 5 interactions as much as one with 500, and that,
not the clipping, is what costs HR@10 (README, "Poisoning and robust
aggregation").
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import Rule, check_positive, row_norms, weighted_row_sum
from .base import RobustConfigError, RuleResult


class NormBounding(Rule):
    """Clip each update's L2 norm to ``bound`` (default: the median norm), then average (optionally weighted)."""

    name = "norm-bounding"

    def __init__(self, f: int = 0, bound: float | None = None, weighted: bool = False,
                 max_weight: float | None = 1000.0) -> None:
        super().__init__(f)
        self.bound = check_positive(self.name, "bound", bound, allow_none=True)
        self.weighted = bool(weighted)
        self.max_weight = check_positive(self.name, "max_weight", max_weight, allow_none=True)

    def _min_clients(self, f: int) -> int:
        return 2 * f + 1 if self.bound is None else f + 1

    def _combine(self, x: np.ndarray, weights: np.ndarray | None, f: int, **_: Any) -> RuleResult:
        n = x.shape[0]
        norms = row_norms(x)
        bound = float(np.median(norms)) if self.bound is None else self.bound
        over = norms > bound
        scale = np.ones(n)
        scale[over] = bound / norms[over]
        extra: dict[str, Any] = {"bound": bound}
        if self.weighted:
            if weights is None:
                raise RobustConfigError(f"{self.name}: weighted=True needs the clients' weights")
            if not (np.isfinite(weights).all() and (weights >= 0).all()):
                raise RobustConfigError(f"{self.name}: weights must be finite and >= 0")
            cap = float(np.median(weights)) if self.max_weight is None else self.max_weight
            w = np.minimum(weights, cap)
            extra["weight_cap"] = cap
            total = float(w.sum())
            if total <= 0:
                raise RobustConfigError(f"{self.name}: the clients' weights sum to zero")
            coef = scale * w / total
            extra["weights_capped"] = int(np.count_nonzero(weights > cap))
        else:
            coef = scale / n
        return RuleResult(weighted_row_sum(x, coef), clipped=[int(i) for i in np.flatnonzero(over)], extra=extra)

    def describe(self) -> dict[str, Any]:
        out = {**super().describe(), "bound": self.bound, "weighted": self.weighted}
        if self.weighted:
            out["max_weight"] = self.max_weight
        return out
