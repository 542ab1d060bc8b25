"""Compressed uploads behind the :class:`~fedsecure.fl.aggregation.SumProtocol` seam.

The codecs are in :mod:`fedsecure.compress`; here they are put where a
client's vector turns into bytes. Each protocol's vectors are FedAvg's
``[w~ * delta, w~ * weight_unit]``: the last coordinate (the weight) always
travels exactly (float32 in plaintext; a ring element under secure
aggregation), the update part is compressed.

* :class:`QuantizedPlainSum` -- each client sends its update quantized to
  ``b`` bits over its own range ``r = max|x|`` (float32 header), or one
  range per bucket of coordinates. Unbiased.
  A row-sparse update (:class:`~fedsecure.fl.aggregation.SparseRows`) keeps
  its row ids exact and quantizes only the values of the rows it lists.
* :class:`TopKPlainSum` -- top-k with error feedback (the residual is the
  client's state across rounds). Biased, corrected over rounds.
* :class:`RotatedSum` -- wraps a quantized plaintext sum: each client rotates
  its update with the randomized Hadamard transform of the round (public
  seed from the run's context and the round number, which both sides know),
  and the server rotates the *sum* back once (the rotation is linear).
* :class:`SecAggRingSum` -- ``b``-bit quantization inside SecAgg / SecAgg+,
  in a ring of exactly ``b`` bits per coordinate (see its docstring).

Every protocol reports ``upload_bytes`` (what the clients' payloads or
protocol messages weigh in total) in its stats.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedsecure.compress import RandomizedHadamard, StochasticQuantizer, TopKErrorFeedback, rotation_seed
from fedsecure.fl.aggregation import (
    AggregationError, PlainSumSession, RowBlock, SparseRows, SumProtocol, SumResult, SumSession, Vector,
)


def _survivors(name: str, vectors: Mapping[int, np.ndarray], dropouts: Mapping[int, str] | None):
    dropouts = dropouts or {}
    survivors = tuple(sorted(c for c in vectors if c not in dropouts))
    if not survivors:
        raise AggregationError(f"{name}: every client dropped out")
    excluded = {c: f"dropped at {dropouts[c]}" for c in sorted(dropouts) if c in vectors}
    return survivors, excluded


class _QuantizedSession(PlainSumSession):
    """Each vector as the server reads it after ``b``-bit quantization, added as it arrives."""

    def __init__(self, codec: StochasticQuantizer, name: str, clients: Sequence[int],
                 dropouts: Mapping[int, str] | None) -> None:
        super().__init__(clients, dropouts)
        self.codec, self.name = codec, name
        self.stats = {"quantize_bits": codec.bits, "quantize_bucket": codec.bucket}

    def accumulate(self, client_id: int, vector: Vector, total: np.ndarray) -> int:
        if isinstance(vector, SparseRows):
            return self._sparse(client_id, vector, total)
        v = np.asarray(vector)
        payload = self.codec.encode(v[:-1]) + struct.pack("<f", float(v[-1]))  # what the client sends
        total[:-1] += self.codec.decode(payload[:-4], v.size - 1)  # what the server reads from it
        total[-1] += struct.unpack("<f", payload[-4:])[0]
        return len(payload)

    def _sparse(self, client_id: int, v: SparseRows, total: np.ndarray) -> int:
        """Row ids exact, the listed values quantized; FedAvg's weight is the last, one-value block."""
        *blocks, weight = v.blocks
        if weight.offset != total.size - 1 or weight.rows is not None or weight.values.size != 1:
            raise AggregationError(f"{self.name}: client {client_id}'s sparse vector does not end in its weight")
        values = np.concatenate([b.values for b in blocks]) if blocks else np.zeros(0, dtype=np.float32)
        payload = self.codec.encode(values) + struct.pack("<f", float(weight.values[0]))
        decoded = np.split(self.codec.decode(payload[:-4], values.size),
                           np.cumsum([b.values.size for b in blocks[:-1]], dtype=np.int64))
        SparseRows(v.size - 1, tuple(RowBlock(b.offset, b.width, b.rows, part)
                                     for b, part in zip(blocks, decoded))).add_into(total)
        total[-1] += struct.unpack("<f", payload[-4:])[0]
        return len(payload) + sum(int(b.rows.nbytes) for b in blocks if b.rows is not None)


