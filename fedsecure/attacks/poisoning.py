"""Model-poisoning attacks: what malicious clients send instead of their honest update.

A :class:`ModelPoisoning` attack crafts the updates of the round's malicious
clients. It is given their own *benign* updates (what they would have sent,
``m x d``) and, when the attack is *omniscient*, the honest clients' updates
too (``h x d``; a colluding adversary that knows, or estimates from its own
benign updates, the honest distribution). It returns the ``m x d`` malicious
updates. Attacks are pure numpy and know nothing of the engine;
:class:`PoisoningPlan` says which clients are malicious and applies an attack
to a round's updates.

Randomness (Gaussian attack noise, the choice of malicious clients) comes
from a seeded numpy generator: an attack is an experiment to reproduce, not a
secret.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsecure.fl.aggregation import ClientUpdate


class AttackConfigError(ValueError):
    """An attack configured with invalid parameters."""


class ModelPoisoning(ABC):
    """Crafts malicious updates. Subclasses set ``name`` (the CLI name) and ``omniscient``."""

    name: str = "abstract"
    #: True when the attack uses the honest clients' updates (else only the malicious clients' own)
    omniscient: bool = False
    #: True when the attack reads the global model it was sent (``self.global_params``, set before
    #: each :meth:`craft`), as every client may; ``self.layout`` then names its slices
    needs_global: bool = False
    global_params: np.ndarray | None = None
    layout: list[tuple[str, tuple[int, ...], int]] | None = None  # (name, shape, offset) of each shared tensor

    @abstractmethod
    def craft(self, benign: np.ndarray, honest: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        """Return the ``m x d`` updates the ``m`` malicious clients send.

        ``benign`` holds their own honest-looking updates; ``honest`` the
        honest clients' updates when :attr:`omniscient` (else None).
        """

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "omniscient": self.omniscient}


@dataclass
class PoisoningPlan:
    """Which clients are malicious, and the attack they run.

    ``fraction`` of all clients (rounded, at least one when ``fraction > 0``)
    are chosen once, from ``seed``, among ``client_ids``. In each round the
    sampled malicious clients replace their updates with the attack's. With
    ``colluding=False`` each malicious client crafts from its own benign
    update alone (and never sees honest updates).
    """

    attack: ModelPoisoning
    malicious: frozenset[int]
    colluding: bool = True

    @classmethod
    def choose(cls, attack: ModelPoisoning, client_ids: Sequence[int], fraction: float, *, seed: int = 0,
               colluding: bool = True) -> PoisoningPlan:
        if not (0.0 <= fraction < 1.0):
            raise AttackConfigError(f"malicious fraction must be in [0, 1), got {fraction}")
        ids = np.asarray(sorted(int(c) for c in client_ids), dtype=np.int64)
        m = int(round(fraction * ids.size))
        if fraction > 0:
            m = max(m, 1)
        rng = np.random.default_rng([seed, 0xBAD])
        chosen = rng.choice(ids, size=m, replace=False) if m else np.zeros(0, dtype=np.int64)
        return cls(attack, frozenset(int(c) for c in chosen), colluding)

    def apply(self, updates: Sequence[ClientUpdate], round_index: int, *, seed: int = 0,
              global_params: np.ndarray | None = None) -> list[ClientUpdate]:
        """The round's updates with the malicious clients' replaced (weights kept).

        ``global_params`` is the flat global model the round started from (what every client receives).
        """
        bad = [i for i, u in enumerate(updates) if u.client_id in self.malicious]
        if not bad:
            return list(updates)
        if self.attack.needs_global:
            if global_params is None:
                raise AttackConfigError(f"{self.attack.name} reads the global model: pass global_params")
            self.attack.global_params = global_params
        good = [i for i, u in enumerate(updates) if u.client_id not in self.malicious]
        rng = np.random.default_rng([seed, round_index, 0xA77])
        benign = np.stack([np.asarray(updates[i].delta, dtype=np.float64) for i in bad])
        honest = (np.stack([np.asarray(updates[i].delta, dtype=np.float64) for i in good])
                  if self.attack.omniscient and good else None)
        if self.colluding:
            crafted = self.attack.craft(benign, honest, rng)
        else:  # each malicious client alone, from its own update
            crafted = np.concatenate([self.attack.craft(benign[j : j + 1], None if not self.attack.omniscient
                                                        else benign[j : j + 1], rng) for j in range(len(bad))])
        if crafted.shape != benign.shape:
            raise AttackConfigError(f"{self.attack.name} crafted shape {crafted.shape}, expected {benign.shape}")
        out = list(updates)
        for j, i in enumerate(bad):
            u = updates[i]
            out[i] = ClientUpdate(u.client_id, crafted[j].astype(np.asarray(u.delta).dtype, copy=False), u.weight)
        return out

    def describe(self) -> dict[str, Any]:
        return {"attack": self.attack.describe(), "malicious": len(self.malicious), "colluding": self.colluding}
