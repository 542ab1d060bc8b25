"""Centered clipping (Karimireddy, He and Jaggi, ICML 2021).

Starting from a centre ``v_0``, each of ``iterations`` steps moves it by the
mean of the rows' differences clipped to norm ``tau``:

    v_{l+1} = v_l + (1/n) sum_i (x_i - v_l) min(1, tau / ||x_i - v_l||)

so the output is never farther than ``iterations * tau`` from the centre,
whatever the rows. The centre is the previous round's aggregate, kept by the
rule (zero on the first round; :meth:`CenteredClipping.reset` forgets it).
``tau=None`` takes, at the first step, the median distance of the rows to the
centre (with an honest majority it is an honest row's distance); it is
reported in ``extra["tau"]``. The rule assumes an honest majority and
refuses ``n < 2f + 1``. ByzFL's ``CenteredClipping(L=iterations, tau=tau)``
is the same computation with the same state. Client weights are ignored.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import Rule, check_positive, distances_to, weighted_row_sum
from .base import RuleResult


class CenteredClipping(Rule):
    """Iterative clipping around the previous aggregate; refuses ``n < 2f + 1``."""

    name = "centered-clipping"

    def __init__(self, f: int = 0, tau: float | None = None, iterations: int = 1) -> None:
        super().__init__(f)
        self.tau = check_positive(self.name, "tau", tau, allow_none=True)
        self.iterations = check_positive(self.name, "iterations", iterations, integer=True)
        self.centre: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the previous aggregate: the next centre is zero."""
        self.centre = None

    def _combine(self, x: np.ndarray, weights: np.ndarray | None, f: int, **_: Any) -> RuleResult:
        n, d = x.shape
        if self.centre is None:
            v = np.zeros(d)
        elif self.centre.shape != (d,):
            raise ValueError(f"{self.name}: the kept centre has {self.centre.size} coordinates, the updates {d} "
                             "(call reset() when the model changes)")
        else:
            v = self.centre.copy()
        tau = self.tau
        clipped = np.zeros(n, dtype=bool)
        for _ in range(self.iterations):
            dist = distances_to(x, v)
            if tau is None:
                tau = float(np.median(dist))
            over = dist > tau
            clipped |= over
            c = np.ones(n)
            if tau == 0.0:
                c[:] = 0.0
            else:
                c[over] = tau / dist[over]
            # v + mean_i c_i (x_i - v) = v (1 - mean c) + (1/n) sum c_i x_i
            v = v * (1.0 - c.sum() / n) + weighted_row_sum(x, c / n)
        self.centre = v.copy()
        return RuleResult(v, clipped=[int(i) for i in np.flatnonzero(clipped)],
                          extra={"tau": tau, "iterations": self.iterations})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "tau": self.tau, "iterations": self.iterations}
