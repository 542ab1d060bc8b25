"""Utility of differentially private training on ml-latest-small at epsilon in {1, 2, 4, 8, inf}.

Three studies, each a list of :class:`fedsecure.experiment.RunConfig` runs that
differ only in the privacy settings (every hyperparameter is written out here,
so a change of library defaults cannot silently change these results):

* ``user-central``: user-level DP-FedAvg, cross-device (one client is one
  user); each round samples ``clients_per_round`` users, clips each update to
  L2 norm ``clip`` and the server adds Gaussian noise ``z * clip`` to the sum,
  ``z`` calibrated from the target epsilon over all rounds (subsampled RDP).
* ``user-distributed``: the same, but each client adds discrete Gaussian noise
  inside SecAgg+ pairwise masking and only the noisy sum is decoded. It must
  match ``user-central`` at the same epsilon within run-to-run noise.
* ``dpsgd``: example-level DP-SGD, cross-silo with 10 silos; each silo runs
  DP-SGD (per-example clipping, Poisson sampling, noise from the OS-keyed
  NoiseSource) calibrated to the target epsilon, and reports its own epsilon.

``epsilon = inf`` is the same configuration with ``--dp none`` (no clipping, no
noise). Metrics: HR@10 and NDCG@10 over the full catalogue (no sampled
negatives), leave-last-out; the popularity ranking is reported beside them.
The server optimizer (FedAdam) only post-processes the noisy aggregate, so it
costs no privacy.

Usage: ``python benchmarks/bench_dp_utility.py [--data PATH] [--quick] [--out PATH]``.
"""

from __future__ import annotations

import os

# Before numpy loads: OpenBLAS threads turn each ~90k-coordinate norm of the clipping step into
# milliseconds of spin-waiting on a shared 2-core machine (measured 3 ms per np.linalg.norm).
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

import fedsecure.dp.noise  # noqa: F401  (loaded once, up front: every run uses the same sampler code)
from fedsecure.experiment import Experiment, RunConfig, library_versions, load_data
from fedsecure.stats import CI_SUFFIX, with_interval

# Local steps work on a few hundred rows: intra-op threads only add synchronisation, and on a
# shared machine a step waits for the slowest thread (measured ~10x slower with 2 threads).
torch.set_num_threads(1)

DEFAULT_DATA = "/work/shared/data/ml-latest-small"
EPSILONS = (1.0, 2.0, 4.0, 8.0, math.inf)

COMMON: dict[str, Any] = dict(
    model="mf-implicit", batch_size=256, optimizer="sgd", local_epochs=1, k=10, n_negatives=0,
    server_optimizer="fedadam", dropout=0.0, straggler=0.0, seed=0,
)
# Cross-device, tuned so that utility leaves the noise floor at finite epsilon (measured on
# ml-latest-small, seed 0, eps 8, user-central; HR@10 after 50 rounds):
# * clip 0.3, not 1.0: a client's update (1 local epoch, lr 8) has L2 norm 0.30 / 0.50 / 1.15 at the
#   10th / 50th / 90th percentile, so clip 1.0 left ~75% of the clients unclipped -- their updates
#   carried a fraction of the sensitivity the noise is paid for. At 0.3 nearly every client is
#   clipped, i.e. contributes a full C of signal against the noise z C (FedAdam is invariant to the
#   common scale). HR@10 0.013 -> 0.030.
# * embedding dim 8, not 32: the per-coordinate noise does not depend on d, but a client's norm
#   budget C spreads over fewer coordinates (item biases then carry ~93% of the update's squared
#   norm, vs 75%). HR@10 0.030 -> 0.031, and it rises earlier; it also makes SecAgg+ 4x cheaper.
# * 128 of 610 users per round for 50 rounds (q = 0.21): full participation for 10 rounds (q = 1,
#   no amplification needed, best signal-to-noise per round by the accountant) learned less
#   (HR@10 0.016 at server lr 0.1, 0.013 at 0.3): FedAdam needs steps. Server lr 0.03 beat 0.01
#   (0.016) and 0.1 (0.020).
CROSS_DEVICE: dict[str, Any] = dict(
    COMMON, setting="cross-device", clients_per_round=128, rounds=50, lr=8.0, server_lr=0.03, clip=0.3,
    model_args={"dim": 8},
)
CROSS_SILO: dict[str, Any] = dict(
    COMMON, setting="cross-silo", silos=10, silo_scheme="range", clients_per_round=1.0, rounds=20, lr=32.0,
    server_lr=0.03, clip=1.0, batch_size=1024,
)


def run_config(data: str, base: dict[str, Any], dp: str, epsilon: float, **extra: Any) -> RunConfig:
    fields = dict(base, eval_every=base["rounds"], **extra)
    if math.isinf(epsilon):
        return RunConfig(data=data, dp="none", **{k: v for k, v in fields.items() if k != "secure"})
    return RunConfig(data=data, dp=dp, target_epsilon=epsilon, **fields)


