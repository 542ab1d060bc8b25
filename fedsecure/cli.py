"""The fedsecure command line: train a federated recommender (run) or audit its robustness (audit).

``fedsecure run`` prints a table of the final metrics beside the popularity
baseline, then one line each for the protection, the privacy spent and the
time; ``--json PATH`` writes the whole result (configuration, metrics at every
evaluation, per-round timings and protocol statistics, privacy, library
versions) as strict JSON with a ``schema_version``. Output paths are checked
before training; Ctrl-C saves the rounds completed so far. Every refusal is one
line on stderr with exit code 2; an interrupted run exits with 130.
"""

from __future__ import annotations

import argparse
import math
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fedsecure import __version__
from fedsecure.results import dumps_strict, strict  # noqa: F401 - strict: re-exported for callers
from fedsecure.stats import with_interval

PERCENT_KEYS = ("hr@", "ndcg@")
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A refusal of what the user passed: printed as one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (no usage block): ``fedsecure run: error: argument --lr: ...``."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default; options without one say so rather than printing 'None'."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default is argparse.SUPPRESS or not action.option_strings:
            return text
        if action.default is None or action.default is False:
            return text if action.default is False or "default" in text else f"{text} (default: none)"
        return f"{text} (default: %(default)s)"


def _number(text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _int_at_least(low: int):
    def parse(text: str) -> int:
        value = _number(text, int)
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


_positive_int = _int_at_least(1)
_non_negative_int = _int_at_least(0)


def _float_in(low: float, high: float, *, low_open: bool, high_open: bool):
    def parse(text: str) -> float:
        value = _number(text, float)
        if (value < low or (low_open and value == low)) or (value > high or (high_open and value == high)):
            lo = "(" if low_open else "["
            hi = ")" if high_open else "]"
            top = "inf" if math.isinf(high) else f"{high:g}"
            raise argparse.ArgumentTypeError(f"must be in {lo}{low:g}, {top}{hi}, got {text}")
        return value

    return parse


_positive_float = _float_in(0.0, math.inf, low_open=True, high_open=True)
_probability = _float_in(0.0, 1.0, low_open=False, high_open=False)
_dropout = _float_in(0.0, 1.0, low_open=False, high_open=True)
_open_unit = _float_in(0.0, 1.0, low_open=True, high_open=True)


def _fraction_or_count(text: str) -> float:
    value = _number(text, float)
    if value <= 0 or (value > 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"must be a fraction in (0, 1] or a whole count >= 1, got {text}")
    return value


def _compress(text: str) -> str:
    """``--compress``: checked here so that a typo fails before any data is loaded."""
    from fedsecure.compress import parse_compression

    try:
        return parse_compression(text).name
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).replace(f"--compress {text!r}", repr(text))) from None


