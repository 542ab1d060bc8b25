"""Choosing the neighbour degree k and the threshold t, and refusing unsafe choices.

Model (Bell et al. 2020, Bonawitz et al. 2017). Each of a client's ``k``
neighbours independently fails to respond (drops out, or is corrupt and
withholds) with probability ``q = min(1, dropout + corrupt)``, and is corrupt
(colluding with the server) with probability ``gamma = corrupt``.

* **Round failure.** The server needs ``t`` shares from the neighbours of
  every client it must unmask. By the union bound over the ``n`` clients,

      P[round fails] <= n * P[Bin(k, q) > k - t].

* **Privacy failure.** An honest client reveals, for each neighbour, at most
  one of its two shares (self-mask seed, or masking key). A server that sees
  ``c`` corrupt neighbours' shares of client ``u`` plus ``h = k - c`` honest
  ones can hold ``t`` shares of both of ``u``'s secrets only if
  ``2t <= k + c``. Hence

      P[privacy fails] <= n * P[Bin(k, gamma) >= 2t - k].

  A client whose surviving neighbours are fewer than ``t`` refuses to unmask
  (the round aborts rather than sum its input with too few others), so a
  client isolated among dropped neighbours is a round failure, not a leak.
  (Disconnection of the honest surviving subgraph into large groups is not
  bounded here; see SECURITY.md.)

For the complete graph the corrupt count is the fixed ``ceil(gamma * n)``,
not a random variable, and the privacy condition is the deterministic
``2t > k + c``.

:func:`choose_params` picks the smallest even ``k`` (up to the complete graph)
and, for it, the smallest ``t`` meeting both targets; user-given ``k``/``t``
are checked against the same bounds and refused with the reason. When even
the complete graph misses the *reliability* target (small ``n``), it returns
the complete graph with a warning and the true bound; the *privacy* target is
never relaxed.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from dataclasses import asdict, dataclass

from .errors import ConfigurationError

DEFAULT_FAILURE_TARGET = 1e-6
DEFAULT_PRIVACY_TARGET = 2.0**-40


def _log_factorials(k: int) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, k + 1, dtype=np.float64)))])


def binom_tail(k: int, p: float, a: int) -> float:
    """P[Bin(k, p) >= a], summed in log space (exact up to float rounding)."""
    if a <= 0:
        return 1.0
    if a > k or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    lf = _log_factorials(k)
    j = np.arange(a, k + 1)
    logs = lf[k] - lf[j] - lf[k - j] + j * math.log(p) + (k - j) * math.log1p(-p)
    m = float(logs.max())
    return min(1.0, math.exp(m) * float(np.exp(logs - m).sum()))


@dataclass(frozen=True)
class SecAggParams:
    """The parameters of one round and the failure probabilities they guarantee."""

    n: int
    graph: str  # "complete" or "sparse"
    k: int  # neighbours per client
    t: int  # Shamir threshold
    dropout_rate: float
    corrupt_fraction: float
    failure_probability: float  # bound on P[round aborts]
    privacy_failure_probability: float  # bound on P[some honest input exposed]
    failure_target: float = DEFAULT_FAILURE_TARGET
    privacy_target: float = DEFAULT_PRIVACY_TARGET

    def as_dict(self) -> dict:
        return asdict(self)


def _bounds(n: int, graph: str, k: int, t: int, dropout: float, corrupt: float) -> tuple[float, float]:
    q = min(1.0, dropout + corrupt)
    fail = min(1.0, n * binom_tail(k, q, k - t + 1))
    if graph == "complete":
        c = math.ceil(corrupt * n - 1e-12)
        priv = 1.0 if 2 * t <= k + c else 0.0
    else:
        priv = min(1.0, n * binom_tail(k, corrupt, 2 * t - k))
    return fail, priv


def evaluate(n: int, k: int, t: int, *, graph: str, dropout_rate: float, corrupt_fraction: float = 0.0) -> SecAggParams:
    """The failure probabilities of a given (k, t), without judging them."""
    fail, priv = _bounds(n, graph, k, t, dropout_rate, corrupt_fraction)
    return SecAggParams(n, graph, k, t, dropout_rate, corrupt_fraction, fail, priv)


def _min_private_t(n: int, graph: str, k: int, dropout: float, corrupt: float, target: float) -> int | None:
    """Smallest t > k/2 whose privacy bound meets ``target`` (the bound falls as t grows: bisect)."""
    lo, hi = k // 2 + 1, k  # 2t > k is necessary even with no corrupt client
    if _bounds(n, graph, k, hi, dropout, corrupt)[1] > target:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if _bounds(n, graph, k, mid, dropout, corrupt)[1] <= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def choose_params(
    n: int,
    *,
    dropout_rate: float = 0.1,
    corrupt_fraction: float = 0.0,
    graph: str = "sparse",
    k: int | None = None,
    t: int | None = None,
    failure_target: float = DEFAULT_FAILURE_TARGET,
    privacy_target: float = DEFAULT_PRIVACY_TARGET,
) -> SecAggParams:
    """Pick (or check) ``k`` and ``t`` for ``n`` clients; raise :class:`ConfigurationError` if impossible or unsafe."""
    if n < 2:
        raise ConfigurationError(f"secure aggregation needs at least 2 clients, got {n}")
    if not (0.0 <= dropout_rate < 1.0) or not (0.0 <= corrupt_fraction < 0.5):
        raise ConfigurationError(
            f"dropout_rate must be in [0, 1) and corrupt_fraction in [0, 0.5); got {dropout_rate}, {corrupt_fraction}"
        )
    if graph not in ("complete", "sparse"):
        raise ConfigurationError(f"graph must be 'complete' or 'sparse', got {graph!r}")

    def finish(kk: int, tt: int, g: str) -> SecAggParams:
        fail, priv = _bounds(n, g, kk, tt, dropout_rate, corrupt_fraction)
        return SecAggParams(n, g, kk, tt, dropout_rate, corrupt_fraction, fail, priv, failure_target, privacy_target)

    if k is not None or t is not None:
        g = graph
        kk = n - 1 if (g == "complete" or (k is not None and k >= n - 1)) else k
        if kk is None:
            raise ConfigurationError("a sparse graph needs k when t is given")
        if kk >= n - 1:
            g, kk = "complete", n - 1
        elif kk < 2 or kk % 2:
            raise ConfigurationError(f"sparse degree k must be even and at least 2, got {kk}")
        tt = t if t is not None else _min_private_t(n, g, kk, dropout_rate, corrupt_fraction, privacy_target)
        if tt is None:
            raise ConfigurationError(
                f"no threshold t <= k = {kk} keeps the privacy failure probability below {privacy_target:.3g} "
                f"with corrupt fraction {corrupt_fraction}; raise k"
            )
        if not (1 <= tt <= kk):
            raise ConfigurationError(f"threshold t must be in [1, k] = [1, {kk}], got {tt}")
        p = finish(kk, tt, g)
        if 2 * tt <= kk:
            raise ConfigurationError(
                f"t = {tt} <= k/2 = {kk / 2}: a server could collect t shares of both the self-mask seed and the "
                "masking key of a client from its neighbours and unmask its input; use t > k/2"
            )
        if p.privacy_failure_probability > privacy_target:
            raise ConfigurationError(
                f"(k={kk}, t={tt}) exposes an input with probability up to {p.privacy_failure_probability:.3g} "
                f"> target {privacy_target:.3g} at corrupt fraction {corrupt_fraction}: raise t (or k)"
            )
        if p.failure_probability > failure_target:
            raise ConfigurationError(
                f"(k={kk}, t={tt}) aborts a round with probability up to {p.failure_probability:.3g} "
                f"> target {failure_target:.3g} at dropout {dropout_rate}: raise k or lower t"
            )
        return p

    if graph == "sparse":
        # Beyond k = n/2 a sparse graph saves little over the complete one: stop searching there.
        for kk in range(2, min(n - 1, n // 2 + 2), 2):
            tt = _min_private_t(n, "sparse", kk, dropout_rate, corrupt_fraction, privacy_target)
            if tt is None:
                continue
            p = finish(kk, tt, "sparse")
            if p.failure_probability <= failure_target:
                return p
    kk = n - 1
    tt = _min_private_t(n, "complete", kk, dropout_rate, corrupt_fraction, privacy_target)
    if tt is None:
        raise ConfigurationError(
            f"no threshold keeps the privacy failure probability below {privacy_target:.3g} for n={n} "
            f"with corrupt fraction {corrupt_fraction}; fewer corrupt clients must be assumed"
        )
    p = finish(kk, tt, "complete")
    if p.failure_probability > failure_target:
        # Too few clients for the reliability target: privacy is never traded, reliability is
        # reported honestly (a round that cannot finish aborts; it never returns a wrong sum).
        warnings.warn(
            f"n={n} at dropout {dropout_rate}: even the complete graph with t={tt} aborts a round with "
            f"probability up to {p.failure_probability:.3g} > target {failure_target:.3g}",
            stacklevel=2,
        )
    return p
