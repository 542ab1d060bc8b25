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
  2 side by side: each of ``--repeats`` repeats (after a warm-up) times one
  epoch and one round per worker count, in an order rotated by the repeat;
  each round is divided by its repeat's epoch, and the ratios' mean has a
  t interval over repeats. Target: at most 1.5 with two workers.
* ``large``: peak RSS of one larger synthetic run (``--large "ARGS"``, e.g.
  ``--model sasrec --users 30000 --items 25000 --clients-per-round 1000
  --rounds 2``). Target: under 2 GiB.

``--extra "ARGS"`` adds arguments to the ``rss`` and ``large`` runs (``--extra
"--secure secagg+"``: the memory of a secure round), and ``--baseline`` runs
the ``large`` command with the older tree too.

    python benchmarks/bench_round_memory.py [--parts rss,timing,large] [--models mf,mf-implicit,ncf,sasrec]
        [--workers 1] [--baseline PATH] [--extra "ARGS"] [--repeats 3] [--timing-workers 1,2] [--large "ARGS"]
        [--out PATH]

writes benchmarks/results/round_memory.json (parts not run keep their earlier entry).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
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
                    "--eval-every", "1", *shlex.split(args.extra), "--workers", str(args.workers)]
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
        save_partial(args.out, "rss", model + (f" {args.extra}" if args.extra else ""),
                     {**rows[model], "command": shlex.join(["python", *sys.argv])})
    worst = max(r["this"]["maxrss_bytes"] for r in rows.values())
    return {"models": rows, "target": "every model under 1 GiB", "worst_gib": worst / GIB,
            "meets_target": worst < GIB and all(r["this"]["rc"] == 0 for r in rows.values())}


def _pool_cpu(trainer: Any) -> float:
    """CPU seconds (user + system) its worker processes have used so far (0 without workers)."""
    pool = getattr(getattr(trainer, "_pool", None), "pool", None)
    total = 0.0
    for proc in getattr(pool, "_pool", []):
        try:
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def part_timing(args: argparse.Namespace) -> dict[str, Any]:
    """Round vs epoch with each worker count, side by side: every repeat times one central epoch and one round
    per worker count, in an order that rotates with the repeat, and each round is divided by that repeat's
    epoch (load changes between repeats hit both sides of a ratio alike)."""
    from fedsecure.experiment import Experiment, RunConfig
    from fedsecure.fl.engine import FederatedTrainer, train_central
    from fedsecure.stats import over_seeds

    worker_counts = [int(w) for w in args.timing_workers.split(",")]
    config = RunConfig(data=args.data, model="mf-implicit", clients_per_round=1.0, workers=max(worker_counts))
    exp = Experiment(config)
    central_model = copy.deepcopy(exp.model)
    trainers = {}
    for w in worker_counts:
        fl = dataclasses.replace(exp.fl_config, workers=w)
        trainers[w] = FederatedTrainer(copy.deepcopy(exp.model), exp.split.train, exp.clients, config=fl,
                                       aggregator=copy.deepcopy(exp.aggregator), trainer=exp.trainer)
    names = ["central", *[f"workers_{w}" for w in worker_counts]]
    raw: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    local: dict[str, list[float]] = {n: [] for n in names[1:]}
    try:
        for r in range(args.repeats + 1):  # the first repeat is a warm-up (and starts the workers)
            order = names[r % len(names):] + names[: r % len(names)]
            times, cpus = {}, {}
            for name in order:
                trainer = None if name == "central" else trainers[int(name.split("_")[1])]
                c0 = time.process_time() + _pool_cpu(trainer)
                t0 = time.perf_counter()
                if name == "central":
                    train_central(central_model, exp.split.train, epochs=1, batch_size=config.batch_size,
                                  lr=config.lr, optimizer=config.optimizer, seed=config.seed + r)
                else:
                    record = trainers[int(name.split("_")[1])].run_round(r + 1)
                    if record.error:
                        raise RuntimeError(f"{name} round {r + 1} failed: {record.error}")
                    if r > 0:
                        local[name].append(record.train_seconds)
                times[name] = time.perf_counter() - t0
                cpus[name] = time.process_time() + _pool_cpu(trainer) - c0
            print(f"timing rep {r}: " + ", ".join(f"{n} {times[n]:.2f}s ({cpus[n]:.2f} CPU-s)" for n in names),
                  flush=True)
            if r > 0:
                for n in names:
                    raw[n].append(times[n])
                    cpu[n].append(cpus[n])
    finally:
        for t in trainers.values():
            t.close()
    out: dict[str, Any] = {"order": "per repeat: " + ", ".join(names) + ", rotated by one each repeat",
                           "raw_seconds": raw, "cpu_seconds": cpu, "federated_local_training_seconds": local,
                           "median_seconds": {n: statistics.median(v) for n, v in raw.items()}}
    for n in names[1:]:
        ratios = [f / c for f, c in zip(raw[n], raw["central"])]
        cpu_ratios = [f / c for f, c in zip(cpu[n], cpu["central"])]
        summary, cpu_summary = over_seeds(ratios), over_seeds(cpu_ratios)
        out[n] = {
            "ratio_per_repeat": ratios,
            "ratio_mean": summary.mean, "ratio_ci95": list(summary.ci95),
            "ratio_of_medians": statistics.median(raw[n]) / statistics.median(raw["central"]),
            # CPU of this process and its workers: load-independent; wall time of W workers is about CPU / W
            # only on an idle machine (on a loaded one, W processes get a larger share of the cores than one)
            "cpu_ratio_per_repeat": cpu_ratios,
            "cpu_ratio_mean": cpu_summary.mean, "cpu_ratio_ci95": list(cpu_summary.ci95),
        }
    out["loadavg_after"] = os.getloadavg()
    out["command_equivalent"] = ("one FederatedTrainer.run_round of `fedsecure run --data ML --model mf-implicit "
                                 "--clients-per-round 1.0 --workers W` vs train_central(epochs=1)")
    out["target"] = "ratio <= 1.5 with --workers 2"
    if "workers_2" in out:
        out["meets_target"] = out["workers_2"]["ratio_ci95"][1] <= 1.5
    return out


def part_large(args: argparse.Namespace) -> dict[str, Any]:
    run_args = ["run", *shlex.split(args.large), *shlex.split(args.extra), "--workers", str(args.workers)]
    trees = {"this": str(ROOT)}
    if args.baseline:
        trees["baseline"] = str(Path(args.baseline).resolve())
    out: dict[str, Any] = {}
    for name, tree in trees.items():
        res = peak_rss(run_args, tree)
        print(f"large [{name}]: {res['maxrss_gib']:.3f} GiB, {res['wall_seconds']:.1f}s wall (rc {res['rc']})",
              flush=True)
        out[name] = res
    res = out["this"]
    return {**res, **({"baseline": out["baseline"]} if "baseline" in out else {}), "target": "under 2 GiB",
            "meets_target": res["rc"] == 0 and res["maxrss_bytes"] < 2 * GIB}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--parts", default="rss,timing")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens folder (default: ../shared/data/ml-latest-small)")
    parser.add_argument("--models", default="mf,mf-implicit,ncf,sasrec")
    parser.add_argument("--workers", type=int, default=1, help="--workers of the rss and large runs")
    parser.add_argument("--baseline", help="an older checkout to run the rss and large commands with, beside this one")
    parser.add_argument("--extra", default="", help='more arguments for the rss and large runs, e.g. "--secure secagg+"')
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--timing-workers", default="1,2", help="worker counts the timing part compares")
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
