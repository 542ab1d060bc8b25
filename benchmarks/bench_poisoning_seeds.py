"""Robust aggregators under attack, over several seeds, each paired with clean FedAvg of the same seed.

For every seed, the clean FedAvg run and each (aggregator, attack) cell are
built from the same :class:`~fedsecure.experiment.RunConfig` but for
``aggregator``/``attack``/``malicious`` (and the aggregator's variant, as the
poisoning audit names it: ``norm-bounding:weighted``). Reported per cell:
HR@10 and NDCG@10 per seed with each run's bootstrap interval over users, the
mean with its Student-t interval over seeds, and the paired (by seed)
difference from clean FedAvg with its 95% interval
(:func:`fedsecure.stats.paired_seeds`) and its relative form. Each run also
keeps its per-row full-catalogue HR@10 (rows in a fixed order, the same for
every run on the same data), so a cell is also paired *by user* with clean
FedAvg: per seed, and pooled over the seeds both share (every seed's rows
together, users resampled; :func:`fedsecure.stats.paired_users`), the
interval to quote when seeds are few and one run's HR@10 has a standard
error as large as the margin (ml-latest-small). For promotion attacks the
target's ER@10 is reported; every other run reports the ER@10 the same
target (:func:`~fedsecure.attacks.promotion.choose_targets` for its seed)
has in its model, over the same honest users, so a clean run gives the
target's clean exposure. The 10 % verdict
reads the interval of the relative difference (the paired interval divided by
clean FedAvg's mean): "within 10 %" only when the whole interval lies above
-10 %, "more than 10 % below" when it lies below, else "not resolved".

With ``--groups G`` (and ``--set secure=secagg+``) every robust rule runs
in grouped secure mode over G group means, and clean FedAvg sums the whole
round with the same protocol.

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

import numpy as np

from fedsecure.attacks.metrics import exposure_ratio
from fedsecure.attacks.poisoning import PoisoningPlan
from fedsecure.attacks.promotion import ItemPromotion, choose_targets
from fedsecure.audit import aggregator_label, aggregator_spec
from fedsecure.experiment import SCALED_ATTACKS, Experiment, RunConfig, library_versions
from fedsecure.recsys.metrics import ranking_rows
from fedsecure.results import dumps_strict
from fedsecure.stats import over_seeds, paired_seeds, paired_users

METRICS = ("hr@10", "ndcg@10")
#: per-row metrics kept for pairing by user: full-catalogue HR@10, and HR@10 over the test item + 99 sampled
#: negatives (the same negatives in every run of a seed), whose rows are far less often zero
ROW_METRICS = ("hr@10", "hr@10_sampled99")
MARGIN = 0.10


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def run_cells(base: RunConfig, seeds: list[int], aggregators: list[str], attacks: list[str], malicious: float,
              runs: Path, clean: bool, attack_scale: float | None = None, groups: int = 0) -> None:
    cells: list[dict[str, Any]] = []
    for seed in seeds:
        if clean:
            cells.append({"seed": seed, "aggregator": "fedavg", "attack": "none", "malicious": 0.0})
        for agg in aggregators:
            for attack in attacks:
                # FedAvg sums the whole round: --groups applies to the robust rules
                cells.append({"seed": seed, **aggregator_spec(agg), "attack": attack, "malicious": malicious,
                              "attack_scale": attack_scale if attack in SCALED_ATTACKS else None,
                              "groups": groups if agg != "fedavg" else 0})
    for cell in cells:
        cfg = replace(base, **cell)
        t0 = time.perf_counter()
        exp = Experiment(cfg)
        result = exp.run()
        seconds = time.perf_counter() - t0
        final = result["final"]
        label = aggregator_label(cfg) + (f" g={cfg.groups}" if cfg.groups else "")
        line = {"seed": cfg.seed, "aggregator": label, "attack": cfg.attack, "malicious": cfg.malicious,
                **{m: final.get(m) for m in METRICS}, **{f"{m}_ci95": final.get(f"{m}_ci95") for m in METRICS},
                "hr@10_sampled99": final.get("hr@10_sampled99"),
                "er@10": final.get("er@10"), "er@10_ci95": final.get("er@10_ci95"),
                **target_exposure(exp, malicious), "rows": per_row_hits(exp), "seconds": seconds,
                "config": asdict(cfg)}
        with runs.open("a") as f:
            f.write(json.dumps(line) + "\n")
        print(f"seed {cfg.seed} {line['aggregator']:<24} {cfg.attack:<10} hr@10 {line['hr@10']:.4f} "
              f"({line['seconds']:.0f}s)", flush=True)


def per_row_hits(exp: Experiment) -> dict[str, list[float]]:
    """Per-row HR@10 (full catalogue and 1 + 99 sampled) of the trained model (rows in a fixed order for the data, so runs pair by user)."""
    users, rows, _ = ranking_rows(exp.model.score_fn(exp.split.train), exp.split, k=10, n_negatives=99,
                                  seed=exp.config.seed)
    return {"users": users.tolist(), **{m: rows[m].tolist() for m in ROW_METRICS}}


def target_exposure(exp: Experiment, malicious: float) -> dict[str, Any]:
    """ER@10 of the item that item promotion would target for this seed, over the users honest under that attack.

    In a promotion run this is the run's own ER@10; in any other run (clean
    FedAvg, other attacks) it is the same target's exposure without the
    promotion attack, over the same honest users.
    """
    train = exp.split.train
    target = choose_targets(train, 1, seed=exp.config.seed)
    plan = PoisoningPlan.choose(ItemPromotion(target, n_items=train.n_items), [c.client_id for c in exp.clients],
                                malicious, seed=exp.config.seed)
    er = exposure_ratio(exp.model.score_fn(train), exp.split, target, k=10, exclude_users=sorted(plan.malicious),
                        seed=exp.config.seed)
    return {"promotion_target": target, "target_er@10": er["er@10"], "target_er@10_ci95": er["er@10_ci95"]}


def _pooled_users(a: list[dict[str, Any]], b: list[dict[str, Any]], metric: str) -> Any:
    """Paired bootstrap over users of a - b, every shared seed's rows together (users resampled across seeds)."""
    users, xa, xb = [], [], []
    for ra, rb in zip(a, b):
        if ra["rows"]["users"] != rb["rows"]["users"]:
            raise ValueError(f"seed {ra['seed']}: the runs' evaluation rows differ; they cannot be paired by user")
        users += ra["rows"]["users"]
        xa += ra["rows"][metric]
        xb += rb["rows"][metric]
    return paired_users(metric, np.asarray(users), np.asarray(xa), np.asarray(xb))


