"""The aggregation step of a federated round, behind one small interface.

The round loop (:mod:`fedsecure.fl.engine`) hands the aggregator the clients'
updates and applies what comes back; it knows nothing of how the updates are
protected. Two layers keep the protection modes composable:

* :class:`SumProtocol` -- a way for a server to learn ``sum_i x_i`` of the
  clients' vectors and nothing else: plaintext (:class:`PlainSum`), pairwise
  masking (``fedsecure.secagg``), CKKS (``fedsecure.ckks``). Protocols that
  can lose clients mid-protocol name their ``stages``; the engine's dropout
  simulation picks one of them for each client that drops.
* :class:`Aggregator` -- turns the round's updates into the one update the
  server applies. :class:`FedAvg` needs only a sum, so it runs over any
  :class:`SumProtocol`: each client contributes ``[w~ * delta, w~]`` with
  ``w~ = min(w, max_weight) / max_weight`` in ``[0, 1]``, and the weighted
  mean is the quotient of the two parts of the sum. Weighting inside the sum
  keeps the mean right whoever drops out during the protocol. Aggregators that
  need individual updates (robust rules) set ``needs_individual_updates`` and
  receive them as they are; DP aggregators clip client-side before the sum and
  add noise in or after it.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class AggregationError(RuntimeError):
    """A round's aggregation could not produce a correct result (it never returns a wrong one)."""


@dataclass(frozen=True)
class ClientUpdate:
    """What one client sends: the change of the shared parameters, and its weight.

    ``delta`` is a flat float vector over the model's *shared* parameters only;
    private (user-indexed) parameters never appear in it.
    """

    client_id: int
    delta: np.ndarray
    weight: float

    def __post_init__(self) -> None:
        if self.delta.ndim != 1:
            raise ValueError(f"client {self.client_id}: delta must be 1-D, got shape {self.delta.shape}")
        if not np.isfinite(self.weight) or self.weight < 0:
            raise ValueError(f"client {self.client_id}: weight must be finite and >= 0, got {self.weight}")


@dataclass
class SumResult:
    """The outcome of one run of a :class:`SumProtocol`."""

    total: np.ndarray
    included: tuple[int, ...]
    excluded: dict[int, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class AggregationResult:
    """What the server applies, and an account of how it came to be."""

    delta: np.ndarray
    included: tuple[int, ...]
    excluded: dict[int, str] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)


class SumProtocol(ABC):
    """Lets a server learn the sum of the clients' vectors of one round.

    Implementations document the input domain they accept (for fixed-point
    protocols a per-coordinate bound) and the error of the returned sum.
    ``dropouts`` maps a client id to the stage (one of ``stages``) at which it
    stops responding; the result then covers the clients that survive, or the
    protocol raises :class:`AggregationError` when it cannot finish correctly.
    """

    name: str = "abstract"
    stages: tuple[str, ...] = ("upload",)
    #: largest absolute coordinate the protocol accepts (None: unbounded)
    input_bound: float | None = None
    #: FedAvg sends its weight ``w~`` in [0, 1] as ``w~ * weight_unit`` (a quantizing protocol sets it to its
    #: input bound, so that the weight needs no wider range than the update)
    weight_unit: float = 1.0

    @abstractmethod
    def sum(
        self, vectors: Mapping[int, np.ndarray], *, dropouts: Mapping[int, str] | None = None
    ) -> SumResult:
        """Return the sum of ``vectors`` over the clients that complete the protocol."""

    def describe(self) -> dict[str, Any]:
        """Parameters worth recording with a result."""
        return {"name": self.name}


class PlainSum(SumProtocol):
    """No protection: the server sees every vector. The floor of every benchmark."""

    name = "plaintext"

    def sum(
        self, vectors: Mapping[int, np.ndarray], *, dropouts: Mapping[int, str] | None = None
    ) -> SumResult:
        dropouts = dropouts or {}
        survivors = tuple(sorted(c for c in vectors if c not in dropouts))
        if not survivors:
            raise AggregationError("plaintext sum: every client dropped out")
        total = np.zeros(np.asarray(vectors[survivors[0]]).size, dtype=np.float64)
        for c in survivors:
            total += vectors[c]
        nbytes = sum(np.asarray(vectors[c]).nbytes for c in survivors)
        return SumResult(
            total=total,
            included=survivors,
            excluded={c: f"dropped at {dropouts[c]}" for c in sorted(dropouts) if c in vectors},
            stats={"upload_bytes": nbytes},
        )


