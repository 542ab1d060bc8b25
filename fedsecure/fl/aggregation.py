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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class AggregationError(RuntimeError):
    """A round's aggregation could not produce a correct result (it never returns a wrong one)."""


@dataclass(frozen=True)
class RowBlock:
    """Rows ``rows`` (or every row when None) of a ``(-1, width)`` table that starts at ``offset`` of a flat vector.

    ``values`` holds the rows' coordinates, row after row (``len(rows) * width`` of them).
    """

    offset: int
    width: int
    rows: np.ndarray | None
    values: np.ndarray

    def flat_index(self) -> np.ndarray | slice:
        """Where ``values`` sit in the flat vector: a slice for a whole table, else an index array."""
        if self.rows is None:
            return slice(self.offset, self.offset + self.values.size)
        base = self.offset + self.rows.astype(np.int64) * self.width
        return (base[:, None] + np.arange(self.width, dtype=np.int64)).reshape(-1)

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes + (0 if self.rows is None else self.rows.nbytes))


@dataclass(frozen=True)
class SparseRows:
    """A flat vector of ``size`` coordinates, zero outside the touched rows it lists.

    What a client of a sparse model sends in plaintext and central-DP modes:
    the ids and values of the rows of each table its local training changed
    (an item table: the rows of its own items), each other table whole.
    ``nbytes`` is what travels; :meth:`dense` is the vector it stands for.
    """

    size: int
    blocks: tuple[RowBlock, ...]
    ndim = 1

    @property
    def nbytes(self) -> int:
        return sum(b.nbytes for b in self.blocks)

    @property
    def dtype(self) -> np.dtype:
        return self.blocks[0].values.dtype if self.blocks else np.dtype(np.float32)

    def dense(self, dtype: Any = None) -> np.ndarray:
        out = np.zeros(self.size, dtype=dtype or self.dtype)
        for b in self.blocks:
            if b.rows is None:
                out[b.offset : b.offset + b.values.size] = b.values
            elif b.rows.size:
                end = b.offset + (int(b.rows.max()) + 1) * b.width
                out[b.offset : end].reshape(-1, b.width)[b.rows] = b.values.reshape(-1, b.width)
        return out

    def add_into(self, total: np.ndarray) -> None:
        """``total += self`` touching only the listed coordinates (exactly what the dense sum adds there)."""
        for b in self.blocks:
            if b.rows is None:
                total[b.offset : b.offset + b.values.size] += b.values
            elif b.rows.size:  # each listed row appears once, so row-indexed += is an exact scatter-add
                end = b.offset + (int(b.rows.max()) + 1) * b.width
                table = total[b.offset : end].reshape(-1, b.width)
                table[b.rows] += b.values.reshape(-1, b.width)

    def map_values(self, fn: Callable[[np.ndarray], np.ndarray]) -> SparseRows:
        """The same rows with ``fn`` applied to each block's values (elementwise functions only)."""
        return SparseRows(self.size, tuple(RowBlock(b.offset, b.width, b.rows, fn(b.values)) for b in self.blocks))

    def appended(self, value: float, dtype: Any) -> SparseRows:
        """One more coordinate, ``value``, at the end (FedAvg's weight coordinate)."""
        tail = RowBlock(self.size, 1, None, np.array([value], dtype=dtype))
        return SparseRows(self.size + 1, (*self.blocks, tail))

    def norm(self) -> float:
        return float(np.sqrt(sum(float(np.dot(b.values.astype(np.float64), b.values.astype(np.float64)))
                                 for b in self.blocks)))

    @staticmethod
    def from_dense(delta: np.ndarray, layout: Sequence[tuple[str, tuple[int, ...], int]]) -> SparseRows:
        """The touched rows of ``delta`` over the tables of ``layout`` (``(name, shape, offset)``, as
        :meth:`~fedsecure.fl.engine.SharedParameters.layout` gives it): a row is sent when any of its
        coordinates is non-zero; a table whose rows are all touched is sent whole, without ids."""
        blocks = []
        for _, shape, offset in layout:
            n = int(np.prod(shape)) if shape else 1
            rows_n = int(shape[0]) if shape else 1
            width = n // rows_n if rows_n else 1
            seg = delta[offset : offset + n].reshape(rows_n, width)
            touched = np.flatnonzero(np.any(seg != 0, axis=1))
            if touched.size == rows_n:
                blocks.append(RowBlock(offset, width, None, seg.reshape(-1).copy()))
            elif touched.size:
                ids = touched.astype(np.int32 if rows_n < 2**31 else np.int64)
                blocks.append(RowBlock(offset, width, ids, seg[touched].reshape(-1).copy()))
        return SparseRows(int(delta.size), tuple(blocks))


