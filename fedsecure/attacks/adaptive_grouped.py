"""An adaptive attack on grouped secure aggregation (:mod:`fedsecure.robust.grouped`).

Threat model. Under grouped mode the server never sees an update: each
round's ``n`` clients are split uniformly at random into ``g`` groups of about
``k = group_size`` clients, each group is summed securely, and a robust rule
(coordinate-wise median, trimmed mean, ...) combines the ``g`` group means.
The ``m`` colluding malicious clients know ``k`` (hence ``g = n / k``), know
that a rank-based rule combines group means, and know the honest updates
(omniscient, default) or estimate their distribution from their own benign
updates (``omniscient=False``, then ``n_clients`` must be given). They do
*not* know which group they will land in or with whom: the server draws the
grouping after the updates are fixed. Secure aggregation hides their updates
from the server, so nothing but the group means can reveal them.

Strategy: ALIE (:mod:`fedsecure.attacks.alie`) on the scale of a group mean.
An honest group mean has coordinate-wise spread ``sigma_G = sigma / sqrt(k)``.
The touched groups (those holding at least one malicious client; ``b`` of
them in expectation) should sit at ``mu - z_G sigma_G``, inside the spread of
the honest group means so that they count as ordinary ranks, all on the same
side; ``z_G`` is Baruch et al.'s ``z_max`` for ``g`` inputs of which ``b`` are
malicious. A touched group holds ``c = m / b`` malicious clients on average
(and ``k - c`` honest ones whose mean the attackers estimate by ``mu``), so
each malicious client sends

    x = mu - z_G * sigma * sqrt(k) / c

which puts its group's mean at the target on average. Individually ``x`` is
about ``sqrt(k)`` times farther from the mean than a client-level ALIE update
(which the averaging inside a group would dilute ``k``-fold); with ``k = 1``
it *is* client-level ALIE. Expected touched groups, for groups of ``k`` drawn
without replacement: ``b = g (1 - C(n - m, k) / C(n, k))``.

What it does not model: groups of unequal size (the server's ``n mod g``
remainder), and rounds in which several colluders share a group push that
group's mean further (``c`` is an average); with a rank-based rule that only
moves the group further along the same side.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .alie import alie_z_max
from .poisoning import AttackConfigError, ModelPoisoning
from .reference import as_updates, coordinate_std, finite_float, flag, optional_count, reference_updates, repeat_rows


def expected_touched_groups(n: int, m: int, group_size: int) -> tuple[int, float]:
    """``(g, b)``: the number of groups of ``group_size`` among ``n`` clients, and how many of them hold
    at least one of ``m`` malicious clients in expectation (uniform random partition)."""
    g = max(1, round(n / group_size))
    k = max(1, min(group_size, n))
    m = min(m, n)
    untouched = math.comb(n - m, k) / math.comb(n, k) if n - m >= k else 0.0
    return g, min(float(m), g * (1.0 - untouched))


class AdaptiveGrouped(ModelPoisoning):
    """ALIE aimed at the group means of grouped secure aggregation: ``mu - z_G sigma sqrt(k) / c``."""

    name = "adaptive-grouped"

    def __init__(self, group_size: int, z: float | None = None, *, omniscient: bool = True,
                 n_clients: int | None = None) -> None:
        size = optional_count(self.name, "group_size", group_size)
        if size is None:
            raise AttackConfigError(f"{self.name}: group_size (clients per securely summed group) is required")
        self.group_size = size
        self.z = None if z is None else finite_float(self.name, "z", z)
        self.omniscient = flag(self.name, "omniscient", omniscient)
        self.n_clients = optional_count(self.name, "n_clients", n_clients)
        if not self.omniscient and self.n_clients is None:
            raise AttackConfigError(f"{self.name}: a non-omniscient attacker does not see how many clients a round "
                                    "has; give n_clients")

    def plan(self, m: int, honest: np.ndarray | None) -> dict[str, float]:
        """The attack's numbers for ``m`` malicious clients: ``n, g, b, c, z_G`` and the client-level ``shift``
        (in units of the coordinate-wise honest ``sigma``)."""
        n = self.n_clients if self.n_clients is not None else m + (honest.shape[0] if honest is not None else 0)
        g, b = expected_touched_groups(n, m, self.group_size)
        z = self.z if self.z is not None else alie_z_max(g, min(max(round(b), 1), g))
        c = m / b if b > 0 else 1.0
        k = min(self.group_size, n)
        return {"n": n, "groups": g, "touched": b, "per_group": c, "z": z, "shift": z * math.sqrt(k) / c}

    def craft(self, benign: np.ndarray, honest: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        b, h = as_updates(self.name, benign, honest)
        ref = reference_updates(self.omniscient, b, h)
        shift = self.plan(b.shape[0], h)["shift"]
        return repeat_rows(ref.mean(axis=0) - shift * coordinate_std(ref), b.shape[0])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "group_size": self.group_size,
                "z": self.z if self.z is not None else "z_max(g, touched groups)", "n_clients": self.n_clients}
