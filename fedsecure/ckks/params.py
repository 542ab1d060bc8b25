"""CKKS parameter sets chosen for summation.

Summation needs no multiplicative depth: clients encrypt, the aggregator adds,
the decryptor decrypts. So the coefficient modulus is a *single* prime ``q``:
no rescaling level, no special (key-switching) prime, the smallest ciphertext
and the cheapest encryption. Security follows the homomorphic encryption
standard's tables (ternary secret, classical attacks; the same table SEAL
enforces): the largest ``log2 q`` for ring degree ``N`` at each level is
``MAX_LOG_Q[level][N]``.

Each ciphertext carries ``N/2`` complex slots, and we put two real values in
each slot (real and imaginary part), so one ciphertext holds ``N`` values.

Error model. A fresh public-key encryption decrypts to ``Delta*m + e`` with
``e = e_pk*u + e_1 + e_2*s`` (``e_*`` of standard deviation ``sigma = 3.2``,
``u, s`` ternary of variance 2/3), so each coefficient of ``e`` has variance
about ``(4/3) N sigma^2``. Decoding sums ``N`` coefficients against unit
roots, so the real and the imaginary part of every slot carry an error of
standard deviation ``sigma_1 = N * sigma * sqrt(2/3) / Delta`` *on average
over keys* (:meth:`CKKSParams.noise_std`). For a given key the error of slot
``k`` is Gaussian with its own variance: in the canonical embedding
``e(zeta_k) = e_pk(zeta_k) u(zeta_k) + e_1(zeta_k) + e_2(zeta_k) s(zeta_k)``,
so ``Var_k = ((2/3) N |e_pk(zeta_k)|^2 + N sigma^2 (1 + |s(zeta_k)|^2)) / (2 Delta^2)``
per real part. The key holder knows ``s`` and ``e_pk`` (it decrypts its own
public key), computes every ``Var_k`` exactly, and states the bound of
:func:`error_bound`: the smallest ``t`` with
``sum_values 2 exp(-t^2 / (2 n Var_k)) <= p`` (a union bound over the values of
Gaussian tails; ``p`` defaults to 2^-40), plus the float64 encoding error.
A sum of ``n`` independent ciphertexts has variance ``n Var_k``.

Range. The sum's slots must satisfy ``Delta * sqrt(2) * max|Z| < q/2``;
:attr:`CKKSParams.max_abs_sum` is ``2^(log2 q - log2 Delta - 2)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from fedsecure.ckks.errors import InsecureParametersError

#: largest total log2(q) at ring degree N for each security level (HE standard, ternary secret, classical)
MAX_LOG_Q: dict[int, dict[int, int]] = {
    128: {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881},
    192: {1024: 19, 2048: 37, 4096: 75, 8192: 152, 16384: 305, 32768: 611},
    256: {1024: 14, 2048: 29, 4096: 58, 8192: 118, 16384: 237, 32768: 476},
}

#: SEAL's error distribution standard deviation (util::global_variables::noise_standard_deviation)
NOISE_STD = 3.2
#: the failure probability the stated error bound is computed for
DEFAULT_FAILURE_PROBABILITY = 2.0**-40
#: standard deviation (in value units) of the flooding noise the key holder adds to every released value;
#: 2^-24 at Delta = 2^40 is 2^16 / sqrt(N/2) ~ 1448 per plaintext coefficient (see protocols/ckks.md)
DEFAULT_FLOOD_STD = 2.0**-24


def security_level(poly_modulus_degree: int, log_q: int) -> int:
    """The highest standard level (128/192/256) that ``(N, log2 q)`` meets; 0 if below 128 bits."""
    best = 0
    for level, table in MAX_LOG_Q.items():
        if poly_modulus_degree in table and log_q <= table[poly_modulus_degree]:
            best = max(best, level)
    return best


@dataclass(frozen=True)
class CKKSParams:
    """A summation parameter set: ring degree, one coefficient prime, scale ``Delta = 2^scale_bits``."""

    poly_modulus_degree: int
    coeff_bits: tuple[int, ...]
    scale_bits: int

    def __post_init__(self) -> None:
        n = self.poly_modulus_degree
        if n < 1024 or n > 32768 or n & (n - 1):
            raise ValueError(f"poly_modulus_degree must be a power of two in [1024, 32768], got {n}")
        if not self.coeff_bits or any(not 20 <= b <= 60 for b in self.coeff_bits):
            raise ValueError(f"coeff_bits must be primes of 20..60 bits, got {self.coeff_bits}")
        if not 20 <= self.scale_bits <= self.log_q - 4:
            raise ValueError(f"scale_bits must be in [20, log2 q - 4 = {self.log_q - 4}], got {self.scale_bits}")

    @property
    def log_q(self) -> int:
        return sum(self.coeff_bits)

    @property
    def security_bits(self) -> int:
        """Security level by the standard's tables; 0 means below 128 bits."""
        return security_level(self.poly_modulus_degree, self.log_q)

    @property
    def values_per_ciphertext(self) -> int:
        """``N/2`` complex slots, two real values each."""
        return self.poly_modulus_degree

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    @property
    def max_abs_sum(self) -> float:
        """Largest |coordinate| of a sum (or of any input) that decrypts correctly."""
        return float(2 ** (self.log_q - self.scale_bits - 2))

    def noise_std(self, n_contributions: int = 1) -> float:
        """Model standard deviation of the error of one value of a sum of ``n`` fresh ciphertexts."""
        per = self.poly_modulus_degree * NOISE_STD * math.sqrt(2.0 / 3.0) / self.scale
        return per * math.sqrt(max(1, n_contributions))

    def describe(self) -> dict[str, object]:
        return {
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_bits": list(self.coeff_bits),
            "scale_bits": self.scale_bits,
            "security_bits": self.security_bits,
            "values_per_ciphertext": self.values_per_ciphertext,
            "max_abs_sum": self.max_abs_sum,
        }


