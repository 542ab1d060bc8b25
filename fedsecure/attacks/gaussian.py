"""Gaussian noise: each malicious client sends an independent draw of ``N(mu, sigma^2 I_d)``.

Non-omniscient (it ignores every update but for its dimension). The noise
comes from the plan's seeded generator, drawn as one ``m x d`` array row by
row, so a round is reproducible. ByzFL's ``Gaussian`` draws the same
distribution (from numpy's global generator).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .poisoning import ModelPoisoning
from .reference import as_updates, finite_float, positive_float


class Gaussian(ModelPoisoning):
    """Send ``N(mu, sigma^2)`` noise in every coordinate (``mu = 0`` by default)."""

    name = "gaussian"
    omniscient = False

    def __init__(self, sigma: float = 1.0, mu: float = 0.0) -> None:
        self.sigma = positive_float(self.name, "sigma", sigma, allow_zero=True)
        self.mu = finite_float(self.name, "mu", mu)

    def craft(self, benign: np.ndarray, honest: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        b, _ = as_updates(self.name, benign, honest)
        return rng.normal(loc=self.mu, scale=self.sigma, size=b.shape)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "sigma": self.sigma, "mu": self.mu}