class QuantizedPlainSum(SumProtocol):
    """Plaintext sum of ``b``-bit stochastically quantized updates (see :mod:`fedsecure.compress.quantize`).

    Streams (one running sum); takes :class:`~fedsecure.fl.aggregation.SparseRows`, whose row ids travel exactly.
    """

    accepts_sparse = True  # the server sees each update in plaintext anyway, rows included
    streaming = True

    def __init__(self, bits: int, *, bucket: int | None = None) -> None:
        self.codec = StochasticQuantizer(bits, bucket=bucket)
        self.name = f"plaintext-q{bits}" + (f"/{bucket}" if bucket else "")

    def open(self, clients: Sequence[int], *, dropouts: Mapping[int, str] | None = None) -> SumSession:
        return _QuantizedSession(self.codec, self.name, clients, dropouts)

    def sum(self, vectors: Mapping[int, Vector], *, dropouts: Mapping[int, str] | None = None) -> SumResult:
        session = self.open(sorted(vectors), dropouts=dropouts)
        for c in sorted(vectors):
            session.add(c, vectors[c])
        return session.result()

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "bits": self.codec.bits, "levels": self.codec.levels, "bucket": self.codec.bucket}


class TopKPlainSum(SumProtocol):
    """Plaintext sum of top-k updates with per-client error feedback (see :mod:`fedsecure.compress.topk`)."""

    def __init__(self, fraction: float) -> None:
        self.codec = TopKErrorFeedback(fraction)
        self.name = f"plaintext-topk:{fraction:g}"

    def sum(self, vectors: Mapping[int, np.ndarray], *, dropouts: Mapping[int, str] | None = None) -> SumResult:
        survivors, excluded = _survivors(self.name, vectors, dropouts)
        length = np.asarray(vectors[survivors[0]]).size - 1
        total = np.zeros(length + 1, dtype=np.float64)
        nbytes = nnz = 0
        for c in survivors:
            v = np.asarray(vectors[c])
            idx, val = self.codec.compress(c, v[:-1])
            payload = self.codec.encode(idx, val) + struct.pack("<f", float(v[-1]))
            nbytes += len(payload)
            nnz += idx.size
            total[:-1] += self.codec.decode(payload[:-4], length)
            total[-1] += struct.unpack("<f", payload[-4:])[0]
        return SumResult(total=total, included=survivors, excluded=excluded,
                         stats={"upload_bytes": nbytes, "topk_sent_coordinates": nnz,
                                "topk_k": self.codec.k_for(length)})

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "fraction": self.codec.fraction}


class RotatedSum(SumProtocol):
    """Rotate each update (randomized Hadamard, public per-round seed), sum with ``inner``, rotate the sum back."""

    def __init__(self, inner: SumProtocol, context: bytes, *, block: int | None = None) -> None:
        self.inner = inner
        self.context = bytes(context)
        self.block = block
        self.name = f"rotate+{inner.name}"
        self.stages = inner.stages
        self.weight_unit = inner.weight_unit
        self.input_bound = inner.input_bound
        self._calls = 0

    def sum(self, vectors: Mapping[int, np.ndarray], *, dropouts: Mapping[int, str] | None = None) -> SumResult:
        if not vectors:
            raise AggregationError(f"{self.name}: no vectors")
        self._calls += 1  # the round number both sides count
        length = np.asarray(next(iter(vectors.values()))).size - 1
        kw = {"block": self.block} if self.block else {}
        rot = RandomizedHadamard(length, rotation_seed(self.context, self._calls), **kw)
        rotated = {}
        for c, v in vectors.items():
            v = np.asarray(v)
            y = np.empty(rot.padded + 1, dtype=np.float64)
            y[:-1] = rot.forward(v[:-1])
            y[-1] = v[-1]
            rotated[c] = y
        result = self.inner.sum(rotated, dropouts=dropouts)
        total = np.empty(length + 1, dtype=np.float64)
        total[:-1] = rot.inverse(np.asarray(result.total[:-1], dtype=np.float64))
        total[-1] = result.total[-1]
        stats = dict(result.stats)
        stats.update(rotation_block=rot.block, rotation_padded_length=rot.padded)
        return SumResult(total=total, included=result.included, excluded=result.excluded, stats=stats)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "rotation": "randomized Hadamard (public seed from the run context and round)",
                "block": self.block, "inner": self.inner.describe()}


