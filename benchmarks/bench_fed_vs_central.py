"""Federated vs centralised training of the same model with the same passes over the data.

For each model (``mf-implicit``, ``ncf``, ``sasrec``) and each seed, one
:class:`~fedsecure.experiment.Experiment` on ml-latest-small, cross-device
(one client per user, 610 clients) is built twice from the same
:class:`~fedsecure.experiment.RunConfig`: once trained federatedly
(``Experiment.run``: ``rounds`` rounds, each client one local epoch) and once
centrally (``Experiment.run_central``: ``rounds`` epochs over all training
rows), with the same model, initialisation, examples, loss, local optimiser,
learning rate and batch size. So both sides see the data the same number of
times (for a fraction ``f`` of clients per round, the federated side sees it
``f * rounds`` times and the central side is given that many epochs).

Reported per model: full-catalogue and 1+99-sampled HR@10 / NDCG@10 per seed
(each with its bootstrap interval over the evaluated users), per side the mean,
sd and Student-t interval over seeds, federated minus central paired by seed
with its interval (resolved or not), the relative gap ``(central - federated) /
central`` of full-catalogue HR@10 with its interval (target: at most 0.10), the
popularity baseline (same split, same protocol) and timings. A markdown table
is printed for the README.

    python benchmarks/bench_fed_vs_central.py [--models mf-implicit,ncf,sasrec] [--seeds 0,1,2]

writes benchmarks/results/fed_vs_central.json (models not run keep their earlier entry).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fedsecure.experiment import Experiment, RunConfig, library_versions
from fedsecure.stats import CI_SUFFIX, over_seeds, paired_seeds, rerun_interval

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
RESULTS = Path(__file__).resolve().parent / "results"
METRICS = ("hr@10", "ndcg@10", "hr@10_sampled99", "ndcg@10_sampled99")

#: Per-model settings on top of the RunConfig defaults (fedadam / 0.1 are the CLI's defaults).
#: Pass counts: enough for central MF and NCF to reach their plateau on this data, and for
#: federated SASRec to pass popularity (at 10 passes no model is trained: central NCF and
#: SASRec are still below popularity there).
SETTINGS: dict[str, dict[str, Any]] = {
    # server_lr picked from {0.03, 0.1, 0.3} on seed 1 (HR@10 0.051 / 0.044 / 0.043 at 40 rounds)
    "mf-implicit": {"rounds": 40, "server_optimizer": "fedadam", "server_lr": 0.03},
    # the MLP's weights see a batch-mean gradient (not lr / batch per example like an embedding row)
    "ncf": {"rounds": 32, "lr": 2.0, "server_optimizer": "fedadam", "server_lr": 0.1},
    # one sequence per client: a single local step; a transformer wants a smaller server step
    # (at 30 rounds it was still rising: 5-seed HR@10 0.0439, at popularity's level)
    "sasrec": {"rounds": 48, "lr": 1.0, "server_optimizer": "fedadam", "server_lr": 0.03},
}


def run_one(model: str, seed: int, data: str, overrides: dict[str, Any]) -> dict[str, Any]:
    config = RunConfig(data=data, model=model, seed=seed, eval_every=10**6, **overrides)
    fed_exp = Experiment(config)
    t0 = time.perf_counter()
    fed = fed_exp.run()
    fed_seconds = time.perf_counter() - t0
    passes = config.rounds * fed_exp.clients_per_round / len(fed_exp.clients)
    epochs = max(1, round(passes))
    central_exp = Experiment(config)  # fresh model, same seed: same initialisation and data
    t0 = time.perf_counter()
    central = central_exp.run_central(epochs=epochs)
    central_seconds = time.perf_counter() - t0
    pick = lambda m: {key: m[key] for k in METRICS for key in (k, k + CI_SUFFIX)}  # noqa: E731
    out = {
        "seed": seed, "passes": passes, "central_epochs": epochs,
        "federated": pick(fed["final"]), "central": pick(central["final"]), "popularity": pick(fed["popularity"]),
        "seconds": {"federated": fed_seconds, "central": central_seconds},
        "config": asdict(config), "clients": len(fed_exp.clients), "clients_per_round": fed_exp.clients_per_round,
        "protocol": fed["protocol"],
    }
    print(f"{model} seed {seed}: federated hr@10 {out['federated']['hr@10']:.4f} ({fed_seconds:.0f}s), "
          f"central {out['central']['hr@10']:.4f} ({central_seconds:.0f}s), "
          f"popularity {out['popularity']['hr@10']:.4f}", flush=True)
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per side and metric: mean, sd, Student-t 95% interval and per-seed values (:func:`fedsecure.stats.over_seeds`);
    federated minus central paired by seed (:func:`fedsecure.stats.paired_seeds`) with its interval, and the
    interval in which a rerun's HR@10 gap on other seeds should fall (:func:`fedsecure.stats.rerun_interval`).

    One evaluation on 610 users has a standard error of about
    ``sqrt(0.05 * 0.95 / 610) = 0.009`` in full-catalogue HR@10, close to a
    10 % margin itself; each run's own bootstrap interval over users is kept in
    its ``runs`` entry (``<metric>_ci95``). ``within_10pct_of_central`` is
    claimed only when the whole interval of the relative gap lies below 10 %.
    """
    sides = ("federated", "central", "popularity")
    seeds = {side: {r["seed"]: r[side] for r in runs} for side in sides}
    per = {side: {k: over_seeds([v[k] for v in seeds[side].values()]).as_dict() for k in METRICS} for side in sides}
    mean = {side: {k: per[side][k]["mean"] for k in METRICS} for side in sides}
    out: dict[str, Any] = {"seeds": sorted(seeds["federated"]), "per_side": per, "mean": mean}
    if len(runs) > 1:
        cmp = {k: paired_seeds(k, {s: v[k] for s, v in seeds["federated"].items()},
                               {s: v[k] for s, v in seeds["central"].items()}) for k in METRICS}
        out["federated_minus_central"] = {k: c.as_dict() for k, c in cmp.items()}
        c = mean["central"]["hr@10"]
        lo, hi = cmp["hr@10"].ci95
        gap_ci = (-hi / c, -lo / c)  # (central - federated) / central
        out["relative_gap_hr@10"] = {"value": -cmp["hr@10"].difference / c, "ci95": list(gap_ci)}
        out["within_10pct_of_central"] = gap_ci[1] <= 0.10  # resolved: the whole interval under 10 %
        gaps = [seeds["federated"][k]["hr@10"] - seeds["central"][k]["hr@10"] for k in sorted(seeds["central"])]
        # where a rerun's gap should land: on one new seed, and on as many new seeds as these
        out["rerun_gap_hr@10"] = [{"new_seeds": m, "interval95": list(rerun_interval(gaps, m))}
                                  for m in sorted({1, len(gaps)})]
        out["verdict_hr@10"] = cmp["hr@10"].verdict("federated", "central")
    return out


