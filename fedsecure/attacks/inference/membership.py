"""Model-level membership inference against a trained federated recommender.

Two questions, each answered by attacks that output a score per candidate
(higher = "member"), evaluated by ROC AUC and by TPR at low FPR (the
convention of Carlini et al. 2022: an attack is judged by how many members it
finds at a false-positive rate of 0.1% or 1%, not by average accuracy):

* **interaction level** -- "was (user, item) used in training?" Candidates
  are the real interactions outside the evaluation's test set; each model
  (target or shadow) trains on a random half of each user's candidates, so
  non-members come from the same users and distribution as members. The
  statistic is the user's *personalised* model's score for the pair (the
  user's private embedding plus the shared parameters: what a cross-device
  user's own model says): the logit for implicit-feedback models, minus the
  squared error for rating models.
* **user level** -- "did this user take part?" Each model trains on a random
  half of the users. The attacker holds the released shared parameters only
  and the candidate's data: it fits a fresh private embedding for the
  candidate against the frozen shared parameters (a few Adam steps on the
  model's own loss, :func:`fit_user_losses`) and uses minus the fitted mean
  loss: the shared parameters fit their own members' data better.

Attacks (``ATTACKS``):

* ``loss`` -- the loss/score threshold attack (Yeom, Giacomelli, Fredrikson &
  Jha, CSF 2018): the statistic itself.
* ``calibrated`` -- difficulty calibration (Watson, Guo, Cormode &
  Sablayrolles, ICLR 2022): the statistic minus its mean under the reference
  (shadow) models that did not train on the candidate, so intrinsically easy
  items and users no longer look like members.
* ``lira`` / ``lira-offline`` -- the likelihood-ratio attack (Carlini, Chien,
  Nasr, Song, Terzis & Tramer, S&P 2022). Shadow models are trained by the
  same federated pipeline (:class:`~fedsecure.experiment.Experiment` with the
  same :class:`~fedsecure.experiment.RunConfig`, a different seed) on random
  halves; per candidate, Gaussians are fitted to its statistic under the
  shadows that trained on it ("in") and those that did not ("out"). Online:
  ``log N(s; mu_in, sd_in^2) - log N(s; mu_out, sd_out^2)``; offline (no
  shadow ever trains on the target's candidates, only "out"): the one-sided
  ``log Phi((s - mu_out) / sd_out)``. With fewer than
  ``PER_EXAMPLE_VARIANCE_MIN`` shadows per side the variances are pooled over
  all candidates, as the paper advises for few shadows.

Every attack is reported with ROC AUC (and a bootstrap 95% interval over the
candidates, stratified by class), TPR at 0.1% and 1% FPR (with intervals),
the ROC curve on a log-spaced FPR grid, and an empirical epsilon lower bound
(:func:`fedsecure.attacks.inference.dp_audit.empirical_epsilon`).

:func:`run_membership_audit` runs the whole thing from a ``RunConfig``;
:func:`write_outputs` writes its JSON, CSV and log-log ROC plot.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from fedsecure.recsys.data import Interactions
from fedsecure.recsys.models import MatrixFactorization, Recommender, fit_private

__all__ = [
    "ATTACKS",
    "LEVELS",
    "roc_curve",
    "roc_auc",
    "tpr_at_fpr",
    "attack_metrics",
    "interaction_statistic",
    "fit_user_losses",
    "attack_scores",
    "run_membership_audit",
    "plot_roc",
    "write_outputs",
]

LEVELS = ("interaction", "user")
ATTACKS = ("loss", "calibrated", "lira", "lira-offline")
FPR_POINTS = (0.001, 0.01)
#: below this many "in" (or "out") shadows per candidate, LiRA pools the variance over candidates
PER_EXAMPLE_VARIANCE_MIN = 16
#: the log-spaced FPR grid the ROC curve is reported on (for log-log plots)
ROC_GRID = np.unique(np.concatenate([np.logspace(-5, 0, 101), [0.0]]))


# ---------------------------------------------------------------------------- metrics


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FPR and TPR of "member iff score >= t" over every distinct threshold (from (0, 0) to (1, 1))."""
    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    order = np.argsort(-s, kind="stable")
    s, y = s[order], y[order]
    last = np.r_[s[1:] != s[:-1], True]  # the last row of each run of tied scores
    tp, fp = np.cumsum(y)[last], np.cumsum(~y)[last]
    p, n = max(int(y.sum()), 1), max(int((~y).sum()), 1)
    return np.r_[0.0, fp / n], np.r_[0.0, tp / p]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve: ``P[score(member) > score(non-member)]``, ties counting one half."""
    from scipy.stats import rankdata

    s, y = np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool)
    n1, n0 = int(y.sum()), int((~y).sum())
    if n1 == 0 or n0 == 0:
        return math.nan
    ranks = rankdata(s)
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target: float) -> float:
    """The highest TPR among thresholds whose FPR is at most ``target``."""
    ok = fpr <= target + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def _low_fpr_tprs(scores: np.ndarray, labels: np.ndarray, targets: Sequence[float]) -> list[float]:
    fpr, tpr = roc_curve(scores, labels)
    return [tpr_at_fpr(fpr, tpr, t) for t in targets]


def attack_metrics(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    reps: int = 200,
    seed: int = 0,
    delta: float = 1e-5,
) -> dict[str, Any]:
    """AUC, TPR at 0.1% and 1% FPR (each with a stratified bootstrap 95% interval), ROC, epsilon lower bound.

    Non-finite scores (a candidate no model could score) count as the lowest.
    ``reps`` bootstrap replicates resample members and non-members separately
    with replacement; the interval is the 2.5 and 97.5 percentiles. The
    resampling generator is seeded (an evaluation, not a secret).
    """
    from fedsecure.attacks.inference.dp_audit import empirical_epsilon

    s = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(s)
    s = np.where(finite, s, (s[finite].min() - 1.0) if finite.any() else 0.0)
    y = np.asarray(labels).astype(bool)
    fpr, tpr = roc_curve(s, y)
    auc = roc_auc(s, y)
    low = [tpr_at_fpr(fpr, tpr, t) for t in FPR_POINTS]
    out: dict[str, Any] = {"auc": auc}
    keys = [f"tpr@{t * 100:g}%fpr" for t in FPR_POINTS]
    for k, v in zip(keys, low):
        out[k] = v
    if reps:
        rng = np.random.default_rng(seed)
        pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
        stats = np.empty((reps, 1 + len(FPR_POINTS)))
        for b in range(reps):
            idx = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
            stats[b, 0] = roc_auc(s[idx], y[idx])
            stats[b, 1:] = _low_fpr_tprs(s[idx], y[idx], FPR_POINTS)
        lo, hi = np.quantile(stats, [0.025, 0.975], axis=0)
        for j, k in enumerate(["auc", *keys]):
            out[k + "_ci95"] = [float(lo[j]), float(hi[j])]
    grid_tpr = [tpr_at_fpr(fpr, tpr, g) for g in ROC_GRID]
    out["roc"] = {"fpr": [float(g) for g in ROC_GRID], "tpr": grid_tpr}
    out["epsilon_lb"] = empirical_epsilon(s, y, delta=delta, seed=seed)
    out["members"], out["nonmembers"] = int(y.sum()), int((~y).sum())
    return out


# ---------------------------------------------------------------------------- statistics


def _as_long(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def interaction_statistic(model: Recommender, data: Interactions, rows: np.ndarray, train: Interactions,
                          *, standardise: bool = True, batch_users: int = 512) -> np.ndarray:
    """The personalised model's statistic for each row's (user, item): higher = more member-like.

    Ranking models: the score the model ranks items by (the logit of
    implicit-feedback models), from ``model.score_fn(train)``, standardised
    over the user's scores for the whole catalogue with ``standardise`` (a
    z-score: it removes the user's offset and scale, which differ from one
    trained model to the next and would drown the membership signal in the
    comparisons of calibrated attacks and LiRA); rating models: minus the
    squared error of the predicted rating.
    """
    users, items = data.users[rows], data.items[rows]
    model.eval()
    if model.task == "rating":
        pred = model.predict(users, items)
        return -(pred - data.ratings[rows]) ** 2
    score = model.score_fn(train)
    out = np.empty(rows.size, dtype=np.float64)
    uniq, inverse = np.unique(users, return_inverse=True)
    for lo in range(0, uniq.size, batch_users):
        block = uniq[lo: lo + batch_users]
        mat = score(block).numpy().astype(np.float64)
        if standardise:
            mat = (mat - mat.mean(1, keepdims=True)) / np.maximum(mat.std(1, keepdims=True), 1e-12)
        sel = np.flatnonzero((inverse >= lo) & (inverse < lo + block.size))
        out[sel] = mat[inverse[sel] - lo, items[sel]]
    return out


def _per_example_loss(model: Recommender, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    if hasattr(model, "logits"):
        logits, _ = model.logits(batch["users"], batch["items"])  # type: ignore[operator]
        return F.binary_cross_entropy_with_logits(logits, batch["labels"], reduction="none")
    if isinstance(model, MatrixFactorization):
        pred, _ = model(batch["users"], batch["items"])
        return (pred - batch["ratings"]) ** 2
    raise TypeError(f"{type(model).__name__}: no per-example loss")


def fit_user_losses(
    model: Recommender,
    data: Interactions,
    users: np.ndarray,
    *,
    steps: int = 30,
    lr: float = 0.05,
    seed: int = 0,
) -> np.ndarray:
    """Mean loss of each of ``users`` on its rows of ``data`` after fitting a fresh private embedding.

    The attacker's view at user level: the released shared parameters are
    frozen; every private (user-indexed) parameter is re-initialised (seeded,
    so every model compared starts from the same point) and fitted for
    ``steps`` full-batch Adam steps on the model's own loss over the
    candidates' examples (negatives drawn from ``default_rng(seed)``, the same
    for every model). Adam's per-coordinate steps make the joint fit the same
    as fitting each user alone. Models without private parameters (SASRec)
    are scored as they are. Returns ``nan`` for a user without rows.
    """
    users = np.asarray(users, dtype=np.int64)
    fitted = fit_private(model, data, users, steps=steps, lr=lr, seed=seed)
    rows = np.flatnonzero(np.isin(data.users, users))
    out = np.full(users.size, np.nan)
    if rows.size == 0:
        return out
    batch = fitted.examples(data, rows, np.random.default_rng([seed, 0xF17]))
    position = {int(u): j for j, u in enumerate(users)}
    with torch.no_grad():
        if "users" in batch:
            per_example = _per_example_loss(fitted, batch).numpy()
            ex_users = batch["users"].numpy()
            sums = np.bincount(ex_users, weights=per_example, minlength=data.n_users)
            counts = np.bincount(ex_users, minlength=data.n_users)
            with np.errstate(invalid="ignore", divide="ignore"):
                mean = sums / counts
            out = mean[users]
        else:  # one example per user (sequences): score each user's own batch
            for u in np.unique(data.users[rows]):
                user_rows = rows[data.users[rows] == u]
                b = fitted.examples(data, user_rows, np.random.default_rng([seed, int(u)]))
                out[position[int(u)]] = float(fitted.loss(b))
    return out


# ---------------------------------------------------------------------------- attacks


def _gauss_logpdf(x: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd)


def attack_scores(
    target: np.ndarray,
    shadow: np.ndarray,
    shadow_in: np.ndarray,
    attacks: Sequence[str] = ATTACKS,
) -> dict[str, np.ndarray]:
    """Membership scores (higher = member) of each attack from the target's and the shadows' statistics.

    ``target[j]``: the statistic of candidate ``j`` under the target model;
    ``shadow[k, j]`` under shadow ``k``, which trained on ``j`` iff
    ``shadow_in[k, j]``. Statistics may be NaN (not scored); such entries are
    ignored in the fits.
    """
    from scipy.stats import norm

    t = np.asarray(target, dtype=np.float64)
    sh = np.asarray(shadow, dtype=np.float64)
    inn = np.asarray(shadow_in, dtype=bool) & np.isfinite(sh)
    out = ~np.asarray(shadow_in, dtype=bool) & np.isfinite(sh)
    result: dict[str, np.ndarray] = {}
    for name in attacks:
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}; choose from: {', '.join(ATTACKS)}")
    if "loss" in attacks:
        result["loss"] = t.copy()
    if sh.shape[0] == 0:
        if set(attacks) - {"loss"}:
            raise ValueError("calibrated and LiRA attacks need at least one shadow model")
        return result

    def mean_over(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = mask.sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mu = np.where(mask, sh, 0.0).sum(0) / n
        return mu, n

    mu_out, n_out = mean_over(out)
    mu_in, n_in = mean_over(inn)
    global_out = float(np.nanmean(np.where(out, sh, np.nan))) if out.any() else 0.0
    global_in = float(np.nanmean(np.where(inn, sh, np.nan))) if inn.any() else global_out
    mu_out_f = np.where(n_out > 0, mu_out, global_out)
    # a candidate no shadow trained on: its "in" mean is its "out" mean shifted by the average in-out gap
    mu_in_f = np.where(n_in > 0, mu_in, mu_out_f + (global_in - global_out))

    def spread(mask: np.ndarray, mu: np.ndarray, n: np.ndarray) -> np.ndarray:
        resid = np.where(mask, sh - mu[None, :], np.nan)
        pooled = float(np.sqrt(np.nanmean(resid ** 2))) if mask.any() else 1.0
        pooled = pooled if pooled > 0 and math.isfinite(pooled) else 1.0
        if sh.shape[0] // 2 < PER_EXAMPLE_VARIANCE_MIN:
            return np.full(t.shape, pooled)
        with np.errstate(invalid="ignore"):
            per = np.sqrt(np.nanmean(resid ** 2, axis=0))
        return np.where((n >= 2) & (per > 0), per, pooled)

    if "calibrated" in attacks:
        result["calibrated"] = t - mu_out_f
    if "lira" in attacks:
        sd_in, sd_out = spread(inn, mu_in_f, n_in), spread(out, mu_out_f, n_out)
        result["lira"] = _gauss_logpdf(t, mu_in_f, sd_in) - _gauss_logpdf(t, mu_out_f, sd_out)
    if "lira-offline" in attacks:
        sd_out = spread(out, mu_out_f, n_out)
        result["lira-offline"] = norm.logcdf((t - mu_out_f) / sd_out)
    return result


# ---------------------------------------------------------------------------- the audit


def _keys(data: Interactions, rows: np.ndarray | None = None) -> np.ndarray:
    u, i = (data.users, data.items) if rows is None else (data.users[rows], data.items[rows])
    return u.astype(np.int64) * data.n_items + i.astype(np.int64)


def _half_per_user(users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask keeping a uniformly random half (rounded up) of each user's entries."""
    order = np.lexsort((rng.random(users.size), users))
    sorted_users = users[order]
    start = np.r_[0, np.flatnonzero(sorted_users[1:] != sorted_users[:-1]) + 1]
    counts = np.diff(np.r_[start, users.size])
    position = np.arange(users.size) - np.repeat(start, counts)
    keep = np.zeros(users.size, dtype=bool)
    keep[order[position < np.repeat((counts + 1) // 2, counts)]] = True
    return keep


def _train_one(config: Any, data: Interactions, level: str, candidates: np.ndarray, always: np.ndarray,
               include: np.ndarray, fit_steps: int, fit_seed: int) -> dict[str, Any]:
    """Train one model on ``include``-selected candidates; return its statistic and who it trained on."""
    from fedsecure.experiment import Experiment

    t0 = time.perf_counter()
    if level == "interaction":
        rows = np.sort(np.concatenate([candidates[include], always]))
    else:
        rows = np.flatnonzero(np.isin(data.users, candidates[include]))
    exp = Experiment(config, data=data.select(rows))
    result = exp.run()
    train = exp.split.train
    if level == "interaction":
        trained = np.isin(_keys(data, candidates), _keys(train))
        stat = interaction_statistic(exp.model, data, candidates, train)
    else:
        trained = np.isin(candidates, np.unique(train.users))
        held = np.setdiff1d(np.arange(len(data)), always)  # the candidates' own (non-test) data
        stat = -fit_user_losses(exp.model, data.select(held), candidates, steps=fit_steps, seed=fit_seed)
    return {"stat": stat, "trained": trained, "offered": include, "final": result["final"],
            "privacy": result["privacy"], "seconds": time.perf_counter() - t0}


def run_membership_audit(
    config: Any,
    *,
    attacks: Sequence[str] = ("loss", "calibrated", "lira"),
    shadows: int = 4,
    level: str = "interaction",
    data: Interactions | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
    offline_shadows: bool = True,
    fit_steps: int = 30,
    bootstrap_reps: int = 200,
    delta: float | None = None,
    eval_last_only: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Membership inference against a federated run of ``config`` (a ``RunConfig``); a JSON-able report.

    The target model and ``shadows`` shadow models are each one
    :class:`~fedsecure.experiment.Experiment` of ``config`` (seed
    ``config.seed + k`` for model ``k``, the target being ``k = 0``; DP
    canaries only in the target) on a seeded random half of the candidates:
    each user's non-test interactions (``level="interaction"``) or the users
    (``level="user"``). The test rows of the evaluation split are always
    kept, so the reported utility is measured as in a normal run.

    ``attacks`` are names from ``ATTACKS``; ``"lira"`` also reports
    ``"lira-offline"`` when ``offline_shadows`` (the offline variant uses only
    the shadows' "out" statistics, which the online shadows already provide).
    ``on_progress(stage, done, total)`` is called as models finish.
    ``eval_last_only`` evaluates each model once, after its last round (the
    training is unchanged). ``delta`` (default: the run's, else 1e-5) enters
    the empirical epsilon bound. ``workers > 1`` trains that many models at a
    time in separate processes (spawned, so a calling script needs the
    ``if __name__ == "__main__":`` guard; each model's result is the same as
    in one process). ``on_progress`` then reports models as they finish.

    Cost: ``shadows + 1`` federated runs, each on half the candidates, plus
    scoring. On the default synthetic data (1000 users, 10 rounds, every user
    every round) one run takes about 1-2 minutes on a quiet 2-core machine,
    dominated by the per-client cost of the round loop.

    Returns ``{"level", "config", "shadows", "candidates", "target", "attacks": {name: metrics}, "strongest",
    "epsilon", "timings", ...}`` with per-attack metrics from :func:`attack_metrics`; ``"epsilon"`` puts
    the accountant's epsilon beside the strongest attack's lower bound and the target's one-run canary
    audit (DP runs).
    """
    from fedsecure.experiment import config_data, library_versions, make_split
    from fedsecure.recsys.models import MODELS

    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; choose one of: {', '.join(LEVELS)}")
    attacks = list(dict.fromkeys(attacks))
    for name in attacks:
        if name not in ATTACKS:
            raise ValueError(f"unknown attack {name!r}; choose from: {', '.join(ATTACKS)}")
    if "lira" in attacks and offline_shadows and "lira-offline" not in attacks:
        attacks.append("lira-offline")
    if shadows < 0:
        raise ValueError(f"shadows must be >= 0, got {shadows}")
    if shadows == 0 and set(attacks) - {"loss"}:
        raise ValueError("calibrated and LiRA attacks need shadows >= 1")
    t0 = time.perf_counter()
    data = data if data is not None else config_data(config)
    task = MODELS[config.model].task
    split = make_split(data, task, config.seed)
    is_test = np.isin(_keys(data), _keys(split.test))
    always = np.flatnonzero(is_test)
    if level == "interaction":
        candidates = np.flatnonzero(~is_test)
        cand_users = data.users[candidates]
    else:
        candidates = np.unique(data.users)
        cand_users = candidates
    if config.eval_every < config.rounds and eval_last_only:
        config = replace(config, eval_every=config.rounds)
    n_models = shadows + 1
    jobs = []
    for k in range(n_models):
        rng = np.random.default_rng([config.seed, k, 0x313A])
        if level == "interaction":
            include = _half_per_user(cand_users, rng)
        else:
            include = np.zeros(candidates.size, dtype=bool)
            include[rng.permutation(candidates.size)[: candidates.size // 2]] = True
        cfg = replace(config, seed=config.seed + k)
        if k > 0 and hasattr(cfg, "audit_canaries"):
            cfg = replace(cfg, audit_canaries=0)  # canaries audit the target run only
        jobs.append((cfg, data, level, candidates, always, include, fit_steps, config.seed))
    runs: list[Any] = [None] * n_models
    if workers > 1 and n_models > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=min(workers, n_models),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_train_one, *job): k for k, job in enumerate(jobs)}
            for done, future in enumerate(as_completed(futures), 1):
                runs[futures[future]] = future.result()
                if on_progress is not None:
                    on_progress("models", done, n_models)
    else:
        for k, job in enumerate(jobs):
            runs[k] = _train_one(*job)
            if on_progress is not None:
                on_progress("models", k + 1, n_models)
    target = runs[0]
    # Non-members: candidates the target was never offered; members: those it trained on. Offered rows the
    # run held out for its own test (the rating task's random holdout) are neither.
    labels = target["trained"]
    valid = target["trained"] | ~target["offered"]
    shadow_stat = np.array([r["stat"] for r in runs[1:]]).reshape(shadows, target["stat"].size)
    shadow_in = np.array([r["trained"] for r in runs[1:]]).reshape(shadows, target["stat"].size)
    scores = attack_scores(target["stat"], shadow_stat, shadow_in, attacks)
    if delta is None:
        delta = target["privacy"].get("delta") or 1e-5
    report_attacks = {}
    for name, s in scores.items():
        report_attacks[name] = attack_metrics(s[valid], labels[valid], reps=bootstrap_reps, seed=config.seed,
                                              delta=float(delta))
        if on_progress is not None:
            on_progress("attack", len(report_attacks), len(scores))
    strongest = max(report_attacks, key=lambda a: (report_attacks[a]["tpr@0.1%fpr"], report_attacks[a]["auc"]))
    privacy = target["privacy"]
    dp = getattr(config, "dp", "none")
    # What the DP claim covers: user-level DP protects a user's participation in what the server releases
    # (the shared parameters), not the user's own on-device embedding, which the interaction-level attack
    # reads; example-level DP-SGD noises every parameter's gradient, so it covers interactions as examples.
    claim_applies = dp != "none" and (level == "user" if dp.startswith("user") else level == "interaction")
    epsilon_summary = {
        "accountant_epsilon": privacy.get("epsilon"),
        "claim_applies": claim_applies,
        "claim_note": {
            True: "the attack's unit and view are what the DP claim protects: its lower bound must not exceed it",
            False: ("no DP" if dp == "none" else
                    "the DP claim does not cover this attack (user-level DP does not noise the user's own "
                    "on-device embedding, which the interaction-level attack reads; example-level DP bounds "
                    "a user's participation only by group privacy over their interactions)"),
        }[claim_applies],
        "delta": float(delta),
        # the strongest attack's Clopper-Pearson bound, and the run's own one-run canary audit (DP runs)
        "attack_epsilon_lb": max(m["epsilon_lb"]["epsilon_lb"] for m in report_attacks.values()),
        "canary_epsilon_lb": privacy.get("epsilon_lower_bound"),
    }
    return {
        "kind": "membership-inference",
        "level": level,
        "statistic": ("personalised model score of (user, item)" if level == "interaction" else
                      f"minus the mean loss after fitting a fresh user embedding ({fit_steps} Adam steps) "
                      "against the released shared parameters"),
        "config": asdict(config),
        "data": {"source": data.source, "users": data.n_users, "items": data.n_items, "interactions": len(data)},
        "shadows": shadows,
        "candidates": int(valid.sum()),
        "members": int(labels[valid].sum()),
        "nonmembers": int((~labels[valid]).sum()),
        "target": {"final": target["final"], "privacy": target["privacy"]},
        "attacks": report_attacks,
        "strongest": strongest,
        "epsilon": epsilon_summary,
        "timings": {"models_seconds": [r["seconds"] for r in runs], "total_seconds": time.perf_counter() - t0},
        "references": {
            "loss": "Yeom, Giacomelli, Fredrikson & Jha, CSF 2018",
            "calibrated": "Watson, Guo, Cormode & Sablayrolles, ICLR 2022",
            "lira": "Carlini, Chien, Nasr, Song, Terzis & Tramer, S&P 2022",
            "epsilon_lb": "Jagielski, Ullman & Oprea, NeurIPS 2020; Nasr et al., S&P 2021",
        },
        "versions": library_versions(),
    }


# ---------------------------------------------------------------------------- output


def plot_roc(reports: dict[str, Any] | Sequence[dict[str, Any]], path: str | Path, *, title: str | None = None) -> Path:
    """Log-log ROC curves of every attack of one or more reports (the LiRA convention), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reports = [reports] if isinstance(reports, dict) else list(reports)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    styles = ("-", "--", "-.", ":")
    for r, rep in enumerate(reports):  # one line style per report, one colour per attack
        prefix = rep.get("label", rep.get("level", ""))
        for a, (name, m) in enumerate(rep["attacks"].items()):
            fpr, tpr = np.asarray(m["roc"]["fpr"]), np.asarray(m["roc"]["tpr"])
            ok = fpr > 0
            ax.plot(fpr[ok], np.maximum(tpr[ok], 1e-5), ls=styles[r % len(styles)], color=f"C{a}",
                    label=f"{prefix} {name} (AUC {m['auc']:.3f})".strip())
    grid = np.logspace(-5, 0, 50)
    ax.plot(grid, grid, "k:", lw=0.8, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-4, 1)
    ax.set_ylim(1e-4, 1)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title or "membership inference ROC")
    ax.legend(fontsize=7, loc="lower right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def write_outputs(report: dict[str, Any], out: str | Path, *, command: str = "", stem: str = "mia_audit") -> dict[str, Path]:
    """``<stem>.json`` (everything, with the command; strict JSON: inf as "inf", NaN as null), ``.csv`` (one
    row per attack) and ``.png`` (log-log ROC) under ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"{stem}.{k}" for k in ("json", "csv", "png")}
    from fedsecure.results import SCHEMA_VERSION, dumps_strict

    paths["json"].write_text(dumps_strict({"schema_version": SCHEMA_VERSION, "command": command, **report}))
    columns = ["attack", "level", "auc", "auc_ci95", "tpr@0.1%fpr", "tpr@0.1%fpr_ci95", "tpr@1%fpr",
               "tpr@1%fpr_ci95", "epsilon_lb", "members", "nonmembers"]
    with paths["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for name, m in report["attacks"].items():
            row = {**m, "attack": name, "level": report.get("level"), "epsilon_lb": m["epsilon_lb"]["epsilon_lb"]}
            w.writerow([json.dumps(row.get(c)) if isinstance(row.get(c), list) else row.get(c) for c in columns])
    plot_roc(report, paths["png"], title=f"membership inference, {report.get('level')} level")
    return paths
