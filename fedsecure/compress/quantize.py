"""Unbiased stochastic quantization to ``b`` bits (QSGD-style, one range per vector or a shared clip).

A value ``x`` with ``|x| <= r`` maps to ``y = x * L / r`` with ``L = 2^(b-1) - 1``
levels each side of zero (a symmetric grid ``{-L, .., L} * r / L``: zero is
on it, so exact zeros -- the untouched rows of a sparse update -- stay zero
and cost no variance), and ``y`` is rounded to ``floor(y)`` or ``floor(y) + 1``
at random with ``P[up] = y - floor(y)``.

Bias: none for ``|x| <= r``: ``E[q] = y``, so ``E[q * r / L] = x``. A value
outside ``[-r, r]`` is first clipped to it (biased towards zero; callers count
the clipped coordinates). With ``r = max|x|`` (the plaintext codec) nothing is
ever clipped.

Variance: per coordinate ``Delta^2 p (1 - p) <= Delta^2 / 4`` with ``Delta = r / L``
and ``p`` the fractional part; zero for a value on the grid. Over a vector of
``d`` coordinates the mean squared error is at most ``d r^2 / (4 L^2)``;
independent across coordinates and clients, so a sum of ``n`` quantized
vectors errs by at most ``n`` times that in expectation. :func:`nearest_round`
(round to nearest) is the biased deterministic alternative the tests use as a
positive control.

The rounding coins come from the OS (``os.urandom``): they are not secret,
but nothing here uses numpy's generator for randomness a client emits.
"""

from __future__ import annotations

import math
import os
import struct

import numpy as np

MIN_BITS, MAX_BITS = 2, 16


def levels(bits: int) -> int:
    """``L = 2^(bits-1) - 1``: the grid is ``{-L, .., L}`` (``2L + 1 <= 2^bits`` codes)."""
    if not (MIN_BITS <= bits <= MAX_BITS):
        raise ValueError(f"quantization bits must be in [{MIN_BITS}, {MAX_BITS}], got {bits}")
    return (1 << (bits - 1)) - 1


def _uniform(size: int) -> np.ndarray:
    """``size`` independent uniforms on [0, 1) with 53 random bits each, from the OS."""
    return (np.frombuffer(os.urandom(8 * size), dtype=np.uint64) >> np.uint64(11)) * 2.0**-53


def stochastic_round(y: np.ndarray) -> np.ndarray:
    """``floor(y) + Bernoulli(y - floor(y))`` as int64: ``E = y``, variance ``frac (1 - frac) <= 1/4``."""
    y = np.asarray(y, dtype=np.float64)
    low = np.floor(y)
    return (low + (_uniform(y.size).reshape(y.shape) < (y - low))).astype(np.int64)


def nearest_round(y: np.ndarray) -> np.ndarray:
    """Round half to even (deterministic, biased: error up to 1/2 in a direction set by the value)."""
    return np.rint(np.asarray(y, dtype=np.float64)).astype(np.int64)


class StochasticQuantizer:
    """``b``-bit quantization of vectors onto ``{-L, .., L} * r / L`` (see module docstring)."""

    def __init__(self, bits: int, *, stochastic: bool = True) -> None:
        self.bits = int(bits)
        self.levels = levels(self.bits)
        self.stochastic = bool(stochastic)

    def quantize(self, x: np.ndarray, r: float) -> tuple[np.ndarray, int]:
        """Integers in ``[-L, L]`` for ``x`` at range ``r`` (clipped to it first), and how many were clipped."""
        if not (math.isfinite(r) and r >= 0):
            raise ValueError(f"quantization range must be finite and >= 0, got {r}")
        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("cannot quantize a vector with NaN or infinite coordinates")
        if r == 0:
            return np.zeros(x.shape, dtype=np.int64), int(np.count_nonzero(x))
        over = np.abs(x) > r
        clipped = int(over.sum())
        if clipped:
            x = np.clip(x, -r, r)
        y = x * (self.levels / r)
        q = stochastic_round(y) if self.stochastic else nearest_round(y)
        np.clip(q, -self.levels, self.levels, out=q)  # float rounding of x * L / r at |x| = r
        return q, clipped

    def dequantize(self, q: np.ndarray, r: float) -> np.ndarray:
        return np.asarray(q, dtype=np.float64) * (r / self.levels)

    # -- the plaintext payload: a float32 range, then the b-bit codes ----------------
    def payload_size(self, length: int) -> int:
        return 4 + (length * self.bits + 7) // 8

    def encode(self, x: np.ndarray) -> bytes:
        """One vector as bytes: its range ``r = max|x|`` (float32, rounded up) and ``q + L`` packed in ``bits`` bits."""
        from fedsecure.secagg.encoding import pack

        x = np.asarray(x, dtype=np.float64)
        top = float(np.max(np.abs(x))) if x.size else 0.0
        r = np.float32(top)
        if float(r) < top:  # float32 rounded down: one step up so that no coordinate is clipped
            r = np.nextafter(r, np.float32(np.inf))
        q, _ = self.quantize(x, float(r))
        return struct.pack("<f", float(r)) + pack((q + self.levels).astype(np.uint32), self.bits)

    def decode(self, data: bytes, length: int) -> np.ndarray:
        from fedsecure.secagg.encoding import unpack

        if len(data) != self.payload_size(length):
            raise ValueError(f"quantized payload has {len(data)} bytes, expected {self.payload_size(length)} "
                             f"for {length} coordinates at {self.bits} bits")
        (r,) = struct.unpack("<f", data[:4])
        if not (math.isfinite(r) and r >= 0):
            raise ValueError(f"quantized payload has an invalid range {r}")
        codes = unpack(data[4:], self.bits, length).astype(np.int64)
        if np.any(codes > 2 * self.levels):
            raise ValueError(f"quantized payload has a code above {2 * self.levels}")
        return self.dequantize(codes - self.levels, float(r))