def _cell(summary: dict[str, Any], side: str, metric: str) -> str:
    m = summary["per_side"][side][metric]
    lo, hi = m["ci95"]
    return f"{m['mean']:.4f} [{lo:.4f}, {hi:.4f}]" if m["n_seeds"] > 1 else f"{m['mean']:.4f}"


def table(results: dict[str, Any]) -> str:
    lines = [
        "| model | setting | seeds | HR@10 [95% CI over seeds] | NDCG@10 | HR@10 (1+99) | NDCG@10 (1+99) | "
        "fed - central HR@10 [paired 95% CI] |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model, res in results.items():
        s = res["summary"]
        if "per_side" not in s:  # recorded before intervals existed: recompute from its runs
            s = res["summary"] = summarise(res["runs"])
        n = len(s["seeds"])
        for side in ("federated", "central", "popularity"):
            diff = ""
            if side == "federated" and "federated_minus_central" in s:
                d = s["federated_minus_central"]["hr@10"]
                diff = (f"{d['difference']:+.4f} [{d['ci95'][0]:+.4f}, {d['ci95'][1]:+.4f}]"
                        f"{' resolved' if d['resolved'] else ' not resolved'}")
            cfg = res["runs"][0]["config"]
            label = {"federated": f"federated, {res['runs'][0]['clients_per_round']}/{res['runs'][0]['clients']} "
                                  f"clients/round, {cfg['rounds']} rounds",
                     "central": f"central, {res['runs'][0]['central_epochs']} epochs",
                     "popularity": "popularity"}[side]
            cells = " | ".join(_cell(s, side, k) for k in METRICS)
            lines.append(f"| {model} | {label} | {n} | {cells} | {diff} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens folder (default: ../shared/data/ml-latest-small), a data file, or 'synthetic' "
                             "(its size through --set users=N items=M interactions_per_user=K)")
    parser.add_argument("--models", default="mf-implicit,ncf,sasrec")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=RESULTS / "fed_vs_central.json")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                        help="override a RunConfig field of every model's setting (e.g. clients_per_round=0.1 rounds=400)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in --out for a model with the same setting and run only the "
                             "seeds it lacks (the model's command then lists every invocation)")
    args = parser.parse_args()
    try:
        overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    except ValueError:
        parser.error(f"--set takes KEY=VALUE pairs with JSON values, got {args.set}")
    if args.data != "synthetic" and not Path(args.data).exists():
        print(f"data not found: {args.data}", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    command = shlex.join(["python", *sys.argv])
    # Models run here replace their entry; other models' results already in --out are kept.
    results: dict[str, Any] = json.loads(args.out.read_text())["results"] if args.out.exists() else {}
    t_start = time.perf_counter()

    def write(complete: bool) -> str:
        # Written after every seed: a long benchmark on a shared machine keeps what it measured.
        md = table(results)
        out = {
            "command": "per model: results[model]['command']",
            "what": "federated vs central training of the same model, same passes, same local optimizer/lr/batch; "
                    "mean over seeds; relative gap = (central - federated) / central of full-catalogue HR@10",
            "complete": complete,
            "data": args.data,
            "results": results,
            "markdown": md,
            "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "loadavg_at_end": os.getloadavg()},
            "versions": library_versions(),
            "total_seconds": time.perf_counter() - t_start,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(out, indent=2, default=str))
        return md

    for model in args.models.split(","):
        settings = {**SETTINGS.get(model, {}), **overrides}
        runs: list[dict[str, Any]] = []
        model_command, planned = command, seeds
        old = results.get(model)
        if args.resume and old is not None:
            if old["settings"] != settings:
                parser.error(f"--resume: {model}'s runs in {args.out} have setting {old['settings']}, not {settings}")
            runs = [r for r in old["runs"] if r["seed"] not in seeds]
            model_command = f"{old['command']}; then {command}"
            planned = sorted({*old.get("seeds_planned", []), *seeds})
        for seed in seeds:
            runs.append(run_one(model, seed, args.data, settings))
            results[model] = {"command": model_command, "settings": settings, "runs": list(runs),
                              "seeds_planned": planned, "summary": summarise(runs)}
            write(False)
    md = write(True)
    print(md)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
