"""Geometric median by smoothed Weiszfeld iterations (RFA, Pillutla, Kakade and Harchaoui, IEEE TSP 2022).

The geometric median minimises ``g(v) = sum_i a_i ||x_i - v||``. Each
iteration re-weights the rows by ``a_i / max(nu, ||x_i - v||)`` and takes
their weighted mean; the smoothing ``nu > 0`` keeps the weights finite when
``v`` meets a row. Iterations stop when the objective's relative decrease
falls to ``tol`` (``|g_prev - g| <= tol * g``, RFA's test) or after
``max_iter``; the result says how many ran and whether the test was met.
Its breakdown point is 1/2, so the rule refuses ``n < 2f + 1``.

``a_i`` is uniform unless ``use_weights=True`` (the clients' weights: a
Byzantine client could claim a large one). ``init`` is ``"mean"`` (the
weighted mean, as RFA) or ``"zero"``. ByzFL's ``GeometricMedian(nu, T)`` is
``init="zero", max_iter=T, tol=0`` (``tol=0`` runs every iteration).
Distances are taken from the differences block by block, in float64.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._common import Rule, check_positive, distances_to, weighted_row_sum
from .base import RobustConfigError, RuleResult

INITS = ("mean", "zero")


class GeometricMedian(Rule):
    """Smoothed Weiszfeld geometric median; refuses ``n < 2f + 1``."""

    name = "geomed"

    def __init__(self, f: int = 0, nu: float = 1e-6, tol: float = 1e-6, max_iter: int = 100,
                 init: str = "mean", use_weights: bool = False) -> None:
        super().__init__(f)
        self.nu = check_positive(self.name, "nu", nu)
        self.tol = check_positive(self.name, "tol", tol, strict=False)
        self.max_iter = check_positive(self.name, "max_iter", max_iter, integer=True, strict=False)
        if init not in INITS:
            raise RobustConfigError(f"{self.name}: init must be one of {INITS}, got {init!r}")
        self.init = init
        self.use_weights = bool(use_weights)

    def _combine(self, x: np.ndarray, weights: np.ndarray | None, f: int, **_: Any) -> RuleResult:
        n = x.shape[0]
        a = np.full(n, 1.0 / n)
        if self.use_weights and weights is not None:
            if weights.sum() <= 0:
                raise ValueError(f"{self.name}: the client weights sum to 0")
            a = weights / weights.sum()
        v = weighted_row_sum(x, a) if self.init == "mean" else np.zeros(x.shape[1])
        beta = a.copy()
        prev = np.inf
        converged = False
        iterations = 0
        objective: float | None = None
        for _ in range(self.max_iter + 1):
            if iterations == self.max_iter and self.tol == 0:
                objective = None  # not evaluated at the final point: with tol=0 nobody reads it
                break
            dist = distances_to(x, v)
            objective = float(a @ dist)
            if self.tol > 0 and abs(prev - objective) <= self.tol * objective:
                converged = True
                break
            if iterations == self.max_iter:
                break
            prev = objective
            beta = a / np.maximum(dist, self.nu)
            v = weighted_row_sum(x, beta) / beta.sum()
            iterations += 1
        w = beta / beta.sum()
        return RuleResult(v, weights=w.tolist(),
                          extra={"iterations": iterations, "converged": converged, "objective": objective})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "nu": self.nu, "tol": self.tol, "max_iter": self.max_iter,
                "init": self.init, "use_weights": self.use_weights}
