"""Poisoning audit: a sweep of attacks x aggregators x malicious fractions (plain and grouped-secure).

Each cell is one :class:`~fedsecure.experiment.Experiment` built from a base
:class:`~fedsecure.experiment.RunConfig` with ``aggregator``, ``attack``,
``malicious`` and ``groups`` set; for every aggregator (and grouping) the
sweep also runs it without attack, so each attacked result stands beside its
own clean run. Reported per cell: HR@10 and NDCG@10 with their bootstrap
intervals, the change from the clean run of the same aggregator and from
clean FedAvg, the target's exposure ratio ER@10 for promotion attacks, the
mean aggregation and round time, and whether a round failed. Output: JSON
(everything, with the command), CSV (one row per cell) and a heatmap PNG of
HR@10 relative to clean FedAvg (rows: aggregators, columns: attacks; one
panel per malicious fraction).

    fedsecure audit poisoning --attacks scaling,sign-flip --aggregators fedavg,median --malicious 0.1 --out DIR
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from fedsecure.experiment import Experiment, RunConfig, library_versions
from fedsecure.results import SCHEMA_VERSION, dumps_strict

METRIC = "hr@10"


def _cell(config: RunConfig, on_done: Callable[[dict[str, Any]], None] | None = None, data: Any = None) -> dict[str, Any]:
    t0 = time.perf_counter()
    exp = Experiment(config, data)
    result = exp.run()
    rounds = result["rounds"]
    final = result["final"]
    row = {
        "aggregator": aggregator_label(config), "groups": config.groups, "attack": config.attack,
        "malicious": config.malicious,
        "hr@10": final.get("hr@10"), "hr@10_ci95": final.get("hr@10_ci95"),
        "ndcg@10": final.get("ndcg@10"), "ndcg@10_ci95": final.get("ndcg@10_ci95"),
        "er@10": final.get("er@10"), "er@10_ci95": final.get("er@10_ci95"),
        "failed_rounds": sum(1 for r in rounds if r.get("error")),
        "seconds_per_round": sum(r["train_seconds"] + r["aggregate_seconds"] for r in rounds) / max(len(rounds), 1),
        "aggregate_seconds_per_round": sum(r["aggregate_seconds"] for r in rounds) / max(len(rounds), 1),
        "min_group_size": min((r["stats"].get("min_group_size", math.inf) for r in rounds), default=None),
        "wall_seconds": time.perf_counter() - t0,
        "poisoning": result.get("poisoning"),
    }
    if row["min_group_size"] == math.inf:
        row["min_group_size"] = None
    if on_done is not None:
        on_done(row)
    return row


#: variants an aggregator entry of the sweep may name after a colon (``norm-bounding:weighted``)
VARIANTS = {"weighted": "weighted", "row-aware": "row_aware"}


def aggregator_spec(entry: str) -> dict[str, Any]:
    """``"norm-bounding:weighted"`` -> ``{"aggregator": "norm-bounding", "weighted": True}`` (RunConfig fields)."""
    name, *variants = [p.strip() for p in entry.split(":")]
    spec: dict[str, Any] = {"aggregator": name}
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"aggregator {entry!r}: unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
        spec[VARIANTS[v]] = True
    return spec


def aggregator_label(config: RunConfig) -> str:
    """The aggregator's name with its variants, as a sweep entry names it."""
    return config.aggregator + "".join(f":{v}" for v, field_ in VARIANTS.items() if getattr(config, field_))


