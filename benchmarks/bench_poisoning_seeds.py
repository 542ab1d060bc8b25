"""Robust aggregators under attack, over several seeds, each paired with clean FedAvg of the same seed.

For every seed, the clean FedAvg run and each (aggregator, attack) cell are
built from the same :class:`~fedsecure.experiment.RunConfig` but for
``aggregator``/``attack``/``malicious`` (and the aggregator's variant, as the
poisoning audit names it: ``norm-bounding:weighted``). Reported per cell:
HR@10 and NDCG@10 per seed with each run's bootstrap interval over users, the
mean with its Student-t interval over seeds, and the paired (by seed)
difference from clean FedAvg with its 95% interval
(:func:`fedsecure.stats.paired_seeds`) and its relative form. The 10 % verdict
reads the interval of the relative difference (the paired interval divided by
clean FedAvg's mean): "within 10 %" only when the whole interval lies above
-10 %, "more than 10 % below" when it lies below, else "not resolved".

Runs can be split across processes (``--runs FILE`` appends one JSON line per
run) and summarised together::

    python benchmarks/bench_poisoning_seeds.py --seeds 0,1,2 --aggregators fedavg,norm-bounding:weighted \\
        --attacks scaling --runs /tmp/a.jsonl
    python benchmarks/bench_poisoning_seeds.py --summarise /tmp/a.jsonl /tmp/b.jsonl --out results/x.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from fedsecure.audit import aggregator_label, aggregator_spec
from fedsecure.experiment import Experiment, RunConfig, library_versions
from fedsecure.stats import over_seeds, paired_seeds

METRICS = ("hr@10", "ndcg@10")
MARGIN = 0.10


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_cells(base: RunConfig, seeds: list[int], aggregators: list[str], attacks: list[str], malicious: float,
              runs: Path, clean: bool) -> None:
    cells: list[dict[str, Any]] = []
    for seed in seeds:
        if clean:
            cells.append({"seed": seed, "aggregator": "fedavg", "attack": "none", "malicious": 0.0})
        for agg in aggregators:
            for attack in attacks:
                cells.append({"seed": seed, **aggregator_spec(agg), "attack": attack, "malicious": malicious})
    for cell in cells:
        cfg = replace(base, **cell)
        t0 = time.perf_counter()
        result = Experiment(cfg).run()
        final = result["final"]
        line = {"seed": cfg.seed, "aggregator": aggregator_label(cfg), "attack": cfg.attack, "malicious": cfg.malicious,
                **{m: final.get(m) for m in METRICS}, **{f"{m}_ci95": final.get(f"{m}_ci95") for m in METRICS},
                "er@10": final.get("er@10"), "seconds": time.perf_counter() - t0, "config": asdict(cfg)}
        with runs.open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(f"seed {cfg.seed} {line['aggregator']:<24} {cfg.attack:<10} hr@10 {line['hr@10']:.4f} "
              f"({line['seconds']:.0f}s)", flush=True)


def summarise(lines: list[dict[str, Any]]) -> dict[str, Any]:
    cells: dict[tuple[str, str], dict[int, dict[str, Any]]] = {}
    for r in lines:
        cells.setdefault((r["aggregator"], r["attack"]), {})[int(r["seed"])] = r
    clean = cells.get(("fedavg", "none"), {})
    out = []
    for (agg, attack), by_seed in sorted(cells.items()):
        row: dict[str, Any] = {"aggregator": agg, "attack": attack, "seeds": sorted(by_seed)}
        for m in METRICS:
            vals = {s: r[m] for s, r in by_seed.items() if r.get(m) is not None}
            row[m] = over_seeds(list(vals.values())).as_dict() if vals else None
            row[f"{m}_per_seed"] = {str(s): [by_seed[s][m], by_seed[s].get(f"{m}_ci95")] for s in sorted(vals)}
            shared = sorted(set(vals) & set(clean))
            if (agg, attack) != ("fedavg", "none") and len(shared) >= 2:
                cmp = paired_seeds(m, vals, {s: clean[s][m] for s in shared})
                base = sum(clean[s][m] for s in shared) / len(shared)
                rel_ci = [cmp.ci95[0] / base, cmp.ci95[1] / base]
                verdict = ("within 10 % of clean FedAvg" if rel_ci[0] > -MARGIN else
                           "more than 10 % below clean FedAvg" if rel_ci[1] < -MARGIN else
                           "not resolved against the 10 % margin (interval straddles -10 %)")
                row[f"{m}_vs_clean_fedavg"] = {**cmp.as_dict(), "relative_ci95": rel_ci, "verdict_10pct": verdict}
        if any(r.get("er@10") is not None for r in by_seed.values()):
            row["er@10_per_seed"] = {str(s): r.get("er@10") for s, r in sorted(by_seed.items())}
        row["seconds_mean"] = sum(r["seconds"] for r in by_seed.values()) / len(by_seed)
        out.append(row)
    return {"cells": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--aggregators", default="fedavg,norm-bounding:weighted")
    p.add_argument("--attacks", default="scaling")
    p.add_argument("--malicious", type=float, default=0.1)
    p.add_argument("--no-clean", action="store_true", help="do not run clean FedAvg (another shard runs it)")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="a RunConfig field for every run (JSON value), e.g. data=PATH, rounds=10")
    p.add_argument("--runs", type=Path, help="append one JSON line per run to this file")
    p.add_argument("--summarise", type=Path, nargs="+", help="summarise these run files instead of running")
    p.add_argument("--out", type=Path, help="summary JSON (with --summarise)")
    p.add_argument("--command", default=None, help="with --summarise: the command(s) that made the runs")
    a = p.parse_args(argv)
    if a.summarise:
        lines = [json.loads(x) for f in a.summarise for x in f.read_text().splitlines() if x.strip()]
        summary = summarise(lines)
        doc = {"command": a.command or " ".join(shlex.quote(x) for x in sys.argv),
               "summarise_command": " ".join(shlex.quote(x) for x in sys.argv),
               "base_config": {k: v for k, v in lines[0]["config"].items()
                               if k not in ("seed", "aggregator", "attack", "malicious", "weighted", "row_aware")},
               **summary, "runs": [{k: v for k, v in r.items() if k != "config"} for r in lines],
               "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
               "versions": library_versions()}
        text = json.dumps(doc, indent=1)
        if a.out:
            a.out.write_text(text)
        for c in summary["cells"]:
            v = c.get("hr@10_vs_clean_fedavg")
            print(f"{c['aggregator']:<24} {c['attack']:<10} hr@10 {c['hr@10']['mean']:.4f} {c['hr@10']['ci95']} "
                  + (f"diff {v['difference']:+.4f} {v['ci95']} rel {v['relative']:+.3f} "
                     f"[{v['relative_ci95'][0]:+.3f}, {v['relative_ci95'][1]:+.3f}] {v['verdict_10pct']}" if v else ""))
        return 0
    if not a.runs:
        p.error("--runs FILE is needed to run (or --summarise FILES)")
    fields = {}
    for item in a.set:
        key, _, value = item.partition("=")
        fields[key] = _value(value)
    base = RunConfig(**fields)
    split = lambda t: [x.strip() for x in t.split(",") if x.strip()]  # noqa: E731
    run_cells(base, [int(s) for s in split(a.seeds)], split(a.aggregators), split(a.attacks), a.malicious, a.runs,
              clean=not a.no_clean)
    return 0


if __name__ == "__main__":
    sys.exit(main())
