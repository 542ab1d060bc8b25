"""The ``fedsecure`` command line: ``fedsecure run`` trains a federated recommender and reports.

Every run prints a table of the final metrics beside the popularity baseline,
the evaluation protocol, and the privacy spent; ``--json PATH`` writes the
whole result (configuration, metrics at every evaluation, per-round timings
and protocol statistics, privacy, library versions).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedsecure import __version__
from fedsecure.stats import CI_SUFFIX

PERCENT_KEYS = ("hr@", "ndcg@")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fraction_or_count(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1] or a count >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fedsecure", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"fedsecure {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train a federated recommender and report metrics beside popularity")
    _add_run_arguments(run, robustness=True)
    audit = sub.add_parser("audit", help="audit a deployment's robustness: sweeps of attacks against defences")
    what = audit.add_subparsers(dest="audit", required=True)
    pois = what.add_parser(
        "poisoning", help="attacks x aggregators x malicious fractions (plain and grouped-secure); JSON, CSV, heatmap",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _add_run_arguments(pois, robustness=False)
    from fedsecure.attacks import ATTACKS
    from fedsecure.robust import RULES

    s = pois.add_argument_group("sweep")
    from fedsecure.attacks.data_poisoning import DATA_ATTACKS

    s.add_argument("--attacks", default="sign-flip,scaling,alie,min-max",
                   help=f"comma-separated, from: {', '.join(sorted([*ATTACKS, *DATA_ATTACKS]))}")
    s.add_argument("--aggregators", default="fedavg,median,trimmed-mean,krum,norm-bounding",
                   help=f"comma-separated, from: fedavg, {', '.join(sorted(RULES))}")
    s.add_argument("--fractions", default="0.1", help="comma-separated malicious fractions")
    s.add_argument("--group-counts", default="0", help="comma-separated G for grouped mode (0: plaintext rules)")
    s.add_argument("--out", type=Path, default=Path("poisoning_audit"), help="folder for the JSON, CSV and PNG")
    return parser


def _add_run_arguments(run: argparse.ArgumentParser, *, robustness: bool) -> None:
    from fedsecure.experiment import DP_MODES, SECURE_MODES, SETTINGS
    from fedsecure.fl.engine import SERVER_OPTIMIZERS
    from fedsecure.fl.local import OPTIMIZERS
    from fedsecure.recsys.models import MODELS
    from fedsecure.recsys.partition import SCHEMES

    d = run.add_argument_group("data and model")
    d.add_argument("--data", default="synthetic", help="'synthetic' (default, no download) or a MovieLens folder/file")
    d.add_argument("--model", default="mf-implicit", choices=list(MODELS))
    d.add_argument("--dim", type=_positive_int, help="embedding size (model default if omitted)")
    d.add_argument("--blocks", type=_positive_int, help="sasrec: transformer blocks")
    d.add_argument("--heads", type=_positive_int, help="sasrec: attention heads")
    d.add_argument("--max-len", type=_positive_int, help="sasrec: sequence length")
    d.add_argument("--setting", default="cross-device", choices=SETTINGS)
    d.add_argument("--silos", type=_positive_int, default=10, help="cross-silo: number of silos")
    d.add_argument("--silo-scheme", default="range", choices=SCHEMES)
    d.add_argument("--silo-alpha", type=float, default=0.5, help="cross-silo dirichlet: concentration")
    f = run.add_argument_group("federated training")
    f.add_argument("--rounds", type=_positive_int, default=10)
    f.add_argument("--clients-per-round", type=_fraction_or_count, default=1.0, help="fraction (<= 1) or count")
    f.add_argument("--local-epochs", type=_positive_int, default=1)
    f.add_argument("--batch-size", type=_positive_int, default=256)
    f.add_argument("--lr", type=float, default=8.0, help="client learning rate")
    f.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS, help="client optimizer")
    f.add_argument("--server-optimizer", default="fedadam", choices=SERVER_OPTIMIZERS)
    f.add_argument(
        "--server-lr", type=float, default=0.1,
        help="server learning rate (with --server-optimizer avg, the number of clients per round sums the updates)",
    )
    f.add_argument("--eval-every", type=_positive_int, default=5)
    f.add_argument("--k", type=_positive_int, default=10, help="cut-off of HR@K and NDCG@K")
    f.add_argument("--negatives", type=int, default=99, help="sampled-ranking negatives per test item (0: none)")
    f.add_argument("--dropout", type=float, default=0.0, help="probability a client drops out in a round")
    f.add_argument("--straggler", type=float, default=0.0, help="probability a client straggles (half its steps)")
    f.add_argument("--seed", type=int, default=0, help="data, sampling and initialisation (never keys or DP noise)")
    p = run.add_argument_group("protection")
    p.add_argument("--secure", default="none", choices=SECURE_MODES, help="how updates are summed")
    p.add_argument("--clip-range", type=float, default=1.0, help="secagg: per-coordinate clip range of updates")
    p.add_argument("--active", action="store_true", help="secagg: signatures and consistency check (active server)")
    p.add_argument("--dp", default="none", choices=DP_MODES, help="differential privacy mechanism")
    p.add_argument("--noise-multiplier", type=float)
    p.add_argument("--target-epsilon", type=float, help="calibrate the noise to spend at most this epsilon")
    p.add_argument("--clip", "--max-grad-norm", dest="clip", type=float, default=1.0, help="DP clipping norm")
    p.add_argument("--delta", type=float, help="DP delta (default: min(1e-5, 1/(10 n)))")
    p.add_argument(
        "--insecure-seeded-noise", action="store_true",
        help="draw DP noise and the Poisson sampling DP relies on from --seed (reproducible); "
             "VOIDS the privacy claim, and the output says so",
    )
    o = run.add_argument_group("output")
    o.add_argument("--json", type=Path, metavar="PATH", help="write the full result as JSON")
    o.add_argument("--quiet", action="store_true", help="no progress bar")
    if not robustness:
        return
    from fedsecure.attacks import ATTACKS
    from fedsecure.robust import RULES

    r = run.add_argument_group("robustness and poisoning")
    r.add_argument("--aggregator", default="fedavg", choices=["fedavg", *sorted(RULES)],
                   help="how updates are combined: fedavg, or a Byzantine-robust rule (plaintext, or with --groups)")
    r.add_argument("--byzantine", type=float, default=None,
                   help="the rule's f: a count, or a fraction of the combined inputs (default: the most it defends)")
    r.add_argument("--row-aware", action="store_true",
                   help="median / trimmed-mean per coordinate over the clients whose update touches it (sparse "
                        "recommender updates: otherwise the zeros of the other clients win)")
    r.add_argument("--groups", type=int, default=0,
                   help="grouped mode: split each round into G groups, sum each with --secure, run the rule over "
                        "the G group means (the server never sees an individual update)")
    from fedsecure.attacks.data_poisoning import DATA_ATTACKS

    r.add_argument("--attack", default="none", choices=["none", *sorted([*ATTACKS, *DATA_ATTACKS])],
                   help="poisoning attack: model poisoning (crafted updates) or data poisoning (fake-users, "
                        "rating-flip: malicious clients train honestly on poisoned data); promotion attacks "
                        "report the target's exposure ratio er@K")
    r.add_argument("--malicious", type=float, default=0.0, help="fraction of all clients that are malicious")
    r.add_argument("--non-colluding", action="store_true", help="malicious clients craft alone, from their own update")


def _config_from(args: argparse.Namespace) -> Any:
    from fedsecure.experiment import RunConfig

    model_args = {
        key: value
        for key, value in (("dim", args.dim), ("blocks", args.blocks), ("heads", args.heads), ("max_len", args.max_len))
        if value is not None
    }
    return RunConfig(
        data=args.data, model=args.model, setting=args.setting, silos=args.silos, silo_scheme=args.silo_scheme,
        silo_alpha=args.silo_alpha, rounds=args.rounds, clients_per_round=args.clients_per_round,
        local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        server_optimizer=args.server_optimizer, server_lr=args.server_lr, eval_every=args.eval_every, k=args.k, n_negatives=args.negatives,
        dropout=args.dropout, straggler=args.straggler, seed=args.seed, model_args=model_args, secure=args.secure,
        clip_range=args.clip_range, secagg_active=args.active, dp=args.dp, noise_multiplier=args.noise_multiplier,
        target_epsilon=args.target_epsilon, clip=args.clip, delta=args.delta,
        insecure_seeded_noise=args.insecure_seeded_noise, **_robustness_from(args),
    )


def _robustness_from(args: argparse.Namespace) -> dict[str, Any]:
    if not hasattr(args, "aggregator"):
        return {}
    return dict(aggregator=args.aggregator, byzantine=args.byzantine, row_aware=args.row_aware, groups=args.groups,
                attack=args.attack, malicious=args.malicious, colluding=not args.non_colluding)


def cmd_audit_poisoning(args: argparse.Namespace, command: str) -> int:
    from rich.console import Console

    from fedsecure.audit import sweep, write_outputs

    console = Console(quiet=args.quiet)
    try:  # the heatmap is written last: fail now, not after the sweep
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("the poisoning audit draws its heatmap with matplotlib: pip install 'fedsecure[audit]'") from None
    base = _config_from(args)
    split = lambda text: [x.strip() for x in text.split(",") if x.strip()]  # noqa: E731
    total = [0]

    def done(row: dict[str, Any]) -> None:
        total[0] += 1
        label = row["aggregator"] + (f" g={row['groups']}" if row["groups"] else "")
        attack = "clean" if row["attack"] == "none" else f"{row['attack']} {row['malicious']:.0%}"
        print(f"[{total[0]}] {label:<24} {attack:<22} hr@10 {row['hr@10']:.4f}  "
              f"({row['wall_seconds']:.0f}s)", flush=True)

    rows = sweep(base, attacks=split(args.attacks), aggregators=split(args.aggregators),
                 fractions=[float(x) for x in split(args.fractions)], groups=[int(x) for x in split(args.group_counts)],
                 on_done=None if args.quiet else done)
    paths = write_outputs(rows, args.out, command=command, base=base)
    console.print(f"wrote {paths['json']}, {paths['csv']}, {paths['png']}", markup=False)
    return 0


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.4f}"
    return str(value)


def _with_interval(metrics: dict[str, Any], key: str) -> str:
    """``value [lo, hi]`` when the metric carries its 95% interval."""
    value = metrics.get(key, float("nan"))
    ci = metrics.get(key + CI_SUFFIX)
    return _fmt(value) if ci is None else f"{_fmt(value)} [{ci[0]:.4f}, {ci[1]:.4f}]"


def _print_result(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    final, pop = result["final"], result["popularity"]
    keys = [k for k in final if k not in ("round",) and isinstance(final[k], float)]
    table = Table(title=f"{result['config']['model']} on {result['data']['source']}")
    table.add_column("metric")
    table.add_column(f"{result['config']['model']} (federated)", justify="right")
    table.add_column("popularity", justify="right")
    for k in keys:
        table.add_row(k, _with_interval(final, k), _with_interval(pop, k))
    console.print(table)
    users = final.get("n_eval_users")
    console.print(f"[dim]\\[lo, hi]: 95% bootstrap interval over the {users or 'test'} evaluated users[/dim]")
    t = result["timings"]
    for label, text in (
        ("protocol", result["protocol"]),
        ("aggregation", json.dumps(result["aggregator"], default=str)),
        ("privacy", json.dumps(result["privacy"], default=str)),
        ("time", f"setup {t['setup_seconds']:.1f}s, training {t['train_seconds']:.1f}s"),
    ):
        console.print(f"{label}: {text}", markup=False, highlight=False)


def cmd_run(args: argparse.Namespace, command: str) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fedsecure.experiment import Experiment

    console = Console(stderr=False, quiet=False)
    config = _config_from(args)
    experiment = Experiment(config)
    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), disable=args.quiet, console=console,
    ) as progress:
        task = progress.add_task("rounds", total=config.rounds, status="")

        def on_round(record: Any) -> None:
            status = ""
            if record.error:
                status = f"round {record.round} aborted: {record.error}"
            elif record.metrics:
                shown = {k: v for k, v in record.metrics.items()
                         if isinstance(v, float) and (k.startswith(PERCENT_KEYS) or k in ("rmse",))}
                status = " ".join(f"{k}={v:.4f}" for k, v in list(shown.items())[:2])
            progress.update(task, advance=1, status=status)

        result = experiment.run(on_round)
    _print_result(result, console)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        result["command"] = command
        args.json.write_text(json.dumps(result, indent=2, default=str))
        console.print(f"[dim]wrote[/dim] {args.json}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    from fedsecure.recsys.movielens import DataFormatError

    try:
        command = shlex.join(["fedsecure", *argv])
        if args.command == "audit":
            return cmd_audit_poisoning(args, command)
        return cmd_run(args, command)
    except (ValueError, FileNotFoundError, DataFormatError) as exc:
        print(f"fedsecure: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
