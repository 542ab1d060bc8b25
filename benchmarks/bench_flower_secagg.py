"""Flower's SecAgg+ (SecAggPlusWorkflow + secaggplus_mod) against fedsecure's (FedSecureSecAggWorkflow + mod), in Flower.

Both run inside one Flower simulation per ``n`` (``flwr.simulation.run_simulation``,
Ray backend, the in-memory Grid), with the same ``ServerApp`` (``DefaultWorkflow`` +
``FedAvg`` over a ``LegacyContext``) and the same ``ClientApp`` (a ``NumPyClient``
whose fit returns a fixed float32 update of ``d`` values, ``num_examples=10``): the
ClientApp carries both client mods behind a router that hands a message to
``secaggplus_mod`` when it carries Flower's SecAgg+ record and to
``fedsecure_secagg_mod`` otherwise, and each round's fit workflow is one system's
(``SecAggPlusWorkflow`` or ``FedSecureSecAggWorkflow``). Rounds, in one run:

* one warm-up round per system (Ray starts its actors; not compared);
* ``--pairs`` pairs of rounds without dropout, one per system, the order
  alternating (F S, S F, F S, ...) so that drift in the machine's load falls on
  both: each pair gives a ratio fedsecure / Flower of the round's wall time, and
  the summary is their geometric mean with a 95% Student-t interval over pairs
  (``fedsecure.stats.over_seeds`` on the log ratios) and a paired t on the seconds
  (``paired_seeds``: resolved only if its interval excludes 0);
* one round per system in which a random 10% of the clients crash (their
  ClientApp raises) when asked for their masked vector -- it shows whether the
  round completes.

Between rounds (outside the timed interval) the global model is cast back to the
app's float32, so both systems' rounds start from the same message sizes
(Flower's SecAgg+ returns a float64 aggregate, which would double the next
round's fit instructions for whichever system followed it).

Measured per round: wall time of the fit workflow (server plus every client
message, as Flower runs them), bytes per client (the sum of
``record.count_bytes()`` over every message a client receives and sends,
Flower's own ``message_size_mod`` measure, averaged over clients), CPU seconds
inside the ClientApps, whether the round with dropouts completed, and the
aggregate's max error against the plaintext weighted mean.

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

    python benchmarks/bench_flower_secagg.py --clients 20 100 --dim 100000 --pairs 6 \\
        --trials 2000 --json benchmarks/results/flower_secagg.json
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
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.simulation import run_simulation

from fedsecure.bench import content_bytes  # Flower's message_size_mod measure, shared with `fedsecure bench`
from fedsecure.integrations.flower import FedSecureSecAggWorkflow, fedsecure_secagg_mod
from fedsecure.secagg import choose_params
from fedsecure.secagg.graph import build_graph

FLOWER_SHARES, FLOWER_THRESHOLD = 3, 2
DROP_RATE = 0.1
EXAMPLES = 10


def client_vector(pid: int, d: int) -> np.ndarray:
    return np.random.default_rng(10_000 + pid).uniform(-1.0, 1.0, d).astype(np.float32)


FLOWER_RECORD = "secaggplus_configs"


def _secure_router(msg, ctx, call_next):
    """Flower's SecAgg+ messages to ``secaggplus_mod``, every other message to ``fedsecure_secagg_mod`` (which passes
    a message without its own record on to the app)."""
    if msg.content.get(FLOWER_RECORD) is not None:
        return secaggplus_mod(msg, ctx, call_next)
    return fedsecure_secagg_mod(msg, ctx, call_next)


def _stage_of(msg) -> tuple[str | None, str | None]:
    rec = msg.content.get(FLOWER_RECORD)
    if rec is not None:
        return "flower", rec.get("stage")
    rec = msg.content.get("fedsecure.secagg")
    return ("fedsecure", rec.get("stage")) if rec is not None else (None, None)


def make_client_app(d: int, drop_rounds: set[str], drop: set[int], sizes_path: str) -> ClientApp:
    class Client(NumPyClient):
        def __init__(self, pid):
            self.pid = pid

        def fit(self, parameters, config):
            return [client_vector(self.pid, d)], EXAMPLES, {}

    def size_and_crash_mod(msg, ctx, call_next):
        pid = int(ctx.node_config["partition-id"])
        rnd = msg.metadata.group_id
        system, stage = _stage_of(msg)
        crash = stage == ("collect_masked_vectors" if system == "flower" else "masked_input")
        if rnd in drop_rounds and pid in drop and crash:
            raise RuntimeError(f"client {pid} crashes before its masked vector (benchmark dropout)")
        down = content_bytes(msg.content)
        t0 = time.process_time()
        out = call_next(msg, ctx)
        cpu = time.process_time() - t0
        up = content_bytes(out.content) if out.has_content() else 0
        with open(sizes_path, "a") as f:
            f.write(json.dumps({"round": rnd, "pid": pid, "down": down, "up": up, "stage": stage, "cpu": cpu}) + "\n")
        return out

    return ClientApp(client_fn=lambda ctx: Client(int(ctx.node_config["partition-id"])).to_client(),
                     mods=[size_and_crash_mod, _secure_router])


def make_server_app(n: int, d: int, schedule: list[tuple[str, str]], report: dict, k: int, t: int) -> ServerApp:
    """``schedule[r - 1] = (system, kind)`` for round ``r``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        strategy = FedAvg(fraction_fit=1.0, fraction_evaluate=0.0, min_fit_clients=n, min_available_clients=n,
                          initial_parameters=ndarrays_to_parameters([np.zeros(d, dtype=np.float32)]))
        legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=len(schedule)), strategy=strategy)
        flower = SecAggPlusWorkflow(num_shares=FLOWER_SHARES, reconstruction_threshold=FLOWER_THRESHOLD)
        fedsecure = FedSecureSecAggWorkflow(graph="sparse", dropout_rate=DROP_RATE, k=k, t=t)

        def timed(grid, ctx):
            rnd = int(ctx.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
            system, kind = schedule[rnd - 1]
            inner = flower if system == "flower" else fedsecure
            before = ctx.state.array_records[MAIN_PARAMS_RECORD]
            t0 = time.perf_counter()
            inner(grid, ctx)
            seconds = time.perf_counter() - t0
            after = ctx.state.array_records[MAIN_PARAMS_RECORD]
            params = parameters_to_ndarrays(compat.arrayrecord_to_parameters(after, keep_input=True))[0]
            row = {"round": rnd, "system": system, "kind": kind, "seconds": seconds, "completed": after is not before,
                   "aggregate_dtype": str(params.dtype)}
            if system == "fedsecure":
                g = (inner.last_round.get("groups") or [{"halted": "the run did not start"}])[0]
                row["included"] = len(g.get("included", []))
                row["k"], row["t"] = g.get("k"), g.get("t")
                row["stages"] = inner.last_round.get("stages")
                if "halted" in g:
                    row["completed"] = False
            # the next round starts from the app's float32 model, whichever system ran this one (not timed)
            ctx.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(
                ndarrays_to_parameters([params.astype(np.float32)]), True)
            report.setdefault("rounds", []).append(row)
            report.setdefault("params", []).append(params)

        DefaultWorkflow(fit_workflow=timed)(grid, legacy)

    return app


def make_schedule(pairs: int) -> list[tuple[str, str]]:
    sched = [("flower", "warmup"), ("fedsecure", "warmup")]
    for i in range(pairs):
        order = ("flower", "fedsecure") if i % 2 == 0 else ("fedsecure", "flower")
        sched += [(s, f"pair{i}") for s in order]
    return sched + [("flower", "dropout"), ("fedsecure", "dropout")]


def _start_ray(num_cpus: int, tries: int = 4) -> None:
    """Start Ray before Flower does (Flower's backend then uses it), retrying: on a loaded machine the raylet can
    miss Ray's fixed 30 s registration window, and a failed start inside ``run_simulation`` leaves it hanging."""
    import ray

    for attempt in range(tries):
        try:
            ray.init(num_cpus=num_cpus, include_dashboard=False,
                     runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(sys.path)}})
            return
        except Exception as e:  # noqa: BLE001 -- Ray raises a bare Exception on a start-up timeout
            print(f"ray start attempt {attempt + 1} failed: {e}", file=sys.stderr, flush=True)
            ray.shutdown()
            time.sleep(5)
    raise RuntimeError(f"Ray did not start in {tries} attempts")