Vector = np.ndarray | SparseRows


def vector_size(v: Vector) -> int:
    return v.size if isinstance(v, SparseRows) else int(np.asarray(v).size)


def dense_of(v: Vector, dtype: Any = None) -> np.ndarray:
    """The dense vector ``v`` stands for (``v`` itself when already dense and of that dtype)."""
    if isinstance(v, SparseRows):
        return v.dense(dtype)
    return np.asarray(v, dtype=dtype) if dtype is not None else np.asarray(v)


@dataclass(frozen=True)
class ClientUpdate:
    """What one client sends: the change of the shared parameters, and its weight.

    ``delta`` is a flat float vector over the model's *shared* parameters only;
    private (user-indexed) parameters never appear in it. It is a
    :class:`SparseRows` (touched rows only) when the aggregator
    ``accepts_sparse`` and the engine sends sparse updates.
    """

    client_id: int
    delta: np.ndarray | SparseRows
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


class SumSession(ABC):
    """One round of a :class:`SumProtocol`, fed one client vector at a time.

    The caller adds the vectors of the clients it named when it opened the
    session, in increasing client id (the order the sum is formed in, so a
    streamed sum is bit-identical to :meth:`SumProtocol.sum`), then asks for
    the :meth:`result`. A streaming session keeps O(vector) memory whatever
    the number of clients.
    """

    @abstractmethod
    def add(self, client_id: int, vector: Vector) -> None:
        """Feed one client's vector (a client in ``dropouts`` is accounted for, and left out of the sum)."""

    @abstractmethod
    def result(self) -> SumResult:
        """Finish the round: the sum over the clients that completed it."""


class CollectingSession(SumSession):
    """Keeps every vector and runs :meth:`SumProtocol.sum` at the end: for protocols that cannot stream.

    Memory grows with the number of clients (each vector is kept dense).
    """

    def __init__(self, protocol: SumProtocol, dropouts: Mapping[int, str] | None) -> None:
        self.protocol, self.dropouts = protocol, dict(dropouts or {})
        self.vectors: dict[int, np.ndarray] = {}

    def add(self, client_id: int, vector: Vector) -> None:
        self.vectors[client_id] = dense_of(vector)

    def result(self) -> SumResult:
        vectors, self.vectors = self.vectors, {}
        return self.protocol.sum(vectors, dropouts=self.dropouts)


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
    #: True when the server may learn which coordinates a client touched (plaintext): it then takes
    #: :class:`SparseRows`; secure protocols hide that, so every client sends every coordinate
    accepts_sparse: bool = False
    #: True when :meth:`open` adds each vector as it arrives (memory O(vector), not O(clients x vector))
    streaming: bool = False

    @abstractmethod
    def sum(
        self, vectors: Mapping[int, np.ndarray], *, dropouts: Mapping[int, str] | None = None
    ) -> SumResult:
        """Return the sum of ``vectors`` over the clients that complete the protocol."""

    def open(self, clients: Sequence[int], *, dropouts: Mapping[int, str] | None = None) -> SumSession:
        """A session for one round of ``clients`` (default: collect the vectors, then :meth:`sum`)."""
        return CollectingSession(self, dropouts)

    def describe(self) -> dict[str, Any]:
        """Parameters worth recording with a result."""
        return {"name": self.name}


