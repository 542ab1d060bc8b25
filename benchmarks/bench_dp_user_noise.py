"""DP noise: cost of the secure source, and distributed-vs-central noise at the same epsilon.

Two comparisons, side by side in one process:

1. Drawing ``n`` Gaussian floats (default 3.2M = a 100k x 32 embedding table):
   ``NoiseSource().gaussian`` (AES-256-CTR keyed from os.urandom + Box-Muller)
   against ``torch.randn`` (predictable Mersenne/Philox stream), interleaved,
   median of ``--repeats``; also the discrete Gaussian sampler per million.
2. User-level DP-FedAvg on an ml-latest-small-sized population (610 users,
   ~10% sampled per round, 100 rounds, delta 1e-5, item table 9742 x 32 shared):
   for each target epsilon, the calibrated noise multiplier of the central
   Gaussian and of the distributed discrete Gaussian (at the scale the real
   SecAgg encoding picks for 16/20/32-bit rings), the predicted per-coordinate
   noise variance of the decoded sum, and the variance measured by running both
   aggregators once on the same clipped updates. Ratio = distributed / central.

    python benchmarks/bench_dp_user_noise.py [--quick]

writes benchmarks/results/dp_user_noise.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from fedsecure.dp.accounting import noise_multiplier_for
from fedsecure.dp.distributed import DiscreteGaussianNoise
from fedsecure.dp.noise import NoiseSource
from fedsecure.dp.user_level import CentralDPFedAvg, DistributedDPFedAvg, clip_l2, distributed_noise_multiplier_for
from fedsecure.fl.aggregation import ClientUpdate, PlainSum


def bench_draws(n: int, repeats: int) -> dict:
    src = NoiseSource()
    times: dict[str, list[float]] = {"secure_gaussian_f32": [], "torch_randn_f32": [], "secure_gaussian_f64": []}
    fns = {
        "secure_gaussian_f32": lambda: src.gaussian(n, 1.0),
        "torch_randn_f32": lambda: torch.randn(n),
        "secure_gaussian_f64": lambda: src.gaussian(n, 1.0, dtype=torch.float64),
    }
    for f in fns.values():  # warm-up
        f()
    for _ in range(repeats):  # interleaved, so load changes hit all alike
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    dg = []
    for _ in range(max(3, repeats // 3)):
        t0 = time.perf_counter()
        src.discrete_gaussian(1_000_000, 1e4)
        dg.append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "n": n,
        "median_seconds": med,
        "ratio_secure_f32_over_torch_randn": med["secure_gaussian_f32"] / med["torch_randn_f32"],
        "ratio_secure_f64_over_torch_randn": med["secure_gaussian_f64"] / med["torch_randn_f32"],
        "discrete_gaussian_seconds_per_million_median": statistics.median(dg),
        "raw_seconds": times,
        "raw_discrete_gaussian_seconds": dg,
    }


def secagg_scale(bits: int, n: int, clip: float, hook: DiscreteGaussianNoise) -> float | None:
    """The scale the real SecAgg encoding would pick (None: the ring cannot hold it)."""
    from fedsecure.secagg.encoding import FixedPointEncoding
    from fedsecure.secagg.errors import ConfigurationError

    try:
        return FixedPointEncoding.for_sum(n, max(clip, 1.0) * (1 + 2.0**-20), bits=bits, noise=hook).scale
    except ConfigurationError:
        return None


def bench_variance(epsilons: list[float], dim: int, population: int, expected: int, rounds: int,
                   min_clients: int, delta: float, clip: float, bits_list: list[int], measure: bool) -> list[dict]:
    q = expected / population
    rng = np.random.default_rng(0)  # synthetic client updates only (data, not noise)
    updates = [ClientUpdate(i, rng.normal(size=dim).astype(np.float64) * (2 * clip / math.sqrt(dim)), 1.0)
               for i in range(expected)]
    clipped_sum = np.sum([clip_l2(u.delta, clip)[0] for u in updates], axis=0)
    rows = []
    for eps in epsilons:
        z_c = noise_multiplier_for(eps, delta, q, rounds, "rdp")
        row: dict = {"target_epsilon": eps, "central": {"noise_multiplier": z_c, "predicted_sum_variance": (z_c * clip) ** 2}}
        if measure:
            agg = CentralDPFedAvg(PlainSum(), clip=clip, noise_multiplier=z_c, expected_clients=expected,
                                  sample_rate=q, delta=delta, population=population)
            t0 = time.perf_counter()
            res = agg.aggregate(updates, round_index=0)
            row["central"]["aggregate_seconds"] = time.perf_counter() - t0
            row["central"]["measured_sum_variance"] = float(np.var(res.delta * expected - clipped_sum))
        row["distributed"] = {}
        for bits in bits_list:
            # scale depends on the noise headroom, the noise on the scale: iterate to a fixed point
            scale, z_d = 2.0**16, z_c
            entry: dict = {}
            for _ in range(4):
                hook = DiscreteGaussianNoise(noise_multiplier=z_d, clip=clip, min_clients=min_clients, dim=dim)
                s = secagg_scale(bits, expected, clip, hook)
                if s is None:
                    entry = {"refused": f"{bits}-bit ring cannot hold {expected} clients' sum plus the noise bound"}
                    break
                scale = s
                z_d = distributed_noise_multiplier_for(eps, delta, q, rounds, clip=clip, min_clients=min_clients,
                                                       dim=dim, scale=scale, rounding_slack=1.0)
            if not entry:
                hook = DiscreteGaussianNoise(noise_multiplier=z_d, clip=clip, min_clients=min_clients, dim=dim)
                if secagg_scale(bits, expected, clip, hook) != scale:
                    entry = {"refused": "scale did not settle"}
            if not entry:
                sig = hook.local_sigma(scale)
                pred = expected * sig**2 / scale**2
                entry = {"noise_multiplier": z_d, "scale": scale, "local_sigma_encoded": sig,
                         "sensitivity_inflation": hook.sensitivity(scale)[0] / (scale * clip),
                         "predicted_sum_variance": pred,
                         "predicted_variance_ratio_vs_central": pred / row["central"]["predicted_sum_variance"]}
                if measure and bits == 32:
                    agg = DistributedDPFedAvg(PlainSum(), clip=clip, noise_multiplier=z_d, expected_clients=expected,
                                              sample_rate=q, delta=delta, population=population,
                                              min_clients=min_clients, dim=dim, scale=scale)
                    t0 = time.perf_counter()
                    res = agg.aggregate(updates, round_index=0)
                    entry["aggregate_seconds"] = time.perf_counter() - t0
                    rounded = np.sum([np.rint(clip_l2(u.delta, clip)[0] * scale) for u in updates], axis=0) / scale
                    mv = float(np.var(res.delta * expected - rounded))
                    entry["measured_sum_variance"] = mv
                    entry["measured_variance_ratio_vs_central"] = mv / row["central"]["measured_sum_variance"]
                    entry["epsilon_after_one_round"] = res.stats["privacy"]["epsilon"]
            row["distributed"][f"{bits}_bits"] = entry
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (smoke run)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "dp_user_noise.json"))
    args = ap.parse_args()
    n = 320_000 if args.quick else 3_200_000
    repeats = 5 if args.quick else 21
    dim = 9742 * 32 if not args.quick else 20_000
    # Default intra-op threads, then one thread: on a loaded shared machine the multithreaded
    # elementwise ops of Box-Muller suffer more from contention than torch.randn does.
    draws = {}
    for threads in (torch.get_num_threads(), 1):
        torch.set_num_threads(threads)
        draws[f"{threads}_threads"] = d = bench_draws(n, repeats)
        print(f"[{threads} thread(s)] gaussian draw of {n:,} floats: secure "
              f"{d['median_seconds']['secure_gaussian_f32'] * 1e3:.1f} ms, "
              f"torch.randn {d['median_seconds']['torch_randn_f32'] * 1e3:.1f} ms, "
              f"ratio {d['ratio_secure_f32_over_torch_randn']:.2f}")
    variance = bench_variance([1.0, 2.0, 4.0, 8.0], dim=dim, population=610, expected=61, rounds=100,
                              min_clients=50, delta=1e-5, clip=1.0, bits_list=[16, 20, 32], measure=True)
    for row in variance:
        d32 = row["distributed"]["32_bits"]
        print(f"eps {row['target_epsilon']}: z central {row['central']['noise_multiplier']:.3f}, "
              f"z distributed {d32.get('noise_multiplier', float('nan')):.3f}, variance ratio predicted "
              f"{d32.get('predicted_variance_ratio_vs_central', float('nan')):.3f}, measured "
              f"{d32.get('measured_variance_ratio_vs_central', float('nan')):.3f}")
    import cryptography
    import opacus

    out = {
        "command": "python " + " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
        "machine": {"cpu_count": os.cpu_count(), "load_average_at_end": os.getloadavg(),
                    "platform": platform.platform(), "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "numpy": np.__version__, "cryptography": cryptography.__version__,
                     "opacus": opacus.__version__},
        "setting": {"population": 610, "expected_clients": 61, "rounds": 100, "delta": 1e-5, "clip": 1.0,
                    "min_clients": 50, "dim": dim, "accountant": "rdp (central); rdp + Zhu-Wang (distributed)"},
        "noise_draw": draws,
        "distributed_vs_central": variance,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
