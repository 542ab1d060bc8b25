"""How much more noise distributed DP's accounting asks for than central DP's, by sampling rate.

Central user-level DP is accounted with the exact RDP of the Poisson-subsampled
Gaussian (Mironov, Talwar & Zhang 2019, through Opacus); distributed DP (the
sum of the clients' discrete Gaussians) with the general Poisson-subsampled
RDP bound of Zhu & Wang (2019) applied to its zCDP guarantee
(``fedsecure.dp.user_level.distributed_epsilon``). Without subsampling
(``q = 1``) the two coincide; the general bound loosens as ``q`` grows. This
script calibrates both to the same (epsilon, delta, rounds) at several
sampling rates and reports the ratio of the noise multipliers, with
quantization and survivor slack switched off (a 62-bit scale, ``min_clients``
equal to the survivors) so that only the accounting differs. It trains
nothing and takes about a minute.

    python benchmarks/bench_dp_accounting_gap.py

writes benchmarks/results/dp_accounting_gap.json.
"""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path

from fedsecure.dp.accounting import noise_multiplier_for
from fedsecure.dp.user_level import distributed_noise_multiplier_for
from fedsecure.experiment import library_versions

EPSILONS = (1.0, 2.0, 4.0, 8.0)
SAMPLE_RATES = (0.01, 0.03, 0.1, 128 / 610, 1.0)  # 128 / 610: the ml-latest-small cross-device benchmarks
ROUNDS, DELTA, DIM, MIN_CLIENTS = 50, 1e-5, 100_000, 100


def main() -> int:
    t0 = time.perf_counter()
    rows = []
    for q in SAMPLE_RATES:
        for eps in EPSILONS:
            zc = noise_multiplier_for(eps, DELTA, q, ROUNDS)
            zd = distributed_noise_multiplier_for(
                eps, DELTA, q, ROUNDS, clip=1.0, min_clients=MIN_CLIENTS, dim=DIM, scale=2.0**62, rounding_slack=0.5,
            )
            rows.append({"sample_rate": q, "target_epsilon": eps, "central_z": zc, "distributed_z": zd,
                         "ratio": zd / zc})
            print(f"q={q:.3f} eps={eps:g}: central z {zc:.3f}, distributed z {zd:.3f}, ratio {zd / zc:.3f}", flush=True)
    lines = ["| sampling rate q | " + " | ".join(f"epsilon {e:g}" for e in EPSILONS) + " |",
             "|---|" + "---|" * len(EPSILONS)]
    for q in SAMPLE_RATES:
        cells = [f"{r['ratio']:.2f}" for r in rows if r["sample_rate"] == q]
        lines.append(f"| {q:.3g} | " + " | ".join(cells) + " |")
    out = {
        "command": shlex.join(["python", *sys.argv]),
        "what": "noise multiplier distributed / central at the same (epsilon, delta, rounds); accounting only "
                "(quantization and survivor slack switched off)",
        "rounds": ROUNDS, "delta": DELTA, "dim": DIM, "min_clients": MIN_CLIENTS,
        "rows": rows, "markdown": "\n".join(lines), "versions": library_versions(),
        "total_seconds": time.perf_counter() - t0,
    }
    path = Path(__file__).resolve().parent / "results" / "dp_accounting_gap.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print("\n".join(lines))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
