"""FLTrust (Cao, Fang, Liu and Gong, NDSS 2021).

The server trains on a small clean root data set each round and obtains a
reference update ``g0``; the engine hands it over with
:meth:`FLTrust.set_reference` before :meth:`~FLTrust.combine`. Then

    TS_i = ReLU(cos(g_i, g0)),   g = sum_i TS_i (||g0|| / ||g_i||) g_i / sum_i TS_i

an update pointing away from ``g0`` gets weight 0, and every update counts
with the norm of ``g0``. If every trust score is 0 the result is the zero
update (``extra["all_untrusted"]``). A reference serves one round: ``combine``
consumes it and refuses to run without one, so a stale direction is never
reused. The paper claims robustness for any number of malicious clients
(the root data set is the anchor), so the rule asks only for one update
beyond the ``f`` Byzantine ones: ``min_clients = f + 1`` (and the largest
``f`` it accepts at ``n`` is ``n - 1``).
An update of norm 0 gets trust 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import Rule, row_dots, row_norms, weighted_row_sum
from .base import RobustConfigError, RuleResult


class FLTrust(Rule):
    """Trust-weighted mean of updates rescaled to the server's reference norm."""

    name = "fltrust"

    def __init__(self, f: int = 0) -> None:
        super().__init__(f)
        self.reference: np.ndarray | None = None

    def _min_clients(self, f: int) -> int:
        return f + 1

    def set_reference(self, g0: np.ndarray) -> None:
        """The server's update from its root data set for this round (1-D, finite, non-zero)."""
        g0 = np.asarray(g0, dtype=np.float64)
        if g0.ndim != 1 or g0.size == 0:
            raise RobustConfigError(f"{self.name}: the reference update must be a non-empty 1-D vector, "
                                    f"got shape {g0.shape}")
        if not np.isfinite(g0).all():
            raise RobustConfigError(f"{self.name}: the reference update has non-finite values")
        if not np.any(g0):
            raise RobustConfigError(f"{self.name}: the reference update is zero (no direction to trust)")
        self.reference = g0.copy()

    def _combine(self, x: np.ndarray, weights: np.ndarray | None, f: int, **_: Any) -> RuleResult:
        g0, self.reference = self.reference, None
        if g0 is None:
            raise RobustConfigError(f"{self.name}: no reference update for this round; "
                                    "call set_reference(g0) before combine")
        if g0.size != x.shape[1]:
            raise RobustConfigError(f"{self.name}: the reference update has {g0.size} coordinates, "
                                    f"the client updates {x.shape[1]}")
        g0_norm = float(np.sqrt(g0 @ g0))
        norms = row_norms(x)
        dots = row_dots(x, g0)
        live = norms > 0
        cos = np.zeros_like(norms)
        cos[live] = dots[live] / (norms[live] * g0_norm)
        trust = np.maximum(cos, 0.0)
        total = trust.sum()
        if total == 0.0:
            return RuleResult(np.zeros(x.shape[1]), weights=trust.tolist(), extra={"all_untrusted": True})
        coef = np.zeros_like(norms)
        coef[live] = trust[live] * g0_norm / norms[live] / total
        return RuleResult(weighted_row_sum(x, coef), weights=trust.tolist(),
                          extra={"all_untrusted": False, "reference_norm": g0_norm})