def check_updates(updates: Sequence[ClientUpdate], round_index: int) -> None:
    """Refuse a round with no updates or with updates of different lengths."""
    if not updates:
        raise AggregationError(f"round {round_index}: no client updates to aggregate")
    sizes = {u.delta.size for u in updates}
    if len(sizes) != 1:
        raise AggregationError(f"round {round_index}: updates have different lengths {sorted(sizes)}")


class Aggregator(ABC):
    """Turns one round's client updates into the update the server applies."""

    name: str = "abstract"
    #: True for rules (robust aggregators) that must see each update
    needs_individual_updates: bool = False

    @property
    def stages(self) -> tuple[str, ...]:
        """Stages at which a client can drop out (see :class:`SumProtocol`)."""
        return ("upload",)

    @abstractmethod
    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        *,
        round_index: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> AggregationResult:
        """Aggregate ``updates``; clients in ``dropouts`` stop at the given stage."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def privacy_report(self) -> dict[str, Any] | None:
        """Privacy spent so far (DP aggregators); None when the aggregator adds no DP noise."""
        return None


class FedAvg(Aggregator):
    """Weighted federated averaging over any :class:`SumProtocol`.

    ``delta = sum_i w~_i d_i / sum_i w~_i`` over the clients that complete the
    protocol, with ``w~_i = min(w_i, max_weight) / max_weight``. Each update
    coordinate is clipped to ``[-clip, clip]`` before it enters the sum when
    the protocol has an input bound; ``stats['clipped_coordinates']`` counts
    how many were, so a too-small range is visible rather than silent.
    """

    name = "fedavg"

    def __init__(self, protocol: SumProtocol | None = None, *, max_weight: float = 1000.0) -> None:
        if max_weight <= 0:
            raise ValueError(f"max_weight must be > 0, got {max_weight}")
        self.protocol = protocol or PlainSum()
        self.max_weight = float(max_weight)

    @property
    def stages(self) -> tuple[str, ...]:
        return self.protocol.stages

    def client_vector(self, update: ClientUpdate) -> tuple[np.ndarray, int]:
        """The vector a client feeds the sum, ``[w~ * delta, w~]`` (float32), and how many coordinates were clipped."""
        w = min(float(update.weight), self.max_weight) / self.max_weight
        delta = np.asarray(update.delta, dtype=np.float32)
        clipped = 0
        bound = self.protocol.input_bound
        if bound is not None:
            over = np.abs(delta) > bound
            clipped = int(over.sum())
            if clipped:
                delta = np.clip(delta, -bound, bound)
        vec = np.empty(delta.size + 1, dtype=np.float32)
        np.multiply(delta, w, out=vec[:-1])
        vec[-1] = w * self.protocol.weight_unit
        return vec, clipped

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        *,
        round_index: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> AggregationResult:
        check_updates(updates, round_index)
        vectors, clipped = {}, 0
        for u in updates:
            vectors[u.client_id], c = self.client_vector(u)
            clipped += c
        t0 = time.perf_counter()
        result = self.protocol.sum(vectors, dropouts=dropouts)
        elapsed = time.perf_counter() - t0
        weight = float(result.total[-1]) / self.protocol.weight_unit
        if weight <= 0:
            raise AggregationError(f"round {round_index}: the surviving clients carry no weight")
        stats = dict(result.stats)
        stats.update(protocol_seconds=elapsed, clipped_coordinates=clipped, total_weight=weight)
        return AggregationResult(
            delta=result.total[:-1] / weight,
            included=result.included,
            excluded=result.excluded,
            stats=stats,
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "max_weight": self.max_weight, "protocol": self.protocol.describe()}