def run_both(n: int, d: int, seed: int, k: int, t: int, pairs: int) -> dict:
    rng = random.Random(seed)
    drop = set(rng.sample(range(n), max(1, round(DROP_RATE * n))))
    schedule = make_schedule(pairs)
    drop_rounds = {str(r + 1) for r, (_, kind) in enumerate(schedule) if kind == "dropout"}
    fd, sizes_path = tempfile.mkstemp(prefix="bench-flower-", suffix=".jsonl")
    os.close(fd)
    report: dict = {}
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": os.cpu_count() or 2}}
    _start_ray(backend["init_args"]["num_cpus"])
    t0 = time.perf_counter()
    run_simulation(server_app=make_server_app(n, d, schedule, report, k, t),
                   client_app=make_client_app(d, drop_rounds, drop, sizes_path), num_supernodes=n,
                   backend_config=backend)
    total = time.perf_counter() - t0
    rows = [json.loads(line) for line in Path(sizes_path).read_text().splitlines() if line.strip()]
    os.unlink(sizes_path)
    expected = np.mean([client_vector(p, d).astype(np.float64) for p in range(n)], axis=0)
    inc = [p for p in range(n) if p not in drop]
    expected_drop = np.mean([client_vector(p, d).astype(np.float64) for p in inc], axis=0)
    rounds = []
    for i, r in enumerate(report.get("rounds", [])):
        r = dict(r)
        mine = [row for row in rows if row["round"] == str(r["round"])]
        clients = {row["pid"] for row in mine}
        r["bytes_per_client"] = sum(row["down"] + row["up"] for row in mine) / max(1, len(clients))
        r["upload_bytes_per_client"] = sum(row["up"] for row in mine) / max(1, len(clients))
        # CPU seconds inside the ClientApp (secure mod + app) summed over every client message of the round
        r["client_cpu_seconds"] = sum(row["cpu"] for row in mine)
        by_stage: dict = {}
        for row in mine:
            by_stage[str(row["stage"])] = by_stage.get(str(row["stage"]), 0.0) + row["cpu"]
        r["client_cpu_seconds_by_stage"] = by_stage
        if r["completed"]:
            exp = expected_drop if r["kind"] == "dropout" else expected
            r["max_abs_error_vs_plaintext_mean"] = float(np.max(np.abs(report["params"][i] - exp)))
        rounds.append(r)
    return {"n": n, "d": d, "dropped_in_dropout_rounds": sorted(drop), "simulation_seconds": total,
            "rounds": rounds}


