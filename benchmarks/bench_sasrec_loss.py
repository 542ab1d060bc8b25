"""SASRec's training losses side by side: cost per epoch at catalogue scale, and quality on ml-latest-small.

Part ``scale``: synthetic data of ``--users`` x ``--items`` (``--per-user``
interactions each on average), SASRec (dim 50, 2 blocks, 1 head, length 50,
batch 128, Adam 1e-3) trained centrally. Each sampled loss gets one epoch; the
full softmax gets the wall-clock time the sampled-softmax epoch took (its
projected epoch time is recorded beside it), so the quality columns compare
equal cost. Wall and CPU seconds are recorded (the machine is shared).

Part ``quality``: ml-latest-small, each loss centrally (``--epochs`` of Adam)
or federated (cross-silo: ``--silos`` silos, ``--rounds`` of FedAvg, Adam
locally for ``--local-epochs``), over ``--seeds``. Part ``merge`` combines
quality files: HR@10 and NDCG@10 (full catalogue and 1 + 100 sampled) with
95% intervals over seeds, and paired-over-seeds differences against the full
softmax (the sub-runs can then go to separate processes).

    nice -n 10 python benchmarks/bench_sasrec_loss.py --part scale
    nice -n 10 python benchmarks/bench_sasrec_loss.py --part quality --setting central --out c.json
    nice -n 10 python benchmarks/bench_sasrec_loss.py --part quality --setting federated --out f.json
    python benchmarks/bench_sasrec_loss.py --part merge --inputs c.json,f.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsecure.experiment import Experiment, RunConfig, library_versions
from fedsecure.fl.local import make_optimizer
from fedsecure.stats import CI_SUFFIX, over_seeds, paired_seeds

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
LOSSES = ("sampled-softmax", "bce", "full")
METRICS = ("hr@10", "ndcg@10", "hr@10_sampled100", "ndcg@10_sampled100")
MODEL = {"dim": 50, "blocks": 2, "heads": 1, "max_len": 50}


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pick(metrics: dict[str, Any]) -> dict[str, Any]:
    return {k: metrics[k] for m in METRICS for k in (m, m + CI_SUFFIX) if k in metrics}


def train_for(exp: Experiment, *, seconds: float | None, lr: float, batch_size: int, seed: int) -> dict[str, Any]:
    """One central epoch of Adam (or as much of it as fits in ``seconds``); wall and CPU time of the steps."""
    model, train = exp.model, exp.split.train
    rng = np.random.default_rng([seed, 1, 0xC0])
    torch.manual_seed(seed)
    t0, c0 = time.perf_counter(), _cpu()
    examples = model.examples(train, np.arange(len(train)), rng)
    batches = model.minibatches(examples, batch_size, rng)
    opt = make_optimizer("adam", model.parameters(), lr)
    model.train()
    steps = 0
    for batch in batches:
        if seconds is not None and time.perf_counter() - t0 >= seconds:
            break
        opt.zero_grad(set_to_none=True)
        model.loss(batch).backward()
        opt.step()
        steps += 1
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return {"steps": steps, "steps_per_epoch": len(batches), "epoch_fraction": steps / len(batches),
            "wall_seconds": wall, "cpu_seconds": cpu,
            "projected_epoch_wall_seconds": wall * len(batches) / max(steps, 1)}


def part_scale(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"data": f"synthetic {args.users} users x {args.items} items x {args.per_user} per user"}
    t0, c0 = time.perf_counter(), _cpu()
    base = dict(users=args.users, items=args.items, interactions_per_user=args.per_user, model="sasrec",
                n_negatives=100, seed=0, batch_size=128)
    exp = Experiment(RunConfig(**base, model_args={**MODEL, "loss": "sampled-softmax"}))
    out["setup"] = {"wall_seconds": time.perf_counter() - t0, "cpu_seconds": _cpu() - c0,
                    "interactions": len(exp.data), "train_sequences": int(np.count_nonzero(np.bincount(
                        exp.split.train.users, minlength=exp.split.train.n_users)))}
    runs: dict[str, Any] = {}
    budget = None
    for loss in LOSSES:
        if loss != "sampled-softmax":
            exp = Experiment(RunConfig(**base, model_args={**MODEL, "loss": loss}), data=exp.data)
        run = train_for(exp, seconds=budget if loss == "full" else None, lr=1e-3, batch_size=128, seed=0)
        if loss == "sampled-softmax":
            budget = run["wall_seconds"]
        t1, c1 = time.perf_counter(), _cpu()
        exp.model.eval()
        run["metrics"] = _pick(exp.evaluator(exp.model))
        run["eval_wall_seconds"], run["eval_cpu_seconds"] = time.perf_counter() - t1, _cpu() - c1
        runs[loss] = run
        print(loss, {k: v for k, v in run.items() if k != "metrics"}, run["metrics"].get("hr@10"),
              run["metrics"].get("hr@10_sampled100"), flush=True)
    out["popularity"] = _pick(exp.evaluator.popularity())
    out["runs"] = runs
    out["note"] = ("each sampled loss trains one full epoch; the full softmax trains for the wall time the "
                   "sampled-softmax epoch took (epoch_fraction says how much of an epoch that was)")
    return out


def part_quality(args: argparse.Namespace) -> dict[str, Any]:
    """Runs of ``--setting`` x ``--losses`` x ``--seeds``; ``--part merge`` summarises several such files."""
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: dict[str, dict[str, Any]] = {}
    for loss in args.losses.split(","):
        per_seed = {}
        for seed in seeds:
            t0, c0 = time.perf_counter(), _cpu()
            common = dict(data=args.data, model="sasrec", seed=seed, n_negatives=100, batch_size=128,
                          optimizer="adam", lr=args.lr, eval_every=10**6, model_args={**MODEL, "loss": loss})
            if args.setting == "central":
                exp = Experiment(RunConfig(**common))
                final = exp.run_central(epochs=args.epochs)["final"]
            else:
                exp = Experiment(RunConfig(**common, setting="cross-silo", silos=args.silos, rounds=args.rounds,
                                           local_epochs=args.local_epochs, server_optimizer="avg", server_lr=1.0))
                final = exp.run()["final"]
            per_seed[seed] = {**_pick(final), "wall_seconds": time.perf_counter() - t0, "cpu_seconds": _cpu() - c0}
            print(args.setting, loss, seed, round(final["hr@10"], 4), round(final["hr@10_sampled100"], 4),
                  f"{time.perf_counter() - t0:.0f}s wall {_cpu() - c0:.0f}s cpu", flush=True)
        rows[f"{args.setting}/{loss}"] = {"per_seed": per_seed}
    settings = ({"epochs": args.epochs} if args.setting == "central" else
                {"setting": "cross-silo", "silos": args.silos, "rounds": args.rounds,
                 "local_epochs": args.local_epochs, "server_optimizer": "avg (FedAvg)", "server_lr": 1.0})
    return {"data": args.data, "seeds": seeds, "rows": rows,
            "settings": {args.setting: {**settings, "optimizer": "adam", "lr": args.lr, "batch_size": 128},
                         "model": MODEL}}


def part_merge(args: argparse.Namespace) -> dict[str, Any]:
    """Summaries over seeds and paired-over-seeds differences against the full softmax, from quality files."""
    parts = [json.loads(Path(p).read_text()) for p in args.inputs.split(",")]
    rows: dict[str, Any] = {}
    settings: dict[str, Any] = {}
    for part in parts:
        rows.update(part["rows"])
        settings.update(part["settings"])
    table = ["| setting | loss | seeds | HR@10 [95% CI] | NDCG@10 | HR@10 (1+100) | NDCG@10 (1+100) | "
             "HR@10 - full [paired 95% CI] | CPU s per run |", "|---|---|---|---|---|---|---|---|---|"]
    comparisons = {}
    for key, row in sorted(rows.items()):
        per_seed = {int(s): v for s, v in row["per_seed"].items()}
        seeds = sorted(per_seed)
        row["over_seeds"] = {m: over_seeds([per_seed[s][m] for s in seeds]).__dict__ for m in METRICS}
        setting, loss = key.split("/")
        cell = lambda m: (f"{row['over_seeds'][m]['mean']:.4f} [{row['over_seeds'][m]['ci95'][0]:.4f}, "  # noqa: E731
                          f"{row['over_seeds'][m]['ci95'][1]:.4f}]")
        diff = ""
        full = rows.get(f"{setting}/full")
        if loss != "full" and full is not None:
            full_seed = {int(s): v for s, v in full["per_seed"].items()}
            comparisons[f"{setting}: {loss} - full"] = {
                m: paired_seeds(m, {s: per_seed[s][m] for s in seeds}, {s: full_seed[s][m] for s in seeds}).as_dict()
                for m in METRICS}
            c = comparisons[f"{setting}: {loss} - full"]["hr@10"]
            diff = (f"{c['difference']:+.4f} [{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}] "
                    f"{'resolved' if c['resolved'] else 'not resolved'}")
        cpu = np.mean([per_seed[s]["cpu_seconds"] for s in seeds])
        table.append(f"| {setting} | {loss} | {len(seeds)} | {cell('hr@10')} | {cell('ndcg@10')} | "
                     f"{cell('hr@10_sampled100')} | {cell('ndcg@10_sampled100')} | {diff} | {cpu:.0f} |")
    return {"data": parts[0]["data"], "rows": rows, "comparisons": comparisons, "settings": settings,
            "markdown": "\n".join(table), "parts": [p.get("command") for p in parts]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("scale", "quality", "merge"), required=True)
    p.add_argument("--setting", choices=("central", "federated"), default="central")
    p.add_argument("--losses", default=",".join(LOSSES))
    p.add_argument("--inputs", help="merge: comma-separated quality JSON files")
    p.add_argument("--users", type=int, default=30000)
    p.add_argument("--items", type=int, default=25000)
    p.add_argument("--per-user", type=float, default=10.0)
    p.add_argument("--data", default=str(DEFAULT_DATA))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--silos", type=int, default=10)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--local-epochs", type=int, default=2)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    t0, c0 = time.perf_counter(), _cpu()
    result = {"scale": part_scale, "quality": part_quality, "merge": part_merge}[args.part](args)
    argv_used = sys.argv[1:] if argv is None else argv
    result.update({
        "command": "nice -n 10 python benchmarks/bench_sasrec_loss.py " + shlex.join(argv_used),
        "total_wall_seconds": time.perf_counter() - t0, "total_cpu_seconds": _cpu() - c0,
        "machine": {"cpu_count": os.cpu_count(), "loadavg_at_end": list(os.getloadavg()), "torch_threads": 1},
        "versions": library_versions(),
    })
    out = args.out or RESULTS / f"sasrec_loss_{args.part}.json"
    out.write_text(json.dumps(result, indent=1, default=float))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
