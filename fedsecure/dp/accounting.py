"""Privacy accounting over rounds (or steps) with Poisson subsampling.

The mechanism accounted is the one DP-SGD and DP-FedAvg both run: each step,
every record (example or user) is included independently with probability
``q`` (Poisson subsampling), the included contributions -- each of L2 norm at
most ``C`` -- are summed, and noise is added. Two noise kinds:

* Gaussian of std ``z * C`` (``z`` the noise multiplier): accounted by a
  backend of the caller's choice (see :data:`ACCOUNTANTS`), all of them
  add/remove-one adjacency:

  - ``"rdp"``: Opacus's RDP accountant (Mironov, Talwar & Zhang 2019 for the
    subsampled Gaussian), RDP-to-(eps, delta) conversion of Balle et al. 2020;
  - ``"prv"``: Opacus's PRV accountant (Gopi, Lee & Wutschitz 2021), the
    upper end of its error interval;
  - ``"dpa-rdp"`` / ``"dpa-pld"``: Google's ``dp-accounting`` RDP and
    privacy-loss-distribution accountants (PLD is tight up to discretisation,
    which it rounds pessimistically).

* any mechanism known only through a zero-concentrated-DP bound ``rho``
  (``D_alpha <= alpha * rho`` for every order ``alpha > 1``) -- the sum of the
  clients' discrete Gaussian noise in distributed DP is one
  (:mod:`fedsecure.dp.distributed`). Without subsampling its RDP is exactly
  ``alpha * rho``; with Poisson rate ``q < 1`` the general upper bound of Zhu &
  Wang ("Poisson subsampled RDP", ICML 2019) applies, for integer ``alpha >= 2``
  (the same bound google-research/federated's ``distributed_dp`` accounting uses
  for the distributed discrete Gaussian; it also keeps the unamplified
  ``alpha * rho`` when that is smaller)::

      eps'(alpha) <= 1/(alpha-1) log[ (1-q)^(alpha-1) (alpha q - q + 1)
                       + C(alpha,2) q^2 (1-q)^(alpha-2) e^{eps(2)}
                       + 3 sum_{l=3}^{alpha} C(alpha,l) (1-q)^(alpha-l) q^l e^{(l-1) eps(l)} ]

  The factor 3 makes this bound loose when ``alpha * q`` is large (small
  epsilon over many rounds): distributed DP then needs noticeably more noise
  than the central Gaussian at the same epsilon (see
  ``benchmarks/results/dp_user_noise.json``). Only the RDP backends can
  compose it; asking PRV/PLD to raises.

RDP composes by addition over steps, then converts to (eps, delta) at the best
order. :func:`noise_multiplier_for` bisects on ``z`` and returns the smallest
``z`` found whose epsilon is *at or under* the target.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.special import gammaln

from fedsecure.dp.validation import PrivacyConfigError, check_delta, check_noise_multiplier, check_sample_rate

AccountantName = Literal["rdp", "prv", "dpa-rdp", "dpa-pld"]
ACCOUNTANTS: tuple[str, ...] = ("rdp", "prv", "dpa-rdp", "dpa-pld")

_LARGE_ORDERS = [320, 384, 448, 512, 640, 768, 1024]
#: RDP orders used by both RDP backends (Opacus's defaults extended to 1024, so
#: that small epsilons and large noise are not limited by the grid).
RDP_ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(11, 257)) + _LARGE_ORDERS)
#: integer orders, where the Zhu-Wang bound is defined
INT_ORDERS: tuple[int, ...] = tuple(list(range(2, 257)) + _LARGE_ORDERS)

#: the largest noise multiplier calibration will propose before calling a target unreachable
MAX_NOISE_MULTIPLIER = 1000.0


def _check_accountant(name: str) -> str:
    if name not in ACCOUNTANTS:
        raise PrivacyConfigError(f"unknown accountant {name!r}; choose one of {', '.join(ACCOUNTANTS)}")
    return name


def _check_steps(steps: int) -> int:
    if isinstance(steps, bool) or int(steps) != steps or steps < 0:
        raise PrivacyConfigError(f"steps must be a non-negative integer, got {steps!r}")
    return int(steps)


# -- RDP of the Poisson-subsampled zCDP mechanism ------------------------------------------------


def subsampled_zcdp_rdp(rho: float, sample_rate: float, orders: tuple[int, ...] = INT_ORDERS) -> np.ndarray:
    """RDP at integer ``orders`` of a ``rho``-zCDP mechanism under Poisson rate ``sample_rate``.

    ``q = 1``: exactly ``alpha * rho``. ``q < 1``: the smaller of ``alpha * rho``
    and the Zhu & Wang (2019) general bound, evaluated in log space (see module doc).
    """
    alphas = np.asarray(orders, dtype=np.int64)
    if np.any(alphas < 2):
        raise ValueError("the Zhu-Wang bound needs integer orders >= 2")
    if rho == 0 or sample_rate == 0:
        return np.zeros(alphas.size)
    if sample_rate >= 1.0:
        return alphas * rho
    q = sample_rate
    lq, l1q = math.log(q), math.log1p(-q)
    out = np.empty(alphas.size)
    for i, a in enumerate(alphas.tolist()):  # loop over <= 255 orders, not over data
        ls = np.arange(3, a + 1, dtype=np.float64)
        log_binom = gammaln(a + 1) - gammaln(ls + 1) - gammaln(a - ls + 1)
        terms = [
            (a - 1) * l1q + math.log(a * q - q + 1),
            math.log(a * (a - 1) / 2) + 2 * lq + (a - 2) * l1q + 2 * rho,  # eps(2) = 2 rho
        ]
        if ls.size:
            tail = math.log(3) + log_binom + (a - ls) * l1q + ls * lq + (ls - 1) * ls * rho
            terms.extend(tail.tolist())
        out[i] = float(np.logaddexp.reduce(np.asarray(terms))) / (a - 1)
    return np.minimum(out, alphas * rho)


def _rdp_to_epsilon(orders: np.ndarray, rdp: np.ndarray, delta: float) -> float:
    from opacus.accountants.analysis.rdp import get_privacy_spent

    eps, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(eps)


# -- the stepping accountant ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    kind: Literal["gaussian", "zcdp"]
    value: float  # noise multiplier (gaussian) or rho (zcdp)
    sample_rate: float
    steps: int


class PrivacyAccountant:
    """Privacy spent so far by a sequence of subsampled noisy steps.

    The engine calls :meth:`step` once per round (user-level DP-FedAvg) or a
    DP-SGD client once per optimiser step; :meth:`epsilon` answers at any time.
    Consecutive identical steps are merged, so a long run costs one entry.
    """

    def __init__(self, accountant: AccountantName = "rdp") -> None:
        self.accountant = _check_accountant(accountant)
        self._events: list[_Event] = []

    @property
    def history(self) -> tuple[tuple[str, float, float, int], ...]:
        """``(kind, noise multiplier or rho, sample rate, steps)`` per merged run of steps."""
        return tuple((e.kind, e.value, e.sample_rate, e.steps) for e in self._events)

    @property
    def steps(self) -> int:
        return sum(e.steps for e in self._events)

    def _push(self, event: _Event) -> None:
        if event.steps == 0:
            return
        last = self._events[-1] if self._events else None
        if last and (last.kind, last.value, last.sample_rate) == (event.kind, event.value, event.sample_rate):
            self._events[-1] = _Event(last.kind, last.value, last.sample_rate, last.steps + event.steps)
        else:
            self._events.append(event)

    def step(self, noise_multiplier: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` subsampled Gaussian steps with noise std ``noise_multiplier * C``."""
        z = check_noise_multiplier(noise_multiplier)
        self._push(_Event("gaussian", z, check_sample_rate(sample_rate), _check_steps(steps)))

    def step_zcdp(self, rho: float, sample_rate: float, steps: int = 1) -> None:
        """Record ``steps`` subsampled steps of a mechanism that is ``rho``-zCDP without subsampling."""
        if not (rho >= 0 and math.isfinite(rho)):
            raise PrivacyConfigError(f"rho must be finite and >= 0, got {rho}")
        if self.accountant not in ("rdp", "dpa-rdp"):
            raise PrivacyConfigError(
                f"accountant {self.accountant!r} cannot compose a subsampled zCDP mechanism "
                "(distributed discrete Gaussian); use 'rdp' or 'dpa-rdp'"
            )
        self._push(_Event("zcdp", float(rho), check_sample_rate(sample_rate), _check_steps(steps)))

    def epsilon(self, delta: float) -> float:
        """The epsilon spent so far at ``delta`` (0 before any step; inf for a noiseless step)."""
        delta = check_delta(delta)
        if not self._events:
            return 0.0
        if any(e.kind == "gaussian" and e.value == 0 and e.sample_rate > 0 for e in self._events):
            return math.inf
        if any(e.kind == "zcdp" for e in self._events):
            return self._epsilon_mixed_rdp(delta)
        return _gaussian_epsilon(self.accountant, self._events, delta)

    def _epsilon_mixed_rdp(self, delta: float) -> float:
        orders = np.asarray(INT_ORDERS, dtype=np.float64)
        rdp = np.zeros(orders.size)
        for e in self._events:
            if e.kind == "zcdp":
                rdp += e.steps * subsampled_zcdp_rdp(e.value, e.sample_rate)
            else:
                rdp += _gaussian_rdp(self.accountant, e, orders)
        return _rdp_to_epsilon(orders, rdp, delta)

    def spent(self, delta: float) -> dict[str, Any]:
        """What a result should record about the privacy spent."""
        return {"epsilon": self.epsilon(delta), "delta": delta, "accountant": self.accountant, "steps": self.steps}


