"""SecAgg+ at scale: n = 1,000 ... 10,000 clients, d = 10,000, on this machine.

Each round is a full protocol run through the in-process simulator with the
clients' cryptography spread over ``--workers`` forked processes (the server
stays in the parent). Reported per n: wall-clock seconds, CPU seconds of
clients and server, bytes up/down, the degree k and threshold t that
``choose_params`` picks for 10% dropout (failure <= 1e-6, privacy failure
<= 2^-40; ``--threat-model``, default semi-honest), peak resident
memory (parent and children, from ``getrusage``), and the fitted exponent of
time (wall, and total CPU -- the latter is robust to other load on a shared
machine) versus ``n log n``. Inputs are generated on demand from the client id so
that they do not dominate memory; the decoded sum is checked exactly.

Wire v3 (driven by ``run_round`` until the server is ``done``): every round
includes the signed configuration, each client's policy checks and the
commit-and-reveal graph seed. The ``seed_reveal`` stage and each client's
check of the n reveals (it opens every commitment of the view, and the view
broadcast carries the n advertised key records) are O(n) per client, so the
clients' CPU grows as n^2 rather than n log n; ``stage_cpu_seconds`` shows
where.

Usage: python benchmarks/bench_secagg_scale.py [--ns 1000 2000 5000 10000] [--d 10000] [--workers 2] [--dropout 0.0]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Mapping
from importlib.metadata import version
from pathlib import Path

import numpy as np

from fedsecure.bench import fedsecure_round  # the driver shared with `fedsecure bench`
from fedsecure.secagg import FixedPointEncoding, choose_params


class OnDemandInputs(Mapping):
    """Client u's vector is a constant pattern derived from u, built when asked for."""

    def __init__(self, n: int, d: int) -> None:
        self.n, self.d = n, d

    def value(self, u: int) -> float:
        return ((u % 13) - 6) / 6 * 0.9

    def __getitem__(self, u: int) -> np.ndarray:
        return np.full(self.d, self.value(u), dtype=np.float32) * np.float32(1.0)

    def __iter__(self):
        return iter(range(self.n))

    def __len__(self) -> int:
        return self.n


def peak_rss_mib() -> dict[str, float]:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"parent_mib": own, "largest_child_mib": kids}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ns", type=int, nargs="+", default=[1000, 2000, 5000, 10000])
    ap.add_argument("--d", type=int, default=10_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dropout", type=float, default=0.0, help="fraction of clients dropping before their masked input")
    ap.add_argument("--threat-model", default="semi-honest", choices=["semi-honest", "active"],
                    help="rule for (k, t); the round itself runs the semi-honest protocol")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "secagg_scale.json"))
    args = ap.parse_args()
    rows = []
    for n in args.ns:
        params = choose_params(n, dropout_rate=0.1, graph="sparse", threat_model=args.threat_model)
        enc = FixedPointEncoding.for_sum(n, 1.0)
        inputs = OnDemandInputs(n, args.d)
        step = int(round(1 / args.dropout)) if args.dropout else 0
        dropouts = {u: "masked_input" for u in range(0, n, step)} if step else {}
        t0 = time.perf_counter()
        _, r, _ = fedsecure_round(inputs, dropouts, params, enc, vector_length=args.d, workers=args.workers)
        wall = time.perf_counter() - t0
        if r is None:
            raise SystemExit(f"n={n}: the round aborted (too few survivors)")
        expect = sum(inputs.value(u) for u in r.included)
        err = float(np.abs(r.total - np.float32(1.0) * expect).max())
        row = {
            "n": n, "d": args.d, "k": params.k, "t": params.t, "threat_model": params.threat_model,
            "failure_probability": params.failure_probability,
            "privacy_failure_probability": params.privacy_failure_probability,
            "dropped": len(dropouts), "included": len(r.included), "wall_seconds": wall,
            "client_cpu_seconds": r.client_seconds, "server_cpu_seconds": r.server_seconds,
            "stage_cpu_seconds": r.stage_seconds, "upload_bytes": r.upload_bytes, "download_bytes": r.download_bytes,
            "max_abs_error": err, "error_bound": enc.max_error(len(r.included)) + 1e-6 * len(r.included),
            "peak_memory": peak_rss_mib(),
        }
        assert err <= row["error_bound"], row
        rows.append(row)
        print(f"n={n:6d} k={params.k} t={params.t}: wall {wall:7.2f}s  clients {r.client_seconds:7.2f}s cpu  "
              f"server {r.server_seconds:6.2f}s cpu  peak {row['peak_memory']}", flush=True)
    fit = None
    if len(rows) >= 2:
        x = np.log([r["n"] * math.log(r["n"]) for r in rows])
        y = np.log([r["wall_seconds"] for r in rows])
        slope = float(np.polyfit(x, y, 1)[0])
        xn = np.log([r["n"] for r in rows])
        ycpu = np.log([r["client_cpu_seconds"] + r["server_cpu_seconds"] for r in rows])
        fit = {"exponent_vs_n_log_n": slope, "exponent_vs_n": float(np.polyfit(xn, y, 1)[0]),
               "cpu_exponent_vs_n_log_n": float(np.polyfit(x, ycpu, 1)[0]),
               "cpu_exponent_vs_n": float(np.polyfit(xn, ycpu, 1)[0])}
        print("growth:", fit)
    out = {
        "command": " ".join([sys.executable.split("/")[-1]] + sys.argv),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {p: version(p) for p in ("cryptography", "numpy")},
        "workers": args.workers, "dropout": args.dropout, "growth_fit": fit, "rounds": rows,
    }
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
