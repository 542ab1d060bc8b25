"""Distributed vs central user-level DP on ml-latest-small: same epsilon, same utility within noise?

Issue 5's target: the decoded aggregate of distributed DP (each client adds
discrete Gaussian noise inside SecAgg+ pairwise masking, only the noisy sum is
decoded) must match central DP (the server adds ``N(0, (z C)^2)`` to the
decoded sum) at the same epsilon within run-to-run noise.

Design of the comparison:

* One configuration, :data:`bench_dp_utility.CROSS_DEVICE` (every
  hyperparameter written out there), tuned so that utility leaves the noise
  floor at finite epsilon (see that module's docstring for how).
* For every epsilon and every seed, one ``user-central`` and one
  ``user-distributed`` run with the *same seed*: the same initialisation and
  the same local negatives; the mechanism, its fresh OS-keyed noise and its
  Poisson sample of clients (drawn from the secret source, as the accountant
  assumes) differ. Each mechanism calibrates its own noise
  multiplier to the target epsilon with the library's accountant (the
  distributed one pays for quantization and for calibrating to the fewest
  clients that can survive, ``min_clients``).
* Statistics per epsilon: mean and sample standard deviation (ddof 1) of
  HR@10 / NDCG@10 per mechanism; the paired difference
  ``distributed - central`` over seeds with its standard error and a paired t
  statistic, and Welch's t on the two samples; "matches within noise" is
  stated as the 95% confidence interval of the mean paired difference
  containing 0 (and its width says how much the test can resolve). The same
  pooled over all finite epsilons.
* The realised noise: for each epsilon, one round's decoded aggregate of each
  mechanism minus the exact sum of the clipped updates (same updates), its
  per-coordinate std, against the central Gaussian's ``z C`` and the
  distributed protocol's own report (``sqrt(n) sigma_local / s``).

* A control (second invocation, ``--matched-noise-from JSON``): central DP
  run with the noise std the distributed runs actually carried, same seeds,
  paired with the distributed runs; and clipping without noise (``z = 0``).
  At the same epsilon distributed DP needs more noise (the subsampled zCDP
  bound it is accounted with is looser than the exact subsampled-Gaussian
  RDP, and the noise is calibrated to ``min_clients`` survivors), so the
  same-epsilon comparison mixes that privacy price with any damage the
  protocol does to the decoded aggregate; at matched noise only the latter
  remains.

* Full participation (``--clients-per-round 1.0``): without subsampling the
  two accountings coincide (RDP ``alpha rho`` of the distributed sum against
  ``alpha / (2 z^2)`` of the Gaussian), so what remains between the two
  mechanisms at the same epsilon is quantization, ``min_clients`` and the
  protocol itself.

Usage::

    python benchmarks/bench_dp_distributed_vs_central.py --epsilons 8,2,4,1 --seeds 0,1,2 --with-inf
    python benchmarks/bench_dp_distributed_vs_central.py --matched-noise-from benchmarks/results/dp_distributed_vs_central.json
    python benchmarks/bench_dp_distributed_vs_central.py --clients-per-round 1.0 --rounds 20 --epsilons 8,4 \
        --out benchmarks/results/dp_distributed_vs_central_full.json
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

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_dp_utility import CROSS_DEVICE, DEFAULT_DATA, one_run, run_config  # noqa: E402

from fedsecure.dp.user_level import clip_l2  # noqa: E402
from fedsecure.experiment import Experiment, RunConfig, library_versions, load_data  # noqa: E402
from fedsecure.fl.engine import FederatedTrainer  # noqa: E402
from fedsecure.stats import over_seeds, paired_seeds  # noqa: E402

torch.set_num_threads(1)

METRICS = ("hr@10", "ndcg@10")


def describe(values: list[float]) -> dict[str, Any]:
    """Mean, sd, Student-t interval and values over seeds (:func:`fedsecure.stats.over_seeds`)."""
    return over_seeds(values).as_dict()


def compare(central: list[float], distributed: list[float], metric: str = "") -> dict[str, Any]:
    """``distributed - central`` paired by (epsilon, seed) (:func:`fedsecure.stats.paired_seeds`): the
    difference, its 95% interval, and whether the interval resolves it."""
    c = dict(enumerate(central))
    d = dict(enumerate(distributed))
    if len(c) < 2:
        return {"difference": float(distributed[0] - central[0]) if central else None, "n": len(c), "resolved": False}
    return paired_seeds(metric, d, c).as_dict()


def realised_noise(data_path: str, data: Any, base: dict[str, Any], epsilon: float, seed: int) -> dict[str, Any]:
    """One round's decoded aggregate minus the exact sum of the clipped updates, for both mechanisms."""
    out: dict[str, Any] = {"target_epsilon": epsilon}
    updates = None
    for dp in ("user-central", "user-distributed"):
        extra = {"secure": "secagg+"} if dp == "user-distributed" else {}
        exp = Experiment(run_config(data_path, dict(base, seed=seed), dp, epsilon, **extra), data=data)
        if updates is None:
            loop = FederatedTrainer(
                exp.model, exp.split.train, exp.clients, config=exp.fl_config, aggregator=exp.aggregator,
                trainer=exp.trainer, evaluate=None,
            )
            sampled, _, _ = loop._plan(1)
            start = loop.shared.get()
            updates = [loop.client_update(int(c), start, 1) for c in sampled]
        agg = exp.aggregator
        bound = agg.protocol.input_bound
        exact = np.zeros(updates[0].delta.size)
        for u in updates:
            v, _ = clip_l2(u.delta, agg.clip)
            if bound is not None and bound < agg.clip:
                np.clip(v, -bound, bound, out=v)
            exact += v
        res = agg.aggregate(updates, round_index=1)
        err = np.asarray(res.delta, dtype=np.float64) * agg.expected_clients - exact
        row = {
            "noise_multiplier": agg.noise_multiplier,
            "clip": agg.clip,
            "clients": len(res.included),
            "dim": int(exact.size),
            "realised_noise_std_of_sum": float(err.std()),
            "realised_noise_mean": float(err.mean()),
            "central_gaussian_std_at_central_z": None,
        }
        if dp == "user-distributed":
            p = res.stats["privacy"]
            row.update(
                reported_noise_std_of_sum=p["noise_std_of_sum"], min_clients=p["min_clients"], scale=p["scale"],
                quantized_sensitivity=p["quantized_sensitivity"], local_sigma_encoded=p["local_sigma_encoded"],
            )
        out[dp] = row
    zc = out["user-central"]["noise_multiplier"] * out["user-central"]["clip"]
    for dp in ("user-central", "user-distributed"):
        out[dp]["central_gaussian_std_at_central_z"] = zc
    out["ratio_distributed_to_central_std"] = out["user-distributed"]["realised_noise_std_of_sum"] / out["user-central"]["realised_noise_std_of_sum"]
    return out