def _byzantine(text: str) -> float:
    value = _number(text, float)
    if value < 0 or (value >= 1 and not value.is_integer()):
        raise argparse.ArgumentTypeError(f"must be a fraction in [0, 1) or a whole count >= 1, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="fedsecure", description=__doc__.splitlines()[0], formatter_class=_Help)
    parser.add_argument("--version", action="version", version=f"fedsecure {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train a federated recommender and report metrics beside popularity",
                         formatter_class=_Help)
    _add_run_arguments(run, robustness=True)
    _add_finetune_arguments(run)
    audit = sub.add_parser("audit", help="audit a deployment's robustness: sweeps of attacks against defences",
                           formatter_class=_Help)
    what = audit.add_subparsers(dest="audit", required=True)
    pois = what.add_parser(
        "poisoning", help="attacks x aggregators x malicious fractions (plain and grouped-secure); JSON, CSV, heatmap",
        formatter_class=_Help,
    )
    _add_run_arguments(pois, robustness=False)
    from fedsecure.attacks import ATTACKS
    from fedsecure.robust import RULES

    s = pois.add_argument_group("sweep")
    from fedsecure.attacks.data_poisoning import DATA_ATTACKS

    s.add_argument("--attacks", default="sign-flip,scaling,alie,min-max",
                   help=f"comma-separated, from: {', '.join(sorted([*ATTACKS, *DATA_ATTACKS]))}")
    s.add_argument("--aggregators", default="fedavg,median,trimmed-mean,krum,norm-bounding",
                   help=f"comma-separated, from: fedavg, {', '.join(sorted(RULES))}; a variant after a colon: "
                        "norm-bounding:weighted, median:row-aware, trimmed-mean:row-aware")
    s.add_argument("--fractions", default="0.1", help="comma-separated malicious fractions")
    s.add_argument("--group-counts", default="0", help="comma-separated G for grouped mode (0: plaintext rules)")
    s.add_argument("--out", type=Path, default=Path("poisoning_audit"),
                   help="folder for the JSON, CSV and PNG (created if absent; its parent must exist)")
    _add_mia_parser(what)
    _add_sweep_parser(sub)
    _add_bench_parser(sub)
    return parser


#: ``fedsecure bench`` grids: the default (the issue's) and ``--quick`` (under 3 minutes on 2 cores)
BENCH_GRID = {"n": "10,100,1000", "d": "1e4,1e5,1e6", "dropout": "0,0.1"}
BENCH_QUICK = {"n": "10,50", "d": "1e3,1e4", "dropout": "0,0.1"}


def _add_bench_parser(sub: Any) -> None:
    b = sub.add_parser(
        "bench", formatter_class=_Help,
        help="protocol benchmark: plaintext, SecAgg, SecAgg+, CKKS and Flower's SecAgg+ side by side; JSON, CSV, PNG",
        description="One round of every protection mode on the same inputs and the same dropped clients, for every "
                    "n x d x dropout: CPU per client and of the server, bytes up and down per client, the server "
                    "role's peak memory (tracemalloc) and the max error of the decoded sum against the exact "
                    "float64 sum. A round that cannot complete is reported with its reason. Cost grows fast: "
                    "SecAgg on the complete graph is O(n^2 d); the default grid runs for hours.",
    )
    b.add_argument("--n", default=None, help=f"comma-separated client counts >= 3 (default {BENCH_GRID['n']}; "
                                              f"--quick: {BENCH_QUICK['n']})")
    b.add_argument("--d", default=None, help=f"comma-separated vector lengths, 1e4 notation allowed (default "
                                              f"{BENCH_GRID['d']}; --quick: {BENCH_QUICK['d']})")
    b.add_argument("--dropout", default=None, help="comma-separated fractions in [0, 1) of clients that drop after "
                                                    f"their keys, before their input (default {BENCH_GRID['dropout']})")
    b.add_argument("--modes", default="plaintext,secagg,secagg+,ckks,flower-secagg+",
                   help="comma-separated; flower-secagg+ is skipped with a note when flwr is not installed")
    b.add_argument("--repeats", type=_positive_int, default=1, help="rounds per cell (the summary takes the median)")
    b.add_argument("--seed", type=_non_negative_int, default=0, help="inputs and which clients drop (not secrets)")
    b.add_argument("--out", type=Path, default=Path("bench"),
                   help="folder for bench.json, bench.csv, cost_vs_n.png, cost_vs_d.png (created if absent)")
    b.add_argument("--quick", action="store_true", help=f"a small grid: n={BENCH_QUICK['n']}, d={BENCH_QUICK['d']}, "
                                                         f"dropout={BENCH_QUICK['dropout']} (explicit options win)")
    b.add_argument("--quiet", action="store_true", help="no progress and no table")


def _add_sweep_parser(sub: Any) -> None:
    from fedsecure.attacks.inference.membership import ATTACKS
    from fedsecure.experiment import SECURE_MODES
    from fedsecure.recsys.models import MODELS

    sw = sub.add_parser(
        "sweep", formatter_class=_Help,
        help="privacy-utility grid: epsilon x protection x model x seeds; CSV/JSON and plots",
        description="Each cell trains a target model with user-level central DP at the target epsilon (inf: no "
                    "DP) and attacks it (membership inference at interaction level); it records HR@10 and NDCG@10, "
                    "the accountant's epsilon and the one-run canary audit's lower bound, the strongest attack's "
                    "AUC and TPR at 0.1% FPR, and the popularity ranking released under the same epsilon.",
    )
    _add_run_arguments(sw, robustness=False)
    g = sw.add_argument_group("grid")
    g.add_argument("--epsilons", default="0.5,1,2,4,8,inf", help="comma-separated target epsilons (inf: no DP)")
    g.add_argument("--secure-modes", default="none", help=f"comma-separated, from: {', '.join(SECURE_MODES)}")
    g.add_argument("--models", default="mf-implicit", help=f"comma-separated, from: {', '.join(MODELS)}")
    g.add_argument("--seeds", default="0", help="comma-separated seeds")
    g.add_argument("--mia-attacks", default="loss", help=f"comma-separated, from: {', '.join(ATTACKS)}")
    g.add_argument("--shadows", type=_int_at_least(0), default=0,
                   help="shadow models per cell (calibrated and lira need at least 1)")
    g.add_argument("--out", type=Path, default=Path("sweep"),
                   help="folder for the JSON, CSV and PNGs (created if absent; its parent must exist)")


#: every privacy attack `fedsecure audit mia` runs (model-level ones from fedsecure.attacks.inference.membership)
MIA_ATTACKS = ("loss", "calibrated", "lira", "interaction")


def _add_mia_parser(what: Any) -> None:
    from fedsecure.attacks.inference.interaction import MODES

    mia = what.add_parser(
        "mia", formatter_class=_Help,
        help="membership and interaction inference, and the empirical epsilon audit; JSON, CSV, ROC plots",
        description="Privacy audit of a federated run. Attacks: loss (score threshold, Yeom et al. 2018), "
                    "calibrated (difficulty calibration, Watson et al. 2022), lira (likelihood ratio with shadow "
                    "models trained by the same federated pipeline, online and offline, Carlini et al. 2022), "
                    "interaction (which items a client interacted with, from the server's view of its update "
                    "under each protection mode). Epsilon audit: every model-level attack's scores give an "
                    "empirical lower bound on epsilon (Clopper-Pearson on TPR/FPR); a DP run also reports the "
                    "one-run canary audit (Steinke, Nasr and Jagielski 2023) beside the accountant's epsilon.",
    )
    _add_run_arguments(mia, robustness=False)
    mia.set_defaults(rounds=5)
    a = mia.add_argument_group("audit")
    a.add_argument("--attacks", default=",".join(MIA_ATTACKS),
                   help=f"comma-separated, from: {', '.join(MIA_ATTACKS)}")
    a.add_argument("--level", choices=("interaction", "user", "both"), default="interaction",
                   help="membership of (user, item) interactions, of users, or both")
    a.add_argument("--shadows", type=_int_at_least(1), default=4,
                   help="shadow models for calibrated and lira (each one federated training run)")
    a.add_argument("--interaction-modes", default=",".join(MODES),
                   help=f"protection modes the interaction attack plays against, from: {', '.join(MODES)}")
    a.add_argument("--interaction-clients", type=_int_at_least(3), default=20,
                   help="clients whose round-view the interaction attack scores")
    a.add_argument("--local-noise", type=_float_in(0, math.inf, low_open=True, high_open=True), default=1.0,
                   help="noise multiplier of the local-dp and distributed-dp views")
    a.add_argument("--out", type=Path, default=Path("mia_audit"),
                   help="folder for the JSON, CSV and PNG (created if absent; its parent must exist)")


def _add_run_arguments(run: argparse.ArgumentParser, *, robustness: bool) -> None:
    from fedsecure.experiment import DP_MODES, SECURE_MODES, SETTINGS
    from fedsecure.fl.engine import SERVER_LR_SCHEDULES, SERVER_OPTIMIZERS
    from fedsecure.fl.local import OPTIMIZERS
    from fedsecure.recsys.models import MODELS
    from fedsecure.recsys.partition import SCHEMES

    d = run.add_argument_group("data and model")
    d.add_argument("--data", default="synthetic",
                   help="'synthetic' (no download), a MovieLens folder or ratings file (ratings.csv, u.data, "
                        "ratings.dat), a CSV/TSV/Parquet table of interactions with a header (see --columns), or "
                        "whitespace-separated 'user item' lines in time order (no header)")
    d.add_argument("--columns", metavar="USER,ITEM[,RATING][,TIMESTAMP]",
                   help="header names of a --data table's columns (default: detected from common names such as "
                        "userId/user_id, movieId/item_id, rating, timestamp, with a note)")
    d.add_argument("--users", type=_positive_int,
                   help="synthetic data: number of users (default: the generator's 1000)")
    d.add_argument("--items", type=_int_at_least(10),
                   help="synthetic data: catalogue size (default: the generator's 1700)")
    d.add_argument("--interactions-per-user", type=_float_in(5.0, math.inf, low_open=False, high_open=True),
                   help="synthetic data: mean interactions per user, heavy-tailed, at least 5 each "
                        "(default: the generator's 50)")
    d.add_argument("--model", default="mf-implicit", choices=list(MODELS), help="recommender")
    d.add_argument("--dim", type=_positive_int, help="embedding size (default: the model's own)")
    d.add_argument("--blocks", type=_positive_int, help="sasrec: transformer blocks (default: the model's own)")
    d.add_argument("--heads", type=_positive_int, help="sasrec: attention heads (default: the model's own)")
    d.add_argument("--max-len", type=_positive_int, help="sasrec: sequence length (default: the model's own)")
    from fedsecure.recsys.models import DEFAULT_SAMPLED, SASREC_LOSSES

    d.add_argument("--loss", choices=SASREC_LOSSES,
                   help="sasrec: training loss. sampled-softmax: softmax over the target and sampled negatives drawn "
                        "by item frequency with a log-Q correction; bce: binary cross-entropy against sampled "
                        "negatives (the SASRec paper); full: softmax over the whole catalogue (cost grows with it). "
                        "(default: sampled-softmax)")
    d.add_argument("--train-negatives", type=_positive_int,
                   help="sasrec: negatives per training sequence (sampled-softmax, default "
                        f"{DEFAULT_SAMPLED['sampled-softmax']}) or per position (bce, default {DEFAULT_SAMPLED['bce']})")
    d.add_argument("--setting", default="cross-device", choices=SETTINGS,
                   help="cross-device: a client is one user; cross-silo: a client is a silo of users")
    d.add_argument("--silos", type=_positive_int, default=10, help="cross-silo: number of silos")
    d.add_argument("--silo-scheme", default="range", choices=SCHEMES, help="cross-silo: how users are split")
    d.add_argument("--silo-alpha", type=_positive_float, default=0.5, help="cross-silo dirichlet: concentration")
    f = run.add_argument_group("federated training")
    f.add_argument("--rounds", type=_positive_int, default=10, help="federated rounds")
    f.add_argument("--clients-per-round", type=_fraction_or_count, default=1.0,
                   help="a fraction in (0, 1] of the clients, or a whole count (capped at the clients there are, "
                        "with a note)")
    f.add_argument("--local-epochs", type=_positive_int, default=1, help="passes over its data per client and round")
    f.add_argument("--batch-size", type=_positive_int, default=256, help="client batch size")
    f.add_argument("--lr", type=_positive_float, default=8.0, help="client learning rate")
    f.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS, help="client optimizer")
    f.add_argument("--server-optimizer", default="fedadam", choices=SERVER_OPTIMIZERS, help="server optimizer")
    f.add_argument(
        "--server-lr", type=_positive_float, default=0.1,
        help="server learning rate (with --server-optimizer avg, the number of clients per round sums the updates)",
    )
    f.add_argument("--server-lr-schedule", default="constant", choices=SERVER_LR_SCHEDULES,
                   help="server step over the rounds: constant, or cosine (from --server-lr down towards 0)")
    f.add_argument("--eval-every", type=_positive_int, default=5, help="evaluate every N rounds (and after the last)")
    f.add_argument("--k", type=_positive_int, default=10, help="cut-off of HR@K and NDCG@K")
    f.add_argument("--negatives", type=_non_negative_int, default=99,
                   help="sampled-ranking negatives per test item (0: none); lowered, with a note, to what every "
                        "test user has left on a small catalogue")
    f.add_argument("--dropout", type=_dropout, default=0.0, help="probability in [0, 1) a client drops out in a round")
    f.add_argument("--straggler", type=_probability, default=0.0,
                   help="probability in [0, 1] a client straggles (half its steps)")
    f.add_argument("--seed", type=_non_negative_int, default=0, help="data, sampling and initialisation (never keys or DP noise)")
    f.add_argument("--workers", type=_positive_int, default=os.cpu_count() or 1,
                   help="processes that train a round's clients (default: every core); results are identical "
                        "for any number")
    f.add_argument("--dense-updates", action="store_true",
                   help="plaintext and central DP: send every coordinate instead of the rows a client touched "
                        "(secure modes always send every coordinate)")
    f.add_argument("--max-buffer-gib", type=_positive_float, default=4.0,
                   help="most memory a round may hold for aggregators that must see every update at once "
                        "(robust rules, model poisoning, the SecAgg simulation); a larger round is refused")
    p = run.add_argument_group("protection")
    p.add_argument("--secure", default="none", choices=SECURE_MODES, help="how updates are summed")
    p.add_argument("--clip-range", type=_positive_float, default=1.0,
                   help="secagg: per-coordinate clip range of updates")
    p.add_argument("--active", action="store_true", help="secagg: signatures and consistency check (active server)")
    p.add_argument("--compress", type=_compress, default="none", metavar="none|q8|q4|q2|rotate-q8|qB/BUCKET|topk:FRACTION",
                   help="compress uploads: stochastic b-bit quantization (plaintext: over each client's own range, "
                        "or one range per BUCKET coordinates with qB/BUCKET, e.g. q4/64; "
                        "with secagg/secagg+: rotated, clipped to L2 norm --compress-clip and masked in a ring of "
                        "exactly b "
                        "bits per coordinate), rotated first (randomized Hadamard), or top-k with error feedback "
                        "(plaintext only)")
    p.add_argument("--compress-clip", type=_positive_float, default=1.0, metavar="NORM",
                   help="--compress qB with secagg/secagg+: each client's FedAvg vector is clipped to this L2 norm "
                        "(a clipped client keeps its direction, with a smaller weight)")
    p.add_argument("--dp", default="none", choices=DP_MODES, help="differential privacy mechanism")
    p.add_argument("--noise-multiplier", type=_positive_float,
                   help="DP noise std / clip norm (one of this or --target-epsilon with --dp)")
    p.add_argument("--target-epsilon", type=_positive_float, help="calibrate the noise to spend at most this epsilon")
    p.add_argument("--clip", "--max-grad-norm", dest="clip", type=_positive_float, default=1.0,
                   help="DP clipping norm")
    p.add_argument("--delta", type=_open_unit, help="DP delta in (0, 1) (default: min(1e-5, 1/(10 n)))")
    p.add_argument(
        "--insecure-seeded-noise", action="store_true",
        help="draw DP noise and the Poisson sampling DP relies on from --seed (reproducible); "
             "VOIDS the privacy claim, and the output says so",
    )
    o = run.add_argument_group("output")
    o.add_argument("--json", type=Path, metavar="PATH",
                   help="write the full result as JSON (checked before training; its folder must exist)")
    o.add_argument("--quiet", action="store_true",
                   help="no progress (a bar on a terminal, else one line per round on stderr)")
    if not robustness:
        return
    from fedsecure.attacks import ATTACKS
    from fedsecure.robust import RULES

    r = run.add_argument_group("robustness and poisoning")
    r.add_argument("--aggregator", default="fedavg", choices=["fedavg", *sorted(RULES)],
                   help="how updates are combined: fedavg, or a Byzantine-robust rule (plaintext, or with --groups)")
    r.add_argument("--byzantine", type=_byzantine, default=None,
                   help="the rule's f: a count, or a fraction of the combined inputs (default: the most it defends)")
    r.add_argument("--row-aware", action="store_true",
                   help="median / trimmed-mean per coordinate over the clients whose update touches it (sparse "
                        "recommender updates: otherwise the zeros of the other clients win)")
    r.add_argument("--weighted", action="store_true",
                   help="norm-bounding: average the clipped updates with FedAvg's capped example-count weights "
                        "(the unweighted mean costs HR@10 on recommender data; a client gains at most the cap)")
    r.add_argument("--groups", type=_non_negative_int, default=0,
                   help="grouped mode: split each round into G groups, sum each with --secure, run the rule over "
                        "the G group means (the server never sees an individual update)")
    from fedsecure.attacks.data_poisoning import DATA_ATTACKS

    r.add_argument("--attack", default="none", choices=["none", *sorted([*ATTACKS, *DATA_ATTACKS])],
                   help="poisoning attack: model poisoning (crafted updates) or data poisoning (fake-users, "
                        "rating-flip: malicious clients train honestly on poisoned data); promotion attacks "
                        "report the target's exposure ratio er@K")
    r.add_argument("--malicious", type=_float_in(0.0, 1.0, low_open=False, high_open=True), default=0.0,
                   help="fraction in [0, 1) of all clients that are malicious")
    r.add_argument("--attack-scale", type=float, default=None,
                   help="strength of --attack scaling (its boost gamma, default 10) or sign-flip (its scale, "
                        "default 1)")
    r.add_argument("--non-colluding", action="store_true", help="malicious clients craft alone, from their own update")


