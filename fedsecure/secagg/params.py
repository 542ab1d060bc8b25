"""Choosing the neighbour degree k and the threshold t per threat model, and refusing unsafe choices.

Model (Bonawitz et al. 2017; Bell et al. 2020). Each client independently
fails to respond (drops out at some stage, or is corrupt and withholds) with
probability at most ``q = min(1, dropout + corrupt)``; a fraction ``gamma =
corrupt`` of the clients colludes with the server. A client is *bad* when it
dropped or is corrupt; the *honest survivors* are the others.

Threat models (``threat_model``):

* ``"semi-honest"`` -- the server follows the protocol (it asks every client
  for the share the protocol prescribes, and reports dropouts truthfully) but
  pools what it sees with the corrupt clients. An honest client reveals one
  share per neighbour, so the server holds ``t`` shares of both secrets of an
  honest client only if ``t`` of its neighbours are corrupt: ``t > (corrupt
  neighbours)`` suffices (Bonawitz et al. Thm 6.2 with ``t > |C|``; Bell et al.
  semi-honest setting).
* ``"active"`` -- a malicious server may ask different neighbours for
  different shares of the same client (claiming it both dropped and survived).
  With ``c`` corrupt neighbours, ``t`` shares of both secrets exist among the
  ``k`` neighbours only if ``2t <= k + c``; this mode needs ``2t > k + c``
  (plus the signatures and the consistency check of the protocol).

Bounds (all union bounds, so conservative):

* **Round failure.** The server needs ``t`` shares from the neighbours of
  every client it must unmask:

      P[round fails] <= n * P[Bin(k, q) > k - t].

* **Privacy failure = collusion + disconnection.**

  - Collusion: semi-honest ``n * P[Bin(k, gamma) >= t]``; active
    ``n * P[Bin(k, gamma) >= 2t - k]``. (Complete graph: the corrupt count is
    the fixed ``c = ceil(gamma n)`` and the conditions ``t > c`` / ``2t > k + c``
    are deterministic.)
  - Disconnection: the pairwise masks between honest survivors cancel only
    in the sum over a connected component of the honest-survivor graph, so the
    server learns the sum of each component (Choi et al. 2020 give
    connectivity as the necessary and sufficient condition). Any split is
    counted as a failure -- including large ones, which is stricter than Bell
    et al.'s "summed with at least alpha n others" -- and so is a single
    isolated survivor. In the random Harary graph H(n, k) (clients on a ring in
    a random order, each joined to the ``h = k/2`` nearest on each side), two
    honest survivors at ring distance ``<= h`` are adjacent, so the honest
    survivors are disconnected iff at least two maximal runs of ``>= h``
    consecutive bad clients exist on the ring. Two such runs contain two
    disjoint windows of ``h`` consecutive bad clients; there are at most
    ``C(n, 2)`` such pairs of windows and each pair is all bad with
    probability at most ``q^(2h)`` (dropouts are independent; corrupt
    positions are a uniformly random subset, and ``P[A subset of C] <=
    gamma^|A|`` for it), hence

        P[honest survivors disconnected] <= C(n, 2) * q^k.

    The complete graph never disconnects.

  The privacy bound is the sum of both terms and must meet
  ``privacy_target`` (default 2^-40).

:func:`choose_params` picks the smallest even ``k`` (up to the complete
graph) for which some ``t`` meets both targets. Semi-honest: the *largest*
such ``t`` (spare reliability is turned into tolerance of colluding clients
beyond the assumed fraction); active: the smallest ``t`` with ``2t > k``
meeting the privacy target (as much reliability as possible). User-given
``k``/``t`` are checked against the same bounds and refused with the reason.
When even the complete graph misses the *reliability* target (small ``n``),
it returns the complete graph with a warning and the true bound; the
*privacy* target is never relaxed.

Two floors hold whatever ``corrupt_fraction`` says:

* ``min_colluders`` (default 1): the round must withstand at least this many
  colluding neighbours of every client, so ``t > min_colluders`` (semi-honest)
  and ``2t > k + min_colluders`` (active). With the default, ``t = 1`` (a
  share *is* the secret) is never chosen nor accepted, and two clients alone
  (where either learns the other's input from the sum) are refused.
* Graph draws (active, sparse graph): the graph seed is drawn by commit and
  reveal among the clients (:mod:`fedsecure.secagg.keys`), and a malicious
  server may force up to ``GRAPH_DRAWS`` draws in one round by claiming that
  clients failed to reveal. It then keeps the draw it likes best, so both
  privacy terms are multiplied by ``GRAPH_DRAWS`` (a union bound over draws).

Clients evaluate the same bounds from their own policy
(:class:`fedsecure.secagg.policy.ClientPolicy`) and refuse a round whose
``(k, t)`` misses their target: the server's choice is never taken on its word.
"""

