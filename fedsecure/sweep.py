"""Privacy-utility sweep: epsilon x protection mode x model x seeds, one row per run, and the curves they make.

Each cell is one membership-inference audit
(:func:`fedsecure.attacks.inference.membership.run_membership_audit`) of a
run with user-level central DP at the target epsilon (``inf``: no DP), whose
target model trains on a random half of each user's interactions, so its
members and non-members are known. Recorded per cell: HR@10 and NDCG@10 of
the target with their bootstrap intervals over users, the accountant's
epsilon and the one-run canary audit's lower bound (DP cells), every
attack's AUC and TPR at 0.1% and 1% FPR with intervals and its empirical
epsilon lower bound, the strongest attack, and the popularity ranking
released under the same epsilon (:class:`~fedsecure.recsys.baselines.PrivatePopularity`)
beside the non-private one. Cells with the same (model, protection,
epsilon) are summarised over seeds (mean, Student-t interval).

Outputs: ``sweep.json`` (rows, summary, command), ``sweep.csv`` (one row
per cell) and three PNGs: HR@10 against epsilon (with the private and
non-private popularity), HR@10 against the strongest attack's TPR at 0.1%
FPR (the privacy-utility front), and log-log ROC curves of the strongest
attack per epsilon (the LiRA convention).

    fedsecure sweep --epsilons 0.5,1,2,4,8,inf --secure none,secagg+ --models mf-implicit --seeds 0,1,2
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

EPSILONS = (0.5, 1.0, 2.0, 4.0, 8.0, math.inf)


def cell_config(base: Any, *, model: str, secure: str, epsilon: float, seed: int) -> Any:
    """The run of one cell: ``base`` with the model, protection, seed, and user-level central DP at ``epsilon``."""
    dp = {"dp": "none", "target_epsilon": None, "noise_multiplier": None} if math.isinf(epsilon) else \
        {"dp": "user-central", "target_epsilon": float(epsilon), "noise_multiplier": None}
    return replace(base, model=model, secure=secure, seed=seed, **dp)


def _private_popularity(config: Any, epsilon: float, delta: float | None) -> dict[str, Any] | None:
    """The popularity ranking released under user-level (epsilon, delta)-DP, evaluated as the run is."""
    from fedsecure.dp.accounting import noise_multiplier_for
    from fedsecure.dp.noise import NoiseSource
    from fedsecure.experiment import Experiment

    if math.isinf(epsilon):
        return None
    exp = Experiment(replace(config, dp="none", target_epsilon=None, secure="none", rounds=1))
    delta = delta or 1e-5
    sigma = noise_multiplier_for(epsilon, delta, 1.0, 1)
    noise = NoiseSource.insecure_seeded(config.seed) if config.insecure_seeded_noise else NoiseSource()
    return {**exp.evaluator.private_popularity(sigma, noise), "epsilon": epsilon, "delta": delta}


def run_cell(config: Any, epsilon: float, *, attacks: Sequence[str], shadows: int) -> dict[str, Any]:
    """One cell: the audit's target model, its privacy record, every attack, and the private popularity."""
    from fedsecure.attacks.inference.membership import run_membership_audit

    report = run_membership_audit(config, attacks=attacks, shadows=shadows, level="interaction")
    final, privacy = report["target"]["final"], report["target"]["privacy"]
    strongest = report["attacks"][report["strongest"]]
    row = {
        "model": config.model, "secure": config.secure, "target_epsilon": epsilon, "seed": config.seed,
        "hr@10": final.get("hr@10"), "hr@10_ci95": final.get("hr@10_ci95"),
        "ndcg@10": final.get("ndcg@10"), "ndcg@10_ci95": final.get("ndcg@10_ci95"),
        "accountant_epsilon": privacy.get("epsilon"), "delta": privacy.get("delta"),
        "audit_epsilon_lower_bound": privacy.get("epsilon_lower_bound"),
        "strongest_attack": report["strongest"],
        "attack_auc": strongest["auc"], "attack_auc_ci95": strongest["auc_ci95"],
        "attack_tpr@0.1%fpr": strongest["tpr@0.1%fpr"], "attack_tpr@1%fpr": strongest["tpr@1%fpr"],
        "attack_epsilon_lower_bound": max(m["epsilon_lb"]["epsilon_lb"] for m in report["attacks"].values()),
        "attacks": {name: {k: m[k] for k in ("auc", "auc_ci95", "tpr@0.1%fpr", "tpr@1%fpr", "roc")}
                    for name, m in report["attacks"].items()},
    }
    pop = _private_popularity(config, epsilon, privacy.get("delta"))
    row["private_popularity_hr@10"] = pop.get("hr@10") if pop else None
    return row


def sweep(
    base: Any,
    *,
    epsilons: Sequence[float] = EPSILONS,
    secure_modes: Sequence[str] = ("none",),
    models: Sequence[str] = ("mf-implicit",),
    seeds: Sequence[int] = (0,),
    attacks: Sequence[str] = ("loss",),
    shadows: int = 0,
    on_done: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Every cell of the grid, in (model, protection, epsilon, seed) order."""
    rows = []
    for model in models:
        for secure in secure_modes:
            for eps in epsilons:
                for seed in seeds:
                    cfg = cell_config(base, model=model, secure=secure, epsilon=eps, seed=seed)
                    rows.append(run_cell(cfg, eps, attacks=attacks, shadows=shadows))
                    if on_done is not None:
                        on_done(rows[-1])
    return rows


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, protection, epsilon): mean, sd and t interval over seeds of utility and attack success."""
    from fedsecure.stats import over_seeds

    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["secure"], r["target_epsilon"]), []).append(r)
    out = []
    for (model, secure, eps), cells in groups.items():
        entry: dict[str, Any] = {"model": model, "secure": secure, "target_epsilon": eps, "seeds": [c["seed"] for c in cells]}
        for key in ("hr@10", "ndcg@10", "attack_auc", "attack_tpr@0.1%fpr", "private_popularity_hr@10",
                    "audit_epsilon_lower_bound", "accountant_epsilon"):
            values = [c[key] for c in cells if c.get(key) is not None and math.isfinite(c[key])]
            entry[key] = over_seeds(values).as_dict() if values else None
        out.append(entry)
    return out