def summarise(rows: list[dict[str, Any]], eps: float | str) -> dict[str, Any]:
    """Per-mechanism statistics and the comparison at one epsilon (or pooled over all finite ones)."""
    block: dict[str, Any] = {"label": f"{eps:g}" if isinstance(eps, float) else "all finite (pooled)", "target_epsilon": eps}
    def by_pair(study: str) -> dict[tuple[float, int], dict[str, Any]]:
        return {
            (r["target_epsilon"], r["seed"]): r for r in rows
            if r["study"] == study and (eps == "pooled" or r["target_epsilon"] == eps)
        }

    central, distributed = by_pair("user-central"), by_pair("user-distributed")
    pairs = sorted(set(central) & set(distributed))  # same epsilon, same seed: paired
    block["pairs"] = [list(p) for p in pairs]
    for m in METRICS:
        c, d = [central[p][m] for p in pairs], [distributed[p][m] for p in pairs]
        block[m] = {"central": describe(c), "distributed": describe(d), "comparison": compare(c, d, m)}
    return block


def fmt(s: dict[str, Any], digits: int = 4) -> str:
    lo, hi = s["ci95"]
    return f"{s['mean']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]" if math.isfinite(lo) else f"{s['mean']:.{digits}f}"


def _diff_cell(cmp_: dict[str, Any]) -> str:
    ci = cmp_.get("ci95")
    if not ci:
        return f"{cmp_['difference']:+.4f}"
    return f"{cmp_['difference']:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}]" + ("" if cmp_["resolved"] else " (not resolved)")


