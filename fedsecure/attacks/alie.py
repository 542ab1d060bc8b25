"""A Little Is Enough (ALIE; Baruch, Baruch and Goldberg, NeurIPS 2019).

All ``m`` colluding clients send, coordinate by coordinate,

    p_j = mu_j - z * sigma_j

where ``mu`` and ``sigma`` are the coordinate-wise mean and sample standard
deviation (``ddof = 1``) of the honest updates (omniscient, the paper's
setting) or of the malicious clients' own benign updates (not omniscient).
The shift is small enough that the crafted update stays inside the honest
population's spread, so median, trimmed mean and Krum-like rules do not
discard it, yet every colluder pushes the same way.

``z`` defaults to the paper's ``z_max`` for ``n`` clients of which ``m`` are
malicious: the attackers need ``s = floor(n/2 + 1) - m`` honest "supporters"
farther from the mean than they are, so

    z_max = Phi^{-1}((n - s) / n)

with ``Phi`` the standard normal CDF. ``n`` is the round's ``m + h`` when the
attack is omniscient; a non-omniscient attacker does not see ``h`` and must
be given ``n_clients`` (or ``z``). A negative ``z`` pushes the other way
(ByzFL's ``ALittleIsEnough(tau)`` is ``mu + tau sigma``, i.e. ``z = -tau``).
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

from .poisoning import AttackConfigError, ModelPoisoning
from .reference import as_updates, coordinate_std, finite_float, flag, optional_count, reference_updates, repeat_rows


def alie_z_max(n: int, m: int) -> float:
    """Baruch et al.'s ``z_max = Phi^{-1}((n - s) / n)``, ``s = floor(n/2 + 1) - m``; 0 when ``n < 2``.

    ``s`` is kept at least 1 (with a malicious majority the paper's ``s`` is
    not positive: the attackers then take the largest shift that still leaves
    one honest supporter).
    """
    if n < 2 or m < 1:
        return 0.0
    s = max(math.floor(n / 2 + 1) - m, 1)
    return max(NormalDist().inv_cdf((n - s) / n), 0.0)


class ALittleIsEnough(ModelPoisoning):
    """Send ``mu - z * sigma`` (coordinate-wise) from all colluders; ``z`` from ``n`` and ``m`` unless given."""

    name = "alie"

    def __init__(self, z: float | None = None, *, omniscient: bool = True, n_clients: int | None = None) -> None:
        self.z = None if z is None else finite_float(self.name, "z", z)
        self.omniscient = flag(self.name, "omniscient", omniscient)
        self.n_clients = optional_count(self.name, "n_clients", n_clients)
        if not self.omniscient and self.z is None and self.n_clients is None:
            raise AttackConfigError(f"{self.name}: a non-omniscient attacker does not see how many clients a round "
                                    "has; give n_clients (for z_max) or z")

    def round_size(self, m: int, honest: np.ndarray | None) -> int:
        """``n`` for ``z_max``: ``n_clients`` when given, else the ``m + h`` of the round seen."""
        if self.n_clients is not None:
            return self.n_clients
        return m + (honest.shape[0] if honest is not None else 0)

    def z_for(self, m: int, honest: np.ndarray | None) -> float:
        return self.z if self.z is not None else alie_z_max(self.round_size(m, honest), m)

    def craft(self, benign: np.ndarray, honest: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        b, h = as_updates(self.name, benign, honest)
        ref = reference_updates(self.omniscient, b, h)
        crafted = ref.mean(axis=0) - self.z_for(b.shape[0], h) * coordinate_std(ref)
        return repeat_rows(crafted, b.shape[0])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "z": self.z if self.z is not None else "z_max(n, m)",
                "n_clients": self.n_clients}
