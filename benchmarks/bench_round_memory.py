"""Memory and time of a federated round: peak RSS of ``fedsecure run`` per model, round vs epoch per worker count.

Three measurements, each written with the exact command that made it:

* ``rss``: peak resident memory of ``fedsecure run --data ml-latest-small
  --model M --rounds 1 --clients-per-round 1.0 --eval-every 1`` for every
  model (full participation: the 610 clients of ml-latest-small in one
  round), read as ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` of a wrapper
  process around the run (the largest single process of the run's tree: the
  parent, or a worker). ``--baseline PATH`` runs the same commands with
  ``PYTHONPATH=PATH`` (an older checkout) beside them. Target: every model
  under 1 GiB.
* ``timing``: one full-participation federated round of MF (``mf-implicit``)
  against one centralised epoch over the same rows, with ``--workers`` 1 and
  2, interleaved ``--repeats`` times after a warm-up pair (ratio of medians).
  Target: at most 1.5 with two workers.
* ``large``: peak RSS of one larger synthetic run (``--large "ARGS"``, e.g.
  ``--model sasrec --users 30000 --items 25000 --clients-per-round 1000
  --rounds 2``). Target: under 2 GiB.

    python benchmarks/bench_round_memory.py [--parts rss,timing,large] [--models mf,mf-implicit,ncf,sasrec]
        [--workers 1] [--baseline PATH] [--repeats 3] [--large "ARGS"] [--out PATH]

writes benchmarks/results/round_memory.json (parts not run keep their earlier entry).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30

# A wrapper whose only child is the run: its RUSAGE_CHILDREN peak is the run's (largest process of the tree).
WRAPPER = (
    "import json, resource, subprocess, sys, time\n"
    "t0 = time.perf_counter()\n"
    "rc = subprocess.run(sys.argv[2:]).returncode\n"
    "ru = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "open(sys.argv[1], 'w').write(json.dumps({'rc': rc, 'maxrss_bytes': ru.ru_maxrss * 1024, "
    "'wall_seconds': time.perf_counter() - t0, 'cpu_seconds': ru.ru_utime + ru.ru_stime}))\n"
)


def fedsecure_cmd(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "fedsecure.cli", *args]


def peak_rss(run_args: list[str], pythonpath: str) -> dict[str, Any]:
    """Run ``fedsecure`` with ``run_args`` in a fresh process tree; its peak RSS, wall and CPU seconds."""
    with tempfile.TemporaryDirectory() as tmp:
        report, out_json = Path(tmp) / "rusage.json", Path(tmp) / "run.json"
        args = [*run_args, "--quiet", "--json", str(out_json)]
        env = {**os.environ, "PYTHONPATH": pythonpath}
        # cwd: the temporary folder, so that PYTHONPATH alone decides which tree runs (``-m`` puts cwd first)
        subprocess.run([sys.executable, "-c", WRAPPER, str(report), *fedsecure_cmd(args)], env=env, check=False,
                       stdout=subprocess.DEVNULL, cwd=tmp)
        out = json.loads(report.read_text())
        if out_json.exists():
            run = json.loads(out_json.read_text())
            rounds = run.get("rounds", [])
            out["train_seconds"] = run.get("timings", {}).get("train_seconds")
            out["round_seconds"] = [r["train_seconds"] + r["aggregate_seconds"] for r in rounds]
            out["communication"] = run.get("communication")
            out["final"] = {k: v for k, v in run.get("final", {}).items() if isinstance(v, float)}
    out["command"] = shlex.join(["fedsecure", *run_args])
    out["maxrss_gib"] = out["maxrss_bytes"] / GIB
    return out


def save_partial(out: Path, part: str, key: str, value: Any) -> None:
    """Record one finished measurement at once (a long part interrupted keeps what it measured)."""
    latest = json.loads(out.read_text()) if out.exists() else {}
    latest.setdefault(f"{part}_by_model", {})[key] = value
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(latest, indent=2))


def part_rss(args: argparse.Namespace) -> dict[str, Any]:
    trees = {"this": str(ROOT)}
    if args.baseline:
        trees["baseline"] = str(Path(args.baseline).resolve())
    rows: dict[str, Any] = {}
    for model in args.models.split(","):
        run_args = ["run", "--data", args.data, "--model", model, "--rounds", "1", "--clients-per-round", "1.0",
                    "--eval-every", "1", "--workers", str(args.workers)]
        for name, tree in trees.items():
            a = list(run_args)
            if name == "baseline":  # an older tree may predate --workers (it trains in one process)
                a = a[: a.index("--workers")]
            res = peak_rss(a, tree)
            rows.setdefault(model, {})[name] = res
            print(f"rss {model} [{name}]: {res['maxrss_gib']:.3f} GiB, {res['wall_seconds']:.1f}s wall "
                  f"(rc {res['rc']})", flush=True)
        if "baseline" in rows[model]:
            rows[model]["ratio_this_over_baseline"] = (rows[model]["this"]["maxrss_bytes"]
                                                       / rows[model]["baseline"]["maxrss_bytes"])
        save_partial(args.out, "rss", model, {**rows[model], "command": shlex.join(["python", *sys.argv])})
    worst = max(r["this"]["maxrss_bytes"] for r in rows.values())
    return {"models": rows, "target": "every model under 1 GiB", "worst_gib": worst / GIB,
            "meets_target": worst < GIB and all(r["this"]["rc"] == 0 for r in rows.values())}


def part_timing(args: argparse.Namespace) -> dict[str, Any]:
    from fedsecure.experiment import Experiment, RunConfig
    from fedsecure.fl.engine import FederatedTrainer, train_central

    out: dict[str, Any] = {}
    for workers in (1, 2):
        config = RunConfig(data=args.data, model="mf-implicit", clients_per_round=1.0, workers=workers)
        exp = Experiment(config)
        fed_model, central_model = exp.model, copy.deepcopy(exp.model)
        trainer = FederatedTrainer(fed_model, exp.split.train, exp.clients, config=exp.fl_config,
                                   aggregator=exp.aggregator, trainer=exp.trainer)
        fed, central, local = [], [], []
        try:
            for r in range(args.repeats + 1):  # the first pair is a warm-up (and starts the workers)
                t0 = time.perf_counter()
                record = trainer.run_round(r + 1)
                t1 = time.perf_counter()
                train_central(central_model, exp.split.train, epochs=1, batch_size=config.batch_size, lr=config.lr,
                              optimizer=config.optimizer, seed=config.seed + r)
                t2 = time.perf_counter()
                if record.error:
                    raise RuntimeError(f"round {r + 1} failed: {record.error}")
                if r > 0:
                    fed.append(t1 - t0)
                    central.append(t2 - t1)
                    local.append(record.train_seconds)
                print(f"timing workers={workers} rep {r}: round {t1 - t0:.2f}s, central epoch {t2 - t1:.2f}s",
                      flush=True)
        finally:
            trainer.close()
        ratio = statistics.median(fed) / statistics.median(central)
        out[f"workers_{workers}"] = {
            "raw_seconds": {"federated_round": fed, "federated_local_training": local, "central_epoch": central},
            "median_seconds": {"federated_round": statistics.median(fed), "central_epoch": statistics.median(central)},
            "ratio_round_over_epoch": ratio,
            "loadavg_after": os.getloadavg(),
        }
    out["command_equivalent"] = ("one FederatedTrainer.run_round of `fedsecure run --data ML --model mf-implicit "
                                 "--clients-per-round 1.0 --workers W` vs Experiment.run_central(epochs=1)")
    out["target"] = "ratio <= 1.5 with --workers 2"
    out["meets_target"] = out["workers_2"]["ratio_round_over_epoch"] <= 1.5
    return out


def part_large(args: argparse.Namespace) -> dict[str, Any]:
    run_args = ["run", *shlex.split(args.large), "--workers", str(args.workers)]
    res = peak_rss(run_args, str(ROOT))
    print(f"large: {res['maxrss_gib']:.3f} GiB, {res['wall_seconds']:.1f}s wall (rc {res['rc']})", flush=True)
    return {**res, "target": "under 2 GiB", "meets_target": res["rc"] == 0 and res["maxrss_bytes"] < 2 * GIB}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="rss,timing")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens folder (default: ../shared/data/ml-latest-small)")
    parser.add_argument("--models", default="mf,mf-implicit,ncf,sasrec")
    parser.add_argument("--workers", type=int, default=1, help="--workers of the rss and large runs")
    parser.add_argument("--baseline", help="an older checkout to run the rss commands with, beside this one")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--large", default="--model sasrec --users 30000 --items 25000 --clients-per-round 1000 "
                                           "--rounds 2")
    parser.add_argument("--out", type=Path, default=RESULTS / "round_memory.json")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    if ({"rss", "timing"} & set(parts)) and not Path(args.data).exists():
        print(f"data not found: {args.data}", file=sys.stderr)
        return 2
    result: dict[str, Any] = json.loads(args.out.read_text()) if args.out.exists() else {}
    from fedsecure.experiment import library_versions

    for part, fn in (("rss", part_rss), ("timing", part_timing), ("large", part_large)):
        if part in parts:
            result[part] = {**fn(args), "command": shlex.join(["python", *sys.argv]),
                            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                        "loadavg_at_end": os.getloadavg()},
                            "versions": library_versions()}
            args.out.parent.mkdir(parents=True, exist_ok=True)
            # re-read before writing: another invocation may have written its part meanwhile
            latest = json.loads(args.out.read_text()) if args.out.exists() else {}
            args.out.write_text(json.dumps({**latest, part: result[part]}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
