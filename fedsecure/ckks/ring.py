"""Products and transforms in the ciphertext ring ``Z_q[X] / (X^N + 1)``, for encryption the key holder can recompute.

SEAL keeps ciphertexts and public keys in NTT form: a polynomial is stored
as its values at the roots of ``X^N + 1`` modulo each prime, so the product
of two polynomials is the coefficient-wise product of their NTT forms.
SEAL itself does the transform (:meth:`Transform.to_ntt`: we write the
polynomials as a coefficient-form ciphertext, which SEAL loads and
validates, and call ``Evaluator.transform_to_ntt_inplace``); numpy does the
coefficient-wise products by a fixed polynomial (a public-key half) with
Shoup's method, exact in unsigned 64-bit arithmetic for primes below 2^63.
"""

from __future__ import annotations

import numpy as np
import tenseal.sealapi as sa

from fedsecure.ckks import _sealio, _sealraw

_LOW = np.uint64(0xFFFFFFFF)
_32 = np.uint64(32)


def _mulhi(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The high 64 bits of the 128-bit products ``a * b`` (uint64, from four 32 x 32-bit products)."""
    a_lo, a_hi = a & _LOW, a >> _32
    b_lo, b_hi = b & _LOW, b >> _32
    lh, hl = a_lo * b_hi, a_hi * b_lo
    mid = ((a_lo * b_lo) >> _32) + (lh & _LOW) + (hl & _LOW)
    return a_hi * b_hi + (lh >> _32) + (hl >> _32) + (mid >> _32)


class FixedMultiplier:
    """``x -> w * x mod q`` coefficient-wise for a fixed ``w[k, N]`` (residues below each prime ``q_j < 2^63``).

    Shoup: with ``w' = floor(w 2^64 / q)``, ``w x - floor(x w' / 2^64) q``
    lies in ``[0, 2q)`` for every ``x < 2^64``; one conditional subtraction
    finishes it. Computed in wrapping uint64, so it is exact.
    """

    def __init__(self, w: np.ndarray, moduli: np.ndarray) -> None:
        w = np.ascontiguousarray(w, dtype=np.uint64)
        if w.ndim != 2 or w.shape[0] != moduli.size:
            raise ValueError(f"multiplier must be [primes, N], got shape {w.shape}")
        if int(moduli.max()) >= 1 << 63:
            raise ValueError("primes must be below 2^63")
        self.w = w
        self.q = moduli.astype(np.uint64).reshape(-1, 1)
        self.w_shoup = np.array(
            [[(int(v) << 64) // int(q) for v in row] for row, q in zip(w.tolist(), moduli.tolist())], dtype=np.uint64
        )

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """``w * x mod q`` for ``x[..., k, N]`` with residues below each prime."""
        with np.errstate(over="ignore"):
            r = x * self.w
            r -= _mulhi(x, self.w_shoup) * self.q
            return np.minimum(r, r - self.q, out=r)


#: SEAL's largest ciphertext size: the polynomials one transform call handles
_BATCH = 16


class Transform:
    """Coefficient form -> NTT form, by SEAL, for one parameter set (a role's context and a ciphertext template)."""

    def __init__(self, seal: sa.SEALContext, evaluator: sa.Evaluator, template: tuple[tuple[int, int], bytes]) -> None:
        self._seal, self._evaluator = seal, evaluator
        self._version, self._prefix = template

    def to_ntt(self, polys: np.ndarray) -> np.ndarray:
        """NTT form of ``polys[m, k, N]`` (residues below each prime), up to 16 per SEAL ciphertext."""
        m, k, n = polys.shape
        out = np.empty_like(polys)
        ct = sa.Ciphertext(self._seal)
        for i in range(0, m, _BATCH):
            batch = polys[i : i + _BATCH]
            size = max(2, len(batch))  # a ciphertext has at least two polynomials
            padded = batch if len(batch) == size else np.concatenate([batch, batch[:1]])
            _sealio.load(ct, _sealraw.write_ciphertext(self._version, self._prefix, *padded, ntt=False), self._seal)
            self._evaluator.transform_to_ntt_inplace(ct)
            out[i : i + len(batch)] = _sealraw.read_ciphertext(_sealio.save(ct), n, k, size)[2][: len(batch)]
        return out


def residues(values: np.ndarray, moduli: np.ndarray) -> np.ndarray:
    """Signed integers ``values[m, N]`` with ``|v| < q / 2`` as residues ``[m, k, N]`` modulo each prime."""
    v = np.asarray(values, dtype=np.int64)
    out = np.empty((v.shape[0], moduli.size, v.shape[1]), dtype=np.uint64)
    negative = v < 0
    for j, q in enumerate(moduli.tolist()):
        out[:, j, :] = v.view(np.uint64) + negative * np.uint64(q)  # wraps to v + q where v < 0
    return out


def _slot_roots(n: int) -> np.ndarray:
    """SEAL's slot order: slot ``j`` holds the value at the root ``zeta^(3^j mod 2N)``, ``zeta = exp(i pi / N)``."""
    k = np.empty(n // 2, dtype=np.int64)
    pos = 1
    for j in range(n // 2):
        k[j], pos = pos, pos * 3 % (2 * n)
    return k


def encode_coefficients(slots: np.ndarray, scale: float) -> np.ndarray:
    """CKKS encoding ``round(scale * embedding^-1(slots))``: ``slots[m, N/2]`` complex -> ``int64[m, N]``.

    The inverse of SEAL's canonical embedding (what its ``CKKSEncoder.decode`` evaluates), by one FFT of
    length 2N: coefficient ``t`` is ``(2/N) Re sum_j z_j zeta_j^-t``. Coefficients stay below
    ``sqrt(2) scale max|z|`` (under q/2 inside the parameters' range); the float64 error is about 2^-52 of
    the largest, 2^-35 in value units at the range limit, far below the CKKS error.
    """
    m, half = slots.shape
    n = 2 * half
    # Slot roots are odd powers zeta^(2l + 1): the length-2N sum is zeta^-t times a length-N FFT over l.
    b = np.zeros((m, n), dtype=np.complex128)
    b[:, (_slot_roots(n) - 1) // 2] = slots
    twist = np.exp(-1j * np.pi * np.arange(n) / n)
    coeffs = (2.0 / n) * (np.fft.fft(b, axis=1) * twist).real
    return np.rint(coeffs * scale).astype(np.int64)
