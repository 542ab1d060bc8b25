"""Inner Product Manipulation (IPM; Xie, Koyejo and Gupta, "Fall of Empires", UAI 2020).

All ``m`` colluding clients send ``-epsilon * mean(honest)``. With a small
``epsilon`` the crafted update is close to the honest ones (it passes
distance- and median-based rules) but has a negative inner product with the
true mean, so gradient descent stops descending; with a large one it
overwhelms plain averaging. Omniscient by default (the paper's setting);
with ``omniscient=False`` the mean is that of the malicious clients' own
benign updates. ByzFL's ``InnerProductManipulation(tau)`` is the same with
``epsilon = tau`` (its default is 2.0; ours, 0.1, is the paper's small-
``epsilon`` regime that targets the robust rules).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .poisoning import ModelPoisoning
from .reference import as_updates, flag, positive_float, reference_updates, repeat_rows


class InnerProductManipulation(ModelPoisoning):
    """Send ``-epsilon`` times the honest mean from all colluders."""

    name = "ipm"

    def __init__(self, epsilon: float = 0.1, *, omniscient: bool = True) -> None:
        self.epsilon = positive_float(self.name, "epsilon", epsilon)
        self.omniscient = flag(self.name, "omniscient", omniscient)

    def craft(self, benign: np.ndarray, honest: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        b, h = as_updates(self.name, benign, honest)
        ref = reference_updates(self.omniscient, b, h)
        return repeat_rows(-self.epsilon * ref.mean(axis=0), b.shape[0])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "epsilon": self.epsilon}
