"""Scaling / model replacement (Bagdasaryan et al., AISTATS 2020): boost the malicious update by ``gamma``.

Model replacement sends ``X~ = gamma (X - G) + G``: the update ``X - G``
that the attacker wants the global model ``G`` to take, boosted so that it
survives averaging with the others; ``gamma = n / eta`` (``n`` clients,
server learning rate ``eta``) replaces the global model outright under
FedAvg. In update terms the client sends ``gamma * benign``, where
``benign`` is whatever its local training produced (a backdoor when the
client trains on poisoned data). Non-omniscient. The default ``gamma = 10``
is the ``n / eta`` of a 10-client round with ``eta = 1``; pass the round's
own ``n / eta`` to replace the model exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .poisoning import ModelPoisoning
from .reference import as_updates, positive_float


class Scaling(ModelPoisoning):
    """Send ``gamma * benign``: the client's own update, ``gamma`` times as long."""

    name = "scaling"
    omniscient = False

    def __init__(self, gamma: float = 10.0) -> None:
        self.gamma = positive_float(self.name, "gamma", gamma)

    def craft(self, benign: np.ndarray, honest: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        b, _ = as_updates(self.name, benign, honest)
        return self.gamma * b

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "gamma": self.gamma}
