"""Distributed discrete Gaussian noise for secure aggregation (Kairouz, Liu & Steinke, ICML 2021).

Each client clips its update to L2 norm ``C``, the protocol encodes it as
integers ``k = round(s x)`` (``s`` levels per unit), and the client adds
discrete Gaussian noise ``e ~ N_Z(0, sigma^2)^d`` *before* masking, so the
server only ever decodes ``sum_i (k_i + e_i)``: no party sees a noiseless sum.

Sensitivity after quantization. Add/remove-one-client adjacency changes the
integer sum by one client's ``k``; rounding moves each coordinate by at most
``r`` (``1/2`` for nearest, ``< 1`` for stochastic rounding), so by the triangle
inequality, deterministically,

    Delta_2 = s C + r sqrt(d),        Delta_1 = min(Delta_2^2, sqrt(d) Delta_2)

(``Delta_1 <= Delta_2^2`` because the coordinates are integers).

Privacy of the sum (KLS'21, Thm 2): the sum of ``n`` independent
``N_Z(0, sigma^2)`` vectors added to a query of sensitivities ``Delta_1, Delta_2``
is ``eps^2/2``-zCDP with

    eps = min( sqrt(Delta_2^2 / (n sigma^2) + tau Delta_1 / 2),  Delta_2 / (sqrt(n) sigma) + tau Delta_1 ),
    tau = 10 sum_{k=1}^{n-1} exp(-2 pi^2 sigma^2 k / (k+1)).

Calibration: the per-client scale is ``sigma = z Delta_2 / sqrt(m)``, with ``m``
the *minimum* number of clients whose noise survives (the secure-aggregation
threshold): any ``n >= m`` survivors carry at least the noise of a central
Gaussian with noise multiplier ``z`` on sensitivity ``Delta_2``, so
``eps ~= 1/z`` (``tau`` is below 1e-40 once ``sigma >= 3``, and counted anyway).
The price, compared with central DP: the survivors' noise has variance
``n/m`` times larger, and the sensitivity is inflated by ``r sqrt(d) / (s C)``.

Wrap-around: a discrete Gaussian is ``sigma``-subgaussian (Canonne, Kamath &
Steinke 2020), so the sum of ``n`` clients' noise exceeds
``t = sigma sqrt(2 n ln(2 / beta))`` in a coordinate with probability at most
``beta``; :meth:`DiscreteGaussianNoise.max_abs_sum` returns this ``t`` with
``beta = 2^-80`` and the encoding adds it to its headroom, so a ring sized by
it wraps with probability at most ``d * rounds * 2^-80``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fedsecure.dp.noise import NoiseSource
from fedsecure.dp.validation import PrivacyConfigError, check_clip, check_noise_multiplier

#: per-coordinate probability that the noise sum exceeds max_abs_sum
WRAP_FAILURE_PROBABILITY = 2.0**-80


def quantized_sensitivity(clip: float, scale: float, dim: int, rounding_slack: float) -> tuple[float, float]:
    """``(Delta_2, Delta_1)`` of one client's integer vector (see module doc)."""
    d2 = scale * clip + rounding_slack * math.sqrt(dim)
    d1 = min(d2 * d2, math.sqrt(dim) * d2)
    return d2, d1


def ddg_zcdp_rho(sigma: float, n_clients: int, delta2: float, delta1: float) -> float:
    """zCDP parameter ``rho = eps^2/2`` of the sum of ``n_clients`` ``N_Z(0, sigma^2)`` noises (KLS'21 Thm 2)."""
    if sigma <= 0:
        return math.inf
    if n_clients < 1:
        raise ValueError(f"need at least one client's noise, got {n_clients}")
    k = np.arange(1, n_clients, dtype=np.float64)
    tau = 10.0 * float(np.exp(-2.0 * math.pi**2 * sigma**2 * k / (k + 1)).sum())
    n = float(n_clients)
    eps = min(
        math.sqrt(delta2**2 / (n * sigma**2) + 0.5 * tau * delta1),
        delta2 / (math.sqrt(n) * sigma) + tau * delta1,
    )
    return 0.5 * eps * eps


