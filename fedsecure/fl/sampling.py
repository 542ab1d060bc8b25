"""Which clients take part in a round.

* :class:`FixedSizeSampling` -- exactly ``W`` clients, drawn without
  replacement from a generator seeded by the run's seed and the round: the
  reproducible default for training without differential privacy.
* :class:`PoissonSampling` -- every client independently with probability
  ``q``, the uniforms drawn from a caller-supplied secret source. This is the
  sampling that user-level DP accounting assumes (amplification by Poisson
  subsampling, add/remove-one adjacency), and amplification holds only while
  the sample is secret: a sample drawn from a seeded generator is known to
  whoever knows the seed, and the accounting's ``q`` would then claim a
  privacy the run does not have.

A sampler is any object with ``sample(ids, round_index) -> sorted ids`` and
``describe() -> dict``; the engine calls nothing else.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class UniformSource(Protocol):
    """What :class:`PoissonSampling` needs from a randomness source (``fedsecure.dp.noise.NoiseSource`` is one)."""

    def uniform_np(self, shape: int) -> np.ndarray: ...

    def describe(self) -> str: ...


class ClientSampler(Protocol):
    def sample(self, ids: np.ndarray, round_index: int) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


def sampled_count(clients_per_round: float, n_clients: int) -> int:
    """Clients sampled per round: a fraction (<= 1) of ``n_clients``, at least one, or a count (> 1)."""
    if clients_per_round <= 1:
        return max(1, round(clients_per_round * n_clients))
    return min(int(clients_per_round), n_clients)


class FixedSizeSampling:
    """Exactly ``sampled_count(clients_per_round, len(ids))`` clients per round, seeded."""

    def __init__(self, clients_per_round: float, seed: int) -> None:
        self.clients_per_round = clients_per_round
        self.seed = seed

    def sample(self, ids: np.ndarray, round_index: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, round_index, 0x5A])
        return np.sort(rng.choice(ids, size=sampled_count(self.clients_per_round, ids.size), replace=False))

    def describe(self) -> dict[str, Any]:
        return {"sampling": "fixed size, without replacement", "clients_per_round": self.clients_per_round,
                "randomness": f"numpy generator seeded by the run seed ({self.seed}) and the round"}


class PoissonSampling:
    """Each client joins a round independently with probability ``rate``; the draws come from ``source``."""

    def __init__(self, rate: float, source: UniformSource) -> None:
        if not 0 < rate <= 1:
            raise ValueError(f"Poisson sampling rate must be in (0, 1], got {rate}")
        self.rate = float(rate)
        self.source = source

    def sample(self, ids: np.ndarray, round_index: int) -> np.ndarray:
        if self.rate == 1.0:
            return np.sort(ids)
        keep = self.source.uniform_np(ids.size) < self.rate
        return np.sort(ids[keep])

    def describe(self) -> dict[str, Any]:
        return {"sampling": "Poisson", "rate": self.rate, "randomness": self.source.describe()}