def _plot(rows: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    finite = [e["target_epsilon"] for e in summary if math.isfinite(e["target_epsilon"])]
    inf_at = max(finite) * 2 if finite else 1.0  # epsilon = inf drawn to the right of the largest finite one
    x_of = lambda eps: inf_at if math.isinf(eps) else eps  # noqa: E731
    paths = []
    fig, ax = plt.subplots(figsize=(6, 4.5))
    lines: dict[tuple, list[dict[str, Any]]] = {}
    for e in summary:
        lines.setdefault((e["model"], e["secure"]), []).append(e)
    for (model, secure), es in lines.items():
        es = sorted(es, key=lambda e: x_of(e["target_epsilon"]))
        xs = [x_of(e["target_epsilon"]) for e in es]
        ys = [e["hr@10"]["mean"] if e["hr@10"] else np.nan for e in es]
        lo = [e["hr@10"]["ci95"][0] if e["hr@10"] else np.nan for e in es]
        hi = [e["hr@10"]["ci95"][1] if e["hr@10"] else np.nan for e in es]
        ax.plot(xs, ys, marker="o", label=f"{model}, {secure}")
        ax.fill_between(xs, np.nan_to_num(lo, nan=np.nan, neginf=0.0), np.nan_to_num(hi, nan=np.nan, posinf=1.0), alpha=0.15)
        pp = [(x_of(e["target_epsilon"]), e["private_popularity_hr@10"]["mean"]) for e in es if e["private_popularity_hr@10"]]
        if pp:
            ax.plot(*zip(*pp), ls="--", marker="x", label=f"private popularity ({model})")
    ax.set_xscale("log")
    ax.set_xlabel("target epsilon (rightmost: no DP)")
    ax.set_ylabel("HR@10 (target model; 95% interval over seeds)")
    ax.legend(fontsize=7)
    paths.append(out / "hr_vs_epsilon.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for r in rows:
        ax.scatter(r["attack_tpr@0.1%fpr"], r["hr@10"], s=18)
        ax.annotate("inf" if math.isinf(r["target_epsilon"]) else f"{r['target_epsilon']:g}",
                    (r["attack_tpr@0.1%fpr"], r["hr@10"]), fontsize=6)
    ax.set_xlabel("strongest attack: TPR at 0.1% FPR")
    ax.set_ylabel("HR@10")
    ax.set_title("privacy-utility front (labels: target epsilon)")
    paths.append(out / "hr_vs_attack_tpr.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5.5, 5))
    for r in rows:
        m = r["attacks"][r["strongest_attack"]]
        fpr, tpr = np.asarray(m["roc"]["fpr"]), np.asarray(m["roc"]["tpr"])
        ok = fpr > 0
        label = "inf" if math.isinf(r["target_epsilon"]) else f"{r['target_epsilon']:g}"
        ax.plot(fpr[ok], np.maximum(tpr[ok], 1e-5), lw=0.8,
                label=f"eps {label}, {r['model']}, {r['secure']}, seed {r['seed']} ({r['strongest_attack']})")
    grid = np.logspace(-5, 0, 50)
    ax.plot(grid, grid, "k:", lw=0.8)
    ax.set(xscale="log", yscale="log", xlim=(1e-4, 1), ylim=(1e-4, 1), xlabel="false positive rate",
           ylabel="true positive rate", title="strongest attack per cell")
    ax.legend(fontsize=5)
    paths.append(out / "roc.png")
    fig.savefig(paths[-1], dpi=120, bbox_inches="tight")
    plt.close(fig)
    return paths


CSV_COLUMNS = ("model", "secure", "target_epsilon", "seed", "hr@10", "hr@10_ci95", "ndcg@10", "accountant_epsilon",
               "audit_epsilon_lower_bound", "strongest_attack", "attack_auc", "attack_auc_ci95", "attack_tpr@0.1%fpr",
               "attack_tpr@1%fpr", "attack_epsilon_lower_bound", "private_popularity_hr@10")


def write_outputs(rows: Sequence[dict[str, Any]], out: Path, *, command: str, base: Any,
                  status: str = "complete") -> dict[str, Path]:
    """``sweep.json`` (strict JSON), ``sweep.csv`` and the three PNGs under ``out``."""
    from fedsecure.results import strict

    out.mkdir(exist_ok=True)
    summary = summarise(rows) if rows else []
    paths = {"json": out / "sweep.json", "csv": out / "sweep.csv"}
    record = {"schema_version": 1, "status": status, "command": command, "base_config": asdict(base),
              "rows": list(rows), "summary": summary}
    paths["json"].write_text(json.dumps(strict(record), indent=1, allow_nan=False) + "\n")
    with paths["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for r in rows:
            w.writerow([json.dumps(r.get(c)) if isinstance(r.get(c), list) else r.get(c) for c in CSV_COLUMNS])
    if rows:
        for p in _plot(rows, summary, out):
            paths[p.stem] = p
    return paths