from __future__ import annotations

import functools
import math
import warnings

import numpy as np
from dataclasses import asdict, dataclass

from .errors import ConfigurationError

DEFAULT_FAILURE_TARGET = 1e-6
DEFAULT_PRIVACY_TARGET = 2.0**-40
THREAT_MODELS = ("semi-honest", "active")
DEFAULT_MIN_COLLUDERS = 1
#: graph seeds one round may draw (commit-and-reveal attempts; see keys.seed_chain)
GRAPH_DRAWS = 3


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


def disconnection_bound(n: int, k: int, bad: float) -> float:
    """Bound on P[the honest survivors of H(n, k) are disconnected]: ``C(n, 2) * bad^k`` (module docstring)."""
    if k >= n - 1 or bad <= 0:
        return 0.0
    if bad >= 1:
        return 1.0
    return min(1.0, math.exp(math.log(n * (n - 1) / 2) + k * math.log(bad)))


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
    privacy_failure_probability: float  # bound on P[the server learns more than the sum]
    failure_target: float = DEFAULT_FAILURE_TARGET
    privacy_target: float = DEFAULT_PRIVACY_TARGET
    threat_model: str = "semi-honest"
    collusion_probability: float = 0.0  # privacy term: some honest client's secrets rebuildable
    disconnection_probability: float = 0.0  # privacy term: honest survivors split into components
    min_colluders: int = DEFAULT_MIN_COLLUDERS  # colluding neighbours tolerated whatever corrupt_fraction says

    def as_dict(self) -> dict:
        return asdict(self)


def _check_threat_model(threat_model: str) -> None:
    if threat_model not in THREAT_MODELS:
        raise ConfigurationError(f"threat_model must be one of {THREAT_MODELS}, got {threat_model!r}")


@functools.lru_cache(maxsize=4096)  # pure, and every client recomputes it on each public fact of a round
def _bounds(n: int, graph: str, k: int, t: int, dropout: float, corrupt: float, tm: str,
            min_colluders: int = DEFAULT_MIN_COLLUDERS) -> tuple[float, float, float]:
    """(round failure, collusion, disconnection) bounds of (k, t)."""
    q = min(1.0, dropout + corrupt)
    fail = min(1.0, n * binom_tail(k, q, k - t + 1))
    if graph == "complete":
        c = max(math.ceil(corrupt * n - 1e-12), min_colluders)
        exposed = 2 * t <= k + c if tm == "active" else t <= c
        return fail, (1.0 if exposed else 0.0), 0.0
    need = 2 * t - k if tm == "active" else t
    draws = GRAPH_DRAWS if tm == "active" else 1
    collusion = min(1.0, draws * n * binom_tail(k, corrupt, need)) if need > min_colluders else 1.0
    return fail, collusion, min(1.0, draws * disconnection_bound(n, k, q))


def _make(n, graph, k, t, dropout, corrupt, tm, failure_target=DEFAULT_FAILURE_TARGET,
          privacy_target=DEFAULT_PRIVACY_TARGET, min_colluders=DEFAULT_MIN_COLLUDERS) -> SecAggParams:
    fail, col, dis = _bounds(n, graph, k, t, dropout, corrupt, tm, min_colluders)
    return SecAggParams(n, graph, k, t, dropout, corrupt, fail, min(1.0, col + dis), failure_target, privacy_target,
                        tm, col, dis, min_colluders)


def evaluate(
    n: int, k: int, t: int, *, graph: str, dropout_rate: float, corrupt_fraction: float = 0.0,
    threat_model: str = "semi-honest", min_colluders: int = DEFAULT_MIN_COLLUDERS,
) -> SecAggParams:
    """The failure probabilities of a given (k, t), without judging them."""
    _check_threat_model(threat_model)
    return _make(n, graph, k, t, dropout_rate, corrupt_fraction, threat_model, min_colluders=min_colluders)


def _t_floor(k: int, tm: str, min_colluders: int) -> int:
    # Active: 2t > k + min_colluders; semi-honest: t > min_colluders.
    return (k + min_colluders) // 2 + 1 if tm == "active" else min_colluders + 1


