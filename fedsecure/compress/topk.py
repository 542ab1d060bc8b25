"""Top-k sparsification with error feedback (Stich et al. 2018; Karimireddy et al. 2019), plaintext only.

Each client keeps a residual ``e`` (what it did not send yet). For an update
``x`` it forms ``c = x + e``, sends the ``k = ceil(fraction * d)`` coordinates
of ``c`` largest in magnitude (only non-zero ones; as uint32 index and
float32 value), and keeps ``e <- c - sent`` for its next round.

Bias: top-k is biased (``E[C(x)] != x``; it is deterministic). It is a
contraction, ``|c - C(c)|^2 <= (1 - k/d) |c|^2``, and with error feedback the
bias does not accumulate: after any number of rounds the client has sent
exactly ``sum of its updates - e``, so everything it skipped is delayed, not
lost. Variance: none (no randomness). Cost: the residual is state on the
client, across rounds (stored sparse: its support is within the union of the
client's past updates); the float32 rounding of sent values goes into it too.

It cannot run under secure aggregation: each client's chosen indices differ,
and pairwise masks hide values only at positions every client sends.
"""

from __future__ import annotations

import math
import struct

import numpy as np


class TopKErrorFeedback:
    """Top-k of ``update + residual``, residual kept per client (see module docstring)."""

    def __init__(self, fraction: float) -> None:
        if not (math.isfinite(fraction) and 0 < fraction <= 1):
            raise ValueError(f"top-k fraction must be in (0, 1], got {fraction}")
        self.fraction = float(fraction)
        self._residual: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def k_for(self, length: int) -> int:
        return max(1, math.ceil(self.fraction * length))

    def residual(self, client_id: int, length: int) -> np.ndarray:
        """The client's residual as a dense float64 vector (zeros for a client never seen)."""
        e = np.zeros(length, dtype=np.float64)
        if client_id in self._residual:
            idx, val = self._residual[client_id]
            e[idx] = val
        return e

    def compress(self, client_id: int, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(indices uint32 ascending, values float32)`` sent for ``x``; updates the client's residual."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1:
            raise ValueError(f"top-k input must be a 1-D vector, got shape {x.shape}")
        c = x + self.residual(client_id, x.size)
        k = min(self.k_for(x.size), x.size)
        mag = np.abs(c)
        top = np.argpartition(mag, x.size - k)[x.size - k:] if k < x.size else np.arange(x.size)
        top = np.sort(top[mag[top] > 0]).astype(np.uint32)
        values = c[top].astype(np.float32)
        c[top] -= values  # what float32 lost stays in the residual too
        keep = np.flatnonzero(c)
        self._residual[client_id] = (keep, c[keep].astype(np.float64))
        return top, values

    @staticmethod
    def payload_size(nnz: int) -> int:
        return 4 + 8 * nnz

    @staticmethod
    def encode(indices: np.ndarray, values: np.ndarray) -> bytes:
        return (struct.pack("<I", indices.size) + np.asarray(indices, dtype="<u4").tobytes()
                + np.asarray(values, dtype="<f4").tobytes())

    @staticmethod
    def decode(data: bytes, length: int) -> np.ndarray:
        if len(data) < 4:
            raise ValueError("top-k payload shorter than its 4-byte count")
        (nnz,) = struct.unpack("<I", data[:4])
        if len(data) != 4 + 8 * nnz:
            raise ValueError(f"top-k payload has {len(data)} bytes, expected {4 + 8 * nnz} for {nnz} entries")
        idx = np.frombuffer(data, dtype="<u4", count=nnz, offset=4).astype(np.int64)
        val = np.frombuffer(data, dtype="<f4", count=nnz, offset=4 + 4 * nnz).astype(np.float64)
        if nnz and (idx.max() >= length or np.any(np.diff(idx) <= 0)):
            raise ValueError(f"top-k payload indices must be strictly increasing and below {length}")
        out = np.zeros(length, dtype=np.float64)
        out[idx] = val
        return out
