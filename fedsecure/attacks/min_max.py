"""Min-max and min-sum (Shejwalkar and Houmansadr, NDSS 2021), the aggregation-rule-agnostic versions.

All ``m`` colluding clients send

    x = mu + gamma * p

with ``mu`` the mean of the reference updates ``g_1..g_r`` (the honest
updates when omniscient, the paper's full-knowledge setting; else the
malicious clients' own benign updates) and ``p`` a perturbation that points
away from the honest direction: ``"std"`` (inverse standard deviation,
``-sigma``, the default of the authors' code), ``"unit-vector"``
(``-mu / ||mu||``) or ``"sign"`` (``-sign(mu)``). ``gamma`` is the largest
value such that

* **min-max**: ``max_i ||x - g_i||^2 <= max_{i,j} ||g_i - g_j||^2`` -- the
  crafted update is no farther from any reference update than the two
  farthest reference updates are from each other;
* **min-sum**: ``sum_i ||x - g_i||^2 <= min_k sum_i ||g_k - g_i||^2`` -- its
  total squared distance to the reference updates is no larger than that of
  any reference update (the paper's "any benign gradient"; the authors' code
  takes the minimum score).

Both constraints hold at ``gamma = 0`` (the mean is inside the set's spread)
and the left-hand sides are convex quadratics in ``gamma``, so the feasible
``gamma`` form an interval ``[0, gamma*]``. ``gamma*`` is found by the
paper's bisection (start at ``gamma_init = 10``, halve the step, stop when
it is below ``tolerance``), with the upper end of the bracket doubled first
while it is still feasible, so ``gamma`` is not capped at ``2 gamma_init``
as in the authors' loop. Each step costs ``O(r)``: with ``a_i = mu - g_i``,
``||x - g_i||^2 = ||a_i||^2 + 2 gamma a_i.p + gamma^2 ||p||^2``, and the
scalars are computed once (``O(r d)``; the pairwise distances ``O(r^2 d)``
through the Gram matrix of the centred updates).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .poisoning import AttackConfigError, ModelPoisoning
from .reference import as_updates, coordinate_std, flag, positive_float, reference_updates, repeat_rows

PERTURBATIONS = ("std", "unit-vector", "sign")


def perturbation(kind: str, ref: np.ndarray) -> np.ndarray:
    """The direction ``p`` of the attack (pointing away from the reference mean's direction)."""
    mu = ref.mean(axis=0)
    if kind == "std":
        return -coordinate_std(ref)
    if kind == "unit-vector":
        norm = float(np.linalg.norm(mu))
        return -mu / norm if norm > 0 else np.zeros_like(mu)
    if kind == "sign":
        return -np.sign(mu)
    raise AttackConfigError(f"unknown perturbation {kind!r}; choose one of {', '.join(PERTURBATIONS)}")


def pairwise_sq_distances(ref: np.ndarray) -> np.ndarray:
    """``r x r`` squared Euclidean distances, from the Gram matrix of the centred rows (clipped at 0)."""
    a = ref - ref.mean(axis=0)
    gram = a @ a.T
    sq = np.diag(gram)
    return np.maximum(sq[:, None] + sq[None, :] - 2.0 * gram, 0.0)


class _AgrAgnostic(ModelPoisoning):
    """Shared search: ``mu + gamma p`` with the largest ``gamma`` that keeps :meth:`_within` true."""

    def __init__(self, perturbation: str = "std", *, omniscient: bool = True, tolerance: float = 1e-5,
                 gamma_init: float = 10.0) -> None:
        if perturbation not in PERTURBATIONS:
            raise AttackConfigError(f"{self.name}: unknown perturbation {perturbation!r}; "
                                    f"choose one of {', '.join(PERTURBATIONS)}")
        self.perturbation = perturbation
        self.omniscient = flag(self.name, "omniscient", omniscient)
        self.tolerance = positive_float(self.name, "tolerance", tolerance)
        self.gamma_init = positive_float(self.name, "gamma_init", gamma_init)

    def _threshold(self, d2: np.ndarray) -> float:
        raise NotImplementedError

    def _within(self, dist: np.ndarray, threshold: float) -> bool:
        raise NotImplementedError

    def search(self, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """``(mu, p, gamma)`` for the reference updates ``ref`` (``r x d``)."""
        mu = ref.mean(axis=0)
        p = perturbation(self.perturbation, ref)
        pp = float(p @ p)
        if pp == 0.0:  # no direction to move in (one reference update, or a zero mean)
            return mu, p, 0.0
        threshold = self._threshold(pairwise_sq_distances(ref))
        a = mu - ref
        aa = np.einsum("ij,ij->i", a, a)
        ap = a @ p

        def feasible(gamma: float) -> bool:
            return self._within(aa + 2.0 * gamma * ap + gamma * gamma * pp, threshold)

        lo, hi = 0.0, self.gamma_init
        while feasible(hi):  # ends: the distances grow like gamma^2 ||p||^2
            lo, hi = hi, 2.0 * hi
            if not np.isfinite(hi):
                raise AttackConfigError(f"{self.name}: no finite bound on gamma (perturbation of norm {pp ** 0.5:g})")
        while hi - lo > self.tolerance:
            mid = 0.5 * (lo + hi)
            if not lo < mid < hi:  # float spacing at this magnitude is coarser than the tolerance
                break
            if feasible(mid):
                lo = mid
            else:
                hi = mid
        return mu, p, lo

    def craft(self, benign: np.ndarray, honest: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        b, h = as_updates(self.name, benign, honest)
        mu, p, gamma = self.search(reference_updates(self.omniscient, b, h))
        return repeat_rows(mu + gamma * p, b.shape[0])

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "perturbation": self.perturbation, "tolerance": self.tolerance,
                "gamma_init": self.gamma_init}


class MinMax(_AgrAgnostic):
    """``max_i ||x - g_i||^2`` stays within the largest pairwise squared distance of the reference updates."""

    name = "min-max"

    def _threshold(self, d2: np.ndarray) -> float:
        return float(d2.max())

    def _within(self, dist: np.ndarray, threshold: float) -> bool:
        return bool(dist.max() <= threshold)


class MinSum(_AgrAgnostic):
    """``sum_i ||x - g_i||^2`` stays within the smallest such sum of any reference update."""

    name = "min-sum"

    def _threshold(self, d2: np.ndarray) -> float:
        return float(d2.sum(axis=1).min())

    def _within(self, dist: np.ndarray, threshold: float) -> bool:
        return bool(dist.sum() <= threshold)
