"""Flower's SecAgg+ (SecAggPlusWorkflow + secaggplus_mod) against fedsecure's (FedSecureSecAggWorkflow + mod), in Flower.

Both run inside Flower's simulation runtime (``flwr.simulation.run_simulation``,
Ray backend, the in-memory Grid), with the same ``ServerApp`` shape
(``DefaultWorkflow`` + ``FedAvg`` over a ``LegacyContext``) and the same
``ClientApp`` (a ``NumPyClient`` whose fit returns a fixed float32 update of
``d`` values, ``num_examples=10``), so the only difference is the secure
aggregation fit workflow and its client mod. Each simulation runs three rounds:

* round 1: no dropout, a warm-up (Ray starts its actors; not compared);
* round 2: no dropout -- its wall time is the "time per round";
* round 3: a random 10% of the clients crash (their ClientApp raises) when
  asked for their masked vector -- it shows whether the round completes.

Measured per system and n: wall time of each round's fit workflow (server
plus every client message, as Flower runs them), bytes per client (the sum
of ``record.count_bytes()`` over every message a client receives and sends,
Flower's own ``message_size_mod`` measure, averaged over clients), whether
the round with dropouts completed, and the aggregate's max error against the
plaintext weighted mean.

Neighbour degrees: Flower with its example's ``num_shares=3,
reconstruction_threshold=2`` (a ring: each node and its two neighbours);
fedsecure with the ``k``, ``t`` that ``choose_params`` picks for ``n`` at 10%
dropout (round failure <= 1e-6, privacy failure <= 2^-40). How often each
completes under 10% dropout is also estimated by Monte Carlo over
``--trials`` independent dropout draws (each client drops with probability
0.1 before its masked vector) with each system's own abort rule: Flower's
``_check_threshold`` on its ring; fedsecure's graph (``build_graph``) and the
server's rule that every secret a survivor needs has ``t`` surviving holders.

Usage (the recorded run)::

    python benchmarks/bench_flower_secagg.py --clients 20 100 --dim 100000 \\
        --json benchmarks/results/flower_secagg.json
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

from flwr.app import Context
from flwr.client import NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_PARAMS_RECORD
from flwr.simulation import run_simulation

from fedsecure.integrations.flower import FedSecureSecAggWorkflow, fedsecure_secagg_mod
from fedsecure.secagg import choose_params
from fedsecure.secagg.graph import build_graph

FLOWER_SHARES, FLOWER_THRESHOLD = 3, 2
DROP_RATE = 0.1
EXAMPLES = 10


def client_vector(pid: int, d: int) -> np.ndarray:
    return np.random.default_rng(10_000 + pid).uniform(-1.0, 1.0, d).astype(np.float32)


def _value_bytes(v) -> int:
    if isinstance(v, (bytes, str)):
        return len(v.encode() if isinstance(v, str) else v)
    if isinstance(v, list):
        return sum(_value_bytes(x) for x in v)
    return 8  # int, float, bool


def content_bytes(content) -> int:
    """Bytes of a message's records: ``count_bytes()`` as Flower's ``message_size_mod`` sums it (Flower's
    ``ConfigRecord.count_bytes`` fails on an empty list, so config records are counted here the same way)."""
    from flwr.app import ConfigRecord

    total = 0
    for rec in content.values():
        if isinstance(rec, ConfigRecord):
            total += sum(len(k) + _value_bytes(v) for k, v in rec.items())
        else:
            total += rec.count_bytes()
    return total


def make_client_app(system: str, d: int, drop: set[int], sizes_path: str) -> ClientApp:
    class Client(NumPyClient):
        def __init__(self, pid):
            self.pid = pid

        def fit(self, parameters, config):
            return [client_vector(self.pid, d)], EXAMPLES, {}

    def size_and_crash_mod(msg, ctx, call_next):
        pid = int(ctx.node_config["partition-id"])
        rnd = msg.metadata.group_id
        if system == "flower":
            rec = msg.content.config_records.get("secaggplus_configs")
            stage = None if rec is None else rec.get("stage")
            crash = stage == "collect_masked_vectors"
        else:
            rec = msg.content.config_records.get("fedsecure.secagg")
            stage = None if rec is None else rec.get("stage")
            crash = stage == "masked_input"
        if rnd == "3" and pid in drop and crash:
            raise RuntimeError(f"client {pid} crashes before its masked vector (benchmark dropout)")
        down = content_bytes(msg.content)
        t0 = time.process_time()
        out = call_next(msg, ctx)
        cpu = time.process_time() - t0
        up = content_bytes(out.content) if out.has_content() else 0
        with open(sizes_path, "a") as f:
            f.write(json.dumps({"round": rnd, "pid": pid, "down": down, "up": up, "stage": stage, "cpu": cpu}) + "\n")
        return out

    secure = secaggplus_mod if system == "flower" else fedsecure_secagg_mod
    return ClientApp(client_fn=lambda ctx: Client(int(ctx.node_config["partition-id"])).to_client(),
                     mods=[size_and_crash_mod, secure])


def make_server_app(system: str, n: int, d: int, report: dict, k: int, t: int) -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
                          initial_parameters=ndarrays_to_parameters([np.zeros(d, dtype=np.float32)]))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=3), strategy=strategy)
        if system == "flower":
            inner = SecAggPlusWorkflow(num_shares=FLOWER_SHARES, reconstruction_threshold=FLOWER_THRESHOLD)
        else:
            inner = FedSecureSecAggWorkflow(graph="sparse", dropout_rate=DROP_RATE, k=k, t=t)

        def timed(grid, ctx):
            before = ctx.state.array_records[MAIN_PARAMS_RECORD]
            t0 = time.perf_counter()
            inner(grid, ctx)
            seconds = time.perf_counter() - t0
            after = ctx.state.array_records[MAIN_PARAMS_RECORD]
            params = parameters_to_ndarrays(compat.arrayrecord_to_parameters(after, keep_input=True))[0]
            row = {"seconds": seconds, "completed": after is not before}
            if system == "fedsecure":
                g = inner.last_round["groups"][0]
                row["included"] = len(g.get("included", []))
                row["k"], row["t"] = g["k"], g["t"]
                row["stages"] = inner.last_round.get("stages")
                if "halted" in g:
                    row["completed"] = False
            report.setdefault("rounds", []).append(row)
            report.setdefault("params", []).append(params)

        DefaultWorkflow(fit_workflow=timed)(grid, legacy)

    return app


def run_system(system: str, n: int, d: int, seed: int, k: int, t: int) -> dict:
    rng = random.Random(seed)
    drop = set(rng.sample(range(n), max(1, round(DROP_RATE * n))))
    fd, sizes_path = tempfile.mkstemp(prefix=f"bench-flower-{system}-", suffix=".jsonl")
    os.close(fd)
    report: dict = {}
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": os.cpu_count() or 2}}
    t0 = time.perf_counter()
    run_simulation(server_app=make_server_app(system, n, d, report, k, t),
                   client_app=make_client_app(system, d, drop, sizes_path), num_supernodes=n, backend_config=backend)
    total = time.perf_counter() - t0
    rows = [json.loads(line) for line in Path(sizes_path).read_text().splitlines() if line.strip()]
    os.unlink(sizes_path)
    rounds = report.get("rounds", [])
    out = {"system": system, "n": n, "d": d, "dropped_in_round_3": sorted(drop), "simulation_seconds": total}
    # the plaintext weighted mean (all weights equal) of round 1's clients
    expected = np.mean([client_vector(p, d).astype(np.float64) for p in range(n)], axis=0)
    for i, name in enumerate(("round_warmup", "round_no_dropout", "round_10pct_dropout")):
        if i >= len(rounds):
            out[name] = {"completed": False, "error": "round did not run"}
            continue
        r = dict(rounds[i])
        per_client = [row["down"] + row["up"] for row in rows if row["round"] == str(i + 1)]
        clients = {row["pid"] for row in rows if row["round"] == str(i + 1)}
        r["bytes_per_client"] = sum(per_client) / max(1, len(clients))
        r["upload_bytes_per_client"] = sum(row["up"] for row in rows if row["round"] == str(i + 1)) / max(1, len(clients))
        # CPU seconds inside the ClientApp (secure mod + app) summed over every client message of the round
        r["client_cpu_seconds"] = sum(row["cpu"] for row in rows if row["round"] == str(i + 1))
        by_stage: dict = {}
        for row in rows:
            if row["round"] == str(i + 1):
                by_stage[str(row["stage"])] = by_stage.get(str(row["stage"]), 0.0) + row["cpu"]
        r["client_cpu_seconds_by_stage"] = by_stage
        if i < 2 and r["completed"]:
            r["max_abs_error_vs_plaintext_mean"] = float(np.max(np.abs(report["params"][i] - expected)))
        if i == 2 and r["completed"]:
            inc = [p for p in range(n) if p not in drop]
            exp2 = np.mean([client_vector(p, d).astype(np.float64) for p in inc], axis=0)
            r["max_abs_error_vs_plaintext_mean"] = float(np.max(np.abs(report["params"][2] - exp2)))
        out[name] = r
    return out


# ------------------------------------------------------------------ completion under 10% dropout (Monte Carlo)
def flower_completes(n: int, alive: np.ndarray, rng: random.Random) -> bool:
    """Flower's rule: shuffle onto a ring, neighbours = +-num_shares//2 (and itself); abort if any node has fewer
    than ``threshold`` active neighbours (``SecAggPlusWorkflow._check_threshold``)."""
    order = list(range(n))
    rng.shuffle(order)
    half = FLOWER_SHARES >> 1
    for idx in range(n):
        nbrs = {order[(idx + off) % n] for off in range(-half, half + 1)}
        if sum(1 for v in nbrs if alive[v]) < FLOWER_THRESHOLD:
            return False
    return True


def fedsecure_completes(n: int, k: int, t: int, graph: str, alive: np.ndarray) -> bool:
    """fedsecure's rule: every secret the server must rebuild (a survivor's self-mask seed, the masking key of a
    dropped client with a surviving neighbour) needs t shares held by surviving neighbours."""
    g = build_graph(graph, np.arange(n, dtype=np.int64), k, os.urandom(32))
    if alive.sum() < t:
        return False
    for v in range(n):
        live = int(alive[g[v]].sum())
        if (alive[v] or live > 0) and live < t:
            return False
    return True


def completion_rates(n: int, k: int, t: int, graph: str, trials: int, seed: int) -> dict:
    rng = random.Random(seed)
    nprng = np.random.default_rng(seed)
    ok_f = ok_s = 0
    for _ in range(trials):
        alive = nprng.random(n) >= DROP_RATE
        ok_f += flower_completes(n, alive, rng)
        ok_s += fedsecure_completes(n, k, t, graph, alive)
    return {"trials": trials, "flower_completed_fraction": ok_f / trials,
            "fedsecure_completed_fraction": ok_s / trials}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[20, 100])
    ap.add_argument("--dim", type=int, default=100_000)
    ap.add_argument("--trials", type=int, default=2000, help="Monte Carlo dropout draws per n")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    results = []
    for n in args.clients:
        params = choose_params(n, graph="sparse", dropout_rate=DROP_RATE)
        entry = {"n": n, "d": args.dim,
                 "flower": {"num_shares": FLOWER_SHARES, "reconstruction_threshold": FLOWER_THRESHOLD,
                            "neighbour_degree": FLOWER_SHARES - 1, "threat_model": "semi-honest"},
                 "fedsecure": {"graph": params.graph, "k": params.k, "t": params.t, "neighbour_degree": params.k,
                               "failure_probability_bound": params.failure_probability,
                               "privacy_failure_probability_bound": params.privacy_failure_probability,
                               "threat_model": "semi-honest"}}
        entry["completion_under_10pct_dropout"] = completion_rates(n, params.k, params.t, params.graph, args.trials,
                                                                   args.seed)
        for system in ("flower", "fedsecure"):  # both in this one run, one after the other
            print(f"n={n} d={args.dim}: {system} ...", file=sys.stderr, flush=True)
            entry[f"{system}_run"] = run_system(system, n, args.dim, args.seed + n, params.k, params.t)
        f1, s1 = entry["flower_run"]["round_no_dropout"], entry["fedsecure_run"]["round_no_dropout"]
        if f1.get("completed") and s1.get("completed"):
            entry["ratio_time_fedsecure_over_flower"] = s1["seconds"] / f1["seconds"]
            entry["ratio_client_cpu_fedsecure_over_flower"] = s1["client_cpu_seconds"] / f1["client_cpu_seconds"]
            entry["ratio_bytes_fedsecure_over_flower"] = s1["bytes_per_client"] / f1["bytes_per_client"]
            # A round that halts must be rerun: expected wall time per *completed* round under 10% dropout
            # (time of a round / fraction of rounds that complete, from the Monte Carlo estimate).
            comp = entry["completion_under_10pct_dropout"]
            pf, ps = comp["flower_completed_fraction"], comp["fedsecure_completed_fraction"]
            entry["expected_seconds_per_completed_round_10pct_dropout"] = {
                "flower": f1["seconds"] / pf if pf > 0 else None, "fedsecure": s1["seconds"] / ps if ps > 0 else None}
            if pf > 0 and ps > 0:
                entry["ratio_expected_time_per_completed_round_fedsecure_over_flower"] = (s1["seconds"] / ps) / (
                    f1["seconds"] / pf)
        print(json.dumps({k: v for k, v in entry.items() if not k.endswith("_run")}, default=float), file=sys.stderr)
        results.append(entry)
    out = {
        "benchmark": "bench_flower_secagg",
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "runtime": "flwr.simulation.run_simulation (Ray backend, in-memory Grid), one machine",
        "workload": f"NumPyClient.fit returns a fixed float32 vector of d values, num_examples={EXAMPLES}; "
                    "FedAvg via DefaultWorkflow; round 1 warm-up, round 2 without dropout (timed), round 3 with 10% of "
                    "clients crashing before their masked vector",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {"flwr": version("flwr"), "ray": version("ray"), "numpy": np.__version__},
        "note": "wall times on shared, noisy cores: compare the ratios, not the seconds",
        "results": results,
    }
    text = json.dumps(out, indent=2, default=float)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