def markdown(summary: list[dict[str, Any]], popularity: dict[str, float]) -> str:
    lines = [
        "| epsilon | central HR@10 | distributed HR@10 | diff (dist - central) [95% paired] | central NDCG@10 | distributed NDCG@10 | diff [95% paired] |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        cells = [s["label"]]
        hr, nd = s["hr@10"], s["ndcg@10"]
        for m, block in (("hr@10", hr), ("ndcg@10", nd)):
            cells += [fmt(block["central"]), fmt(block["distributed"])]
            cells.append(_diff_cell(block["comparison"]))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(
        f"| popularity | {popularity['hr@10']:.4f} | {popularity['hr@10']:.4f} | | {popularity['ndcg@10']:.4f} | {popularity['ndcg@10']:.4f} | |"
    )
    return "\n".join(lines)


def matched_summary(realised: list[dict[str, Any]], rows: list[dict[str, Any]]) -> tuple[list, dict, str]:
    """The matched-noise control's summary from its rows: per epsilon, central with the distributed runs'
    noise against distributed, paired by seed; the clip-only reference; and the markdown table."""
    clip_only = {m: describe([r[m] for r in rows if r["study"] == "user-central-clip-only"]) for m in METRICS}
    control = []
    for n in realised:
        eps = n["target_epsilon"]
        block: dict[str, Any] = {"target_epsilon_of_distributed": eps}
        pick = {
            study: {r["seed"]: r for r in rows if r["study"] == study and r.get("target_epsilon") == eps}
            for study in ("user-central-matched-noise", "user-distributed")
        }
        seeds = sorted(set(pick["user-central-matched-noise"]) & set(pick["user-distributed"]))
        for m in METRICS:
            c = [pick["user-central-matched-noise"][s][m] for s in seeds]
            d = [pick["user-distributed"][s][m] for s in seeds]
            block[m] = {"central_matched": describe(c), "distributed": describe(d), "comparison": compare(c, d, m)}
        control.append(block)
    lines = [
        "| distributed at epsilon | central, same noise std: HR@10 | distributed HR@10 | diff [95% paired] "
        "| central, same noise: NDCG@10 | distributed NDCG@10 | diff [95% paired] |",
        "|---|---|---|---|---|---|---|",
    ]
    for b in control:
        cells = [f"{b['target_epsilon_of_distributed']:g}"]
        for m in METRICS:
            cells += [fmt(b[m]["central_matched"]), fmt(b[m]["distributed"]), _diff_cell(b[m]["comparison"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"| clip only (z = 0, eps = inf) | {fmt(clip_only['hr@10'])} | | | {fmt(clip_only['ndcg@10'])} | | |")
    return control, clip_only, "\n".join(lines)


def matched_noise(path: str, data_path: str, data: Any, command: str) -> int:
    """Control run: central DP with the noise the distributed runs actually carried.

    At the same epsilon the distributed mechanism needs more noise than the
    central one (quantization inflates the sensitivity, the noise is
    calibrated to ``min_clients`` survivors, and a subsampled zCDP bound is
    looser than the exact subsampled-Gaussian RDP). Running central DP with
    ``z = (realised std of the distributed sum) / C`` separates that privacy
    price from the protocol itself: if the decoded aggregate were damaged
    (wrap-around, decoding), distributed would fall below this control too.
    Appends to the JSON written by the main study (same seeds, paired).
    """
    result = json.loads(Path(path).read_text())
    base = dict(result["config"])
    rows = [r for r in result["runs"] if r["study"] != "user-central-matched-noise"]
    for n in result["realised_noise"]:
        eps = n["target_epsilon"]
        z = n["user-distributed"]["realised_noise_std_of_sum"] / n["user-distributed"]["clip"]
        for seed in result["seeds"]:
            fields = dict(base, seed=seed, eval_every=base["rounds"])
            cfg = RunConfig(data=data_path, dp="user-central", noise_multiplier=z, **fields)
            out = one_run("user-central-matched-noise", cfg, data)
            rows.append(dict(out["row"], seed=seed, target_epsilon=eps, matched_noise_multiplier=z))
    # The reference for "what noise costs": clipping at C without noise (z = 0, epsilon = inf);
    # the eps = inf rows of the main study have neither clipping nor noise.
    rows = [r for r in rows if r["study"] != "user-central-clip-only"]
    for seed in result["seeds"]:
        cfg = RunConfig(data=data_path, dp="user-central", noise_multiplier=0.0, **dict(base, seed=seed, eval_every=base["rounds"]))
        out = one_run("user-central-clip-only", cfg, data)
        rows.append(dict(out["row"], seed=seed))
    control, clip_only, table_md = matched_summary(result["realised_noise"], rows)
    result["runs"] = rows
    result["matched_noise_control"] = {
        "command": command, "summary": control, "clip_only": clip_only, "markdown": table_md,
    }
    Path(path).write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(table_md)
    print(f"\nappended the matched-noise control to {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default="benchmarks/results/dp_distributed_vs_central.json")
    ap.add_argument("--epsilons", default="2,8")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--with-inf", action="store_true", help="also the non-private runs (one per seed)")
    ap.add_argument(
        "--matched-noise-from", default=None,
        help="control study: central DP at the distributed runs' realised noise, appended to this JSON",
    )
    ap.add_argument("--rounds", type=int, default=None, help="override the configuration's rounds")
    ap.add_argument("--clients-per-round", type=float, default=None,
                    help="override the configuration's clients per round (1.0: full participation, no subsampling)")
    args = ap.parse_args(argv)
    if not Path(args.data).exists():
        print(f"data not found: {args.data}", file=sys.stderr)
        return 2
    data = load_data(args.data, 0)
    if args.matched_noise_from:
        return matched_noise(
            args.matched_noise_from, args.data, data,
            "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        )
    epsilons = [float(e) for e in args.epsilons.split(",") if e.strip()]
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    base = dict(CROSS_DEVICE)
    if args.rounds is not None:
        base["rounds"] = args.rounds
    if args.clients_per_round is not None:
        base["clients_per_round"] = args.clients_per_round
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    popularity: dict[str, float] = {}
    noise: list[dict[str, Any]] = []
    command = "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])])

    def write(complete: bool) -> str:
        # Written after every run: a long benchmark on a shared machine keeps what it measured.
        done = [e for e in epsilons if any(r["target_epsilon"] == e and r["study"] == "user-distributed" for r in rows)]
        summary = [summarise(rows, e) for e in done]
        if len(done) > 1:
            summary.append(summarise(rows, "pooled"))
        table = markdown(summary, popularity) if summary else ""
        inf_rows = [r for r in rows if r["study"] == "none"]
        if inf_rows:
            hr, nd = describe([r["hr@10"] for r in inf_rows]), describe([r["ndcg@10"] for r in inf_rows])
            table += f"\n| ∞ (no DP) | {fmt(hr)} | (same) | | {fmt(nd)} | (same) | |"
        result = {
            "benchmark": "user-level DP on ml-latest-small: distributed (SecAgg+ with discrete Gaussian) vs central Gaussian at the same epsilon",
            "command": command,
            "complete": complete,
            "machine": {"cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform()},
            "versions": library_versions(),
            "data": args.data,
            "config": base,
            "epsilons": epsilons,
            "seeds": seeds,
            "popularity": popularity,
            "summary": summary,
            "realised_noise": noise,
            "runs": rows,
            "markdown": table,
            "total_seconds": time.perf_counter() - t0,
        }
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=1, default=str) + "\n")
        return table

    for eps in epsilons:
        noise.append(realised_noise(args.data, data, base, eps, seeds[0]))
        n = noise[-1]
        print(
            f"eps={eps:g}: realised noise std of the sum: central {n['user-central']['realised_noise_std_of_sum']:.4f} "
            f"(z C = {n['user-central']['central_gaussian_std_at_central_z']:.4f}), distributed "
            f"{n['user-distributed']['realised_noise_std_of_sum']:.4f} (reported "
            f"{n['user-distributed']['reported_noise_std_of_sum']:.4f}); ratio {n['ratio_distributed_to_central_std']:.3f}",
            flush=True,
        )
        for seed in seeds:
            cfg = dict(base, seed=seed)
            for study, extra in (("user-central", {}), ("user-distributed", {"secure": "secagg+"})):
                out = one_run(study, run_config(args.data, cfg, study, eps, **extra), data)
                rows.append(dict(out["row"], seed=seed))
                popularity = out["popularity"]
                write(complete=False)
        if args.with_inf and eps == epsilons[0]:
            # the non-private reference, once per seed, after the first epsilon (a cheap run)
            for seed in seeds:
                out = one_run("none", run_config(args.data, dict(base, seed=seed), "none", math.inf), data)
                rows.append(dict(out["row"], seed=seed))
                write(complete=False)
    table = write(complete=True)
    print()
    print(table)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