def sweep(
    base: RunConfig,
    *,
    attacks: Sequence[str],
    aggregators: Sequence[str],
    fractions: Sequence[float],
    groups: Sequence[int] = (0,),
    on_done: Callable[[dict[str, Any]], None] | None = None,
    data: Any = None,
) -> list[dict[str, Any]]:
    """Every (aggregator, grouping) clean, then under every (attack, fraction); rows in that order.

    ``data`` (an ``Interactions``) overrides ``base.data`` for every cell.
    """
    rows: list[dict[str, Any]] = []
    specs = [aggregator_spec(a) for a in aggregators]
    for spec in specs:
        for g in groups:
            if g and spec["aggregator"] == "fedavg":
                continue  # grouped mode needs a robust rule
            clean_cfg = replace(base, **spec, groups=g, attack="none", malicious=0.0)
            clean = _cell(clean_cfg, on_done, data)
            rows.append(clean)
            for attack in attacks:
                for frac in fractions:
                    cfg = replace(base, **spec, groups=g, attack=attack, malicious=frac)
                    rows.append(_cell(cfg, on_done, data))
    clean_fedavg = next((r[METRIC] for r in rows if r["aggregator"] == "fedavg" and r["attack"] == "none"), None)
    for r in rows:
        own = next(c[METRIC] for c in rows
                   if c["aggregator"] == r["aggregator"] and c["groups"] == r["groups"] and c["attack"] == "none")
        r["hr@10_vs_own_clean"] = r[METRIC] / own if own else None
        r["hr@10_vs_clean_fedavg"] = r[METRIC] / clean_fedavg if clean_fedavg else None
    return rows


def write_outputs(rows: list[dict[str, Any]], out: Path, *, command: str, base: RunConfig,
                  status: str = "complete") -> dict[str, Path]:
    """``poisoning_audit.json``, ``.csv`` and ``.png`` under ``out`` (created); strict JSON.

    ``status="interrupted"``: only the JSON, of the rows completed so far.
    """
    out.mkdir(parents=True, exist_ok=True)
    paths = {k: out / f"poisoning_audit.{k}" for k in ("json", "csv", "png")}
    paths["json"].write_text(dumps_strict({
        "schema_version": SCHEMA_VERSION, "status": status,
        "command": command, "base_config": asdict(base), "rows": rows, "versions": library_versions(),
        "metric_note": "HR@10 / NDCG@10 under the run's fixed protocol (see each Experiment), with 95% bootstrap "
                       "intervals over evaluated users; ER@10 = share of honest users with the target item in "
                       "their top 10",
    }))
    if status != "complete":  # the rows done so far, without the table and heatmap of a full sweep
        return {"json": paths["json"]}
    columns = ["aggregator", "groups", "attack", "malicious", "hr@10", "hr@10_ci95", "ndcg@10", "er@10",
               "hr@10_vs_own_clean", "hr@10_vs_clean_fedavg", "failed_rounds", "seconds_per_round",
               "aggregate_seconds_per_round", "min_group_size"]
    with paths["csv"].open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([json.dumps(r[c]) if isinstance(r[c], list) else r[c] for c in columns])
    _heatmap(rows, paths["png"])
    return paths


def _heatmap(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fractions = sorted({r["malicious"] for r in rows if r["attack"] != "none"}) or [0.0]
    labels = list(dict.fromkeys(f"{r['aggregator']}" + (f" (g={r['groups']})" if r["groups"] else "") for r in rows))
    attacks = ["none", *dict.fromkeys(r["attack"] for r in rows if r["attack"] != "none")]
    fig, axes = plt.subplots(1, len(fractions), figsize=(1.3 * len(attacks) * len(fractions) + 2, 0.5 * len(labels) + 2),
                             squeeze=False)
    for ax, frac in zip(axes[0], fractions):
        grid = np.full((len(labels), len(attacks)), np.nan)
        for r in rows:
            if r["attack"] != "none" and r["malicious"] != frac:
                continue
            i = labels.index(f"{r['aggregator']}" + (f" (g={r['groups']})" if r["groups"] else ""))
            grid[i, attacks.index(r["attack"])] = r["hr@10_vs_clean_fedavg"] if r["hr@10_vs_clean_fedavg"] is not None else np.nan
        im = ax.imshow(grid, vmin=0, vmax=max(1.2, np.nanmax(grid) if np.isfinite(grid).any() else 1.2), cmap="RdYlGn")
        ax.set_xticks(range(len(attacks)), attacks, rotation=45, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_title(f"HR@10 / clean FedAvg, {frac:.0%} malicious")
        for (i, j), v in np.ndenumerate(grid):
            if np.isfinite(v):
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
