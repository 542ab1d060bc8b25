"""Shamir t-of-m secret sharing of byte strings over GF(p), p = 2^31 - 1.

The one primitive written here rather than taken from a library. A 32-byte
secret is split into ``L = 9`` limbs of 30 bits (little-endian), each limb an
element of GF(p); every limb is shared with its own random polynomial of
degree ``t - 1``

    f_l(x) = s_l + a_{l,1} x + ... + a_{l,t-1} x^(t-1)   (mod p)

and the share for party ``x`` (a non-zero field element; fedsecure uses
``client id + 1``) is the vector ``(f_1(x), ..., f_L(x))``. Any ``t`` shares
give the limbs back by Lagrange interpolation at 0,

    s_l = sum_i f_l(x_i) * prod_{j != i} x_j / (x_j - x_i)   (mod p),

and any ``t - 1`` shares are independent of the secret (perfect privacy),
because the coefficients are uniform in GF(p): they come from the OS
(``os.urandom``) with rejection of the single out-of-range value.

Products of two field elements are below 2^62, so Horner's rule and the
interpolation run vectorised in int64 without overflow.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import numpy as np

PRIME = 2**31 - 1
LIMB_BITS = 30
SECRET_BYTES = 32
LIMBS = -(-SECRET_BYTES * 8 // LIMB_BITS)  # 9
SHARE_BYTES = 4 * LIMBS  # a share on the wire: LIMBS little-endian uint32

RandomBytes = Callable[[int], bytes]


def bytes_to_limbs(secret: bytes) -> np.ndarray:
    """32 bytes -> 9 limbs of 30 bits (little-endian order of bits)."""
    if len(secret) != SECRET_BYTES:
        raise ValueError(f"secret must be {SECRET_BYTES} bytes, got {len(secret)}")
    v = int.from_bytes(secret, "little")
    return np.array([(v >> (LIMB_BITS * i)) & ((1 << LIMB_BITS) - 1) for i in range(LIMBS)], dtype=np.int64)


def limbs_to_bytes(limbs: np.ndarray) -> bytes:
    """Inverse of :func:`bytes_to_limbs`; ValueError if the limbs do not encode 32 bytes."""
    limbs = [int(v) for v in limbs]
    if len(limbs) != LIMBS or any(v < 0 or v >= 1 << LIMB_BITS for v in limbs):
        raise ValueError("reconstructed limbs are out of range (inconsistent shares)")
    v = sum(limb << (LIMB_BITS * i) for i, limb in enumerate(limbs))
    if v >> (SECRET_BYTES * 8):
        raise ValueError("reconstructed value exceeds 32 bytes (inconsistent shares)")
    return v.to_bytes(SECRET_BYTES, "little")


def random_field_elements(count: int, randbytes: RandomBytes = os.urandom) -> np.ndarray:
    """``count`` uniform elements of GF(p) from 31-bit OS randomness, rejecting the value p."""
    out = np.frombuffer(randbytes(4 * count), dtype="<u4").astype(np.int64) & 0x7FFFFFFF
    bad = out == PRIME
    while bad.any():  # probability 2^-31 per element
        out[bad] = np.frombuffer(randbytes(4 * int(bad.sum())), dtype="<u4").astype(np.int64) & 0x7FFFFFFF
        bad = out == PRIME
    return out


def split(secret: bytes, xs: Sequence[int] | np.ndarray, t: int, randbytes: RandomBytes = os.urandom) -> np.ndarray:
    """Shares of ``secret`` at the points ``xs``: an int64 array of shape ``(len(xs), LIMBS)``."""
    return split_many([secret], xs, t, randbytes)[0]


def split_many(
    secrets: Sequence[bytes], xs: Sequence[int] | np.ndarray, t: int, randbytes: RandomBytes = os.urandom
) -> list[np.ndarray]:
    """Shares of several secrets at the same points, in one vectorised Horner pass.

    The coefficients are drawn in one call, secret after secret (so the bytes
    consumed are those of calling :func:`split` on each in turn).
    """
    x = np.asarray(xs, dtype=np.int64)
    if t < 1 or t > x.size:
        raise ValueError(f"threshold must be in [1, {x.size}], got {t}")
    if x.size and (x.min() <= 0 or x.max() >= PRIME or np.unique(x).size != x.size):
        raise ValueError("share points must be distinct and in [1, p-1]")
    j = len(secrets)
    coeffs = np.empty((t, j * LIMBS), dtype=np.int64)
    coeffs[0] = np.concatenate([bytes_to_limbs(s) for s in secrets])
    if t > 1:
        r = random_field_elements((t - 1) * LIMBS * j, randbytes).reshape(j, t - 1, LIMBS)
        coeffs[1:] = r.transpose(1, 0, 2).reshape(t - 1, j * LIMBS)
    acc = np.broadcast_to(coeffs[-1], (x.size, j * LIMBS)).copy()
    xc = x[:, None]
    for k in range(t - 2, -1, -1):  # Horner; products stay below 2^62
        acc *= xc
        acc += coeffs[k]
        acc %= PRIME
    return [acc[:, i * LIMBS : (i + 1) * LIMBS] for i in range(j)]


def lagrange_at_zero(xs: Sequence[int]) -> np.ndarray:
    """Coefficients ``lambda_i = prod_{j != i} x_j / (x_j - x_i)`` with ``f(0) = sum_i lambda_i f(x_i)``.

    Numerators and denominators are built with t vectorised passes; the t
    inverses share one modular exponentiation (Montgomery's batch inversion).
    """
    x = np.array([int(v) % PRIME for v in xs], dtype=np.int64)
    t = x.size
    if np.unique(x).size != t or (x == 0).any():
        raise ValueError("interpolation points must be distinct and non-zero")
    diff = (x[None, :] - x[:, None]) % PRIME  # diff[i, j] = x_j - x_i
    np.fill_diagonal(diff, 1)
    xj = np.broadcast_to(x, (t, t)).copy()
    np.fill_diagonal(xj, 1)
    num = np.ones(t, dtype=np.int64)
    den = np.ones(t, dtype=np.int64)
    for j in range(t):  # products stay below 2^62
        num = num * xj[:, j] % PRIME
        den = den * diff[:, j] % PRIME
    dens = den.tolist()
    prefix, acc = [], 1
    for dv in dens:
        prefix.append(acc)
        acc = acc * dv % PRIME
    inv = pow(acc, PRIME - 2, PRIME)
    inverses = [0] * t
    for i in range(t - 1, -1, -1):
        inverses[i] = inv * prefix[i] % PRIME
        inv = inv * dens[i] % PRIME
    return num * np.array(inverses, dtype=np.int64) % PRIME


def reconstruct(xs: Sequence[int], shares: np.ndarray) -> bytes:
    """The secret from shares ``shares[i]`` at points ``xs[i]`` (exactly the threshold many)."""
    shares = np.asarray(shares, dtype=np.int64)
    if shares.ndim != 2 or shares.shape != (len(xs), LIMBS):
        raise ValueError(f"shares must have shape ({len(xs)}, {LIMBS}), got {shares.shape}")
    if shares.min(initial=0) < 0 or shares.max(initial=0) >= PRIME:
        raise ValueError("share values must be field elements")
    if len(xs) <= SMALL_T:
        return limbs_to_bytes(np.array(_reconstruct_small(xs, shares.tolist()), dtype=np.int64))
    lam = lagrange_at_zero(xs)
    limbs = np.zeros(LIMBS, dtype=np.int64)
    for i in range(len(xs)):  # t terms; each product < 2^62
        limbs = (limbs + lam[i] * shares[i]) % PRIME
    return limbs_to_bytes(limbs)


#: up to this threshold, interpolation in Python integers (O(t^2) operations) beats numpy's per-call overhead
SMALL_T = 24


def _reconstruct_small(xs: Sequence[int], shares: list[list[int]]) -> list[int]:
    """The same Lagrange interpolation at 0 as :func:`lagrange_at_zero` + the weighted sum, in Python ints."""
    x = [int(v) % PRIME for v in xs]
    if len(set(x)) != len(x) or 0 in x:
        raise ValueError("interpolation points must be distinct and non-zero")
    limbs = [0] * LIMBS
    for i, xi in enumerate(x):
        num = den = 1
        for j, xj in enumerate(x):
            if j != i:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        lam = num * pow(den, PRIME - 2, PRIME) % PRIME
        row = shares[i]
        for limb in range(LIMBS):
            limbs[limb] += lam * row[limb]
    return [v % PRIME for v in limbs]


def share_to_bytes(share: np.ndarray) -> bytes:
    return np.asarray(share, dtype="<u4").tobytes()


def share_from_bytes(data: bytes) -> np.ndarray:
    if len(data) != SHARE_BYTES:
        raise ValueError(f"a share is {SHARE_BYTES} bytes, got {len(data)}")
    s = np.frombuffer(data, dtype="<u4").astype(np.int64)
    if (s >= PRIME).any():
        raise ValueError("share value is not a field element")
    return s