class PlainSumSession(SumSession):
    """A running float64 sum of the vectors as they arrive (dense or :class:`SparseRows`).

    :meth:`accumulate` adds one vector as the server reads it and returns the
    bytes the client sent; a protocol that encodes what travels (quantized
    plaintext) overrides it.
    """

    name = "plaintext sum"

    def __init__(self, clients: Sequence[int], dropouts: Mapping[int, str] | None) -> None:
        self.dropouts = dict(dropouts or {})
        self.clients = set(int(c) for c in clients)
        self.total: np.ndarray | None = None
        self.included: list[int] = []
        self.seen: set[int] = set()
        self.nbytes = 0
        self.stats: dict[str, Any] = {}

    def add(self, client_id: int, vector: Vector) -> None:
        self.seen.add(client_id)
        if client_id in self.dropouts:
            return
        if self.total is None:
            self.total = np.zeros(vector_size(vector), dtype=np.float64)
        elif vector_size(vector) != self.total.size:
            raise AggregationError(f"{self.name}: client {client_id} sent {vector_size(vector)} values, "
                                   f"others {self.total.size}")
        self.nbytes += self.accumulate(client_id, vector, self.total)
        self.included.append(client_id)

    def accumulate(self, client_id: int, vector: Vector, total: np.ndarray) -> int:
        if isinstance(vector, SparseRows):
            vector.add_into(total)
        else:
            total += vector
        return int(vector.nbytes)

    def result(self) -> SumResult:
        if self.total is None:
            raise AggregationError(f"{self.name}: every client dropped out")
        return SumResult(
            total=self.total,
            included=tuple(self.included),
            excluded={c: f"dropped at {self.dropouts[c]}" for c in sorted(self.dropouts) if c in self.seen},
            stats={"upload_bytes": self.nbytes, **self.stats},
        )


class PlainSum(SumProtocol):
    """No protection: the server sees every vector. The floor of every benchmark.

    Streams (one running float64 sum) and takes :class:`SparseRows`, which it adds row by row.
    """

    name = "plaintext"
    accepts_sparse = True

    @property  # type: ignore[override]
    def streaming(self) -> bool:
        # A subclass that overrides ``sum`` (to record or alter it) gets its ``sum`` called, on collected vectors.
        return type(self).sum is PlainSum.sum

    def sum(
        self, vectors: Mapping[int, Vector], *, dropouts: Mapping[int, str] | None = None
    ) -> SumResult:
        session = PlainSumSession(sorted(vectors), dropouts)
        for c in sorted(vectors):
            session.add(c, vectors[c])
        return session.result()

    def open(self, clients: Sequence[int], *, dropouts: Mapping[int, str] | None = None) -> SumSession:
        return PlainSumSession(clients, dropouts) if self.streaming else CollectingSession(self, dropouts)


def check_updates(updates: Sequence[ClientUpdate], round_index: int) -> None:
    """Refuse a round with no updates or with updates of different lengths."""
    if not updates:
        raise AggregationError(f"round {round_index}: no client updates to aggregate")
    sizes = {u.delta.size for u in updates}
    if len(sizes) != 1:
        raise AggregationError(f"round {round_index}: updates have different lengths {sorted(sizes)}")


class RoundSession(ABC):
    """One round of an :class:`Aggregator`, fed one client update at a time (in increasing client id)."""

    @abstractmethod
    def add(self, update: ClientUpdate) -> None:
        """Feed one client's update."""

    @abstractmethod
    def result(self) -> AggregationResult:
        """Finish the round: the update the server applies."""