class DiscreteGaussianNoise:
    """The client-noise hook of secure aggregation: ``N_Z(0, sigma(s)^2)`` per coordinate.

    ``sigma(s) = z * Delta_2(s) / sqrt(min_clients)`` in encoded units, where
    ``Delta_2(s) = s * clip + rounding_slack * sqrt(dim)`` is the quantized
    sensitivity at the protocol's scale ``s``. It implements the
    ``IntegerNoise`` contract of ``fedsecure.secagg.encoding``:
    ``sample(size, scale)`` and ``max_abs_sum(n_clients, scale)``.

    ``rounding_slack`` is 1.0 by default, which covers both nearest and
    stochastic rounding by the protocol.
    """

    def __init__(
        self,
        *,
        noise_multiplier: float,
        clip: float,
        min_clients: int,
        dim: int,
        noise: NoiseSource | None = None,
        rounding_slack: float = 1.0,
    ) -> None:
        self.noise_multiplier = check_noise_multiplier(noise_multiplier)
        self.clip = check_clip(clip)
        if int(min_clients) < 1:
            raise PrivacyConfigError(f"min_clients must be >= 1, got {min_clients}")
        if int(dim) < 1:
            raise PrivacyConfigError(f"dim must be >= 1, got {dim}")
        if not 0 <= rounding_slack <= 1:
            raise PrivacyConfigError(f"rounding_slack must be in [0, 1], got {rounding_slack}")
        self.min_clients = int(min_clients)
        self.dim = int(dim)
        self.rounding_slack = float(rounding_slack)
        self.noise = noise if noise is not None else NoiseSource()

    def sensitivity(self, scale: float) -> tuple[float, float]:
        """``(Delta_2, Delta_1)`` in encoded units at ``scale``."""
        return quantized_sensitivity(self.clip, scale, self.dim, self.rounding_slack)

    def local_sigma(self, scale: float) -> float:
        """Each client's discrete Gaussian scale, in encoded units."""
        return self.noise_multiplier * self.sensitivity(scale)[0] / math.sqrt(self.min_clients)

    def sample(self, size: int, scale: float) -> np.ndarray:
        """One client's noise for ``size`` coordinates (int64, encoded units)."""
        if int(size) != self.dim:
            raise PrivacyConfigError(
                f"client noise was calibrated for dim {self.dim}, asked for {size} coordinates: "
                "the quantization sensitivity (and so the privacy) depends on the dimension"
            )
        return self.noise.discrete_gaussian(int(size), self.local_sigma(scale))

    def max_abs_sum(self, n_clients: int, scale: float) -> float:
        """Bound on ``|sum of n clients' noise|`` per coordinate, failing w.p. <= 2^-80 (subgaussian tail)."""
        sigma = self.local_sigma(scale)
        return sigma * math.sqrt(2.0 * max(int(n_clients), 1) * math.log(2.0 / WRAP_FAILURE_PROBABILITY))

    def rho(self, scale: float, n_clients: int | None = None) -> float:
        """zCDP ``rho`` of the decoded sum when ``n_clients`` (default: the minimum) noises survive."""
        n = self.min_clients if n_clients is None else int(n_clients)
        if n < self.min_clients:
            raise PrivacyConfigError(
                f"only {n} clients' noise survives, fewer than the {self.min_clients} the noise was calibrated for"
            )
        d2, d1 = self.sensitivity(scale)
        # rho at the minimum and at n: tau grows with n, the main term shrinks; report the worse.
        return max(ddg_zcdp_rho(self.local_sigma(scale), n, d2, d1), ddg_zcdp_rho(self.local_sigma(scale), self.min_clients, d2, d1))

    def describe(self) -> dict[str, Any]:
        return {
            "noise": "distributed discrete Gaussian",
            "noise_multiplier": self.noise_multiplier,
            "clip": self.clip,
            "min_clients": self.min_clients,
            "dim": self.dim,
            "rounding_slack": self.rounding_slack,
            "noise_source": self.noise.describe(),
        }