def _gaussian_rdp(accountant: str, e: _Event, orders: np.ndarray) -> np.ndarray:
    if accountant == "dpa-rdp":
        from dp_accounting.rdp.rdp_privacy_accountant import _compute_rdp_poisson_subsampled_gaussian

        return e.steps * np.asarray(_compute_rdp_poisson_subsampled_gaussian(e.sample_rate, e.value, orders))
    return e.steps * _opacus_rdp_one_step(e.sample_rate, e.value, tuple(float(a) for a in orders))


@functools.lru_cache(maxsize=1024)
def _opacus_rdp_one_step(sample_rate: float, noise_multiplier: float, orders: tuple[float, ...]) -> np.ndarray:
    """Opacus's RDP of one subsampled Gaussian step at ``orders``.

    RDP composes additively, and Opacus's ``compute_rdp`` is exactly ``steps``
    times its one-step value; the one-step value costs ~0.5 s (fractional
    orders), and a report after every round asks for the same ``(q, z)`` again.
    """
    from opacus.accountants.analysis.rdp import compute_rdp

    rdp = np.asarray(compute_rdp(q=sample_rate, noise_multiplier=noise_multiplier, steps=1, orders=list(orders)))
    rdp.setflags(write=False)  # shared by every caller through the cache
    return rdp


