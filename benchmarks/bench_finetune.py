"""Federated fine-tuning of a pretrained SASRec: HR@10 against upload bytes per client per round.

Per seed, on ml-latest-small: a seeded 20 % of the users is public; SASRec
is pretrained centrally on all their interactions (Adam) and saved as a
checkpoint. The other users are the federated clients and the only evaluated
users (leave-last-out, full catalogue, HR@10). Then, for the same number of
federated rounds and the same clients per round, each variant runs:

* ``scratch``: the same model from random initialisation (the public users
  are removed all the same: ``--pretrain-epochs 0``), with the server step the
  project tuned for federated SASRec from scratch (FedAdam 0.03);
* ``full``: every parameter fine-tuned from the checkpoint (``--init``);
* ``lora4`` / ``lora8`` / ``lora16``: LoRA adapters only (``--adapter lora``);
* ``lora4+items`` / ``lora8+items`` / ``lora16+items``: LoRA adapters with the
  item embeddings trained beside them (``--adapter-items train``);
* compression of what travels (``--compress``) and SecAgg+ (``--secure
  secagg+``) on LoRA rank 8 and on full fine-tuning, where named in ``--variants``.

Each client holds one sequence, so its local epoch is one SGD step. The
local and server step of each kind is its own option (``--scratch-*``,
``--full-*``, ``--lora-*``, ``--lora-items-*``: lr, server optimizer, server
lr and schedule);
the defaults are what ``tune_finetune.py`` chose on validation seeds 100 and
101 (``benchmarks/results/finetune_tuning.json``): local lr 1.0 everywhere,
scratch FedAdam 0.03, full fine-tuning FedAdam 0.01, LoRA plain averaging,
LoRA with trained item rows FedAdam 0.01 (chosen later, on the same seeds);
pretraining 30 epochs of Adam at lr 3e-3, batch 16, with ``--max-len 200``;
40 rounds of 60 clients.

Reported per variant: HR@10 per seed with its bootstrap interval over users,
the mean over seeds with its Student-t interval, upload bytes per client per
round (the engine's ``bytes_up_per_client``: payload, masked ring elements and
SecAgg+ key agreement and unmasking messages; in plaintext a full update
sends only the item rows a client touched), and paired comparisons: each
variant against full fine-tuning, against scratch and against the pretrained
model, by a paired bootstrap over the (seed, user) rows of all seeds together
(``fedsecure.stats.paired_users``) and paired by seed (``paired_seeds``). The
relative gap of LoRA to full fine-tuning is claimed within 5 % only when the
upper end of its interval is below 5 %, and a variant beats scratch only when
the interval of the difference lies above zero. Each finished seed is kept
(with its per-user hits) in ``OUT.seedN.json``; ``--resume`` reuses them.

    python benchmarks/bench_finetune.py --seeds 0,1,2,3,4 --eval-every 10

writes benchmarks/results/finetune.json and benchmarks/results/finetune_hr_vs_bytes.png.
``--data synthetic --users 30000`` runs the same on the synthetic generator
(each seed draws its own data set).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ml-latest-small"
RESULTS = Path(__file__).resolve().parent / "results"

VARIANTS: dict[str, dict[str, Any]] = {
    "scratch": {"pretrain_epochs": 0},
    "full": {},
    "lora4": {"adapter": "lora", "lora_rank": 4},
    "lora8": {"adapter": "lora", "lora_rank": 8},
    "lora16": {"adapter": "lora", "lora_rank": 16},
    "lora4+items": {"adapter": "lora", "lora_rank": 4, "adapter_items": "train"},
    "lora8+items": {"adapter": "lora", "lora_rank": 8, "adapter_items": "train"},
    "lora16+items": {"adapter": "lora", "lora_rank": 16, "adapter_items": "train"},
    "lora8+items+q8": {"adapter": "lora", "lora_rank": 8, "adapter_items": "train", "compress": "q8"},
    "lora8+items+q4": {"adapter": "lora", "lora_rank": 8, "adapter_items": "train", "compress": "q4"},
    "lora8+items+q2": {"adapter": "lora", "lora_rank": 8, "adapter_items": "train", "compress": "q2"},
    # one float32 range per 64 quantized values (two item rows at --dim 32), fixed before any run
    **{f"lora{r}+items+q{b}/64": {"adapter": "lora", "lora_rank": r, "adapter_items": "train", "compress": f"q{b}/64"}
       for r in (4, 8) for b in (4, 2)},
    "full+q8": {"compress": "q8"},
    "full+secagg+": {"secure": "secagg+"},
    "lora8+q8": {"adapter": "lora", "lora_rank": 8, "compress": "q8"},
    "lora8+q4": {"adapter": "lora", "lora_rank": 8, "compress": "q4"},
    "lora8+q2": {"adapter": "lora", "lora_rank": 8, "compress": "q2"},
    "lora8+secagg+": {"adapter": "lora", "lora_rank": 8, "secure": "secagg+"},
    "lora8+secagg+q8": {"adapter": "lora", "lora_rank": 8, "secure": "secagg+", "compress": "q8"},
}

#: what the recorded run used (full+q8, lora8+q4 cost CPU time this shared machine did not have)
DEFAULT_VARIANTS = ("scratch", "full", "lora4", "lora8", "lora16", "lora8+q8", "lora8+q2", "lora8+secagg+",
                    "lora8+secagg+q8", "full+secagg+")


def base_config(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    model_args = {"dim": args.dim, "blocks": args.blocks, "heads": args.heads, "max_len": args.max_len}
    if args.loss != "sampled-softmax":
        model_args["loss"] = args.loss
    return dict(
        data=str(args.data), users=args.users, model="sasrec", seed=seed, rounds=args.rounds,
        clients_per_round=args.clients_per_round, model_args=model_args, batch_size=256,
        eval_every=args.eval_every or 10**6, n_negatives=0,
    )


def step_settings(args: argparse.Namespace, name: str) -> dict[str, Any]:
    """The local and server step of a variant: scratch, full fine-tuning or LoRA (each set by its own options)."""
    overrides = VARIANTS[name]
    if overrides.get("pretrain_epochs") == 0:
        kind = "scratch"
    elif overrides.get("adapter") == "lora":
        kind = "lora_items" if overrides.get("adapter_items") == "train" else "lora"
    else:
        kind = "full"
    step = {"lr": getattr(args, f"{kind}_lr"), "server_optimizer": getattr(args, f"{kind}_server_optimizer"),
            "server_lr": getattr(args, f"{kind}_server_lr"),
            "server_lr_schedule": getattr(args, f"{kind}_server_lr_schedule")}
    if kind.startswith("lora") and args.lora_alpha_per_rank is not None:
        step["lora_alpha"] = args.lora_alpha_per_rank * overrides["lora_rank"]
    return step


def pretrain(args: argparse.Namespace, seed: int, data: Any) -> tuple[Path, dict[str, Any]]:
    """Pretrain on the seed's public users; the checkpoint's path and what the pretrained model scores."""
    from fedsecure.experiment import Experiment, RunConfig
    from fedsecure.recsys.metrics import ranking_rows

    public = dict(pretrain_users=args.pretrain_users, pretrain_epochs=args.pretrain_epochs,
                  pretrain_lr=args.pretrain_lr, pretrain_batch_size=args.pretrain_batch_size)
    t0 = time.process_time()
    pre = Experiment(RunConfig(**base_config(args, seed), **public), data=data)
    ckpt = Path(tempfile.mkdtemp(prefix="bench-finetune-")) / f"pretrained-{seed}.pt"
    pre.save_pretrained(ckpt)
    pre.model.eval()
    users, rows, _ = ranking_rows(pre.model.score_fn(pre.split.train), pre.split, k=10, n_negatives=0)
    return ckpt, {
        "seed": seed, "pretrain": {**pre.finetune["pretrain"], "cpu_seconds": time.process_time() - t0},
        "popularity": pre.evaluator.popularity()["hr@10"], "eval_users": users.tolist(),
        "hits": {"pretrained": rows["hr@10"].tolist()}, "variants": {},
    }


def run_variant(args: argparse.Namespace, seed: int, data: Any, ckpt: Path, name: str,
                users: np.ndarray) -> tuple[dict[str, Any], np.ndarray]:
    """One variant from the checkpoint (or from scratch): its record and its per-user HR@10 hits."""
    from fedsecure.experiment import Experiment, RunConfig
    from fedsecure.recsys.metrics import ranking_rows

    overrides = VARIANTS[name]
    cfg = {**base_config(args, seed), **step_settings(args, name), **overrides}
    if overrides.get("pretrain_epochs") == 0:
        cfg.update(pretrain_users=args.pretrain_users)
    else:
        cfg.update(init=str(ckpt))
    t0 = time.process_time()
    exp = Experiment(RunConfig(**cfg), data=data)
    result = exp.run()
    exp.model.eval()
    u, r, _ = ranking_rows(exp.model.score_fn(exp.split.train), exp.split, k=10, n_negatives=0)
    if not np.array_equal(u, users):
        raise RuntimeError(f"{name}: evaluated rows differ from the pretrained model's")
    com = result["communication"]
    errors = [x["error"] for x in result["rounds"] if x["error"]]
    return {
        "hr@10": float(r["hr@10"].mean()), "hr@10_ci95": result["final"].get("hr@10_ci95"),
        "hr@10_by_round": {e["round"]: e["hr@10"] for e in result["evaluations"]},
        "bytes_up_per_client": com.get("bytes_up_per_client"), "bytes_down_per_client": com.get("bytes_down_per_client"),
        "float32_update_bytes": com.get("float32_update_bytes"), "sparse_updates": com.get("sparse_updates"),
        "values_sent_per_client": (exp.finetune or {}).get("parameters", {}).get("sent_per_client"),
        "rounds_failed": errors, "cpu_seconds": time.process_time() - t0,
        "settings": {k: cfg[k] for k in ("lr", "server_optimizer", "server_lr", "server_lr_schedule")},
        "overrides": overrides,
    }, np.asarray(r["hr@10"])


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    import torch

    from fedsecure.experiment import load_data

    torch.set_num_threads(1)
    data = load_data(str(args.data), seed, users=args.users)
    ckpt, out = pretrain(args, seed, data)
    users = np.asarray(out["eval_users"])
    print(f"seed {seed}: pretrained HR@10 {np.mean(out['hits']['pretrained']):.4f} "
          f"({out['pretrain']['cpu_seconds']:.0f} cpu s)", flush=True)
    for name in args.variants:
        v, hits = run_variant(args, seed, data, ckpt, name, users)
        out["hits"][name] = hits.tolist()
        out["variants"][name] = v
        with open(args.out.with_suffix(".partial.jsonl"), "a") as log:  # kept if the run is stopped early
            log.write(json.dumps({"seed": seed, "variant": name, **{k: v[k] for k in (
                "hr@10", "hr@10_ci95", "bytes_up_per_client", "values_sent_per_client", "cpu_seconds")}}) + "\n")
        errors = v["rounds_failed"]
        print(f"seed {seed} {name}: HR@10 {v['hr@10']:.4f}, up {v['bytes_up_per_client']:.0f} B/client/round, "
              f"{v['cpu_seconds']:.0f} cpu s" + (f", {len(errors)} rounds failed" if errors else ""), flush=True)
    ckpt.unlink()
    seed_file(args, seed).write_text(json.dumps(out))  # with the per-user hits: --resume and re-summarising
    return out


def seed_file(args: argparse.Namespace, seed: int) -> Path:
    return args.out.with_name(f"{args.out.stem}.seed{seed}.json")


def load_seed(args: argparse.Namespace, seed: int) -> dict[str, Any] | None:
    """A seed finished by an earlier invocation with the same variants, or None."""
    path = seed_file(args, seed)
    if not path.exists():
        return None
    out = json.loads(path.read_text())
    return out if set(args.variants) <= set(out["variants"]) else None


def summarise(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    from fedsecure.stats import over_seeds, paired_seeds, paired_users

    seeds = [r["seed"] for r in runs]
    rows_users = np.concatenate([np.asarray(r["eval_users"]) + 10**7 * r["seed"] for r in runs])
    hits = {n: np.concatenate([np.asarray(r["hits"][n]) for r in runs]) for n in ["pretrained", *names]}
    per: dict[str, Any] = {}
    for n in ["pretrained", *names]:
        means = [float(np.mean(r["hits"][n])) for r in runs]
        entry = {"hr@10": over_seeds(means).as_dict() if len(means) > 1 else {"mean": means[0]},
                 "hr@10_per_seed": dict(zip(seeds, means))}
        if n != "pretrained":
            ups = [r["variants"][n]["bytes_up_per_client"] for r in runs]
            entry["bytes_up_per_client"] = float(np.mean(ups))
            entry["values_sent_per_client"] = runs[0]["variants"][n]["values_sent_per_client"]
            entry["rounds_failed"] = sum(len(r["variants"][n]["rounds_failed"]) for r in runs)
        else:
            entry["bytes_up_per_client"] = 0.0
        per[n] = entry

    def compare(a: str, b: str) -> dict[str, Any]:
        users_cmp = paired_users("hr@10", rows_users, hits[a], hits[b]).as_dict()
        out = {"paired_users": users_cmp}
        if len(runs) > 1:
            out["paired_seeds"] = paired_seeds("hr@10", {s: per[a]["hr@10_per_seed"][s] for s in seeds},
                                               {s: per[b]["hr@10_per_seed"][s] for s in seeds}).as_dict()
        return out

    comparisons = {f"{n} - scratch": compare(n, "scratch") for n in ["pretrained", *names]
                   if n != "scratch" and "scratch" in names}
    if "full" in names:
        comparisons.update({f"{n} - full": compare(n, "full") for n in names if n not in ("full", "scratch")})
    comparisons.update({f"{n} - pretrained": compare(n, "pretrained") for n in names})
    claims: dict[str, Any] = {}
    if "full" in names and "scratch" in names:
        full_mean = float(hits["full"].mean())
        full_vs_scratch = comparisons["full - scratch"]["paired_users"]
        # every plaintext LoRA variant against plaintext full fine-tuning (under SecAgg+ the bytes differ: below)
        for n in [x for x in names if x.startswith("lora") and "secagg" not in x]:
            c = comparisons[f"{n} - full"]["paired_users"]
            lo, hi = c["ci95"]
            gap = (-c["difference"] / full_mean, -lo / full_mean, -hi / full_mean)  # (full - lora) / full
            ratio = per["full"]["bytes_up_per_client"] / per[n]["bytes_up_per_client"]
            beats = comparisons[f"{n} - scratch"]["paired_users"]["ci95"][0] > 0
            claims[n] = {
                "relative_gap_to_full": gap[0], "relative_gap_ci95": [min(gap[1:]), max(gap[1:])],
                "within_5pct_of_full": max(gap[1:]) < 0.05,
                "upload_ratio_full_over_lora": ratio, "at_least_20x_fewer_bytes": ratio >= 20,
                "lora_beats_scratch": beats, "full_beats_scratch": full_vs_scratch["ci95"][0] > 0,
                "holds": max(gap[1:]) < 0.05 and ratio >= 20 and beats and full_vs_scratch["ci95"][0] > 0,
            }
        if "full+secagg+" in names and "lora8+secagg+" in names:
            # under SecAgg+ every coordinate travels masked (no sparse rows): the dense full update against the adapter
            claims["lora8 (both under SecAgg+)"] = {
                "upload_ratio_full_over_lora": per["full+secagg+"]["bytes_up_per_client"]
                / per["lora8+secagg+"]["bytes_up_per_client"],
                "difference_lora_minus_full": comparisons["lora8+secagg+ - full"]["paired_users"],
            }
    return {"per_variant": per, "comparisons": comparisons, "claim": claims,
            "popularity_hr@10": float(np.mean([r["popularity"] for r in runs]))}


def plot(summary: dict[str, Any], names: list[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    per = summary["per_variant"]
    for i, n in enumerate(sorted(names, key=lambda x: per[x]["bytes_up_per_client"])):
        e = per[n]
        hr = e["hr@10"]
        mean = hr["mean"]
        lo, hi = hr.get("ci95", (mean, mean))
        marker = "s" if n.startswith("full") else ("^" if n == "scratch" else "o")
        color = "tab:red" if "secagg" in n else ("tab:blue" if n.startswith("lora") else "tab:gray")
        ax.errorbar([e["bytes_up_per_client"]], [mean], yerr=[[mean - lo], [hi - mean]], fmt=marker, color=color,
                    capsize=3)
        ax.annotate(n, (e["bytes_up_per_client"], mean), textcoords="offset points",  # alternate above / below
                    xytext=(5, (6, -12, 16)[i % 3]), fontsize=8)
    pre = per["pretrained"]["hr@10"]["mean"]
    ax.axhline(pre, ls="--", color="tab:green", lw=1, label=f"pretrained, no federated round ({pre:.3f})")
    ax.axhline(summary["popularity_hr@10"], ls=":", color="black", lw=1,
               label=f"popularity ({summary['popularity_hr@10']:.3f})")
    ax.set_xscale("log")
    ax.set_xlabel("upload bytes per client per round (log)")
    ax.set_ylabel("HR@10, full catalogue (mean over seeds, 95% t-interval)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def plot_title(args: argparse.Namespace) -> str:
    data = (f"synthetic, {args.users:,} users" if str(args.data) == "synthetic" and getattr(args, "users", None)
            else Path(str(args.data)).name)
    return (f"SASRec dim {args.dim}, {args.blocks} blocks, max-len {args.max_len} on {data}:\npretrained on "
            f"{args.pretrain_users:.0%} of users, {args.rounds} rounds x {args.clients_per_round:g} clients, "
            f"seeds {args.seeds}")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="MovieLens folder, a data file, or 'synthetic'")
    parser.add_argument("--users", type=int, default=None, help="synthetic data: number of users (each seed draws its own)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                        help=f"comma-separated, from: {', '.join(VARIANTS)}")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--eval-every", type=int, default=0, help="also evaluate every this many rounds (0: last only)")
    parser.add_argument("--clients-per-round", type=float, default=60)
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--max-len", type=int, default=200)
    parser.add_argument("--loss", default="sampled-softmax", help="SASRec training loss (pretraining and federated)")
    parser.add_argument("--pretrain-users", type=float, default=0.2)
    parser.add_argument("--pretrain-epochs", type=int, default=30)
    parser.add_argument("--pretrain-lr", type=float, default=3e-3)
    parser.add_argument("--pretrain-batch-size", type=int, default=16)
    for kind, lr, opt, slr in (("scratch", 1.0, "fedadam", 0.03), ("full", 1.0, "fedadam", 0.01), ("lora", 1.0, "avg", 1.0),
                               ("lora-items", 1.0, "fedadam", 0.01)):
        parser.add_argument(f"--{kind}-lr", type=float, default=lr, help=f"{kind}: local SGD lr")
        parser.add_argument(f"--{kind}-server-optimizer", default=opt, help=f"{kind}: avg or fedadam")
        parser.add_argument(f"--{kind}-server-lr", type=float, default=slr, help=f"{kind}: server step")
        parser.add_argument(f"--{kind}-server-lr-schedule", default="constant", help=f"{kind}: constant or cosine")
    parser.add_argument("--lora-alpha-per-rank", type=float, default=None,
                        help="LoRA alpha = this x rank (scaling alpha / rank); default: alpha = rank")
    parser.add_argument("--replot", action="store_true", help="only redraw --plot from the results in --out")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the seeds an earlier invocation finished (OUT.seedN.json, with per-user hits)")
    parser.add_argument("--jobs", type=int, default=1, help="seeds run in parallel processes")
    parser.add_argument("--out", type=Path, default=RESULTS / "finetune.json")
    parser.add_argument("--plot", type=Path, default=RESULTS / "finetune_hr_vs_bytes.png")
    return parser


def main() -> int:
    parser = make_parser()
    args = parser.parse_args()
    if args.replot:
        record = json.loads(args.out.read_text())
        setup = record["setup"]
        plot(record["summary"], setup["variants"], args.plot, plot_title(argparse.Namespace(**setup)))
        print(f"wrote {args.plot}")
        return 0
    if str(args.data) != "synthetic" and not args.data.exists():
        print(f"{args.data}: not found (ml-latest-small); pass --data", file=sys.stderr)
        return 2
    seeds = [int(s) for s in args.seeds.split(",")]
    args.variants = [v for v in args.variants.split(",") if v]
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(sorted(unknown))}; choose from {', '.join(VARIANTS)}")
    t0, c0 = time.time(), time.process_time()
    done = {s: load_seed(args, s) for s in seeds} if args.resume else {}
    todo = [s for s in seeds if done.get(s) is None]
    if args.jobs > 1:
        with mp.get_context("spawn").Pool(max(1, min(args.jobs, len(todo)))) as pool:
            fresh = dict(zip(todo, pool.starmap(run_seed, [(args, s) for s in todo])))
    else:
        fresh = {s: run_seed(args, s) for s in todo}
    runs = [done.get(s) or fresh[s] for s in seeds]
    summary = summarise(runs, args.variants)
    command = shlex.join(["python", "benchmarks/bench_finetune.py", *sys.argv[1:]])
    record = {
        "command": command,
        "setup": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "note": ("bytes_up_per_client: what one sampled client uploads per round (engine's accounting). The frozen "
                 "base a LoRA client holds is downloaded once before federated training and is not counted "
                 "per round."),
        "summary": summary,
        "runs": [{k: v for k, v in r.items() if k not in ("hits", "eval_users")} for r in runs],
        "wall_seconds": time.time() - t0, "cpu_seconds_main": time.process_time() - c0,
        "resumed_seeds": [s for s in seeds if done.get(s) is not None],  # taken from OUT.seedN.json, not rerun
    }
    from fedsecure.experiment import library_versions
    from fedsecure.results import dumps_strict

    record["versions"] = library_versions()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps_strict(record))
    plot(summary, args.variants, args.plot, plot_title(args))
    for n in ["pretrained", *args.variants]:
        e = summary["per_variant"][n]
        hr = e["hr@10"]
        print(f"{n:18s} HR@10 {hr['mean']:.4f} {hr.get('ci95', '')}  up {e['bytes_up_per_client']:,.0f} B")
    print(json.dumps(summary["claim"], indent=1))
    print(f"wrote {args.out} and {args.plot}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    sys.exit(main())
