"""Sign flipping: each malicious client sends its own benign update reversed and scaled, ``-s * benign``.

Non-omniscient: a client needs only its own update. With ``s = 1`` the
colluders' mean is minus the mean of their benign updates, which is ByzFL's
``SignFlipping`` (it sends ``-mean(honest)``) applied to those updates.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .poisoning import ModelPoisoning
from .reference import as_updates, positive_float


class SignFlip(ModelPoisoning):
    """Send ``-scale * benign``: the opposite of the honest direction, ``scale`` times as long."""

    name = "sign-flip"
    omniscient = False

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = positive_float(self.name, "scale", scale)

    def craft(self, benign: np.ndarray, honest: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        b, _ = as_updates(self.name, benign, honest)
        return -self.scale * b

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "scale": self.scale}
