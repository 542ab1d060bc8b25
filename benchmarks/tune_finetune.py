"""Choose bench_finetune.py's settings on validation seeds (never the reporting seeds).

Per validation seed, the model is pretrained once with the pretraining options
given (the same options as ``bench_finetune.py``); then each grid point, a
variant with some step options changed, runs for ``--rounds`` rounds and is
evaluated every ``--eval-every`` rounds (full-catalogue HR@10 on the private
users), so one run also shows what fewer rounds give. Every record (the
command, seed, grid point, HR@10 by round, upload bytes) is appended to
``benchmarks/results/finetune_tuning.json``.

    python benchmarks/tune_finetune.py --seeds 100,101 --rounds 40 --eval-every 10 --max-len 200 \\
        --grid '[{"variant": "full", "set": {"full_lr": 0.1}}]'
"""

from __future__ import annotations

import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_finetune import RESULTS, VARIANTS, make_parser, pretrain, run_variant  # noqa: E402

TUNING = RESULTS / "finetune_tuning.json"


def main() -> int:
    parser = make_parser()
    parser.add_argument("--grid", required=True, help='JSON list of {"variant": NAME, "set": {OPTION: VALUE}}')
    parser.add_argument("--tuning-out", type=Path, default=TUNING)
    parser.add_argument("--no-pretrained-record", action="store_true")
    args = parser.parse_args()
    grid = json.loads(args.grid)
    for point in grid:
        if point["variant"] not in VARIANTS:
            parser.error(f"unknown variant {point['variant']}")
        for key in point.get("set", {}):
            if not hasattr(args, key):
                parser.error(f"unknown option {key}")
    seeds = [int(s) for s in args.seeds.split(",")]
    if set(seeds) & set(range(0, 10)):
        parser.error("seeds 0-9 are reporting seeds: tune on others (100, 101)")
    command = shlex.join(["python", "benchmarks/tune_finetune.py", *sys.argv[1:]])
    import torch

    from fedsecure.experiment import load_data

    torch.set_num_threads(1)
    log = json.loads(args.tuning_out.read_text()) if args.tuning_out.exists() else {"records": []}
    for seed in seeds:
        data = load_data(str(args.data), seed)
        ckpt, pre = pretrain(args, seed, data)
        users = np.asarray(pre["eval_users"])
        pretrain_opts = {k: getattr(args, k) for k in ("dim", "blocks", "heads", "max_len", "loss", "pretrain_users",
                                                         "pretrain_epochs", "pretrain_lr", "pretrain_batch_size")}
        hr_pre = float(np.mean(pre["hits"]["pretrained"]))
        print(f"seed {seed}: pretrained {hr_pre:.4f}, popularity {pre['popularity']:.4f}", flush=True)
        for point in grid:
            point_args = type(args)(**{**vars(args), **point.get("set", {})})
            v, hits = run_variant(point_args, seed, data, ckpt, point["variant"], users)
            record = {"command": command, "seed": seed, "pretrain": pretrain_opts, "pretrained_hr@10": hr_pre,
                      "popularity_hr@10": pre["popularity"], "rounds": args.rounds,
                      "clients_per_round": args.clients_per_round, "variant": point["variant"],
                      "set": point.get("set", {}), **{k: v[k] for k in (
                          "hr@10", "hr@10_ci95", "hr@10_by_round", "settings", "bytes_up_per_client", "cpu_seconds")},
                      "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            log["records"].append(record)
            args.tuning_out.write_text(json.dumps(log, indent=1))
            by_round = " ".join(f"{r}:{h:.4f}" for r, h in v["hr@10_by_round"].items())
            print(f"seed {seed} {point['variant']} {point.get('set', {})}: {by_round} "
                  f"({v['cpu_seconds']:.0f} cpu s)", flush=True)
        ckpt.unlink()
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
