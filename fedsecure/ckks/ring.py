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
            r = x * self.w - _mulhi(x, self.w_shoup) * self.q
            return np.minimum(r, r - self.q, out=r)


class Transform:
    """Coefficient form -> NTT form, by SEAL, for one parameter set (a role's context and a ciphertext template)."""

    def __init__(self, seal: sa.SEALContext, evaluator: sa.Evaluator, template: tuple[tuple[int, int], bytes]) -> None:
        self._seal, self._evaluator = seal, evaluator
        self._version, prefix = template
        coeff = bytearray(prefix)
        coeff[32] = 0  # the is_ntt_form byte after the 32-byte parms_id (see fedsecure.ckks._sealraw)
        self._prefix = bytes(coeff)

    def to_ntt(self, polys: np.ndarray) -> np.ndarray:
        """NTT form of ``polys[m, k, N]`` (residues below each prime), two per SEAL ciphertext."""
        m, k, n = polys.shape
        out = np.empty_like(polys)
        ct = sa.Ciphertext(self._seal)
        for i in range(0, m, 2):
            pair = polys[i : i + 2] if i + 1 < m else polys[[i, i]]
            _sealio.load(ct, _sealraw.write_ciphertext(self._version, self._prefix, pair[0], pair[1]), self._seal)
            self._evaluator.transform_to_ntt_inplace(ct)
            res = _sealraw.read_ciphertext(_sealio.save(ct), n, k)[2]
            out[i : i + 2] = res[: min(2, m - i)]
        return out


def residues(values: np.ndarray, moduli: np.ndarray) -> np.ndarray:
    """Small signed integers ``values[m, N]`` as residues ``[m, k, N]`` modulo each prime."""
    v = values.astype(np.int64)[:, None, :]
    q = moduli.astype(np.int64).reshape(1, -1, 1)
    return np.mod(v, q).astype(np.uint64)
