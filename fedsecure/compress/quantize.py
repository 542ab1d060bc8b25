"""Unbiased stochastic quantization to ``b`` bits (QSGD-style: one range per vector, per bucket, or a shared clip).

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

Buckets (QSGD's bucketing, Alistarh et al. 2017): the plaintext codec can
give every run of ``bucket`` consecutive coordinates its own range
``r_j = max|x|`` over the bucket, at 4 more bytes per bucket. Still unbiased;
the error bound becomes ``sum_j d_j r_j^2 / (4 L^2)``, never above the
one-range bound since every ``r_j <= r``, and far below it when the
magnitudes differ between parts of the vector (an adapter's matrices beside
item-embedding rows, or rows of popular and rare items): a few large
coordinates then no longer set the step for all the others.

The rounding coins come from the OS (``os.urandom``): they are not secret,
but nothing here uses numpy's generator for randomness a client emits.
"""

from __future__ import annotations

import math
import os

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
    """``b``-bit quantization of vectors onto ``{-L, .., L} * r / L`` (see module docstring).

    ``bucket``: the plaintext payload carries one range per ``bucket`` coordinates (None: one per vector).
    """

    def __init__(self, bits: int, *, stochastic: bool = True, bucket: int | None = None) -> None:
        self.bits = int(bits)
        self.levels = levels(self.bits)
        self.stochastic = bool(stochastic)
        if bucket is not None and (isinstance(bucket, bool) or not isinstance(bucket, int) or bucket < 1):
            raise ValueError(f"quantization bucket must be a positive integer (coordinates per range), got {bucket!r}")
        self.bucket = bucket

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

    # -- the plaintext payload: float32 ranges, then the b-bit codes -------------------
    def buckets(self, length: int) -> int:
        """How many ranges a payload of ``length`` coordinates carries."""
        if self.bucket is None:
            return 1
        return -(-length // self.bucket)

    def payload_size(self, length: int) -> int:
        return 4 * self.buckets(length) + (length * self.bits + 7) // 8

    def _ranges(self, x: np.ndarray) -> np.ndarray:
        """Per bucket ``max|x|`` as float32, rounded up so that no coordinate is clipped; zero for an empty vector."""
        n = self.buckets(x.size)
        top = np.zeros(n, dtype=np.float64)
        if x.size:
            width = x.size if self.bucket is None else self.bucket
            padded = np.zeros(n * width, dtype=np.float64)
            padded[:x.size] = np.abs(x)
            top = padded.reshape(n, width).max(axis=1)
        r = top.astype(np.float32)
        low = r.astype(np.float64) < top  # float32 rounded down: one step up
        r[low] = np.nextafter(r[low], np.float32(np.inf))
        return r

    def _per_coordinate(self, ranges: np.ndarray, length: int) -> np.ndarray:
        width = length if self.bucket is None else self.bucket
        return np.repeat(ranges.astype(np.float64), width)[:length]

    def encode(self, x: np.ndarray) -> bytes:
        """``x`` as bytes: its ranges (float32, one per bucket) and ``q + L`` packed in ``bits`` bits."""
        from fedsecure.secagg.encoding import pack

        x = np.asarray(x, dtype=np.float64)
        if not np.all(np.isfinite(x)):
            raise ValueError("cannot quantize a vector with NaN or infinite coordinates")
        ranges = self._ranges(x)
        r = self._per_coordinate(ranges, x.size)
        safe = np.where(r > 0, r, 1.0)
        y = x * (self.levels / safe)  # |y| <= L: each range is at least its bucket's max|x|
        q = stochastic_round(y) if self.stochastic else nearest_round(y)
        np.clip(q, -self.levels, self.levels, out=q)  # float rounding of x * L / r at |x| = r
        return ranges.astype("<f4").tobytes() + pack((q + self.levels).astype(np.uint32), self.bits)

    def decode(self, data: bytes, length: int) -> np.ndarray:
        from fedsecure.secagg.encoding import unpack

        if len(data) != self.payload_size(length):
            raise ValueError(f"quantized payload has {len(data)} bytes, expected {self.payload_size(length)} "
                             f"for {length} coordinates at {self.bits} bits"
                             + (f" in buckets of {self.bucket}" if self.bucket else ""))
        head = 4 * self.buckets(length)
        ranges = np.frombuffer(data[:head], dtype="<f4").astype(np.float64)
        if not np.all(np.isfinite(ranges) & (ranges >= 0)):
            raise ValueError(f"quantized payload has an invalid range {ranges[~(np.isfinite(ranges) & (ranges >= 0))][0]}")
        codes = unpack(data[head:], self.bits, length).astype(np.int64)
        if np.any(codes > 2 * self.levels):
            raise ValueError(f"quantized payload has a code above {2 * self.levels}")
        return (codes - self.levels) * (self._per_coordinate(ranges, length) / self.levels)