def _add_finetune_arguments(run: argparse.ArgumentParser) -> None:
    t = run.add_argument_group("pretraining and fine-tuning")
    t.add_argument("--pretrain-users", type=_float_in(0.0, 1.0, low_open=True, high_open=True), metavar="FRACTION",
                   help="this fraction of the users is public: the model is pretrained on their data centrally, "
                        "and they are neither federated clients nor evaluated")
    t.add_argument("--pretrain-epochs", type=_non_negative_int, default=30,
                   help="central passes over the public users' data (Adam); 0 only removes them")
    t.add_argument("--pretrain-lr", type=_positive_float, default=1e-3, help="learning rate of the pretraining")
    t.add_argument("--pretrain-batch-size", type=_positive_int, default=32, help="minibatch of the pretraining")
    t.add_argument("--init", type=Path, metavar="PATH",
                   help="start from this checkpoint (torch format, see --save); refused if its model, sizes or "
                        "item catalogue differ from the run's; the users it was trained on are removed likewise")
    t.add_argument("--adapter", default="none", choices=("none", "lora"),
                   help="lora: train and send only LoRA adapters on the attention and feed-forward projections "
                        "(peft); every other parameter is frozen and never leaves the client")
    t.add_argument("--lora-rank", type=_positive_int, default=8, help="rank of the LoRA adapters")
    t.add_argument("--adapter-items", default="frozen", choices=("frozen", "train"),
                   help="item embeddings under --adapter lora: frozen (only the adapter travels), or trained beside "
                        "it (plaintext sends only the rows a client changed; a secure sum sends the whole table)")
    t.add_argument("--lora-alpha", type=_positive_float, help="LoRA scaling numerator (default: the rank)")
    t.add_argument("--save", type=Path, metavar="PATH", help="write the trained model (adapter merged) as a checkpoint")
    t.add_argument("--save-pretrained", type=Path, metavar="PATH",
                   help="write the pretrained model (before federated training) as a checkpoint")