class CollectingRound(RoundSession):
    """Keeps the round's updates and calls :meth:`Aggregator.aggregate` at the end.

    The default for aggregators that must see every update (robust rules):
    memory grows with the number of clients; the engine checks it against its
    ``max_buffer_bytes`` before the round trains anybody.
    """

    def __init__(self, aggregator: Aggregator, round_index: int, dropouts: Mapping[int, str] | None) -> None:
        self.aggregator, self.round_index, self.dropouts = aggregator, round_index, dropouts
        self.updates: list[ClientUpdate] = []

    def add(self, update: ClientUpdate) -> None:
        if isinstance(update.delta, SparseRows):
            update = ClientUpdate(update.client_id, update.delta.dense(), update.weight)
        self.updates.append(update)

    def result(self) -> AggregationResult:
        updates, self.updates = self.updates, []
        return self.aggregator.aggregate(updates, round_index=self.round_index, dropouts=self.dropouts)


class Aggregator(ABC):
    """Turns one round's client updates into the update the server applies.

    The engine feeds a round through :meth:`open_round` (one update at a time,
    so a streaming aggregator holds O(model) memory); :meth:`aggregate` takes
    them all at once. Aggregators that must see every update together set
    ``needs_individual_updates`` and keep the default :meth:`open_round`,
    which collects them.
    """

    name: str = "abstract"
    #: True for rules (robust aggregators) that must see each update
    needs_individual_updates: bool = False

    @property
    def stages(self) -> tuple[str, ...]:
        """Stages at which a client can drop out (see :class:`SumProtocol`)."""
        return ("upload",)

    @property
    def accepts_sparse(self) -> bool:
        """True when clients may send :class:`SparseRows` (the server may see which rows they touched)."""
        return False

    @property
    def streaming(self) -> bool:
        """True when :meth:`open_round` holds O(model) memory whatever the number of clients."""
        return False

    @abstractmethod
    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        *,
        round_index: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> AggregationResult:
        """Aggregate ``updates``; clients in ``dropouts`` stop at the given stage."""

    def open_round(
        self, clients: Sequence[int], *, round_index: int, dropouts: Mapping[int, str] | None = None
    ) -> RoundSession:
        """A session for one round of ``clients`` (sorted); default: collect, then :meth:`aggregate`."""
        return CollectingRound(self, round_index, dropouts)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def privacy_report(self) -> dict[str, Any] | None:
        """Privacy spent so far (DP aggregators); None when the aggregator adds no DP noise."""
        return None


def run_sessions(aggregator: Aggregator, updates: Sequence[ClientUpdate], *, round_index: int,
                 dropouts: Mapping[int, str] | None) -> AggregationResult:
    """``aggregate`` through :meth:`Aggregator.open_round`: the streamed path, for aggregators that stream."""
    check_updates(updates, round_index)
    ordered = sorted(updates, key=lambda u: u.client_id)
    session = aggregator.open_round([u.client_id for u in ordered], round_index=round_index, dropouts=dropouts)
    for u in ordered:
        session.add(u)
    return session.result()


class ProtocolRound(RoundSession):
    """A round streamed into a :class:`SumProtocol` session: one length for every update, the protocol's time kept.

    Subclasses turn an update into the vector they send (:meth:`add`) and the
    protocol's sum into the round's result (:meth:`result`).
    """

    def __init__(self, protocol: SumProtocol, clients: Sequence[int], round_index: int,
                 dropouts: Mapping[int, str] | None) -> None:
        self.round_index = round_index
        t0 = time.perf_counter()
        self.session = protocol.open(clients, dropouts=dropouts)
        self.protocol_seconds = time.perf_counter() - t0
        self.size: int | None = None
        self.count = 0

    def _check_size(self, update: ClientUpdate) -> None:
        n = vector_size(update.delta)
        if self.size is None:
            self.size = n
        elif n != self.size:
            raise AggregationError(f"round {self.round_index}: updates have different lengths {sorted({n, self.size})}")

    def _send(self, client_id: int, vector: Any) -> None:
        self.count += 1
        t0 = time.perf_counter()
        self.session.add(client_id, vector)
        self.protocol_seconds += time.perf_counter() - t0

    def _sum(self) -> tuple[Any, float]:
        """The protocol's result and the seconds the protocol took over the whole round."""
        if not self.count:
            raise AggregationError(f"round {self.round_index}: no client updates to aggregate")
        t0 = time.perf_counter()
        result = self.session.result()
        return result, self.protocol_seconds + time.perf_counter() - t0


