"""Coordinate-wise median (Yin et al., ICML 2018).

``agg_j = median_i x_ij``; with an even number of rows, the mean of the two
middle values (numpy's convention, also ByzFL's and Flower's). With at most
``f`` arbitrary rows among ``n >= 2f + 1``, each coordinate of the result lies
within the range of the honest values there.

Client weights are ignored: a Byzantine client could claim any weight.
``row_aware=True`` takes each coordinate's median over the clients that
touched it (see :mod:`fedsecure.robust._coordinatewise` for the rule and its
limits); pass ``touched=`` (bool, shape of ``x``) to :meth:`combine`, or let
exact zeros mean "not touched".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import Rule, check_positive
from ._coordinatewise import coordinate_median, row_aware
from .base import RuleResult


class CoordinateMedian(Rule):
    """Coordinate-wise median; refuses ``n < 2f + 1`` (no honest majority)."""

    name = "median"

    def __init__(self, f: int = 0, row_aware: bool = False, min_touch: int | None = None) -> None:
        super().__init__(f)
        self.row_aware = bool(row_aware)
        self.min_touch = check_positive(self.name, "min_touch", min_touch, allow_none=True, integer=True)

    def _combine(self, x: np.ndarray, weights: np.ndarray | None, f: int, touched: np.ndarray | None = None,
                 **_: Any) -> RuleResult:
        if not self.row_aware:
            if touched is not None:
                raise ValueError(f"{self.name}: touched= is only used with row_aware=True")
            return RuleResult(coordinate_median(x))
        min_touch = self.min_touch if self.min_touch is not None else 2 * f + 1
        agg, extra = row_aware(x, touched, None, min_touch)
        return RuleResult(agg, extra=extra)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "row_aware": self.row_aware, "min_touch": self.min_touch}
