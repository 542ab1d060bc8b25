"""Where a SecAgg+ client's download comes from: bytes the server sends per client, by protocol stage, at n = 100 and 1,000.

One semi-honest SecAgg+ round (``run_round``, parameters from
``choose_params(n, dropout_rate=0.1, graph="sparse")``) over tiny vectors
(d = 10, so the stages that carry n-sized content stand out), with the
server's messages counted under the stage they open
(``RoundReport.download_bytes_by_stage``: ``advertise_keys`` is the signed
round configuration with the roster, ``seed_reveal`` the view broadcast with
every advertised key record, ``share_keys`` the graph-seed reveals,
``masked_input`` the forwarded shares, ``unmasking`` the unmask requests).

    python benchmarks/bench_secagg_download.py [--n 100,1000] [--out PATH]

writes benchmarks/results/secagg_download.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from fedsecure.secagg import FixedPointEncoding, choose_params, run_round

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="100,1000")
    parser.add_argument("--d", type=int, default=10)
    parser.add_argument("--out", type=Path, default=RESULTS / "secagg_download.json")
    args = parser.parse_args()
    out = {}
    for n in (int(x) for x in args.n.split(",")):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params = choose_params(n, dropout_rate=0.1, graph="sparse", threat_model="semi-honest")
        enc = FixedPointEncoding.for_sum(n, 1.0)
        vectors = {u: np.zeros(args.d, dtype=np.float32) for u in range(n)}
        t0 = time.process_time()
        r = run_round(vectors, params, enc)
        out[str(n)] = {
            "k": params.k, "t": params.t,
            "download_bytes_per_client": r.download_bytes / n,
            "download_bytes_per_client_by_stage": {s: b / n for s, b in r.download_bytes_by_stage.items()},
            "upload_bytes_per_client_by_stage": {s: b / n for s, b in r.upload_bytes_by_stage.items()},
            "cpu_seconds": time.process_time() - t0,
        }
        print(n, json.dumps(out[str(n)]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": shlex.join(["python", *sys.argv]), "graph": "sparse (SecAgg+)",
                                    "threat_model": "semi-honest", "d": args.d, "results": out}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