class _FedAvgRound(ProtocolRound):
    def __init__(self, fedavg: FedAvg, clients: Sequence[int], round_index: int,
                 dropouts: Mapping[int, str] | None) -> None:
        super().__init__(fedavg.protocol, clients, round_index, dropouts)
        self.fedavg = fedavg
        self.clipped = 0

    def add(self, update: ClientUpdate) -> None:
        self._check_size(update)
        vec, c = self.fedavg.client_vector(update)
        self.clipped += c
        self._send(update.client_id, vec)

    def result(self) -> AggregationResult:
        result, elapsed = self._sum()
        weight = float(result.total[-1]) / self.fedavg.protocol.weight_unit
        if weight <= 0:
            raise AggregationError(f"round {self.round_index}: the surviving clients carry no weight")
        stats = dict(result.stats)
        stats.update(protocol_seconds=elapsed, clipped_coordinates=self.clipped, total_weight=weight)
        return AggregationResult(
            delta=result.total[:-1] / weight,
            included=result.included,
            excluded=result.excluded,
            stats=stats,
        )


class FedAvg(Aggregator):
    """Weighted federated averaging over any :class:`SumProtocol`.

    ``delta = sum_i w~_i d_i / sum_i w~_i`` over the clients that complete the
    protocol, with ``w~_i = min(w_i, max_weight) / max_weight``. Each update
    coordinate is clipped to ``[-clip, clip]`` before it enters the sum when
    the protocol has an input bound; ``stats['clipped_coordinates']`` counts
    how many were, so a too-small range is visible rather than silent.
    Streams whenever its protocol does; takes sparse updates whenever its
    protocol does (plaintext).
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

    @property
    def accepts_sparse(self) -> bool:
        return self.protocol.accepts_sparse

    @property
    def streaming(self) -> bool:
        return self.protocol.streaming

    def client_vector(self, update: ClientUpdate) -> tuple[Vector, int]:
        """The vector a client feeds the sum, ``[w~ * delta, w~]`` (float32), and how many coordinates were clipped."""
        w = min(float(update.weight), self.max_weight) / self.max_weight
        bound = self.protocol.input_bound
        if isinstance(update.delta, SparseRows):
            clipped = 0
            if bound is not None:
                clipped = sum(int((np.abs(b.values) > bound).sum()) for b in update.delta.blocks)

            def scale(v: np.ndarray) -> np.ndarray:
                v = np.asarray(v, dtype=np.float32)
                if bound is not None:
                    v = np.clip(v, -bound, bound)
                return np.multiply(v, w, dtype=np.float32)

            return update.delta.map_values(scale).appended(w * self.protocol.weight_unit, np.float32), clipped
        delta = np.asarray(update.delta, dtype=np.float32)
        clipped = 0
        if bound is not None:
            over = np.abs(delta) > bound
            clipped = int(over.sum())
            if clipped:
                delta = np.clip(delta, -bound, bound)
        vec = np.empty(delta.size + 1, dtype=np.float32)
        np.multiply(delta, w, out=vec[:-1])
        vec[-1] = w * self.protocol.weight_unit
        return vec, clipped

    def open_round(
        self, clients: Sequence[int], *, round_index: int, dropouts: Mapping[int, str] | None = None
    ) -> RoundSession:
        return _FedAvgRound(self, clients, round_index, dropouts)

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        *,
        round_index: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> AggregationResult:
        return run_sessions(self, updates, round_index=round_index, dropouts=dropouts)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "max_weight": self.max_weight, "protocol": self.protocol.describe()}
