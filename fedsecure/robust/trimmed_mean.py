"""Coordinate-wise trimmed mean (Yin et al., ICML 2018).

Per coordinate, remove the ``f`` largest and the ``f`` smallest values and
average the ``n - 2f`` left (ByzFL's ``TrMean(f)``; Flower's
``aggregate_trimmed_avg`` with ``proportiontocut`` such that
``int(proportiontocut * n) == f``). ``trim`` overrides the number removed per
side (default ``f``; it must be at least ``f`` to defend, and ``trim - f`` is
kept as a margin when ``f`` is later set per round). Refuses
``n < 2f + 1``: something must be left after trimming. Each coordinate of the
result lies within the range of the honest values there.

Client weights are ignored (a Byzantine client could claim any weight).
``row_aware=True`` works over the clients that touched each coordinate,
trimming ``min(trim, (k_j - 1) // 2)`` per side (see
:mod:`fedsecure.robust._coordinatewise`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import Rule, check_positive
from ._coordinatewise import coordinate_trimmed_mean, row_aware
from .base import RobustConfigError, RuleResult


class TrimmedMean(Rule):
    """Coordinate-wise trimmed mean; refuses ``n < 2 trim + 1``."""

    name = "trimmed-mean"

    def __init__(self, f: int = 0, trim: int | None = None, row_aware: bool = False,
                 min_touch: int | None = None) -> None:
        super().__init__(f)
        self.trim = check_positive(self.name, "trim", trim, allow_none=True, integer=True, strict=False)
        if self.trim is not None and self.trim < self.f:
            raise RobustConfigError(f"{self.name}: trim={self.trim} removes fewer values per side than f={self.f}")
        self.margin = 0 if self.trim is None else self.trim - self.f
        self.row_aware = bool(row_aware)
        self.min_touch = check_positive(self.name, "min_touch", min_touch, allow_none=True, integer=True)

    def _trim(self, f: int) -> int:
        # trim = f plus the configured margin (trim - f at construction); it follows f when the
        # aggregator sets f per round, and shrinks with it when non-finite rows are dropped
        return f + self.margin

    def _min_clients(self, f: int) -> int:
        return 2 * self._trim(f) + 1

    def _combine(self, x: np.ndarray, weights: np.ndarray | None, f: int, touched: np.ndarray | None = None,
                 **_: Any) -> RuleResult:
        trim = self._trim(f)
        if not self.row_aware:
            if touched is not None:
                raise ValueError(f"{self.name}: touched= is only used with row_aware=True")
            return RuleResult(coordinate_trimmed_mean(x, trim), trimmed=2 * trim)
        min_touch = self.min_touch if self.min_touch is not None else 2 * trim + 1
        agg, extra = row_aware(x, touched, trim, min_touch)
        return RuleResult(agg, trimmed=2 * trim, extra=extra)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "trim": self._trim(self.f), "row_aware": self.row_aware, "min_touch": self.min_touch}