def _finetune_from(args: argparse.Namespace) -> dict[str, Any]:
    if not hasattr(args, "adapter"):
        return {}
    return dict(pretrain_users=args.pretrain_users or 0.0, pretrain_epochs=args.pretrain_epochs,
                pretrain_lr=args.pretrain_lr, pretrain_batch_size=args.pretrain_batch_size,
                init=str(args.init) if args.init is not None else None,
                adapter=args.adapter, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha,
                adapter_items=args.adapter_items)


def _config_from(args: argparse.Namespace) -> Any:
    from fedsecure.experiment import RunConfig

    model_args = {
        key: value
        for key, value in (("dim", args.dim), ("blocks", args.blocks), ("heads", args.heads), ("max_len", args.max_len),
                           ("loss", args.loss), ("n_sampled", args.train_negatives))
        if value is not None
    }
    return RunConfig(
        data=args.data, columns=args.columns, users=args.users, items=args.items, interactions_per_user=args.interactions_per_user,
        model=args.model, setting=args.setting, silos=args.silos, silo_scheme=args.silo_scheme,
        silo_alpha=args.silo_alpha, rounds=args.rounds, clients_per_round=args.clients_per_round,
        local_epochs=args.local_epochs, batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
        server_optimizer=args.server_optimizer, server_lr=args.server_lr,
        server_lr_schedule=args.server_lr_schedule, eval_every=args.eval_every, k=args.k, n_negatives=args.negatives,
        dropout=args.dropout, straggler=args.straggler, seed=args.seed, model_args=model_args, secure=args.secure,
        clip_range=args.clip_range, secagg_active=args.active, compress=args.compress, compress_clip=args.compress_clip,
        dp=args.dp, noise_multiplier=args.noise_multiplier,
        target_epsilon=args.target_epsilon, clip=args.clip, delta=args.delta,
        insecure_seeded_noise=args.insecure_seeded_noise, workers=args.workers,
        sparse_updates=not args.dense_updates, max_buffer_gib=args.max_buffer_gib, **_robustness_from(args),
        **_finetune_from(args),
    )


def _robustness_from(args: argparse.Namespace) -> dict[str, Any]:
    if not hasattr(args, "aggregator"):
        return {}
    return dict(aggregator=args.aggregator, byzantine=args.byzantine, row_aware=args.row_aware,
                weighted=args.weighted, groups=args.groups, attack_scale=args.attack_scale,
                attack=args.attack, malicious=args.malicious, colluding=not args.non_colluding)


def cmd_audit_poisoning(args: argparse.Namespace, command: str) -> int:
    from rich.console import Console

    from fedsecure.audit import sweep, write_outputs

    console = Console(quiet=args.quiet)
    try:  # the heatmap is written last: fail now, not after the sweep
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("the poisoning audit draws its heatmap with matplotlib: pip install 'fedsecure[audit]'") from None
    check_output_folder(args.out, "--out")
    base = _config_from(args)
    split = lambda text: [x.strip() for x in text.split(",") if x.strip()]  # noqa: E731
    done_rows: list[dict[str, Any]] = []

    def done(row: dict[str, Any]) -> None:
        done_rows.append(row)
        if args.quiet:
            return
        label = row["aggregator"] + (f" g={row['groups']}" if row["groups"] else "")
        attack = "clean" if row["attack"] == "none" else f"{row['attack']} {row['malicious']:.0%}"
        hr = row.get("hr@10")
        print(f"[{len(done_rows)}] {label:<24} {attack:<22} hr@10 {_fmt(hr) if hr is not None else 'n/a'}  "
              f"({row['wall_seconds']:.0f}s)", flush=True)

    fractions = [_listed(x, float, "--fractions", "fractions in [0, 1)") for x in split(args.fractions)]
    group_counts = [_listed(x, int, "--group-counts", "whole numbers >= 0") for x in split(args.group_counts)]
    try:
        rows = sweep(base, attacks=split(args.attacks), aggregators=split(args.aggregators),
                     fractions=fractions, groups=group_counts, on_done=done)
    except KeyboardInterrupt:
        paths = write_outputs(done_rows, args.out, command=command, base=base, status="interrupted")
        print(f"fedsecure: interrupted after {len(done_rows)} cells; those rows (status 'interrupted') written to "
              f"{paths['json']}", file=sys.stderr)
        return EXIT_INTERRUPTED
    paths = write_outputs(rows, args.out, command=command, base=base)
    console.print(f"wrote {paths['json']}, {paths['csv']}, {paths['png']}", markup=False)
    return 0


