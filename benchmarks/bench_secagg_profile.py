"""Where a fedsecure SecAgg+ round spends its CPU time, against the cryptographic floor of the round.

One round at the vs-Flower setting (n=100, d=100,000, semi-honest (k, t) from
``choose_params``, 10% of the clients dropping before their masked input) is
run under ``cProfile``; the top functions by own time are recorded. In the
same process, without the profiler, the run measures

* the round's CPU time (median of ``--reps`` rounds), and
* the unit cost of the three operations no pairwise-mask protocol can avoid
  (one X25519 agreement, one AES-256-CTR keystream of d words, one d-word
  ``numpy.add``), multiplied by how many of each the round performs (counted
  by the profiler) -- the *floor* of this round's cost.

Usage: python benchmarks/bench_secagg_profile.py [--n 100] [--d 100000] [--reps 3]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import sys
import time
import timeit
from importlib.metadata import version
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedsecure.secagg import FixedPointEncoding, choose_params, run_round


def unit_costs(d: int) -> dict[str, float]:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate().public_key()
    zeros, buf = bytes(4 * d), bytearray(4 * d + 16)
    acc = np.zeros(d, dtype=np.uint32)
    view = np.frombuffer(buf, dtype=np.uint32, count=d)
    key = os.urandom(32)

    def best(f, number):
        return min(timeit.repeat(f, number=number, repeat=5)) / number

    return {
        "x25519_exchange": best(lambda: a.exchange(b), 500),
        "aes256_ctr_keystream": best(lambda: Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
                                     .update_into(zeros, buf), 100),
        "numpy_add": best(lambda: np.add(acc, view, out=acc), 200),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "secagg_profile.json"))
    args = ap.parse_args()
    n, d = args.n, args.d
    vectors = {u: (np.sin(np.arange(d, dtype=np.float64) * (u + 1) * 1e-3) * 0.9).astype(np.float32) for u in range(n)}
    params = choose_params(n, dropout_rate=0.1, graph="sparse", threat_model="semi-honest")
    enc = FixedPointEncoding.for_sum(n, 1.0)
    drop = {u: "masked_input" for u in range(0, n, 10)}
    run_round(vectors, params, enc, dropouts=drop)  # warm-up
    cpu = []
    for _ in range(args.reps):
        t0 = time.process_time()
        report = run_round(vectors, params, enc, dropouts=drop)
        cpu.append(time.process_time() - t0)
    prof = cProfile.Profile()
    prof.enable()
    run_round(vectors, params, enc, dropouts=drop)
    prof.disable()
    stats = pstats.Stats(prof, stream=io.StringIO())
    rows = []
    for (file, line, fn), (cc, nc, tt, ct, _) in stats.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({fn})", "calls": nc, "own_seconds": tt, "cumulative_seconds": ct})
    rows.sort(key=lambda r: -r["own_seconds"])
    counts = {
        "x25519_exchange": sum(r["calls"] for r in rows if "x25519.X25519PrivateKey" in r["function"] and "exchange" in r["function"]),
        "aes256_ctr_keystream": sum(r["calls"] for r in rows if "update_into" in r["function"]),
    }
    counts["numpy_add"] = counts["aes256_ctr_keystream"]  # one add/subtract per keystream
    unit = unit_costs(d)
    floor = {k: counts[k] * unit[k] for k in counts}
    total = statistics.median(cpu)
    out = {
        "command": " ".join([sys.executable.split("/")[-1]] + sys.argv),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {p: version(p) for p in ("cryptography", "numpy")},
        "setting": {"n": n, "d": d, "dropped_before_masked_input": len(drop), "params": params.as_dict()},
        "round_cpu_seconds": {"median": total, "raw": cpu, "client": report.client_seconds,
                              "server": report.server_seconds, "by_stage": report.stage_seconds},
        "unit_seconds": unit,
        "operation_counts": counts,
        "floor_seconds": {**floor, "total": sum(floor.values())},
        "ratio_round_over_floor": total / sum(floor.values()),
        "profile_top": rows[:20],
    }
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(f"round {total:.3f} CPU-s (client {report.client_seconds:.3f}, server {report.server_seconds:.3f}); "
          f"floor {sum(floor.values()):.3f} s = " + ", ".join(f"{k} {counts[k]} x {unit[k] * 1e6:.1f} us" for k in counts)
          + f"; round/floor {total / sum(floor.values()):.2f}")
    for r in rows[:12]:
        print(f"  {r['own_seconds']:.4f} s  {r['calls']:6d}  {r['function']}")


if __name__ == "__main__":
    main()