def error_bound(
    slot_std: np.ndarray,
    n_contributions: int,
    length: int,
    *,
    max_abs: float = 1.0,
    failure_probability: float = DEFAULT_FAILURE_PROBABILITY,
    flood_std: float = 0.0,
) -> float:
    """Bound on ``max_i |decrypted_i - sum_i|`` over ``length`` values, exceeded with probability <= p.

    ``slot_std[k]`` is the error standard deviation of one value in slot ``k``
    of one fresh ciphertext; a sum of ``n`` has ``sqrt(n) slot_std[k]``. Each
    slot position holds at most ``2 ceil(length / N)`` values. The bound is the
    smallest ``t`` with ``sum_k m 2 exp(-t^2 / (2 n slot_std[k]^2)) <= p``
    (bisection), plus ``max(max_abs, 1) 2^-45`` for the float64 FFTs. Flooding
    noise of standard deviation ``flood_std`` per value adds its variance:
    ``n slot_std[k]^2 + flood_std^2``.
    """
    if not 0 < failure_probability < 1:
        raise ValueError(f"failure_probability must be in (0, 1), got {failure_probability}")
    sd = np.sqrt(np.asarray(slot_std, dtype=np.float64) ** 2 * max(1, n_contributions) + float(flood_std) ** 2)
    per_slot = 2 * -(-max(1, length) // (2 * sd.size))
    lo, hi = 0.0, float(sd.max()) * 64.0

    def tail(t: float) -> float:
        return float(np.sum(per_slot * 2.0 * np.exp(-(t * t) / (2.0 * sd * sd))))

    for _ in range(80):
        mid = 0.5 * (lo + hi)
        lo, hi = (lo, mid) if tail(mid) <= failure_probability else (mid, hi)
    return hi + max(max_abs, 1.0) * 2.0**-45


def summation_params(security_bits: int = 128) -> CKKSParams:
    """The default summation parameter set for a security level (128, 192 or 256 bits).

    128 and 192: ``N = 4096, q`` of 60 bits, ``Delta = 2^40`` (max|sum| 2^18).
    256: ``N = 4096, q`` of 58 bits, ``Delta = 2^39`` (max|sum| 2^17, twice the error).
    """
    if security_bits in (128, 192):
        return CKKSParams(4096, (60,), 40)
    if security_bits == 256:
        return CKKSParams(4096, (58,), 39)
    raise InsecureParametersError(
        f"security_bits must be 128, 192 or 256, got {security_bits}; "
        "build a CKKSParams and pass force_insecure=True to go below 128"
    )


def check_security(params: CKKSParams, security_bits: int = 128, *, force_insecure: bool = False) -> None:
    """Refuse ``params`` below ``security_bits`` (and anything below 128) unless ``force_insecure``."""
    have = params.security_bits
    if force_insecure:
        return
    if security_bits < 128:
        raise InsecureParametersError(f"security_bits={security_bits} is below 128; pass force_insecure=True")
    if have < security_bits:
        table = MAX_LOG_Q.get(security_bits, {}).get(params.poly_modulus_degree)
        raise InsecureParametersError(
            f"N={params.poly_modulus_degree}, log2 q={params.log_q} gives {have or 'under 128'} bits "
            f"(the standard allows log2 q <= {table} at {security_bits} bits); pass force_insecure=True to use it"
        )