def cmd_audit_mia(args: argparse.Namespace, command: str) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fedsecure.attacks.inference.interaction import MODES, run_interaction_audit
    from fedsecure.attacks.inference.membership import plot_roc, run_membership_audit, write_outputs

    try:  # the ROC plot is written last: fail now, not after the audit
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("the MIA audit draws its ROC curves with matplotlib: pip install 'fedsecure[audit]'") from None
    check_output_folder(args.out, "--out")
    split = lambda text: [x.strip() for x in text.split(",") if x.strip()]  # noqa: E731
    attacks = split(args.attacks)
    for name in attacks:
        if name not in MIA_ATTACKS:
            raise UsageError(f"--attacks: unknown attack {name!r}; choose from: {', '.join(MIA_ATTACKS)}")
    modes = split(args.interaction_modes)
    for mode in modes:
        if mode not in MODES:
            raise UsageError(f"--interaction-modes: unknown mode {mode!r}; choose from: {', '.join(MODES)}")
    base = _config_from(args)
    model_attacks = [a for a in attacks if a != "interaction"]
    levels = ("interaction", "user") if args.level == "both" else (args.level,)
    steps = len(levels) * (1 + args.shadows) * bool(model_attacks) + len(modes) * ("interaction" in attacks)
    report: dict[str, Any] = {"schema_version": 1, "command": command, "membership": {}, "interaction": None}
    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), disable=args.quiet, transient=False) as bar:
        task = bar.add_task("privacy audit", total=steps)
        for level in levels if model_attacks else ():
            def progress(stage: str, done: int, total: int, level: str = level) -> None:
                # one step per trained model; the attacks that follow are quick
                bar.update(task, advance=1 if stage == "models" else 0,
                           description=f"{level}-level {stage} ({done}/{total})")

            report["membership"][level] = run_membership_audit(base, attacks=model_attacks, shadows=args.shadows,
                                                               level=level, on_progress=progress)
        if "interaction" in attacks:
            def interaction_progress(mode: str) -> None:
                bar.update(task, advance=1, description=f"interaction inference: {mode}")

            report["interaction"] = run_interaction_audit(base, modes=modes, clients=args.interaction_clients,
                                                          noise_multiplier=args.local_noise,
                                                          on_progress=interaction_progress)
    paths = _write_mia(report, args.out, command, write_outputs, plot_roc)
    print_mia_summary(report)
    print(f"wrote {', '.join(str(p) for p in paths)}", flush=True)
    return 0


def cmd_sweep(args: argparse.Namespace, command: str) -> int:
    from fedsecure.attacks.inference.membership import ATTACKS
    from fedsecure.experiment import SECURE_MODES
    from fedsecure.recsys.models import MODELS
    from fedsecure.sweep import sweep, write_outputs

    try:  # the plots are written last: fail now, not after the sweep
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("the sweep draws its curves with matplotlib: pip install 'fedsecure[audit]'") from None
    check_output_folder(args.out, "--out")
    split = lambda text: [x.strip() for x in text.split(",") if x.strip()]  # noqa: E731

    def chosen(text: str, option: str, allowed: Sequence[str]) -> list[str]:
        names = split(text)
        for name in names:
            if name not in allowed:
                raise UsageError(f"{option}: unknown value {name!r}; choose from: {', '.join(allowed)}")
        return names

    try:
        epsilons = [float(x) for x in split(args.epsilons)]
    except ValueError:
        raise UsageError(f"--epsilons: {args.epsilons!r} is not a comma-separated list of numbers > 0 or inf") from None
    if not epsilons or any(not e > 0 for e in epsilons):  # NaN fails too
        raise UsageError(f"--epsilons must be numbers > 0 or inf, got {args.epsilons!r}")
    seeds = [_listed(x, int, "--seeds", "whole numbers >= 0") for x in split(args.seeds)]
    base = _config_from(args)
    done_rows: list[dict[str, Any]] = []

    def done(row: dict[str, Any]) -> None:
        done_rows.append(row)
        if not args.quiet:
            print(f"[{len(done_rows)}] {row['model']} {row['secure']} eps {row['target_epsilon']:g} seed {row['seed']}: "
                  f"hr@10 {_fmt(row['hr@10'])}, {row['strongest_attack']} AUC {row['attack_auc']:.3f} "
                  f"TPR@0.1%FPR {_sig(row['attack_tpr@0.1%fpr'])}", flush=True)

    try:
        rows = sweep(base, epsilons=epsilons, secure_modes=chosen(args.secure_modes, "--secure-modes", SECURE_MODES),
                     models=chosen(args.models, "--models", tuple(MODELS)), seeds=seeds,
                     attacks=chosen(args.mia_attacks, "--mia-attacks", ATTACKS), shadows=args.shadows, on_done=done)
    except KeyboardInterrupt:
        paths = write_outputs(done_rows, args.out, command=command, base=base, status="interrupted")
        print(f"fedsecure: interrupted after {len(done_rows)} cells; written to {paths['json']}", file=sys.stderr)
        return EXIT_INTERRUPTED
    paths = write_outputs(rows, args.out, command=command, base=base)
    print(f"wrote {', '.join(str(p) for p in paths.values())}", flush=True)
    return 0


def cmd_bench(args: argparse.Namespace, command: str) -> int:
    from fedsecure import bench

    grid = BENCH_QUICK if args.quick else BENCH_GRID
    ns = bench.parse_sizes(args.n if args.n is not None else grid["n"], "--n", low=3)
    ds = bench.parse_sizes(args.d if args.d is not None else grid["d"], "--d", low=1)
    dropouts = bench.parse_dropouts(args.dropout if args.dropout is not None else grid["dropout"], "--dropout")
    modes = bench.parse_modes(args.modes, "--modes")
    try:  # the plots are written last: fail now, not after the benchmark
        import matplotlib  # noqa: F401
    except ImportError:
        raise ValueError("fedsecure bench draws its plots with matplotlib: pip install 'fedsecure[bench]'") from None
    check_output_folder(args.out, "--out")
    if "flower-secagg+" in modes and not bench.flower_available():
        modes.remove("flower-secagg+")
        print("fedsecure bench: flwr is not installed, so Flower's SecAgg+ is skipped "
              "(pip install 'fedsecure[bench]')", file=sys.stderr, flush=True)
    if not modes:
        raise UsageError("--modes: nothing left to run")
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    tty = sys.stderr.isatty()
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), console=Console(stderr=True), disable=args.quiet or not tty)
    total = len(ns) * len(ds) * len(dropouts) * args.repeats * len(modes)
    with progress:
        task = progress.add_task("bench", total=total)

        def on_cell(cell: Any, done: int, total: int) -> None:
            progress.update(task, advance=1, description=f"{cell.mode} n={cell.n} d={cell.d} drop={cell.dropout:g}")
            if not args.quiet and not tty:
                print(f"[{done}/{total}] {bench.cell_line(cell)}", file=sys.stderr, flush=True)

        cells = bench.run_grid(ns, ds, dropouts, modes, repeats=args.repeats, seed=args.seed, on_cell=on_cell)
    setting = {"n": ns, "d": ds, "dropout": dropouts, "modes": modes, "repeats": args.repeats, "seed": args.seed,
               "quick": args.quick}
    paths = bench.write_outputs(cells, args.out, command=command, setting=setting)
    if not args.quiet:
        bench.print_table(bench.summarize(cells))
        print(f"server memory: {bench.MEMORY_METHOD}")
        print(f"wrote {', '.join(str(p) for p in paths.values())}", flush=True)
    return 0