def one_run(study: str, config: RunConfig, data: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    result = Experiment(config, data=data).run()
    seconds = time.perf_counter() - t0
    final = result["final"]
    row = {
        "study": study,
        "target_epsilon": config.target_epsilon if config.dp != "none" else "inf",
        "hr@10": final["hr@10"],
        "ndcg@10": final["ndcg@10"],
        # each metric's 95% bootstrap interval over the evaluated users, beside it
        **{k: v for k, v in final.items() if k.endswith(CI_SUFFIX)},
        "privacy": result["privacy"],
        "config": result["config"],
        "data": result["data"],
        "aggregator": result["aggregator"],
        "trainer": result["trainer"],
        "timings": dict(result["timings"], wall_seconds=seconds),
        "clipped_fraction_last_round": _clipped_fraction(result),
    }
    print(
        f"{study:17s} eps={row['target_epsilon']!s:4s} HR@10={row['hr@10']:.4f} NDCG@10={row['ndcg@10']:.4f} "
        f"spent eps={_spent(result['privacy'])} ({seconds:.0f} s)",
        flush=True,
    )
    return {"row": row, "popularity": result["popularity"]}


def _spent(privacy: dict[str, Any]) -> str:
    eps = privacy.get("epsilon", privacy.get("worst_epsilon"))
    return f"{eps:.3f}" if isinstance(eps, (int, float)) else str(eps)


def _clipped_fraction(result: dict[str, Any]) -> Any:
    rounds = result["rounds"]
    last = rounds[-1] if isinstance(rounds, list) and rounds else {}
    stats = last.get("stats", {}) if isinstance(last, dict) else {}
    if "clipped_clients" in stats and "included" in last:
        included = last["included"]
        return stats["clipped_clients"] / max(1, included if isinstance(included, int) else len(included))
    return None


def markdown(rows: list[dict[str, Any]], popularity: dict[str, float], studies: list[str]) -> str:
    by = {(r["study"], str(r["target_epsilon"])): r for r in rows}
    head = "| epsilon | " + " | ".join(f"{s} HR@10 | {s} NDCG@10" for s in studies) + " |"
    sep = "|---" * (1 + 2 * len(studies)) + "|"
    lines = [head, sep]
    for eps in EPSILONS:
        key = "inf" if math.isinf(eps) else str(eps)
        cells = []
        for s in studies:
            r = by.get((s, key))
            cells += [with_interval(r, "hr@10"), with_interval(r, "ndcg@10")] if r else ["-", "-"]
        lines.append(f"| {'∞' if math.isinf(eps) else f'{eps:g}'} | " + " | ".join(cells) + " |")
    pop = [with_interval(popularity, "hr@10"), with_interval(popularity, "ndcg@10")] * len(studies)
    lines.append("| popularity | " + " | ".join(pop) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default="benchmarks/results/dp_utility.json")
    ap.add_argument("--studies", default="user-central,user-distributed,dpsgd")
    ap.add_argument("--distributed-epsilons", default="8", help="user-distributed (SecAgg+) is costly: these epsilons only")
    ap.add_argument("--quick", action="store_true", help="a third of the rounds (a smoke run, not the recorded result)")
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        print(f"data not found: {args.data}", file=sys.stderr)
        return 2
    data = load_data(args.data, 0)
    device, silo = dict(CROSS_DEVICE), dict(CROSS_SILO)
    if args.quick:
        device["rounds"] //= 3
        silo["rounds"] //= 3
    studies = [s.strip() for s in args.studies.split(",") if s.strip()]
    dist_eps = [float(e) for e in args.distributed_epsilons.split(",") if e.strip()]
    plan: list[tuple[str, RunConfig]] = []
    for eps in EPSILONS:
        if "user-central" in studies:
            plan.append(("user-central", run_config(args.data, device, "user-central", eps)))
        if "user-distributed" in studies and eps in dist_eps:
            plan.append(("user-distributed", run_config(args.data, device, "user-distributed", eps, secure="secagg+")))
        if "dpsgd" in studies:
            plan.append(("dpsgd", run_config(args.data, silo, "dpsgd", eps)))
    if "user-distributed" in studies and "user-central" not in studies:
        plan.append(("user-central", run_config(args.data, device, "user-central", math.inf)))
    t0 = time.perf_counter()
    rows, popularity = [], None
    for study, cfg in plan:
        out = one_run(study, cfg, data)
        rows.append(out["row"])
        popularity = out["popularity"]
    # The eps = inf run is shared by the cross-device studies: same configuration, no DP.
    for r in list(rows):
        if r["study"] == "user-central" and r["target_epsilon"] == "inf" and "user-distributed" in studies:
            rows.append(dict(r, study="user-distributed", note="same run as user-central at inf (no DP)"))
    table = markdown(rows, popularity or {}, studies)
    print()
    print(table)
    result = {
        "benchmark": "dp utility on ml-latest-small: HR@10 / NDCG@10 (full catalogue) at epsilon 1, 2, 4, 8, inf",
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "machine": {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()},
        "versions": library_versions(),
        "data": args.data,
        "configs": {"cross-device": device, "cross-silo": silo, "distributed_epsilons": dist_eps},
        "popularity": popularity,
        "runs": rows,
        "markdown": table,
        "total_seconds": time.perf_counter() - t0,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
