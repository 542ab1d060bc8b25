"""Packing a real vector of any length into CKKS slots.

A ciphertext of ring degree ``N`` has ``S = N/2`` complex slots; we fill the
real *and* the imaginary part of each, so one ciphertext holds ``N`` values and
a vector of length ``d`` needs ``ceil(d / N)`` ciphertexts, all full but the
last. Value ``i`` lives in chunk ``c = i // N`` at position ``j = i % N``:
the real part of slot ``j`` when ``j < S``, else the imaginary part of slot
``j - S``. Addition of ciphertexts adds slots, i.e. real and imaginary parts
separately, so the layout commutes with summation.
"""

from __future__ import annotations

import numpy as np


def chunk_count(length: int, values_per_ciphertext: int) -> int:
    """``ceil(length / values_per_ciphertext)``: how many ciphertexts a vector needs."""
    if length < 1:
        raise ValueError(f"vector length must be >= 1, got {length}")
    return -(-length // values_per_ciphertext)


def pack(x: np.ndarray, values_per_ciphertext: int) -> np.ndarray:
    """Complex slot values, shape ``(chunk_count, values_per_ciphertext // 2)``; zero padded."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected a 1-D vector, got shape {x.shape}")
    slots = values_per_ciphertext // 2
    chunks = chunk_count(x.size, values_per_ciphertext)
    buf = np.zeros(chunks * values_per_ciphertext, dtype=np.float64)
    buf[: x.size] = x
    halves = buf.reshape(chunks, 2, slots)
    out = np.empty((chunks, slots), dtype=np.complex128)
    out.real = halves[:, 0, :]
    out.imag = halves[:, 1, :]
    return out


def unpack(slots: np.ndarray, length: int) -> np.ndarray:
    """Inverse of :func:`pack`: the first ``length`` real values of complex ``slots`` (chunks, S)."""
    slots = np.asarray(slots, dtype=np.complex128)
    if slots.ndim != 2:
        raise ValueError(f"expected (chunks, slots), got shape {slots.shape}")
    flat = np.stack([slots.real, slots.imag], axis=1).reshape(-1)
    if length > flat.size:
        raise ValueError(f"length {length} exceeds the {flat.size} packed values")
    return flat[:length].copy()