def _write_mia(report: dict[str, Any], out: Path, command: str, write_outputs: Any, plot_roc: Any) -> list[Path]:
    """One JSON with everything; per level the membership CSV and log-log ROC PNG; a CSV of the interaction attack."""
    import csv

    out.mkdir(exist_ok=True)
    paths: list[Path] = []
    for level, rep in report["membership"].items():
        written = write_outputs(rep, out, command=command, stem=f"mia_{level}")
        paths += [written["csv"], written["png"]]
    if report["interaction"] is not None:
        path = out / "interaction_inference.csv"
        with path.open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["mode", "clients", "auc", "auc_lo", "auc_hi", "precision@10", "recall@10", "precision@own"])
            for mode, m in report["interaction"]["modes"].items():
                w.writerow([mode, m["clients"], m["auc"], *m["auc_ci95"], m["precision@10"], m["recall@10"],
                            m["precision@own"]])
        paths.append(path)
    paths.insert(0, write_result(report, out / "mia_audit.json"))
    return paths


def print_mia_summary(report: dict[str, Any]) -> None:
    for level, rep in report["membership"].items():
        for name, m in rep["attacks"].items():
            lo, hi = m["auc_ci95"]
            print(f"{level}-level {name:<13} AUC {m['auc']:.3f} [{lo:.3f}, {hi:.3f}]  TPR@0.1%FPR "
                  f"{_sig(m['tpr@0.1%fpr'])}  TPR@1%FPR {_sig(m['tpr@1%fpr'])}  "
                  f"epsilon lower bound {_sig(m['epsilon_lb']['epsilon_lb'])}")
    if report["interaction"] is not None:
        for mode, m in report["interaction"]["modes"].items():
            lo, hi = m["auc_ci95"]
            print(f"interaction inference, server view under {mode:<15} AUC {m['auc']:.3f} [{lo:.3f}, {hi:.3f}]  "
                  f"precision@10 {m['precision@10']:.3f}")


def _listed(text: str, kind: type, option: str, allowed: str) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not one of the comma-separated {allowed}") from None
    if (kind is float and not 0 <= value < 1) or (kind is int and value < 0):
        raise UsageError(f"{option}: {text} is out of range; expected comma-separated {allowed}")
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        return f"{value:.4f}"
    return str(value)


# -- output paths --------------------------------------------------------------------------------


