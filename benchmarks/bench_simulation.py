"""Simulation speed: one full-participation federated round vs one centralised epoch of the same model.

Implicit MF (``mf-implicit``) on ml-latest-small, cross-device (610 clients,
one per user, all of them in the round). Both sides go through the code the
CLI runs: an :class:`~fedsecure.experiment.Experiment` builds the data, split,
clients and model; the federated side times ``FederatedTrainer.run_round``
(sampling, 610 local trainings, FedAvg over the plaintext sum, server step),
the central side times ``train_central`` for one epoch over the same training
rows with the same examples, loss, optimiser, learning rate and batch size.
The two are interleaved ``--repeats`` times (so load changes on this shared
machine hit both alike) and the ratio of the medians is reported. The target
is a ratio of at most 3.

    python benchmarks/bench_simulation.py [--data PATH] [--repeats N]

writes benchmarks/results/simulation.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import shlex
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path

from fedsecure.experiment import Experiment, RunConfig, library_versions
from fedsecure.fl.engine import FederatedTrainer, train_central

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
RESULTS = Path(__file__).resolve().parent / "results"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="MovieLens folder (default: ../shared/data/ml-latest-small)")
    parser.add_argument("--model", default="mf-implicit")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS / "simulation.json")
    args = parser.parse_args()
    if not Path(args.data).exists():
        print(f"data not found: {args.data}", file=sys.stderr)
        return 2

    config = RunConfig(data=args.data, model=args.model, clients_per_round=1.0)
    exp = Experiment(config)
    fed_model, central_model = exp.model, copy.deepcopy(exp.model)
    trainer = FederatedTrainer(
        fed_model, exp.split.train, exp.clients, config=exp.fl_config, aggregator=exp.aggregator, trainer=exp.trainer,
    )
    fed_times: list[float] = []
    central_times: list[float] = []
    train_only: list[float] = []
    for r in range(args.repeats + 1):  # the first pair is a warm-up
        t0 = time.perf_counter()
        record = trainer.run_round(r + 1)
        t1 = time.perf_counter()
        train_central(
            central_model, exp.split.train, epochs=1, batch_size=config.batch_size, lr=config.lr,
            optimizer=config.optimizer, seed=config.seed + r,
        )
        t2 = time.perf_counter()
        if record.error:
            raise RuntimeError(f"round {r + 1} failed: {record.error}")
        if r > 0:
            fed_times.append(t1 - t0)
            central_times.append(t2 - t1)
            train_only.append(record.train_seconds)
        print(f"rep {r}: federated round {t1 - t0:.2f}s (local training {record.train_seconds:.2f}s), "
              f"central epoch {t2 - t1:.2f}s", flush=True)

    ratio = statistics.median(fed_times) / statistics.median(central_times)
    result = {
        "command": shlex.join(["python", *sys.argv]),
        "what": "one full-participation federated round vs one centralised epoch, same model/data/optimizer/lr/batch",
        "config": asdict(config),
        "data": {"source": exp.data.source, "users": exp.data.n_users, "items": exp.data.n_items,
                 "train_rows": len(exp.split.train), "clients": len(exp.clients)},
        "trainer": exp.trainer.describe(),
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                    "loadavg_at_end": os.getloadavg()},
        "versions": library_versions(),
        "raw_seconds": {"federated_round": fed_times, "federated_local_training": train_only,
                        "central_epoch": central_times},
        "median_seconds": {"federated_round": statistics.median(fed_times),
                           "central_epoch": statistics.median(central_times)},
        "ratio_round_over_epoch": ratio,
        "target": "ratio <= 3",
        "meets_target": ratio <= 3.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"federated round / central epoch = {ratio:.2f} (median of {args.repeats}); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
