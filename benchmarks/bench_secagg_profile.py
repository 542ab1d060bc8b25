"""Where a fedsecure SecAgg+ round spends its CPU time, against the cryptographic floor of the round.

One round at the vs-Flower setting (n=100, d=100,000, (k, t) from
``choose_params`` for ``--threat-model``, default semi-honest, 10% of the
clients dropping before their masked input) is run under ``cProfile``; the
top functions by own time are recorded. In the same process, without the
profiler, the run measures

* the round's CPU time (median of ``--reps`` rounds), and its split by
  server stage (clients' and server's work while that stage is open);
* the unit cost of the three operations no pairwise-mask protocol can avoid
  (one X25519 agreement, one AES-256-CTR keystream of d words, one d-word
  ``numpy.add``), multiplied by how many of each the round performs (counted
  by the profiler) -- the *floor* of this round's cost (unit costs in CPU time,
  like the round, best of 5);
* the cost of wire v3's commit-and-reveal graph seed, two ways: the
  simulator's ``seed_reveal`` stage (clients check the signed view and the
  policy for it and reveal; the server checks the reveals, draws the graph
  and signs the reveals broadcast), and, timed alone, what each client does
  with that broadcast before it can share keys (verify the server's
  signature, open every one of the n commitments, hash the seed, find its
  neighbours: O(n) per client, which lands in the ``share_keys`` stage).
  The profiler's cumulative time of the v3 functions is recorded as well
  (``v3_functions``; those rows nest and include profiler overhead).

Usage: python benchmarks/bench_secagg_profile.py [--n 100] [--d 100000] [--reps 3] [--threat-model semi-honest]
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
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedsecure.secagg import FixedPointEncoding, choose_params, keys, messages as m, run_round
from fedsecure.secagg.graph import neighbours_of

#: (file, function) whose cumulative profiled time is the v3 seed-reveal / policy / signing work
V3_FUNCTIONS = [
    ("client.py", "_on_commitments"), ("client.py", "_reveal"), ("client.py", "_on_reveals"),
    ("keys.py", "reveal_matches"), ("keys.py", "graph_seed"), ("keys.py", "seed_chain"),
    ("graph.py", "neighbours_of"), ("graph.py", "build_graph"), ("policy.py", "check_round"),
    ("messages.py", "open_broadcast"), ("messages.py", "sign_broadcast"),
    ("server.py", "_on_seed_reveal"), ("server.py", "_close_seed_reveal"), ("server.py", "_close_advertise_keys"),
]


def unit_costs(d: int) -> dict[str, float]:
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate().public_key()
    zeros, buf = bytes(4 * d), bytearray(4 * d + 16)
    acc = np.zeros(d, dtype=np.uint32)
    view = np.frombuffer(buf, dtype=np.uint32, count=d)
    key = os.urandom(32)

    def best(f, number):
        return min(timeit.repeat(f, number=number, repeat=5, timer=time.process_time)) / number

    return {
        "x25519_exchange": best(lambda: a.exchange(b), 500),
        "aes256_ctr_keystream": best(lambda: Cipher(algorithms.AES(key), modes.CTR(bytes(16))).encryptor()
                                     .update_into(zeros, buf), 100),
        "numpy_add": best(lambda: np.add(acc, view, out=acc), 200),
    }


def client_reveal_check(n: int, k: int, graph: str, reps: int = 5) -> dict[str, float]:
    """One client's work on the SeedReveals broadcast of an n-client view, before it shares keys (seconds)."""
    sk = Ed25519PrivateKey.generate()
    cfg_hash = os.urandom(32)
    view = np.arange(n, dtype=np.int64)
    chains = [keys.seed_chain(os.urandom(32), 3) for _ in range(n)]
    commits = [c for _, c in chains]
    reveals = b"".join(ch[0] for ch, _ in chains)
    header = m.Header(m.SeedReveals.TYPE, os.urandom(16), m.SERVER, m.SERVER)
    data = m.sign_broadcast(header, m.SeedReveals(0, reveals).body(), sk)
    pk = sk.public_key()

    def verify():
        m.open_broadcast(data, pk)

    def open_all():
        for j in range(n):
            assert keys.reveal_matches(reveals[32 * j : 32 * (j + 1)], 0, commits[j])

    def seed_and_nbrs():
        seed = keys.graph_seed(cfg_hash, 0, view, reveals)
        neighbours_of(graph, view, k, seed, n // 2)

    def best(f):
        return min(timeit.repeat(f, number=1, repeat=reps, timer=time.process_time))

    out = {"verify_signature": best(verify), "open_commitments": best(open_all),
           "graph_seed_and_neighbours": best(seed_and_nbrs)}
    out["total_per_client"] = sum(out.values())
    out["total_all_clients"] = out["total_per_client"] * n
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--d", type=int, default=100_000)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--threat-model", default="semi-honest", choices=["semi-honest", "active"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "secagg_profile.json"))
    args = ap.parse_args()
    n, d = args.n, args.d
    vectors = {u: (np.sin(np.arange(d, dtype=np.float64) * (u + 1) * 1e-3) * 0.9).astype(np.float32) for u in range(n)}
    active = args.threat_model == "active"
    params = choose_params(n, dropout_rate=0.1, graph="sparse", threat_model=args.threat_model)
    enc = FixedPointEncoding.for_sum(n, 1.0)
    drop = {u: "masked_input" for u in range(0, n, 10)}
    run_round(vectors, params, enc, dropouts=drop, active=active)  # warm-up
    cpu, by_stage = [], []
    for _ in range(args.reps):
        t0 = time.process_time()
        report = run_round(vectors, params, enc, dropouts=drop, active=active)
        cpu.append(time.process_time() - t0)
        by_stage.append(report.stage_seconds)
    prof = cProfile.Profile()
    prof.enable()
    run_round(vectors, params, enc, dropouts=drop, active=active)
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
    v3 = {}
    for (file, line, fn), (cc, nc, tt, ct, _) in stats.stats.items():
        for fname, func in V3_FUNCTIONS:
            if Path(file).name == fname and fn == func and "secagg" in file:
                v3[f"{fname}:{func}"] = {"calls": nc, "cumulative_seconds": ct}
    profiled_total = sum(r["own_seconds"] for r in rows)
    unit = unit_costs(d)
    floor = {k: counts[k] * unit[k] for k in counts}
    total = statistics.median(cpu)
    stages = {st: statistics.median([b.get(st, 0.0) for b in by_stage]) for st in by_stage[0]}
    reveal = client_reveal_check(n, params.k, params.graph)
    seed_stage = stages.get("seed_reveal", 0.0)
    out = {
        "command": " ".join(["python"] + sys.argv),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {p: version(p) for p in ("cryptography", "numpy")},
        "setting": {"n": n, "d": d, "dropped_before_masked_input": len(drop), "params": params.as_dict(),
                    "threat_model": args.threat_model, "wire": "v3"},
        "round_cpu_seconds": {"median": total, "raw": cpu, "client": report.client_seconds,
                              "server": report.server_seconds, "by_stage": stages,
                              "by_stage_fraction": {st: v / sum(stages.values()) for st, v in stages.items()}},
        "seed_reveal": {
            "stage_seconds": seed_stage, "stage_fraction_of_round": seed_stage / total,
            "client_reveal_check_seconds": reveal,
            "client_reveal_check_fraction_of_round": reveal["total_all_clients"] / total,
            "total_fraction_of_round": (seed_stage + reveal["total_all_clients"]) / total,
        },
        "v3_functions": {"profiled_round_seconds": profiled_total, "cumulative": v3},
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
    print("by stage: " + ", ".join(f"{st} {v:.3f}s ({v / sum(stages.values()):.0%})" for st, v in stages.items()))
    print(f"seed reveal: stage {seed_stage * 1e3:.1f} ms ({seed_stage / total:.1%} of the round); each client's check "
          f"of the reveals {reveal['total_per_client'] * 1e3:.3f} ms (signature {reveal['verify_signature'] * 1e3:.3f}, "
          f"{n} commitments {reveal['open_commitments'] * 1e3:.3f}, seed + neighbours "
          f"{reveal['graph_seed_and_neighbours'] * 1e3:.3f}), x{n} = {reveal['total_all_clients'] * 1e3:.1f} ms "
          f"({reveal['total_all_clients'] / total:.1%})")
    for r in rows[:12]:
        print(f"  {r['own_seconds']:.4f} s  {r['calls']:6d}  {r['function']}")


if __name__ == "__main__":
    main()