def check_output_file(path: Path, option: str) -> None:
    """Refuse, before any work, an output file that cannot be written; never creates folders."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise UsageError(f"{option} {path}: is a folder; give a file path such as {path / 'result.json'}")
    if not parent.exists():
        raise UsageError(f"{option} {path}: folder {parent} does not exist (create it first)")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is not a folder")
    try:
        with tempfile.NamedTemporaryFile(dir=parent, prefix=".fedsecure-check-", delete=True):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write in {parent}: {exc.strerror or exc}") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path}: the file exists and is not writable")


def check_output_folder(path: Path, option: str) -> None:
    """An output folder: it may be created, but its parent must exist and be writable."""
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{option} {path}: exists and is not a folder")
        check_output_file(path / "x", option)
        return
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: folder {parent} does not exist (create it first)")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{option} {path}: cannot create a folder in {parent} (permission denied)")


def write_result(result: dict[str, Any], path: Path) -> Path:
    """Write atomically to ``path``; if that fails late, to a temporary file instead (never lose a run)."""
    text = dumps_strict(result)
    try:
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        tmp.write_text(text)
        os.replace(tmp, path)
        return path
    except OSError as exc:
        fd, fallback = tempfile.mkstemp(prefix="fedsecure-result-", suffix=".json")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        print(f"fedsecure: could not write {path} ({exc.strerror or exc}); the result is in {fallback}",
              file=sys.stderr)
        return Path(fallback)


# -- the terminal summary --------------------------------------------------------------------------


def _sig(x: Any, digits: int = 3) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    return f"{x:.{digits}g}"


def _bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"  # pragma: no cover


def protection_line(result: dict[str, Any]) -> str:
    """Mode, k, t, survivors, excluded and bytes per client, from the rounds actually run."""
    cfg = result["config"]
    rounds = result.get("rounds", [])
    ok = [r for r in rounds if not r.get("error")]
    aborted = len(rounds) - len(ok)
    sampled = sum(r["sampled"] for r in ok)
    included = sum(r["included"] for r in ok)
    excluded = sum(len(r["excluded"]) for r in ok)
    mode = cfg["secure"]
    parts = [mode if mode != "none" else "none (plaintext sum)"]
    if cfg.get("groups"):
        parts[0] += f", {cfg['groups']} groups"
    last = ok[-1]["stats"] if ok else {}
    if mode in ("secagg", "secagg+") and cfg.get("groups"):
        parts.append("k and t chosen per group (see --json)")
    elif mode in ("secagg", "secagg+"):
        parts.append(f"{last.get('threat_model', 'semi-honest')} server")
        ks = sorted({r["stats"].get("k") for r in ok if r["stats"].get("k") is not None})
        ts = sorted({r["stats"].get("t") for r in ok if r["stats"].get("t") is not None})
        show = lambda v: "n/a" if not v else (str(v[0]) if len(v) == 1 else f"{v[0]}..{v[-1]}")  # noqa: E731
        parts.append(f"k={show(ks)} neighbours, t={show(ts)} shares to unmask")
    elif mode == "ckks":
        ckks = _find(result.get("aggregator", {}), "security_bits")
        if ckks is not None:
            parts.append(ckks)
    parts.append(f"survivors {included}/{sampled} over {len(ok)} round(s)")
    parts.append(f"excluded {excluded}")
    if aborted:
        first = next(r for r in rounds if r.get("error"))
        parts.append(f"{aborted} round(s) aborted (round {first['round']}: {first['error']})")
        if not ok:
            parts.append("NO ROUND WAS APPLIED: the metrics are those of the initial model")
    upload = sum(r["stats"].get("upload_bytes", 0) for r in ok)
    if upload and sampled:
        parts.append(f"upload {_bytes(upload / sampled)} per client and round")
    return ", ".join(parts)


def communication_line(result: dict[str, Any]) -> str:
    """Bytes up and down per client and round, and the upload against a float32 update."""
    com = result["communication"]
    if "bytes_up_per_client" not in com:
        return f"compress {com.get('compress', 'none')}, no round applied"
    return (f"compress {com.get('compress', 'none')}: up {_bytes(com['bytes_up_per_client'])}, "
            f"down {_bytes(com['bytes_down_per_client'])} per client and round (a float32 update, "
            f"{_bytes(com['float32_update_bytes'])}, is {com['upload_ratio_vs_float32']:.2f}x the upload)"
            + ("; sparse updates (the rows each client touched)" if com.get("sparse_updates") else ""))


def _find(tree: Any, key: str) -> Any:
    """CKKS: the security required, and what the chosen parameters give, in one phrase."""
    if not isinstance(tree, dict):
        return None
    if key in tree and isinstance(tree.get("params"), dict):
        need, params = tree[key], tree["params"]
        got = params.get(key)
        phrase = f"{need}-bit security required"
        if got is not None and got != need:
            phrase += (f"; the parameters (N={params.get('poly_modulus_degree')}, "
                       f"log q={sum(params.get('coeff_bits', []))}) give {got} bits by the HE standard's tables")
        return phrase
    for value in tree.values():
        found = _find(value, key)
        if found is not None:
            return found
    return None


def robustness_line(result: dict[str, Any]) -> str | None:
    """Rule, its tolerance and the attack, when the run has either; None for plain FedAvg without an attack."""
    cfg, agg, pois = result["config"], result.get("aggregator") or {}, result.get("poisoning")
    if cfg.get("aggregator", "fedavg") == "fedavg" and not pois:
        return None
    parts = []
    if cfg.get("aggregator", "fedavg") != "fedavg":
        rule = agg.get("rule") or {}
        text = f"{cfg['aggregator']}, {agg.get('mode', 'plaintext')}"
        last = next((r["stats"] for r in reversed(result.get("rounds", [])) if not r.get("error")), {})
        f = (last.get("rule") or {}).get("f", rule.get("f"))
        if f is not None:
            text += f", tolerates f={f} bad {'group means' if cfg.get('groups') else 'updates'} per round"
        parts.append(text)
    if pois:
        name = (pois.get("attack") or {}).get("name", cfg.get("attack"))
        count = pois.get("malicious")
        count = len(count) if isinstance(count, list) else count
        parts.append(f"attack {name} ({pois.get('kind', 'model')} poisoning) by {count} malicious clients "
                     f"({pois.get('fraction', 0):.0%})")
    return "; ".join(parts)


def privacy_line(privacy: dict[str, Any]) -> str:
    mech = privacy.get("mechanism", "none")
    if mech == "none":
        return "none (no differential privacy: epsilon = inf)"
    parts = [mech, f"epsilon {_sig(privacy.get('epsilon'))}"]
    if privacy.get("clients"):
        parts[-1] += f" (worst of {len(privacy['clients'])} clients)"
    parts.append(f"delta {_sig(privacy.get('delta'))}")
    if privacy.get("accountant"):
        parts.append(f"accountant {privacy['accountant']}")
    if privacy.get("noise_multiplier") is not None:
        parts.append(f"noise multiplier {_sig(privacy['noise_multiplier'])}")
    for key in ("epsilon_lower_bound", "audited_epsilon", "empirical_epsilon"):
        if privacy.get(key) is not None:  # an audit's empirical lower bound on epsilon, when the run has one
            parts.append(f"audited lower bound {_sig(privacy[key])}")
            break
    if privacy.get("aggregator_epsilon_lower_bound") is not None:  # white-box audit of the run's own aggregator
        parts.append(f"aggregator audit lower bound {_sig(privacy['aggregator_epsilon_lower_bound'])}")
    if privacy.get("privacy_claim_void"):
        parts.append("PRIVACY CLAIM VOID (--insecure-seeded-noise)")
    if privacy.get("error"):
        parts.append(privacy["error"])
    return ", ".join(parts)


def private_popularity_line(private: dict[str, Any]) -> str:
    """A DP run's private comparator: the popularity ranking released under the run's (ε, δ), beside the model."""
    if private.get("error"):
        return private["error"]
    metrics = [k for k in private if k.startswith(("hr@", "ndcg@")) and "sampled" not in k and isinstance(
        private[k], float)]
    shown = ", ".join(f"{k} {with_interval(private, k)}" for k in metrics)
    return f"{shown} (popularity released under ε {_sig(private.get('epsilon'))}, δ {_sig(private.get('delta'))})"


def evaluation_line(result: dict[str, Any]) -> str:
    final = result.get("final", {})
    cfg = result["config"]
    if "rmse" in final:
        return f"RMSE and MAE over the held-out ratings; 95% intervals by bootstrap over users (seed {cfg['seed']})"
    text = (f"{final.get('n_eval_rows', '?')} held-out (user, item) rows of {final.get('n_eval_users', '?')} users, "
            f"leave-last-out; full catalogue of {result['data']['items']} items")
    if result.get("n_negatives"):
        text += f" and 1 + {result['n_negatives']} sampled negatives"
    return text + f"; 95% intervals by bootstrap over users (seed {cfg['seed']})"


def print_summary(result: dict[str, Any], console: Any) -> None:
    from rich.table import Table

    final, pop = result["final"], result["popularity"]
    keys = [k for k in final if k not in ("round",) and isinstance(final[k], float)]
    if keys:
        table = Table(title=f"{result['config']['model']} on {result['data']['source']}")
        table.add_column("metric")
        table.add_column(f"{result['config']['model']} (federated)", justify="right")
        table.add_column("popularity", justify="right")
        for k in keys:
            table.add_row(k, with_interval(final, k), with_interval(pop, k))
        console.print(table)
        lines = [("evaluation", evaluation_line(result))]
    else:
        lines = [("evaluation", "none completed")]
    t = result["timings"]
    robust = robustness_line(result)
    tuned = finetune_line(result)
    lines += [
        *([("starting model", tuned)] if tuned else []),
        ("protection", protection_line(result)),
        *([("robustness", robust)] if robust else []),
        *([("communication", communication_line(result))] if result.get("communication") else []),
        ("privacy", privacy_line(result["privacy"])),
        *([("private popularity", private_popularity_line(result["private_popularity"]))]
          if result.get("private_popularity") else []),
        ("time", f"setup {t['setup_seconds']:.1f}s, training {t['train_seconds']:.1f}s "
                 f"({result.get('rounds_completed', '?')}/{result['config']['rounds']} rounds), "
                 f"{result['config'].get('workers', 1)} worker(s)"),
    ]
    for label, text in lines:
        print(f"{label}: {text}", flush=True)


def finetune_line(result: dict[str, Any]) -> str | None:
    """Where training started (pretrained, loaded, adapter) and how many values each client sends."""
    ft = result.get("finetune")
    if not ft:
        return None
    parts = []
    if "pretrain" in ft:
        p = ft["pretrain"]
        parts.append(f"pretrained centrally on {p['public_users']} public users ({p['epochs']} epochs of Adam, "
                     f"lr {p['lr']:g}, batch {p['batch_size']}), "
                     "who are not federated or evaluated" if p["epochs"] else
                     f"{p['public_users']} public users removed, not pretrained (from scratch)")
    if "init" in ft:
        parts.append(f"loaded {ft['init']['path']} ({ft['init']['public_users']} of its public users removed)")
    before = ft.get("before_federated", {})
    if "hr@10" in before:
        parts.append(f"HR@10 before federated training {with_interval(before, 'hr@10')}")
    if "adapter" in ft:
        a = ft["adapter"]
        parts.append(f"LoRA rank {a['rank']} on {', '.join(a['targets'])}"
                     + (", item embeddings trained beside it" if a.get("items") == "train" else ""))
    n = ft.get("parameters", {})
    if n:
        parts.append(f"each client sends {n['sent_per_client']:,} of {n['model']:,} values "
                     f"({n['frozen']:,} frozen)")
    return "; ".join(parts)


def adjustment_line(adj: dict[str, Any]) -> str:
    return f"note: {adj['option']} {adj['requested']} -> {adj['used']}: {adj['reason']}"


class _PlainProgress:
    """Progress for a non-terminal: one line per round on stderr (flushed, so pipes and logs see it)."""

    def __init__(self, total: int) -> None:
        self.total, self.t0 = total, time.perf_counter()

    def __call__(self, record: Any, status: str) -> None:
        line = (f"round {record.round}/{self.total}: {record.included}/{record.sampled} clients, "
                f"{time.perf_counter() - self.t0:.1f}s elapsed")
        print(line + (f", {status}" if status else ""), file=sys.stderr, flush=True)


def _status(record: Any) -> str:
    if record.error:
        return f"round aborted: {record.error}"
    if record.metrics:
        shown = {k: v for k, v in record.metrics.items()
                 if isinstance(v, float) and (k.startswith(PERCENT_KEYS) or k in ("rmse",))}
        return " ".join(f"{k}={v:.4f}" for k, v in list(shown.items())[:2])
    return ""


def _check_setup(config: Any, experiment: Any) -> None:
    """What only the data decides: refused now, or noted, rather than every round failing or changing quietly."""
    n = len(experiment.clients)
    if config.clients_per_round <= 1 and round(config.clients_per_round * n) < 1:
        experiment.adjustments.append({
            "option": "--clients-per-round", "requested": config.clients_per_round, "used": 1,
            "reason": f"a fraction {config.clients_per_round:g} of {n} clients rounds to 0: one client per round"})
    fixed_size = not config.dp.startswith("user")  # user-level DP samples a Poisson number of clients
    if config.secure in ("secagg", "secagg+") and not config.groups and fixed_size and experiment.clients_per_round < 3:
        raise UsageError(f"--secure {config.secure} needs at least 3 clients per round, and this run has "
                         f"{experiment.clients_per_round} ({n} clients): raise --clients-per-round"
                         + (" or --silos" if config.setting == "cross-silo" else ""))


def cmd_run(args: argparse.Namespace, command: str) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from fedsecure.experiment import Experiment, Interrupted, RunFailed

    if args.json is not None:
        check_output_file(args.json, "--json")
    for option in ("save", "save_pretrained"):
        if getattr(args, option, None) is not None:
            check_output_file(getattr(args, option), "--" + option.replace("_", "-"))
    console = Console()
    config = _config_from(args)
    try:
        experiment = Experiment(config)
    except KeyboardInterrupt:
        print("fedsecure: interrupted during setup; nothing was trained, nothing written", file=sys.stderr)
        return EXIT_INTERRUPTED
    _check_setup(config, experiment)
    if getattr(args, "save_pretrained", None) is not None:
        print(f"wrote {experiment.save_pretrained(args.save_pretrained)}", file=sys.stderr, flush=True)
    for adj in experiment.adjustments:
        print(adjustment_line(adj), file=sys.stderr, flush=True)
    tty = sys.stderr.isatty()
    interrupted = False
    progress = Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
        TextColumn("{task.fields[status]}"), TimeElapsedColumn(), console=Console(stderr=True),
        disable=args.quiet or not tty,
    )
    plain = _PlainProgress(config.rounds) if not args.quiet and not tty else None
    with progress:
        task = progress.add_task("rounds", total=config.rounds, status="")

        def on_round(record: Any) -> None:
            status = _status(record)
            progress.update(task, advance=1, status=status)
            if plain is not None:
                plain(record, status)

        try:
            result = experiment.run(on_round)
        except Interrupted as stop:
            result, interrupted = stop.result, True
        except RunFailed as failed:  # keep what was computed, then report the error as usual
            failed.result["command"] = command
            if args.json is not None:
                where = write_result(failed.result, args.json)
                print(f"fedsecure: the run failed after {failed.result['rounds_completed']} rounds; partial result "
                      f"(status 'failed') written to {where}", file=sys.stderr)
            raise failed.cause from None
    result["command"] = command
    if getattr(args, "save", None) is not None and not interrupted:
        result["saved_model"] = str(experiment.save(args.save))
    written = write_result(result, args.json) if args.json is not None else None
    if interrupted:
        print(f"fedsecure: interrupted after {result['rounds_completed']} of {config.rounds} rounds"
              + (f"; partial result (status 'interrupted') written to {written}" if written else
                 " (no --json given: nothing saved)"), file=sys.stderr)
    print_summary(result, console)
    for adj in result["adjustments"]:
        print(adjustment_line(adj), flush=True)
    if written is not None:
        print(f"wrote {written}", flush=True)
    return EXIT_INTERRUPTED if interrupted else 0


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"fedsecure: warning: {_one_line(message)}", file=sys.stderr if file is None else file, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    import warnings

    warnings.showwarning = _one_line_warning  # library warnings as one line each, not source excerpts
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    from fedsecure.recsys.movielens import DataFormatError

    try:
        command = shlex.join(["fedsecure", *argv])
        if args.command == "sweep":
            return cmd_sweep(args, command)
        if args.command == "bench":
            return cmd_bench(args, command)
        if args.command == "audit":
            return cmd_audit_mia(args, command) if args.audit == "mia" else cmd_audit_poisoning(args, command)
        return cmd_run(args, command)
    except (UsageError, ValueError, DataFormatError) as exc:
        print(f"fedsecure: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:  # unreadable data, missing file, disk full
        where = f"{exc.filename}: " if getattr(exc, "filename", None) and str(exc.filename) not in str(exc) else ""
        print(f"fedsecure: error: {where}{_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("fedsecure: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug, but the user still gets one line, not a traceback
        if os.environ.get("FEDSECURE_DEBUG"):
            raise
        print(f"fedsecure: internal error: {type(exc).__name__}: {_one_line(exc)} "
              "(set FEDSECURE_DEBUG=1 for the traceback, and please report it)", file=sys.stderr)
        return 1


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