def summarise(run: dict) -> dict:
    """Per pair of no-dropout rounds: the ratios fedsecure / Flower; their geometric mean and 95% interval."""
    from fedsecure.stats import over_seeds, paired_seeds

    by: dict[str, dict[str, dict]] = {}
    for r in run["rounds"]:
        by.setdefault(r["kind"], {})[r["system"]] = r
    pairs = sorted((k for k in by if k.startswith("pair")), key=lambda k: int(k[4:]))
    pairs = [k for k in pairs if by[k].get("flower", {}).get("completed") and by[k].get("fedsecure", {}).get("completed")]
    out: dict = {"pairs": len(pairs)}
    if not pairs:
        return out
    for what, key in (("time", "seconds"), ("client_cpu", "client_cpu_seconds"), ("bytes", "bytes_per_client")):
        ratios = [by[k]["fedsecure"][key] / by[k]["flower"][key] for k in pairs]
        out[f"ratio_{what}_fedsecure_over_flower_per_pair"] = ratios
        if len(ratios) >= 2:
            s = over_seeds(np.log(ratios))
            out[f"ratio_{what}_fedsecure_over_flower"] = float(np.exp(s.mean))
            out[f"ratio_{what}_fedsecure_over_flower_ci95"] = [float(np.exp(s.ci95[0])), float(np.exp(s.ci95[1]))]
        else:
            out[f"ratio_{what}_fedsecure_over_flower"] = ratios[0]
    secs = {"flower": {i: by[k]["flower"]["seconds"] for i, k in enumerate(pairs)},
            "fedsecure": {i: by[k]["fedsecure"]["seconds"] for i, k in enumerate(pairs)}}
    out["seconds_per_round"] = {sysname: {"median": float(np.median(list(v.values()))), "values": list(v.values())}
                                for sysname, v in secs.items()}
    if len(pairs) >= 2:
        out["paired_seconds_fedsecure_minus_flower"] = paired_seeds("round seconds", secs["fedsecure"],
                                                                    secs["flower"]).as_dict()
    out["dropout_round_completed"] = {sysname: by.get("dropout", {}).get(sysname, {}).get("completed")
                                      for sysname in ("flower", "fedsecure")}
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
    ap.add_argument("--pairs", type=int, default=6, help="pairs of timed rounds (one per system) per n")
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
        print(f"n={n} d={args.dim}: both systems, {args.pairs} pairs of rounds ...", file=sys.stderr, flush=True)
        entry["run"] = run_both(n, args.dim, args.seed + n, params.k, params.t, args.pairs)
        entry["summary"] = summ = summarise(entry["run"])
        if "seconds_per_round" in summ:
            # A round that halts must be rerun: expected wall time per *completed* round under 10% dropout
            # (median time of a round / fraction of rounds that complete, from the Monte Carlo estimate).
            comp = entry["completion_under_10pct_dropout"]
            pf, ps = comp["flower_completed_fraction"], comp["fedsecure_completed_fraction"]
            fs, ss = summ["seconds_per_round"]["flower"]["median"], summ["seconds_per_round"]["fedsecure"]["median"]
            entry["expected_seconds_per_completed_round_10pct_dropout"] = {
                "flower": fs / pf if pf > 0 else None, "fedsecure": ss / ps if ps > 0 else None}
            if pf > 0 and ps > 0:
                entry["ratio_expected_time_per_completed_round_fedsecure_over_flower"] = (ss / ps) / (fs / pf)
        print(json.dumps({k: v for k, v in entry.items() if k != "run"}, default=float), file=sys.stderr)
        results.append(entry)
    out = {
        "benchmark": "bench_flower_secagg",
        "command": "python " + " ".join([sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
        "runtime": "flwr.simulation.run_simulation (Ray backend, in-memory Grid), one machine",
        "workload": f"NumPyClient.fit returns a fixed float32 vector of d values, num_examples={EXAMPLES}; "
                    "FedAvg via DefaultWorkflow; one simulation per n, both systems' mods in the same ClientApp: one "
                    "warm-up round per system, then pairs of timed rounds without dropout (order alternating), then "
                    "one round per system with 10% of clients crashing before their masked vector",
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