def _gaussian_epsilon(accountant: str, events: list[_Event], delta: float) -> float:
    if accountant in ("rdp", "dpa-rdp"):
        orders = np.asarray(RDP_ORDERS)
        if accountant == "dpa-rdp":
            import dp_accounting

            acc = dp_accounting.rdp.RdpAccountant(orders=list(RDP_ORDERS))
            for e in events:
                acc.compose(
                    dp_accounting.PoissonSampledDpEvent(e.sample_rate, dp_accounting.GaussianDpEvent(e.value)),
                    e.steps,
                )
            return float(acc.get_epsilon(delta))
        rdp = sum(_gaussian_rdp(accountant, e, orders) for e in events)
        return _rdp_to_epsilon(orders, rdp, delta)
    if accountant == "prv":
        from opacus.accountants import PRVAccountant

        prv = PRVAccountant()
        prv.history = [(e.value, e.sample_rate, e.steps) for e in events]
        return float(prv.get_epsilon(delta=delta, eps_error=0.01))
    import dp_accounting

    pld = dp_accounting.pld.PLDAccountant(value_discretization_interval=1e-3)
    for e in events:
        pld.compose(dp_accounting.PoissonSampledDpEvent(e.sample_rate, dp_accounting.GaussianDpEvent(e.value)), e.steps)
    return float(pld.get_epsilon(delta))


