"""Model-level membership inference under user-level DP at epsilon in {inf, 8, 1} (issue 13, item 2).

One tiny synthetic population, one federated configuration (cross-device
MF, every hyperparameter written out here); the runs differ only in the
privacy settings: ``epsilon = inf`` is ``--dp none``, the others are
user-level DP-FedAvg with central Gaussian noise calibrated to the target
epsilon over all rounds. For each, :func:`run_membership_audit` trains the
target and ``--shadows`` shadow models by the same pipeline and reports, at
interaction level (personalised model) and user level (released shared
parameters only), ROC AUC with its 95% interval, TPR at 0.1% and 1% FPR, the
Clopper-Pearson epsilon lower bound of each attack, and the DP run's own
one-run canary audit beside the accountant's epsilon. Expectation: at user
level (what user-level DP protects) AUC and TPR fall toward chance (0.5, and
TPR = FPR) as epsilon falls and no lower bound exceeds the accountant's
epsilon; at interaction level the attack reads the user's own on-device
embedding, which user-level DP does not noise, so it may stay above chance.

Usage: ``python benchmarks/bench_mia.py [--quick] [--shadows 4] [--out benchmarks/results/mia.json]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

from fedsecure.attacks.inference.membership import plot_roc, run_membership_audit
from fedsecure.experiment import RunConfig, library_versions
from fedsecure.results import dumps_strict
from fedsecure.recsys.synthetic import generate

torch.set_num_threads(1)

EPSILONS = (math.inf, 8.0, 1.0)
DATA = dict(n_users=100, n_items=150, mean_interactions=20, seed=3)
COMMON: dict[str, Any] = dict(
    model="mf-implicit", setting="cross-device", rounds=15, clients_per_round=0.5, local_epochs=5, batch_size=256,
    lr=8.0, server_optimizer="fedadam", server_lr=0.1, eval_every=15, n_negatives=0, k=10, seed=0,
    model_args={"dim": 32},
)


def config(epsilon: float) -> RunConfig:
    if math.isinf(epsilon):
        return RunConfig(**COMMON)
    return RunConfig(**COMMON, dp="user-central", target_epsilon=epsilon, clip=1.0, delta=1e-4)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shadows", type=int, default=4)
    parser.add_argument("--quick", action="store_true", help="2 shadows, 50 users")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "mia.json"))
    args = parser.parse_args(argv)
    data_args = dict(DATA, n_users=50) if args.quick else DATA
    shadows = 2 if args.quick else args.shadows
    data = generate(**data_args)
    rows, reports = [], []
    t0 = time.perf_counter()
    for eps in EPSILONS:
        for level in ("interaction", "user"):
            t = time.perf_counter()
            rep = run_membership_audit(config(eps), data=data, shadows=shadows, level=level,
                                       attacks=("loss", "calibrated", "lira"), bootstrap_reps=200)
            privacy = rep["target"]["privacy"]
            row = {"epsilon": eps, "level": level, "hr@10": rep["target"]["final"].get("hr@10"),
                   "accountant_epsilon": privacy.get("epsilon"),
                   "canary_epsilon_lb": privacy.get("epsilon_lower_bound"),
                   "members": rep["members"], "nonmembers": rep["nonmembers"], "seconds": time.perf_counter() - t}
            for name, m in rep["attacks"].items():
                row[name] = {k: m[k] for k in ("auc", "auc_ci95", "tpr@0.1%fpr", "tpr@0.1%fpr_ci95", "tpr@1%fpr",
                                               "tpr@1%fpr_ci95")}
                row[name]["epsilon_lb"] = m["epsilon_lb"]["epsilon_lb"]
            rows.append(row)
            rep["label"] = f"eps={eps:g} {level}"
            reports.append(rep)
            print(json.dumps({k: v for k, v in row.items() if k in ("epsilon", "level", "hr@10", "accountant_epsilon",
                                                                    "canary_epsilon_lb")}),
                  {a: round(row[a]["auc"], 3) for a in ("loss", "calibrated", "lira", "lira-offline")},
                  flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dumps_strict({
        "command": "python benchmarks/bench_mia.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "data": data.source, "common": COMMON, "shadows": shadows, "rows": rows,
        # user-level DP covers the user-level attack (the released shared parameters), not the interaction-level
        # attack on the user's own on-device model: only the former is held to the accountant's epsilon
        "bounds_below_accountant": all(
            r[a]["epsilon_lb"] <= r["accountant_epsilon"] for r in rows if r["level"] == "user"
            for a in ("loss", "calibrated", "lira", "lira-offline")
        ) and all((r["canary_epsilon_lb"] or 0) <= r["accountant_epsilon"] for r in rows),
        "total_seconds": time.perf_counter() - t0, "machine": platform.platform(), "versions": library_versions(),
    }))
    for level in ("interaction", "user"):
        plot_roc([r for r in reports if r["level"] == level], out.with_name(out.stem + f"_{level}.png"),
                 title=f"membership inference under user-level DP, {level} level")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
