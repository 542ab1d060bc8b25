"""Compressed uploads behind the :class:`~fedsecure.fl.aggregation.SumProtocol` seam.

The codecs are in :mod:`fedsecure.compress`; here they are put where a
client's vector turns into bytes. Each protocol's vectors are FedAvg's
``[w~ * delta, w~ * weight_unit]``: the last coordinate (the weight) always
travels exactly (float32 in plaintext; a ring element under secure
aggregation), the update part is compressed.

* :class:`QuantizedPlainSum` -- each client sends its update quantized to
  ``b`` bits over its own range ``r = max|x|`` (float32 header). Unbiased.
* :class:`TopKPlainSum` -- top-k with error feedback (the residual is the
  client's state across rounds). Biased, corrected over rounds.
* :class:`RotatedSum` -- wraps another protocol (a quantized plaintext sum or
  a quantized :class:`~fedsecure.secagg.sum.SecAggSum`): each client rotates
  its update with the randomized Hadamard transform of the round (public
  seed from the run's context and the round number, which both sides know),
  clips it to the inner protocol's bound, and the server rotates the *sum*
  back once (the rotation is linear).

Every protocol reports ``upload_bytes`` (what the clients' payloads or
protocol messages weigh in total) in its stats.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from fedsecure.compress import RandomizedHadamard, StochasticQuantizer, TopKErrorFeedback, rotation_seed
from fedsecure.fl.aggregation import AggregationError, SumProtocol, SumResult


def _survivors(name: str, vectors: Mapping[int, np.ndarray], dropouts: Mapping[int, str] | None):
    dropouts = dropouts or {}
    survivors = tuple(sorted(c for c in vectors if c not in dropouts))
    if not survivors:
        raise AggregationError(f"{name}: every client dropped out")
    excluded = {c: f"dropped at {dropouts[c]}" for c in sorted(dropouts) if c in vectors}
    return survivors, excluded


class QuantizedPlainSum(SumProtocol):
    """Plaintext sum of ``b``-bit stochastically quantized updates (see :mod:`fedsecure.compress.quantize`)."""

    def __init__(self, bits: int) -> None:
        self.codec = StochasticQuantizer(bits)
        self.name = f"plaintext-q{bits}"

    def sum(self, vectors: Mapping[int, np.ndarray], *, dropouts: Mapping[int, str] | None = None) -> SumResult:
        survivors, excluded = _survivors(self.name, vectors, dropouts)
        length = np.asarray(vectors[survivors[0]]).size - 1
        total = np.zeros(length + 1, dtype=np.float64)
        nbytes = 0
        for c in survivors:
            v = np.asarray(vectors[c])
            payload = self.codec.encode(v[:-1]) + struct.pack("<f", float(v[-1]))  # what the client sends
            nbytes += len(payload)
            total[:-1] += self.codec.decode(payload[:-4], length)  # what the server reads from it
            total[-1] += struct.unpack("<f", payload[-4:])[0]
        return SumResult(total=total, included=survivors, excluded=excluded,
                         stats={"upload_bytes": nbytes, "quantize_bits": self.codec.bits})

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "bits": self.codec.bits, "levels": self.codec.levels}


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
        self.input_bound = None  # clipping happens after the rotation, to the inner protocol's bound
        self._calls = 0

    def sum(self, vectors: Mapping[int, np.ndarray], *, dropouts: Mapping[int, str] | None = None) -> SumResult:
        if not vectors:
            raise AggregationError(f"{self.name}: no vectors")
        self._calls += 1  # the round number both sides count
        length = np.asarray(next(iter(vectors.values()))).size - 1
        kw = {"block": self.block} if self.block else {}
        rot = RandomizedHadamard(length, rotation_seed(self.context, self._calls), **kw)
        bound = self.inner.input_bound
        rotated, clipped = {}, 0
        for c, v in vectors.items():
            v = np.asarray(v)
            y = np.empty(rot.padded + 1, dtype=np.float64)
            y[:-1] = rot.forward(v[:-1])
            y[-1] = v[-1]
            if bound is not None:
                over = np.abs(y[:-1]) > bound
                clipped += int(over.sum())
                np.clip(y[:-1], -bound, bound, out=y[:-1])
            rotated[c] = y
        result = self.inner.sum(rotated, dropouts=dropouts)
        total = np.empty(length + 1, dtype=np.float64)
        total[:-1] = rot.inverse(np.asarray(result.total[:-1], dtype=np.float64))
        total[-1] = result.total[-1]
        stats = dict(result.stats)
        stats.update(rotation_block=rot.block, rotation_padded_length=rot.padded,
                     clipped_after_rotation=clipped)
        return SumResult(total=total, included=result.included, excluded=result.excluded, stats=stats)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "rotation": "randomized Hadamard (public seed from the run context and round)",
                "block": self.block, "inner": self.inner.describe()}
