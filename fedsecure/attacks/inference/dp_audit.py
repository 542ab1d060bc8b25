"""Empirical lower bounds on differential privacy's epsilon, from attack scores.

A DP proof gives an *upper* bound on epsilon; an audit gives a *lower* bound
that holds with stated confidence. If the lower bound exceeds the claimed
epsilon, the implementation or its accounting is wrong. Two audits:

**From a membership attack** (Jagielski, Ullman & Oprea, NeurIPS 2020;
Nasr, Song, Thakurta, Papernot & Carlini, S&P 2021). An attack that says
"member" when its score is at or above a threshold ``t`` has a false-positive
rate FPR and false-negative rate FNR. For an (epsilon, delta)-DP mechanism
every such test satisfies ``1 - delta - FNR <= e^eps FPR`` and
``1 - delta - FPR <= e^eps FNR``, so

    eps >= max( log((1 - delta - FNR) / FPR), log((1 - delta - FPR) / FNR) ).

The observed rates are estimates; :func:`empirical_epsilon` replaces them by
one-sided Clopper-Pearson upper bounds, each at level ``1 - alpha / 2``
(``alpha = 1 - confidence``), so both hold together with probability at least
``confidence`` (union bound) and the bound is valid at that confidence.
Choosing the best of many thresholds on the same data would overstate it: by
default the threshold is chosen on a random half of the examples and the bound
is computed on the other half (``selection="split"``); ``selection="bonferroni"``
instead uses all the data over a fixed grid of thresholds with the confidence
divided among them.

**One run with canaries** (Steinke, Nasr & Jagielski, "Privacy Auditing with
One (1) Training Run", NeurIPS 2023). ``m`` canaries are each included in the
training data independently with probability 1/2; the auditor scores all of
them, guesses "in" for the ``k_pos`` highest and "out" for the ``k_neg``
lowest and abstains on the rest (``r = k_pos + k_neg`` guesses), and counts
``v`` correct guesses. Under (epsilon, delta)-DP the number of correct
guesses is stochastically dominated as in their Theorem 3.1 / Proposition 5.7
(approximate DP): with ``q = e^eps / (1 + e^eps)``,

    P[W >= v] <= P[Binomial(r, q) >= v] + 2 m delta * max_{i = 1..v} P[v - i <= Binomial(r, q) < v] / i

(their Appendix D algorithm). :func:`one_run_epsilon` returns the largest
epsilon whose p-value is still below ``1 - confidence``: the run is not
(epsilon, delta)-DP for any smaller epsilon, at that confidence. Only one
training run is needed, at the cost of a looser bound than many runs give.

:func:`audit_dp_aggregator` applies the one-run audit white-box to a
user-level DP aggregator (the DP code itself, e.g.
:class:`~fedsecure.dp.user_level.CentralDPFedAvg`): canary clients whose
update is a fixed random direction of norm ``clip`` (the "gradient canaries"
of Steinke et al.'s white-box setting), Poisson-sampled at the aggregator's
rate as its accountant assumes, scored by the inner product of their direction
with the released aggregates. Without noise it separates the canaries almost
perfectly, so a broken configuration (noise switched off while the accountant
still claims an epsilon) is caught.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "clopper_pearson_upper",
    "epsilon_from_rates",
    "empirical_epsilon",
    "one_run_p_value",
    "one_run_epsilon",
    "one_run_audit",
    "audit_dp_aggregator",
]

CONFIDENCE = 0.95


def clopper_pearson_upper(k: np.ndarray | int, n: np.ndarray | int, level: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound at ``level`` on a binomial rate with ``k`` successes in ``n``.

    ``P[p <= bound] >= level`` whatever the true ``p``; ``k == n`` gives 1.
    """
    from scipy.stats import beta

    k, n = np.asarray(k, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if np.any(n <= 0) or np.any(k < 0) or np.any(k > n):
        raise ValueError("need 0 <= k <= n and n > 0")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    with np.errstate(invalid="ignore"):
        upper = beta.ppf(level, k + 1, n - k)
    return np.where(k >= n, 1.0, upper)


def epsilon_from_rates(fpr: np.ndarray | float, fnr: np.ndarray | float, delta: float = 0.0) -> np.ndarray:
    """``max(log((1 - delta - FNR) / FPR), log((1 - delta - FPR) / FNR))``, 0 where neither is positive."""
    fpr, fnr = np.asarray(fpr, dtype=np.float64), np.asarray(fnr, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.log(np.maximum(1.0 - delta - fnr, 0.0) / fpr)
        b = np.log(np.maximum(1.0 - delta - fpr, 0.0) / fnr)
    eps = np.fmax(a, b)
    return np.where(np.isnan(eps), 0.0, np.maximum(eps, 0.0))


def _threshold_counts(members: np.ndarray, nonmembers: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For "member iff score >= t": false positives (non-members at or above) and false negatives (members below)."""
    m, o = np.sort(members), np.sort(nonmembers)
    fn = np.searchsorted(m, thresholds, side="left")
    fp = o.size - np.searchsorted(o, thresholds, side="left")
    return fp, fn


def _candidates(scores: np.ndarray, limit: int) -> np.ndarray:
    u = np.unique(scores)
    if u.size > limit:
        u = np.unique(np.quantile(u, np.linspace(0, 1, limit)))
    return np.append(u, np.inf)  # the last: guess "non-member" for everyone


def _bound_at(members: np.ndarray, nonmembers: np.ndarray, thresholds: np.ndarray, delta: float,
              level: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    fp, fn = _threshold_counts(members, nonmembers, thresholds)
    fpr_hi = clopper_pearson_upper(fp, nonmembers.size, level)
    fnr_hi = clopper_pearson_upper(fn, members.size, level)
    return epsilon_from_rates(fpr_hi, fnr_hi, delta), fpr_hi, fnr_hi


def empirical_epsilon(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    delta: float = 0.0,
    confidence: float = CONFIDENCE,
    selection: str = "split",
    max_thresholds: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Lower bound on epsilon from membership scores (higher = "member"; ``labels`` 1 for members).

    ``selection="split"``: a seeded random half of each class picks the
    threshold (the one maximising the Clopper-Pearson bound on that half), the
    other half bounds epsilon at it; the bound holds at ``confidence``.
    ``selection="bonferroni"``: every one of at most ``max_thresholds``
    thresholds (score quantiles) on all the data, each at confidence
    ``1 - (1 - confidence) / T``; the maximum holds at ``confidence``.
    The seed only splits the data (an evaluation, not a secret).
    """
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    if s.shape != y.shape or s.ndim != 1:
        raise ValueError(f"scores and labels must be equal-length 1-D arrays, got {s.shape}, {y.shape}")
    if not (0 <= delta < 1) or not (0 < confidence < 1):
        raise ValueError(f"need 0 <= delta < 1 and 0 < confidence < 1, got {delta}, {confidence}")
    keep = np.isfinite(s)
    s, y = s[keep], y[keep]
    members, nonmembers = s[y], s[~y]
    alpha = 1.0 - confidence
    base = {"method": "Clopper-Pearson on FPR and FNR at one threshold (Jagielski et al. 2020, Nasr et al. 2021)",
            "confidence": confidence, "delta": delta, "selection": selection}
    if members.size < 2 or nonmembers.size < 2:
        return {**base, "epsilon_lb": 0.0, "note": "too few examples"}
    if selection == "split":
        rng = np.random.default_rng(seed)
        pm, po = rng.permutation(members.size), rng.permutation(nonmembers.size)
        m_sel, m_ev = members[pm[: members.size // 2]], members[pm[members.size // 2:]]
        o_sel, o_ev = nonmembers[po[: nonmembers.size // 2]], nonmembers[po[nonmembers.size // 2:]]
        thresholds = _candidates(np.concatenate([m_sel, o_sel]), max_thresholds)
        eps_sel, _, _ = _bound_at(m_sel, o_sel, thresholds, delta, 1 - alpha / 2)
        t = thresholds[int(np.argmax(eps_sel))]
        eps, fpr_hi, fnr_hi = _bound_at(m_ev, o_ev, np.array([t]), delta, 1 - alpha / 2)
        fp, fn = _threshold_counts(m_ev, o_ev, np.array([t]))
        n_m, n_o = m_ev.size, o_ev.size
        i = 0
    elif selection == "bonferroni":
        thresholds = _candidates(s, max_thresholds)
        level = 1 - alpha / (2 * thresholds.size)
        eps, fpr_hi, fnr_hi = _bound_at(members, nonmembers, thresholds, delta, level)
        fp, fn = _threshold_counts(members, nonmembers, thresholds)
        i = int(np.argmax(eps))
        t, n_m, n_o = thresholds[i], members.size, nonmembers.size
    else:
        raise ValueError(f"unknown selection {selection!r}; choose 'split' or 'bonferroni'")
    return {
        **base, "epsilon_lb": float(eps[i]), "threshold": float(t),
        "fpr": float(fp[i] / n_o), "fnr": float(fn[i] / n_m),
        "fpr_upper": float(fpr_hi[i]), "fnr_upper": float(fnr_hi[i]),
        "members_evaluated": int(n_m), "nonmembers_evaluated": int(n_o),
    }


def one_run_p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """Steinke et al. (2023), Appendix D: an upper bound on ``P[>= v correct of r guesses]`` under (eps, delta)-DP.

    ``m`` canaries each included with probability 1/2, ``r`` guesses (no
    abstentions counted), ``v`` correct.
    """
    from scipy.stats import binom

    if not (0 <= v <= r <= m):
        raise ValueError(f"need 0 <= v <= r <= m, got v={v}, r={r}, m={m}")
    if not (epsilon >= 0 and 0 <= delta <= 1):
        raise ValueError(f"need epsilon >= 0 and 0 <= delta <= 1, got {epsilon}, {delta}")
    q = 1.0 / (1.0 + math.exp(-epsilon)) if epsilon < 700 else 1.0  # accuracy of eps-DP randomised response
    tail = float(binom.sf(v - 1, r, q))  # P[Binomial(r, q) >= v]
    if delta == 0 or v == 0:
        return min(tail, 1.0)
    i = np.arange(1, v + 1)
    below = np.cumsum(binom.pmf(v - i, r, q))  # P[v - i <= Binomial(r, q) < v]
    return min(tail + float(np.max(below / i)) * delta * 2 * m, 1.0)


def one_run_epsilon(m: int, r: int, v: int, *, delta: float, confidence: float = CONFIDENCE,
                    tolerance: float = 1e-4) -> float:
    """The largest epsilon the one-run audit rejects at ``confidence``: ``sup{eps : p_value(eps) < 1 - confidence}``.

    The p-value grows with epsilon, so a bisection finds it; 0 when even
    epsilon = 0 is not rejected.
    """
    p = 1.0 - confidence
    if not 0 < p < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if one_run_p_value(m, r, v, 0.0, delta) >= p:
        return 0.0
    lo, hi = 0.0, 1.0
    while one_run_p_value(m, r, v, hi, delta) < p:
        lo, hi = hi, hi * 2
        if hi > 1e3:
            return math.inf
    while hi - lo > tolerance:
        mid = (lo + hi) / 2
        if one_run_p_value(m, r, v, mid, delta) < p:
            lo = mid
        else:
            hi = mid
    return lo


def one_run_audit(
    scores: np.ndarray,
    included: np.ndarray,
    *,
    delta: float,
    k_pos: int | None = None,
    k_neg: int | None = None,
    confidence: float = CONFIDENCE,
) -> dict[str, Any]:
    """The one-run audit of Steinke, Nasr & Jagielski (2023) from canary ``scores`` (higher = "in").

    ``included[j]`` says whether canary ``j`` was trained on (each drawn with
    probability 1/2 before training). The auditor guesses "in" for the
    ``k_pos`` highest scores and "out" for the ``k_neg`` lowest (default: a
    quarter of the canaries each, fixed before looking at the scores, so the
    bound needs no correction for choosing ``k``). Ties are broken by position.
    """
    s, inc = np.asarray(scores, dtype=np.float64), np.asarray(included).astype(bool)
    if s.shape != inc.shape or s.ndim != 1:
        raise ValueError(f"scores and included must be equal-length 1-D arrays, got {s.shape}, {inc.shape}")
    m = int(s.size)
    k_pos = max(1, m // 4) if k_pos is None else int(k_pos)
    k_neg = max(1, m // 4) if k_neg is None else int(k_neg)
    if m == 0 or k_pos < 0 or k_neg < 0 or k_pos + k_neg > m or k_pos + k_neg == 0:
        raise ValueError(f"need k_pos, k_neg >= 0 with k_pos + k_neg <= m = {m}")
    s = np.where(np.isfinite(s), s, -np.inf)
    order = np.argsort(-s, kind="stable")
    guess_in, guess_out = order[:k_pos], order[m - k_neg:]
    v = int(inc[guess_in].sum() + (~inc[guess_out]).sum())
    r = k_pos + k_neg
    return {
        "method": "one-run audit with canaries (Steinke, Nasr & Jagielski, NeurIPS 2023), approximate DP",
        "epsilon_lb": one_run_epsilon(m, r, v, delta=delta, confidence=confidence),
        "canaries": m, "included": int(inc.sum()), "guesses": r, "correct": v, "k_pos": k_pos, "k_neg": k_neg,
        "delta": delta, "confidence": confidence,
    }


def audit_dp_aggregator(
    aggregator: Any,
    *,
    canaries: int = 1000,
    dim: int | None = None,
    rounds: int = 10,
    background: int = 0,
    seed: int = 0,
    confidence: float = CONFIDENCE,
    k_pos: int | None = None,
    k_neg: int = 0,
) -> dict[str, Any]:
    """White-box one-run audit of a user-level DP aggregator over ``rounds`` rounds.

    ``aggregator`` is an :class:`~fedsecure.fl.aggregation.Aggregator` with
    ``sample_rate``, ``clip``, ``delta`` and ``privacy()`` (the user-level DP
    aggregators of :mod:`fedsecure.dp.user_level`). Each of ``canaries``
    clients has a unit direction ``u_j`` in ``dim`` dimensions (default
    ``dim = canaries``; with ``dim >= canaries`` distinct coordinate axes, the
    "Dirac canaries" of Steinke et al., else random directions) and is
    included with probability 1/2; every round each included canary is
    sampled with probability ``sample_rate`` and sends ``clip * u_j``, and
    ``background`` non-canary clients (at least one when no canary is
    sampled, so that a round exists) send zeros. The score of canary ``j`` is
    ``sum_r <u_j, released_r>``. Returns :func:`one_run_audit`'s record plus
    ``claimed_epsilon`` (the aggregator's accountant after the rounds). The
    auditor guesses "in" for the ``k_pos`` (default a quarter of the
    canaries) highest scores and, by default, nothing "out": an included
    canary that was never sampled looks exactly like an excluded one.
    Seeded (``seed``): the audit's draws are an evaluation, not a secret; the
    DP noise stays the aggregator's own.
    """
    from fedsecure.fl.aggregation import ClientUpdate

    rng = np.random.default_rng([seed, 0xA0D1])
    dim = canaries if dim is None else int(dim)
    if dim >= canaries:  # Dirac canaries: orthogonal directions, no cross-talk between canaries
        dirs = np.zeros((canaries, dim))
        dirs[np.arange(canaries), rng.permutation(dim)[:canaries]] = 1.0
    else:
        dirs = rng.standard_normal((canaries, dim))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    included = rng.random(canaries) < 0.5
    members = np.flatnonzero(included)
    q, clip = float(aggregator.sample_rate), float(aggregator.clip)
    scores = np.zeros(canaries)
    for r in range(1, rounds + 1):
        sampled = members[rng.random(members.size) < q]
        updates = [ClientUpdate(int(j), clip * dirs[j], 1.0) for j in sampled]
        n_bg = max(background, 0 if updates else 1)
        updates += [ClientUpdate(canaries + b, np.zeros(dim), 1.0) for b in range(n_bg)]
        result = aggregator.aggregate(updates, round_index=r)
        scores += dirs @ np.asarray(result.delta, dtype=np.float64)
    audit = one_run_audit(scores, included, delta=float(aggregator.delta), confidence=confidence,
                          k_pos=k_pos, k_neg=k_neg)
    audit.update(method=audit["method"] + ", white-box gradient canaries through the aggregator",
                 claimed_epsilon=float(aggregator.privacy()["epsilon"]), rounds=rounds, dim=dim, sample_rate=q)
    return audit