def _verdict(rel_ci: list[float]) -> str:
    return ("within 10 % of clean FedAvg" if rel_ci[0] > -MARGIN else
            "more than 10 % below clean FedAvg" if rel_ci[1] < -MARGIN else
            "not resolved against the 10 % margin (interval straddles -10 %)")


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
                row[f"{m}_vs_clean_fedavg"] = {**cmp.as_dict(), "relative_ci95": rel_ci, "verdict_10pct": _verdict(rel_ci)}
        paired = sorted(s for s in set(by_seed) & set(clean) if "rows" in by_seed[s] and "rows" in clean[s])
        if (agg, attack) != ("fedavg", "none") and paired:
            for m in ROW_METRICS:
                seeds = [s for s in paired if m in by_seed[s]["rows"] and m in clean[s]["rows"]]
                if not seeds:
                    continue
                per_seed = {}
                for s in seeds:
                    c = _pooled_users([by_seed[s]], [clean[s]], m)
                    base_s = float(np.mean(clean[s]["rows"][m]))
                    per_seed[str(s)] = {**c.as_dict(), "relative_ci95": [x / base_s for x in c.ci95]}
                pooled = _pooled_users([by_seed[s] for s in seeds], [clean[s] for s in seeds], m)
                base = float(np.mean([np.mean(clean[s]["rows"][m]) for s in seeds]))
                rel_ci = [pooled.ci95[0] / base, pooled.ci95[1] / base]
                row[f"{m}_vs_clean_fedavg_by_user"] = {
                    "seeds": seeds, "per_seed": per_seed,
                    "pooled": {**pooled.as_dict(), "relative_ci95": rel_ci, "verdict_10pct": _verdict(rel_ci)},
                    "note": "paired bootstrap over users of this cell minus clean FedAvg of the same seed; pooled: "
                            "every shared seed's rows together, users resampled (training noise enters only through "
                            "the rows)"}
        own = cells.get((agg, "none"), {})
        if attack != "none" and agg != "fedavg" and own:
            # the rule's own clean run of the same seed: what the attack costs under this rule
            vs_own = {}
            for m in ROW_METRICS:
                seeds = sorted(s for s in set(by_seed) & set(own)
                               if m in by_seed[s].get("rows", {}) and m in own[s].get("rows", {}))
                if seeds:
                    c = _pooled_users([by_seed[s] for s in seeds], [own[s] for s in seeds], m)
                    base = float(np.mean([np.mean(own[s]["rows"][m]) for s in seeds]))
                    vs_own[m] = {**c.as_dict(), "seeds": seeds, "relative_ci95": [x / base for x in c.ci95]}
            if vs_own:
                row["vs_own_clean_by_user"] = vs_own
        if any(r.get("er@10") is not None for r in by_seed.values()):
            row["er@10_per_seed"] = {str(s): [r.get("er@10"), r.get("er@10_ci95")] for s, r in sorted(by_seed.items())}
        if any(r.get("target_er@10") is not None for r in by_seed.values()):
            row["target_er@10_per_seed"] = {str(s): [r.get("target_er@10"), r.get("target_er@10_ci95")]
                                            for s, r in sorted(by_seed.items())}
        row["seconds_mean"] = sum(r["seconds"] for r in by_seed.values()) / len(by_seed)
        out.append(row)
    return {"cells": out}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--aggregators", default="fedavg,norm-bounding:weighted")
    p.add_argument("--attacks", default="scaling")
    p.add_argument("--malicious", type=float, default=0.1)
    p.add_argument("--attack-scale", type=float, default=None,
                   help="the boost of scaling / the scale of sign-flip (their default otherwise)")
    p.add_argument("--groups", type=int, default=0, help="grouped secure mode for the robust rules (0: plaintext)")
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
               **summary, "runs": [{k: v for k, v in r.items() if k not in ("config", "rows")} for r in lines],
               "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
               "versions": library_versions()}
        text = dumps_strict(doc, indent=1)  # a one-seed cell's interval over seeds is infinite: "inf"
        if a.out:
            a.out.write_text(text)
        for c in summary["cells"]:
            v = c.get("hr@10_vs_clean_fedavg")
            u = (c.get("hr@10_vs_clean_fedavg_by_user") or {}).get("pooled")
            us = (c.get("hr@10_sampled99_vs_clean_fedavg_by_user") or {}).get("pooled")
            print(f"{c['aggregator']:<24} {c['attack']:<14} hr@10 {c['hr@10']['mean']:.4f} {c['hr@10']['ci95']} "
                  + (f"diff {v['difference']:+.4f} {v['ci95']} rel {v['relative']:+.3f} "
                     f"[{v['relative_ci95'][0]:+.3f}, {v['relative_ci95'][1]:+.3f}] {v['verdict_10pct']}" if v else "")
                  + (f" | by user {u['difference']:+.4f} [{u['ci95'][0]:+.4f}, {u['ci95'][1]:+.4f}] rel "
                     f"[{u['relative_ci95'][0]:+.3f}, {u['relative_ci95'][1]:+.3f}] {u['verdict_10pct']}" if u else "")
                  + (f" | sampled by user {us['difference']:+.4f} rel [{us['relative_ci95'][0]:+.3f}, "
                     f"{us['relative_ci95'][1]:+.3f}]" if us else ""))
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
              clean=not a.no_clean, attack_scale=a.attack_scale, groups=a.groups)
    return 0


if __name__ == "__main__":
    sys.exit(main())