def _min_private_t(n: int, graph: str, k: int, dropout: float, corrupt: float, target: float, tm: str,
                   min_colluders: int) -> int | None:
    """Smallest admissible t whose privacy bound meets ``target`` (the bound falls as t grows: bisect)."""
    def private(t: int) -> bool:
        _, col, dis = _bounds(n, graph, k, t, dropout, corrupt, tm, min_colluders)
        return col + dis <= target

    lo, hi = _t_floor(k, tm, min_colluders), k
    if lo > hi:
        return None
    if not private(hi):
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if private(mid):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _max_reliable_t(n: int, graph: str, k: int, dropout: float, corrupt: float, target: float) -> int | None:
    """Largest t whose round-failure bound meets ``target`` (the bound grows with t: bisect)."""
    def reliable(t: int) -> bool:
        return _bounds(n, graph, k, t, dropout, corrupt, "semi-honest")[0] <= target

    lo, hi = 1, k
    if not reliable(lo):
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if reliable(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _pick_t(n, graph, k, dropout, corrupt, failure_target, privacy_target, tm, min_colluders) -> int | None:
    """The policy's t for degree k (see module docstring), or None if no t meets both targets."""
    t_priv = _min_private_t(n, graph, k, dropout, corrupt, privacy_target, tm, min_colluders)
    if t_priv is None:
        return None
    if tm == "active":
        reliable = _bounds(n, graph, k, t_priv, dropout, corrupt, tm, min_colluders)[0] <= failure_target
        return t_priv if reliable else None
    t_rel = _max_reliable_t(n, graph, k, dropout, corrupt, failure_target)
    return t_rel if t_rel is not None and t_rel >= t_priv else None


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
    threat_model: str = "semi-honest",
    min_colluders: int = DEFAULT_MIN_COLLUDERS,
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
    _check_threat_model(threat_model)
    if not (isinstance(min_colluders, int) and min_colluders >= 0):
        raise ConfigurationError(f"min_colluders must be an integer >= 0, got {min_colluders!r}")
    tm, mc = threat_model, min_colluders

    def finish(kk: int, tt: int, g: str) -> SecAggParams:
        return _make(n, g, kk, tt, dropout_rate, corrupt_fraction, tm, failure_target, privacy_target, mc)

    if k is not None or t is not None:
        g = graph
        kk = n - 1 if (g == "complete" or (k is not None and k >= n - 1)) else k
        if kk is None:
            raise ConfigurationError("a sparse graph needs k when t is given")
        if kk >= n - 1:
            g, kk = "complete", n - 1
        elif kk < 2 or kk % 2:
            raise ConfigurationError(f"sparse degree k must be even and at least 2, got {kk}")
        tt = t
        if tt is None:
            tt = _pick_t(n, g, kk, dropout_rate, corrupt_fraction, failure_target, privacy_target, tm, mc)
            if tt is None:  # no t meets both: report the privacy-safe one's shortfall below
                tt = _min_private_t(n, g, kk, dropout_rate, corrupt_fraction, privacy_target, tm, mc)
        if tt is None:
            raise ConfigurationError(
                f"no threshold t <= k = {kk} keeps the privacy failure probability below {privacy_target:.3g} "
                f"({tm}, corrupt fraction {corrupt_fraction}, dropout {dropout_rate}); raise k"
            )
        if not (1 <= tt <= kk):
            raise ConfigurationError(f"threshold t must be in [1, k] = [1, {kk}], got {tt}")
        p = finish(kk, tt, g)
        if tt < _t_floor(kk, tm, mc):
            if tm == "active":
                raise ConfigurationError(
                    f"t = {tt} needs 2t > k + {mc} = {kk + mc}: against an active server, which can ask some neighbours "
                    "for the self-mask share and others for the masking-key share, a client's input could be unmasked "
                    f"with {mc} colluding neighbour(s)"
                )
            raise ConfigurationError(
                f"t = {tt} <= {mc}: {mc} colluding neighbour(s) would hold t shares of a client's secrets"
                + (" (with t = 1 a share is the secret itself)" if tt == 1 else "")
            )
        if p.privacy_failure_probability > privacy_target:
            if p.collusion_probability >= p.disconnection_probability:
                raise ConfigurationError(
                    f"(k={kk}, t={tt}) exposes an input with probability up to {p.collusion_probability:.3g} "
                    f"> target {privacy_target:.3g} at corrupt fraction {corrupt_fraction} ({tm} server): "
                    "raise t (or k)"
                )
            raise ConfigurationError(
                f"(k={kk}, t={tt}): the honest survivors split into separately summed groups with probability up to "
                f"{p.disconnection_probability:.3g} > target {privacy_target:.3g} at dropout {dropout_rate} and "
                f"corrupt fraction {corrupt_fraction}: raise k"
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
            tt = _pick_t(n, "sparse", kk, dropout_rate, corrupt_fraction, failure_target, privacy_target, tm, mc)
            if tt is not None:
                return finish(kk, tt, "sparse")
    kk = n - 1
    tt = _pick_t(n, "complete", kk, dropout_rate, corrupt_fraction, failure_target, privacy_target, tm, mc)
    if tt is None:
        tt = _min_private_t(n, "complete", kk, dropout_rate, corrupt_fraction, privacy_target, tm, mc)
    if tt is None:
        raise ConfigurationError(
            f"no threshold keeps the privacy failure probability below {privacy_target:.3g} for n={n} "
            f"with corrupt fraction {corrupt_fraction} ({tm} server); fewer corrupt clients must be assumed"
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