# -- one-shot helpers ----------------------------------------------------------------------------


def epsilon(
    noise_multiplier: float,
    sample_rate: float,
    steps: int,
    delta: float,
    accountant: AccountantName = "rdp",
) -> float:
    """Epsilon after ``steps`` Poisson-subsampled Gaussian steps (std ``noise_multiplier * C``)."""
    return _epsilon_cached(
        check_noise_multiplier(noise_multiplier), check_sample_rate(sample_rate), _check_steps(steps),
        check_delta(delta), _check_accountant(accountant),
    )


@functools.lru_cache(maxsize=4096)  # calibration and reports ask the same questions repeatedly
def _epsilon_cached(noise_multiplier: float, sample_rate: float, steps: int, delta: float, accountant: str) -> float:
    acc = PrivacyAccountant(accountant)  # type: ignore[arg-type]
    acc.step(noise_multiplier, sample_rate, steps)
    return acc.epsilon(delta)


def calibrate(eps_of: Any, target_epsilon: float, *, what: str, tolerance: float = 0.005) -> float:
    """Smallest ``z`` (to relative ``tolerance``) with ``eps_of(z) <= target_epsilon``.

    ``eps_of`` must be non-increasing in ``z``. Raises :class:`PrivacyConfigError`
    when even ``MAX_NOISE_MULTIPLIER`` does not reach the target.
    """
    if not (target_epsilon > 0 and math.isfinite(target_epsilon)):
        raise PrivacyConfigError(f"target epsilon must be finite and > 0, got {target_epsilon}")
    # Bracket: eps_of(lo) > target >= eps_of(hi).
    hi = 1.0
    if eps_of(hi) > target_epsilon:
        while eps_of(hi) > target_epsilon:
            hi *= 2.0
            if hi > MAX_NOISE_MULTIPLIER:
                raise PrivacyConfigError(
                    f"target epsilon {target_epsilon} cannot be reached for {what}: even noise multiplier "
                    f"{MAX_NOISE_MULTIPLIER:g} gives epsilon {eps_of(MAX_NOISE_MULTIPLIER):.4g}; "
                    "use fewer rounds/steps, a lower sampling rate, or a larger target"
                )
        lo = hi / 2.0
    else:
        lo = 0.5
        while eps_of(lo) <= target_epsilon:
            hi, lo = lo, lo / 2.0
            if lo < 1e-4:
                return hi
    while hi - lo > tolerance * hi:
        mid = (lo + hi) / 2.0
        if eps_of(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi


def noise_multiplier_for(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: AccountantName = "rdp",
) -> float:
    """The noise multiplier whose epsilon after ``steps`` steps is at or under ``target_epsilon``."""
    check_delta(delta)
    check_sample_rate(sample_rate)
    _check_accountant(accountant)
    steps = _check_steps(steps)
    return calibrate(
        lambda z: epsilon(z, sample_rate, steps, delta, accountant),
        target_epsilon,
        what=f"{steps} steps at sampling rate {sample_rate:g}, delta {delta:g} ({accountant})",
    )