class SecAggRingSum(SumProtocol):
    """``b``-bit quantization inside SecAgg / SecAgg+ in a ring of exactly ``b`` bits per coordinate.

    The scheme of the distributed discrete Gaussian mechanism (Kairouz, Liu,
    Steinke, ICML 2021) without its noise, with the rotation of DRIVE / EDEN.
    Each client, on its FedAvg vector ``v = [w~ d, w~ u]`` (the weight
    coordinate rides along, ``u = norm_bound / 16``: a small share of the
    norm, since every client's weight is positive and the weights' sum would
    otherwise dominate the norm of the sum, hence the scale; in exchange the
    decoded total weight is noisy at 4 and 2 bits, and a round whose decoded
    total weight is not positive is lost, never applied):

    1. clips ``v`` to L2 norm ``norm_bound`` (scaling the whole vector, update
       and weight together: a clipped client keeps its direction and counts
       with a smaller weight; ``clipped_clients`` counts them);
    2. rotates it, ``R v`` (:class:`~fedsecure.compress.RandomizedHadamard`
       with a public permutation; seed from the run's context and the round
       number): each coordinate is then about ``N(0, |v|^2 / D)`` over the
       ``D`` padded coordinates, heavy tails flattened;
    3. encodes it in :meth:`FixedPointEncoding.for_ring`: ``x * scale``
       rounded stochastically (unbiased) to an integer, mod ``2^b``, masked
       mod ``2^b``, packed ``b`` bits per coordinate.

    The server sums mod ``2^b``, reads each coordinate's centred residue in
    ``[-2^(b-1), 2^(b-1))``, divides by the scale and rotates back.

    The scale is a public round parameter: ``(2^(b-1) - 1) sqrt(D) / (sigmas *
    S)`` for a bound ``S`` on the norm of the round's *sum*. Round 1 takes
    the worst case ``S = n * norm_bound`` (every client at the bound, all
    aligned); later rounds ``S = headroom * |previous decoded sum| * n /
    n_previous`` (the previous aggregate is public: it is what the server
    applied), clamped to ``[norm_bound, n * norm_bound]``. A client refuses a
    scale outside :meth:`FixedPointEncoding.ring_scale_range`. A bad scale
    (a malicious server's, or an unlucky estimate) only costs accuracy: too
    coarse and the rounding noise grows, too fine and coordinates wrap; the
    masks are uniform mod ``2^b``, so what the server learns is the sum
    mod ``2^b`` whatever the scale.

    Bias: none from rounding (stochastic, and the rotation is linear); a
    wrapped coordinate is off by a multiple of ``2^b / scale`` (rare by the
    choice of ``S``; ``ring_overflow_coordinates`` counts, in this simulation,
    the coordinates whose exact sum lay outside the ring); clipping is a
    reweighting. Variance per rotated coordinate of the sum: at most ``n / (4
    scale^2)``, that is a relative error energy of about ``n sigmas^2
    headroom^2 / (6 (2^(b-1) - 1)^2)`` of the sum's: about 2% at ``b = 8``
    and 50 clients, but above 1 at ``b = 4`` and far above at ``b = 2`` (there
    the noise of the decoded sum also inflates the next round's ``S``, which
    then stays at its worst-case cap).
    """

    def __init__(self, bits: int, *, norm_bound: float, context: bytes, graph: str = "sparse",
                 sigmas: float = 4.0, headroom: float = 1.5, dropout_rate: float = 0.05, active: bool = False,
                 block: int | None = None) -> None:
        from fedsecure.compress import levels
        from fedsecure.secagg.sum import SecAggSum

        levels(bits)  # 2..16, or a ValueError naming the range
        if not (np.isfinite(norm_bound) and norm_bound > 0):
            raise ValueError(f"the ring's norm bound must be finite and > 0, got {norm_bound}")
        if not (np.isfinite(sigmas) and sigmas > 0 and np.isfinite(headroom) and headroom >= 1):
            raise ValueError(f"sigmas must be > 0 and headroom >= 1, got {sigmas}, {headroom}")
        self.bits, self.norm_bound = int(bits), float(norm_bound)
        self.sigmas, self.headroom = float(sigmas), float(headroom)
        self.context, self.block = bytes(context), block
        self.inner = SecAggSum(clip_range=norm_bound, graph=graph, dropout_rate=dropout_rate, active=active)
        self.name = f"{self.inner.name}-ring-q{bits}"
        self.stages = self.inner.stages
        self.weight_unit = self.norm_bound / 16
        self.input_bound = None  # no per-coordinate clip: the whole vector is clipped in L2 norm here
        self._calls = 0
        self._previous: tuple[float, int] | None = None  # (norm of the last decoded sum, clients in it)

    def sum_norm_bound(self, n: int) -> float:
        """``S`` for a round of ``n`` clients (see the class docstring), before the clamp."""
        if self._previous is None:
            return n * self.norm_bound
        norm, n_prev = self._previous
        return self.headroom * norm * n / max(n_prev, 1)

    def sum(self, vectors: Mapping[int, np.ndarray], *, dropouts: Mapping[int, str] | None = None) -> SumResult:
        from fedsecure.secagg.encoding import FixedPointEncoding

        if not vectors:
            raise AggregationError(f"{self.name}: no vectors")
        self._calls += 1  # the round number both sides count
        length = np.asarray(next(iter(vectors.values()))).size
        kw = {"block": self.block} if self.block else {}
        rot = RandomizedHadamard(length, rotation_seed(self.context, self._calls), **kw)
        rotated, clipped = {}, 0
        for c, v in vectors.items():  # what each client does on its own vector
            v = np.asarray(v, dtype=np.float64)
            norm = float(np.linalg.norm(v))
            if norm > self.norm_bound:
                v = v * (self.norm_bound / norm)
                clipped += 1
            rotated[c] = rot.forward(v)
        n = len(vectors)
        bound = min(max(self.sum_norm_bound(n), self.norm_bound), n * self.norm_bound)
        enc = FixedPointEncoding.for_ring(self.bits, n, self.norm_bound, rot.padded, bound, self.sigmas)
        result = self.inner.sum(rotated, dropouts=dropouts, encoding=enc)
        y = np.asarray(result.total, dtype=np.float64)
        # simulation-only diagnostic: coordinates where the exact sum of the included clients' rotated
        # vectors lay outside the ring (they wrapped, up to the rounding of the last level)
        exact = np.zeros(rot.padded)
        for c in result.included:
            exact += rotated[c]
        overflow = int(np.count_nonzero(np.abs(exact * enc.scale) >= 2 ** (self.bits - 1)))
        self._previous = (float(np.linalg.norm(y)), len(result.included))
        stats = dict(result.stats)
        stats.update(rotation_block=rot.block, rotation_padded_length=rot.padded, clipped_clients=clipped,
                     ring_sum_norm_bound=bound,
                     ring_overflow_coordinates=overflow, ring_coordinates=rot.padded,
                     decoded_sum_norm=self._previous[0], exact_sum_norm=float(np.linalg.norm(exact)))
        return SumResult(total=rot.inverse(y), included=result.included, excluded=result.excluded, stats=stats)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "bits": self.bits, "norm_bound": self.norm_bound, "sigmas": self.sigmas,
                "headroom": self.headroom, "weight_unit": self.weight_unit,
                "rotation": "randomized Hadamard with a public permutation (seed from the run context and round)",
                "block": self.block, "inner": self.inner.describe()}
