"""A client's masking time against the physical floor: k PRG expansions plus k vector adds.

Measured in one run, side by side, for a real client (k neighbours, d
coordinates), median over clients/repetitions:

* ``masked_input_stage``: the whole ``SecAggClient.receive(ForwardedShares)``
  call -- decrypting k share ciphertexts, k X25519 agreements + HKDF for the
  pairwise seeds, k + 1 mask expansions (pairwise masks and the self mask),
  packing and the message tag.
* ``mask_application``: fedsecure's :func:`fedsecure.secagg.prg.apply_masks`
  over the same k + 1 seeds (the part of masking that scales with d).
* ``floor``: k AES-256-CTR keystreams of d words straight from
  ``cryptography`` (a fresh cipher per seed, as any PRG needs) plus k
  ``numpy.add`` into one accumulator -- the least any pairwise-mask client
  can do.

All three are CPU time of this process (``time.process_time``), so that other
load on a shared machine does not count (wall time under a load of several
processes per core inflated the stage but not the floor).

The round is driven to its masked-input stage with the wire-v3 API (the
server signs the configuration with a long-term key the clients pin in their
``ClientPolicy``; the graph seed is drawn by commit and reveal); the measured
masked-input stage itself is the same as before v3.

Usage: python benchmarks/bench_secagg_floor.py [--ds 10000 100000] [--k 16 34] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from fedsecure.secagg import ClientPolicy, FixedPointEncoding, SecAggClient, SecAggServer
from fedsecure.secagg.params import evaluate
from fedsecure.secagg.prg import MaskExpander, apply_masks


def floor_once(seeds: list[bytes], d: int) -> float:
    zeros = bytes(4 * d)
    acc = np.zeros(d, dtype=np.uint32)
    t0 = time.process_time()
    for s in seeds:
        ks = Cipher(algorithms.AES(s), modes.CTR(bytes(16))).encryptor().update(zeros)
        np.add(acc, np.frombuffer(ks, dtype=np.uint32), out=acc)
    return time.process_time() - t0


def measure(d: int, k: int, reps: int) -> dict:
    n = k + 1  # complete graph: every client has exactly k neighbours
    params = evaluate(n, k, k // 2 + 1, graph="complete", dropout_rate=0.0)
    enc = FixedPointEncoding.for_sum(n, 1.0)
    server = SecAggServer(range(n), d, params, enc, signing_key=Ed25519PrivateKey.generate())
    policy = ClientPolicy(dropout_rate=params.dropout_rate, server_key=server.public_key)
    clients = {u: SecAggClient(u, np.full(d, 0.25), policy=policy) for u in range(n)}
    inbox = {u: server.config_message for u in range(n)}
    while server.stage != "masked_input":  # wire v3: advertise keys, seed reveal (1+ draws), share keys
        for u, msg in inbox.items():
            for out in clients[u].receive(msg):
                server.receive(u, out)
        inbox = server.advance()
    stage, floor, apply = [], [], []
    ex = MaskExpander(d, 32)
    x = np.zeros(d, dtype=np.uint32)
    for u in range(min(n, reps * 4)):
        seeds = [os.urandom(32) for _ in range(k)]
        floor.append(floor_once(seeds, d))
        t0 = time.process_time()
        clients[u].receive(inbox[u])
        stage.append(time.process_time() - t0)
        t0 = time.process_time()
        apply_masks(x, seeds[: k // 2 + 1], seeds[k // 2 + 1 :] + [os.urandom(32)], ex)
        apply.append(time.process_time() - t0)
    f, s, a = statistics.median(floor), statistics.median(stage), statistics.median(apply)
    return {"d": d, "k": k, "samples": len(floor), "floor_seconds": f, "masked_input_stage_seconds": s,
            "mask_application_seconds": a, "ratio_stage_over_floor": s / f, "ratio_application_over_floor": a / f,
            "raw": {"floor": floor, "stage": stage, "application": apply}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ds", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--k", type=int, nargs="+", default=[16, 34],
                    help="neighbours (choose_params(100, dropout 0.1): 16 semi-honest, 34 active)")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "secagg_floor.json"))
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rows = []
    for d, k in [(d, k) for k in args.k for d in args.ds]:
        r = measure(d, k, args.reps)
        rows.append(r)
        print(f"d={d:7d} k={k}: floor {r['floor_seconds'] * 1e3:.2f} ms, masked-input stage "
              f"{r['masked_input_stage_seconds'] * 1e3:.2f} ms (x{r['ratio_stage_over_floor']:.2f}), mask application "
              f"{r['mask_application_seconds'] * 1e3:.2f} ms (x{r['ratio_application_over_floor']:.2f})", flush=True)
    out = {
        "command": " ".join(["python"] + sys.argv),
        "machine": {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "versions": {p: version(p) for p in ("cryptography", "numpy")},
        "results": rows,
    }
    Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
