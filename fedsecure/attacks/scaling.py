"""Scaling / model replacement (Bagdasaryan et al., AISTATS 2020): boost the malicious update by ``gamma``.

Model replacement sends ``X~ = gamma (X - G) + G``: the update ``X - G``
that the attacker wants the global model ``G`` to take, boosted so that it
survives averaging with the others; ``gamma = n / eta`` (``n`` clients,
server learning rate ``eta``) replaces the global model outright under
FedAvg. In update terms the client sends ``gamma * (X - G)``.

What ``X - G`` is depends on the attacker's objective:

* ``objective="untargeted"`` (default): the attacker wants the model to get
  worse, and its poisoned update is its benign one reversed (the step that
  *raises* its local loss): it sends ``-gamma * benign``. Boosting is what
  distinguishes it from sign flipping: with 10 % malicious clients and
  ``gamma = 10`` the round's mean update points against the honest one,
  which even an adaptive server optimiser (FedAdam, whose per-coordinate
  normalisation neutralises a boost of the honest direction) follows.
* ``objective="backdoor"``: the client's own update is already the poisoned
  one (it trained on poisoned data, e.g. with a data-poisoning attack), and
  it sends ``gamma * benign``, Bagdasaryan et al.'s setting.

Non-omniscient. The default ``gamma = 10`` is the ``n / eta`` of a 10-client
round with ``eta = 1``; pass the round's own ``n / eta`` to replace the model
exactly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .poisoning import AttackConfigError, ModelPoisoning
from .reference import as_updates, positive_float


OBJECTIVES = ("untargeted", "backdoor")


class Scaling(ModelPoisoning):
    """Send the poisoned update boosted ``gamma`` times: ``-gamma * benign`` (untargeted) or ``gamma * benign``."""

    name = "scaling"
    omniscient = False

    def __init__(self, gamma: float = 10.0, objective: str = "untargeted") -> None:
        self.gamma = positive_float(self.name, "gamma", gamma)
        if objective not in OBJECTIVES:
            raise AttackConfigError(f"{self.name}: objective must be one of {OBJECTIVES}, got {objective!r}")
        self.objective = objective

    def craft(self, benign: np.ndarray, honest: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        b, _ = as_updates(self.name, benign, honest)
        return (-self.gamma if self.objective == "untargeted" else self.gamma) * b

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "gamma": self.gamma, "objective": self.objective}
