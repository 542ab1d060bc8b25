"""One federated experiment from one configuration: data, split, clients, model, protection, training, results.

This is the composition the CLI and the benchmarks share. The protocol
packages (:mod:`fedsecure.secagg`, :mod:`fedsecure.ckks`, :mod:`fedsecure.dp`)
know nothing of recommenders; here they are put behind the round loop's two
seams: the :class:`~fedsecure.fl.aggregation.Aggregator` (secure sum,
user-level DP) and the :class:`~fedsecure.fl.local.LocalTrainer`
(example-level DP-SGD).
"""

from __future__ import annotations

import math
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from typing import Any

import numpy as np
import torch

from fedsecure.fl.aggregation import Aggregator, FedAvg, PlainSum, SumProtocol
from fedsecure.fl.engine import (
    SERVER_LR_SCHEDULES,
    SERVER_OPTIMIZERS,
    FederatedConfig,
    FederatedTrainer,
    RoundRecord,
    train_central,
)
from fedsecure.fl.sampling import FixedSizeSampling, PoissonSampling, sampled_count
from fedsecure.fl.local import LocalTrainer, SGDTrainer
from fedsecure.recsys.data import Interactions
from fedsecure.results import SCHEMA_VERSION
from fedsecure.recsys.evaluation import Evaluator
from fedsecure.recsys.models import MODELS, build_model
from fedsecure.recsys.partition import SCHEMES, cross_device, cross_silo
from fedsecure.recsys.split import Split, leave_last_out, random_holdout

SETTINGS = ("cross-device", "cross-silo")
SECURE_MODES = ("none", "secagg", "secagg+", "ckks")
DP_MODES = ("none", "dpsgd", "user-central", "user-distributed")




class Interrupted(KeyboardInterrupt):
    """The run was interrupted (Ctrl-C); ``result`` holds the record of the rounds completed so far."""

    def __init__(self, result: dict[str, Any]) -> None:
        super().__init__("interrupted")
        self.result = result


class RunFailed(RuntimeError):
    """Training stopped on an error; ``result`` holds the record of the rounds completed before it."""

    def __init__(self, result: dict[str, Any], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.result, self.cause = result, cause


#: attacks whose strength --attack-scale sets, and the option it sets
SCALED_ATTACKS = {"scaling": "gamma", "sign-flip": "scale"}


@dataclass
class RunConfig:
    """Everything that defines a run; every field is recorded with its result."""

    data: str = "synthetic"
    # synthetic data only (fedsecure.recsys.synthetic.generate): None keeps the generator's default
    users: int | None = None
    items: int | None = None
    interactions_per_user: float | None = None
    columns: str | None = None  # a data file's header names: "user,item[,rating][,timestamp]"
    model: str = "mf-implicit"
    setting: str = "cross-device"
    silos: int = 10
    silo_scheme: str = "range"
    silo_alpha: float = 0.5
    rounds: int = 10
    clients_per_round: float = 1.0
    local_epochs: int = 1
    batch_size: int = 256
    lr: float = 8.0  # plain SGD on a batch-mean loss: an embedding row moves by lr / batch_size per example
    optimizer: str = "sgd"
    server_optimizer: str = "fedadam"
    server_lr: float | None = 0.1  # None: the number of clients per round (with "avg", the sum of updates)
    server_lr_schedule: str = "constant"  # or "cosine": decays the server step towards 0 over the rounds
    eval_every: int = 5
    k: int = 10
    n_negatives: int = 99
    dropout: float = 0.0
    straggler: float = 0.0
    seed: int = 0
    workers: int = 1  # processes that train a round's clients (the CLI's default: every core)
    sparse_updates: bool = True  # plaintext and central DP: clients send the rows they touched only
    max_buffer_gib: float = 4.0  # most a round may hold for rules that must see every update at once
    model_args: dict[str, Any] = field(default_factory=dict)
    secure: str = "none"
    clip_range: float = 1.0
    secagg_active: bool = False
    # what a client's upload is compressed to (fedsecure.compress.parse_compression): none, q8, q4, q2,
    # rotate-q8 (-q4, -q2), qB/BUCKET and topk:FRACTION (plaintext only); under secagg/secagg+ qB is the modular b-bit ring
    # (fedsecure.fl.compression.SecAggRingSum, always rotated), each client's vector clipped to L2 norm
    # compress_clip (a public bound every client knows; it also caps the ring's scale range)
    compress: str = "none"
    compress_clip: float = 1.0
    dp: str = "none"
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    clip: float = 1.0
    delta: float | None = None
    insecure_seeded_noise: bool = False
    aggregator: str = "fedavg"  # or a robust rule (fedsecure.robust.RULES)
    byzantine: float | None = None  # the rule's f: a count, a fraction below 1, or None (the most it defends)
    row_aware: bool = False  # median / trimmed-mean per coordinate over the clients that touched it
    weighted: bool = False  # norm-bounding: average the clipped updates with FedAvg's capped weights
    groups: int = 0  # > 0: grouped mode, the rule over securely summed means of this many groups
    attack: str = "none"  # a model-poisoning attack (fedsecure.attacks.ATTACKS)
    malicious: float = 0.0  # fraction of all clients that are malicious
    colluding: bool = True
    attack_scale: float | None = None  # scaling: its boost gamma; sign-flip: its scale (None: the attack's default)
    root_fraction: float = 0.01  # fltrust: share of clients whose data the server holds as clean root data
    # one-run DP audit (fedsecure.attacks.inference.canaries): canary users (user-level DP) or interactions
    # (DP-SGD), each included with probability 1/2; None: a small default in DP runs, 0 otherwise
    audit_canaries: int | None = None
    # pretraining and fine-tuning (fedsecure.recsys.checkpoint, fedsecure.recsys.adapters)
    pretrain_users: float = 0.0  # > 0: this fraction of the users is public: pretrained on centrally, not federated
    pretrain_epochs: int = 30  # 0: the public users are only removed (the from-scratch baseline on the same users)
    pretrain_lr: float = 1e-3  # Adam
    pretrain_batch_size: int = 32
    init: str | None = None  # a checkpoint to start from (its public users are removed likewise)
    adapter: str = "none"  # "lora": only the adapter is trained and sent
    lora_rank: int = 8
    lora_alpha: float | None = None  # None: the rank (scaling 1)
    adapter_items: str = "frozen"  # "train": the item embeddings are trained (and sent) beside the adapter

    def __post_init__(self) -> None:
        for value, valid, what in (
            (self.model, tuple(MODELS), "model"),
            (self.setting, SETTINGS, "setting"),
            (self.silo_scheme, SCHEMES, "silo scheme"),
            (self.secure, SECURE_MODES, "secure mode"),
            (self.dp, DP_MODES, "dp mode"),
            (self.server_optimizer, SERVER_OPTIMIZERS, "server optimizer"),
            (self.server_lr_schedule, SERVER_LR_SCHEDULES, "server lr schedule"),
        ):
            if value not in valid:
                raise ValueError(f"unknown {what} {value!r}; choose one of: {', '.join(valid)}")
        if self.silos < 1:
            raise ValueError(f"silos must be >= 1, got {self.silos}")
        shape = [(f"--{name.replace('_', '-')}", value) for name, value in self.synthetic_options().items()]
        if self.columns is not None:
            if self.data == "synthetic":
                raise ValueError("--columns names the header columns of a --data file; the synthetic data has none")
            from fedsecure.recsys.tables import parse_columns

            parse_columns(self.columns)
        if self.data != "synthetic" and shape:
            names = " and ".join(n for n, _ in shape)
            raise ValueError(f"{names} size{'s' if len(shape) == 1 else ''} the synthetic data, but --data "
                             f"{self.data} is a file, whose size is its own: drop {names} or use --data synthetic")
        sasrec_only = [f"--{'train-negatives' if k == 'n_sampled' else k}" for k in ("loss", "n_sampled")
                       if k in self.model_args]
        if sasrec_only and self.model != "sasrec":
            raise ValueError(f"{' and '.join(sasrec_only)} set(s) SASRec's training loss: use with --model sasrec "
                             f"(--model {self.model} has its own loss)")
        if self.dp == "dpsgd" and self.model == "sasrec" and self.model_args.get("loss") == "full":
            raise ValueError("--loss full scores the whole catalogue through the tied item table, which per-sample "
                             "clipping cannot see: use --loss sampled-softmax or bce with --dp dpsgd")
        if self.dp == "dpsgd" and self.setting != "cross-silo":
            raise ValueError("--dp dpsgd is example-level DP inside a client: use it with --setting cross-silo")
        if self.dp.startswith("user") and self.setting != "cross-device":
            raise ValueError(f"--dp {self.dp} is user-level DP: use it with --setting cross-device")
        if self.dp == "user-distributed" and self.secure not in ("secagg", "secagg+"):
            raise ValueError("--dp user-distributed adds integer noise inside pairwise masking: use --secure secagg or secagg+")
        if self.dp != "none" and self.noise_multiplier is None and self.target_epsilon is None:
            raise ValueError(f"--dp {self.dp} needs --noise-multiplier or --target-epsilon")
        from fedsecure.attacks import ATTACKS
        from fedsecure.attacks.data_poisoning import DATA_ATTACKS
        from fedsecure.robust import RULES

        if self.aggregator != "fedavg" and self.aggregator not in RULES:
            raise ValueError(f"unknown aggregator {self.aggregator!r}; choose one of: fedavg, {', '.join(sorted(RULES))}")
        if self.attack != "none" and self.attack not in ATTACKS and self.attack not in DATA_ATTACKS:
            raise ValueError(f"unknown attack {self.attack!r}; choose one of: none, "
                             f"{', '.join(sorted([*ATTACKS, *DATA_ATTACKS]))}")
        if (self.attack == "none") != (self.malicious == 0):
            raise ValueError("--attack and --malicious go together: name an attack and a malicious fraction > 0")
        if not (0.0 <= self.malicious < 1.0):
            raise ValueError(f"--malicious is a fraction of the clients in [0, 1), got {self.malicious}")
        if self.groups < 0:
            raise ValueError(f"--groups must be >= 0, got {self.groups}")
        if self.attack_scale is not None:
            if self.attack not in SCALED_ATTACKS:
                raise ValueError(f"--attack-scale applies to --attack {' or '.join(SCALED_ATTACKS)}, "
                                 f"not {self.attack!r}")
            if not (math.isfinite(self.attack_scale) and self.attack_scale > 0):
                raise ValueError(f"--attack-scale must be a finite number > 0, got {self.attack_scale}")
        if self.audit_canaries is not None and self.audit_canaries < 0:
            raise ValueError(f"--audit-canaries must be >= 0, got {self.audit_canaries}")
        if self.audit_canaries and self.dp == "none":
            raise ValueError("--audit-canaries audits a DP run's epsilon: use it with --dp")
        self._check_finetune()
        robust = self.aggregator != "fedavg"
        if robust and self.secure != "none" and not self.groups:
            raise ValueError(f"--aggregator {self.aggregator} must see each update, which --secure {self.secure} "
                             "hides: add --groups G to run it over securely summed group means")
        if self.groups and not robust:
            raise ValueError("--groups G combines group means with a robust rule: name one with --aggregator")
        if self.row_aware and self.aggregator not in ("median", "trimmed-mean"):
            raise ValueError("--row-aware applies to --aggregator median or trimmed-mean")
        if self.weighted and self.aggregator != "norm-bounding":
            raise ValueError("--weighted applies to --aggregator norm-bounding")
        if robust and self.dp != "none":
            raise ValueError("robust aggregation with differential privacy is not supported yet")
        self._check_compression()
        self._check_ranges()

    def synthetic_options(self) -> dict[str, Any]:
        """The synthetic generator's size options that were set (``users``, ``items``, ``interactions_per_user``)."""
        return {name: value for name, value in (("users", self.users), ("items", self.items),
                                                ("interactions_per_user", self.interactions_per_user))
                if value is not None}

    def _check_compression(self) -> None:
        """--compress: parsed, and refused where it would break the protection mode or the DP claim."""
        from fedsecure.compress import parse_compression

        spec = parse_compression(self.compress)
        if spec.kind == "none":
            return
        if spec.kind == "topk" and self.secure != "none":
            raise ValueError(f"--compress {self.compress} needs --secure none: each client sends different "
                             f"coordinates, which --secure {self.secure} cannot sum (masks and ciphertext slots are "
                             "per position); use --compress q8 (or rotate-q8) with secure aggregation")
        if spec.bucket is not None and self.secure != "none":
            raise ValueError(f"--compress {self.compress} with --secure {self.secure}: a bucket's range would tell "
                             "the server about one client's values, and the masked ring has one shared scale; "
                             f"use --compress q{spec.bits} there (the ring's rotation spreads large coordinates)")
        if self.secure == "ckks":
            raise ValueError(f"--compress {self.compress} with --secure ckks: a CKKS ciphertext's size does not "
                             "depend on the precision of what it encrypts; use --secure secagg or secagg+")
        if self.dp in ("user-central", "user-distributed"):
            raise ValueError(f"--compress {self.compress} with --dp {self.dp} is refused: quantizing or "
                             "sparsifying a clipped update changes its norm (stochastic rounding can raise it by up "
                             "to sqrt(d) levels), so the sensitivity the accountant assumes no longer holds; "
                             "with --dp dpsgd the update is already private and compression is post-processing")
        if self.aggregator != "fedavg":
            raise ValueError(f"--compress {self.compress} with --aggregator {self.aggregator} is not supported: "
                             "robust rules see each update in float32")

    def _check_finetune(self) -> None:
        from fedsecure.recsys.adapters import ADAPTER_ITEMS, ADAPTERS

        if self.adapter not in ADAPTERS:
            raise ValueError(f"unknown adapter {self.adapter!r}; choose one of: {', '.join(ADAPTERS)}")
        if self.adapter == "lora" and not MODELS[self.model].lora_targets:
            raise ValueError(f"--adapter lora applies to models with linear layers to adapt "
                             f"({', '.join(m for m, c in MODELS.items() if c.lora_targets)}), not {self.model}")
        if not (0.0 <= self.pretrain_users < 1.0):
            raise ValueError(f"--pretrain-users must be a fraction in [0, 1), got {self.pretrain_users}")
        if self.pretrain_users and self.init:
            raise ValueError("--pretrain-users and --init both give the starting model: use one")
        if self.pretrain_epochs < 0 or self.pretrain_batch_size < 1 or not self.pretrain_lr > 0:
            raise ValueError("--pretrain-epochs must be >= 0, --pretrain-batch-size >= 1 and --pretrain-lr > 0")
        if self.adapter_items not in ADAPTER_ITEMS:
            raise ValueError(f"--adapter-items must be one of {', '.join(ADAPTER_ITEMS)}, got {self.adapter_items!r}")
        if self.adapter_items != "frozen" and self.adapter != "lora":
            raise ValueError("--adapter-items train goes with --adapter lora (without an adapter every "
                             "parameter is trained already)")
        if self.lora_rank < 1:
            raise ValueError(f"--lora-rank must be >= 1, got {self.lora_rank}")
        if self.lora_alpha is not None and not self.lora_alpha > 0:
            raise ValueError(f"--lora-alpha must be > 0, got {self.lora_alpha}")

    def _check_ranges(self) -> None:
        """Each numeric option in its allowed range, named as on the command line (NaN fails every test)."""
        import math

        def finite(x: float | None) -> bool:
            return x is None or math.isfinite(x)

        checks = [
            (self.rounds >= 1, "--rounds must be >= 1", self.rounds),
            (self.users is None or self.users >= 1, "--users must be >= 1", self.users),
            (self.items is None or self.items >= 10, "--items must be >= 10", self.items),
            (self.interactions_per_user is None or (finite(self.interactions_per_user)
                                                    and self.interactions_per_user >= 5),
             "--interactions-per-user must be a number >= 5", self.interactions_per_user),
            (isinstance(self.workers, int) and self.workers >= 1, "--workers must be a whole number >= 1",
             self.workers),
            (finite(self.max_buffer_gib) and self.max_buffer_gib > 0, "--max-buffer-gib must be a number > 0",
             self.max_buffer_gib),
            (finite(self.clients_per_round) and self.clients_per_round > 0
             and (self.clients_per_round <= 1 or float(self.clients_per_round).is_integer()),
             "--clients-per-round must be a fraction in (0, 1] or a whole count >= 1", self.clients_per_round),
            (self.local_epochs >= 1, "--local-epochs must be >= 1", self.local_epochs),
            (self.batch_size >= 1, "--batch-size must be >= 1", self.batch_size),
            (finite(self.lr) and self.lr > 0, "--lr must be a finite number > 0", self.lr),
            (self.server_lr is None or (finite(self.server_lr) and self.server_lr > 0),
             "--server-lr must be a finite number > 0", self.server_lr),
            (self.eval_every >= 1, "--eval-every must be >= 1", self.eval_every),
            (self.k >= 1, "--k must be >= 1", self.k),
            (self.n_negatives >= 0, "--negatives must be >= 0 (0: no sampled metrics)", self.n_negatives),
            (0 <= self.dropout < 1, "--dropout must be in [0, 1)", self.dropout),
            (0 <= self.straggler <= 1, "--straggler must be in [0, 1]", self.straggler),
            (finite(self.silo_alpha) and self.silo_alpha > 0, "--silo-alpha must be a finite number > 0",
             self.silo_alpha),
            (finite(self.clip_range) and self.clip_range > 0, "--clip-range must be a finite number > 0",
             self.clip_range),
            (finite(self.clip) and self.clip > 0, "--clip must be a finite number > 0", self.clip),
            (finite(self.compress_clip) and self.compress_clip > 0, "--compress-clip must be a finite number > 0",
             self.compress_clip),
            (self.noise_multiplier is None or (finite(self.noise_multiplier) and self.noise_multiplier > 0),
             "--noise-multiplier must be a finite number > 0", self.noise_multiplier),
            (self.target_epsilon is None or (finite(self.target_epsilon) and self.target_epsilon > 0),
             "--target-epsilon must be a finite number > 0", self.target_epsilon),
            (self.delta is None or 0 < self.delta < 1, "--delta must be in (0, 1)", self.delta),
            (self.byzantine is None or (finite(self.byzantine) and self.byzantine >= 0
                                        and (self.byzantine < 1 or float(self.byzantine).is_integer())),
             "--byzantine must be a fraction in [0, 1) or a whole count >= 1", self.byzantine),
        ]
        for ok, message, value in checks:
            if not ok:
                raise ValueError(f"{message}, got {value}")


def load_data(source: str, seed: int, *, users: int | None = None, items: int | None = None,
              interactions_per_user: float | None = None, columns: str | None = None,
              detected: list[str] | None = None) -> Interactions:
    """``synthetic`` (the embedded default, sized by ``users``, ``items``, ``interactions_per_user`` where
    given) or a file or folder of interactions (:func:`fedsecure.recsys.tables.load_interactions`: MovieLens,
    CSV/TSV/Parquet with ``columns``, ``user item`` lines). Header names detected rather than given are
    appended to ``detected``."""
    if source == "synthetic":
        from fedsecure.recsys.synthetic import generate

        size = {key: value for key, value in (("n_users", users), ("n_items", items),
                                              ("mean_interactions", interactions_per_user)) if value is not None}
        return generate(seed=seed, **size)
    from fedsecure.recsys.tables import load_interactions

    data, found = load_interactions(source, columns)
    if found is not None and detected is not None:
        detected.append(found)
    return data


def config_data(config: RunConfig, detected: list[str] | None = None) -> Interactions:
    """The data a configuration names (:func:`load_data` with its options)."""
    return load_data(config.data, config.seed, columns=config.columns, detected=detected,
                     **config.synthetic_options())


def make_split(data: Interactions, task: str, seed: int) -> Split:
    return leave_last_out(data) if task == "ranking" else random_holdout(data, seed=seed)


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for dist in ("fedsecure", "torch", "numpy", "opacus", "tenseal", "cryptography"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


class Experiment:
    """Builds the pieces of a run from a :class:`RunConfig` and runs it."""

    def __init__(self, config: RunConfig, data: Interactions | None = None) -> None:
        """``data`` overrides ``config.data`` (tests and benchmarks pass their own)."""
        self.config = cfg = config
        t0 = time.perf_counter()
        #: what the run changed from the configuration (caps, adjustments): printed and recorded
        self.adjustments: list[dict[str, Any]] = []
        detected: list[str] = []
        self.data = data if data is not None else config_data(cfg, detected)
        for names in detected:
            self._adjust("columns", "(not given)", names, f"detected from the header of {cfg.data} as "
                         "user,item[,rating][,timestamp]; set --columns to choose")
        task = MODELS[cfg.model].task
        self.split = make_split(self.data, task, cfg.seed)
        if len(self.split.test) == 0:
            raise ValueError(f"{self.data.source}: nothing to evaluate: no user has enough interactions to hold "
                             f"one out for the test set ({len(self.data)} interactions, {self.data.n_users} users)")
        if len(self.split.train) == 0:
            raise ValueError(f"{self.data.source}: no training interactions left after the test split")
        self._checkpoint = self._read_checkpoint()
        self.public_users, self.public_data = self._split_off_public()
        self.malicious_users: list[int] = []  # data poisoning: users the attacker controls
        self.target_items: list[int] = []  # promotion attacks: the items promoted (ER@K is reported for them)
        self._poison_data()
        self.canaries = self._insert_canaries()
        self._canary_audit: dict[str, Any] | None = None
        self._private_pop: dict[str, Any] | None = None
        self._aggregator_audit: dict[str, Any] | None = None
        train = self.split.train
        if cfg.setting == "cross-device":
            self.clients = cross_device(train)
        else:
            self.clients = cross_silo(train, cfg.silos, scheme=cfg.silo_scheme, alpha=cfg.silo_alpha, seed=cfg.seed)
        if cfg.setting == "cross-silo" and len(self.clients) < cfg.silos:
            self._adjust("silos", cfg.silos, len(self.clients),
                         f"{cfg.silos - len(self.clients)} silo(s) received no user with training data and were dropped")
        self.reference_clients = self._root_clients()
        self.clients_per_round = sampled_count(cfg.clients_per_round, len(self.clients))
        if cfg.clients_per_round > 1 and self.clients_per_round < cfg.clients_per_round:
            self._adjust("clients-per-round", int(cfg.clients_per_round), self.clients_per_round,
                         f"only {len(self.clients)} clients exist: every client takes part in every round")
        if cfg.groups and cfg.groups > self.clients_per_round:
            raise ValueError(f"--groups must be in [1, {self.clients_per_round}] (the clients per round), "
                             f"got {cfg.groups}")
        self.n_negatives = cfg.n_negatives
        if task == "ranking" and cfg.n_negatives:
            from fedsecure.recsys.metrics import max_negatives

            most = max_negatives(self.split)
            if most < cfg.n_negatives:
                self.n_negatives = most
                self._adjust("negatives", cfg.n_negatives, most,
                             f"the catalogue has {train.n_items} items and some test user has only {most} it never "
                             "interacted with; "
                             + (f"sampled metrics use {most} negatives" if most else "sampled metrics are omitted"))
        torch.manual_seed(cfg.seed)
        self.model = build_model(cfg.model, train.n_users, train.n_items, **cfg.model_args)
        if hasattr(self.model, "set_item_counts") and getattr(self.model, "loss_name", None) == "sampled-softmax":
            # the proposal for sampled negatives: item frequency, which a deployment gets by one secure sum
            self.model.set_item_counts(np.bincount(train.items, minlength=train.n_items))
        self.evaluator = Evaluator(self.split, task, k=cfg.k, n_negatives=self.n_negatives, seed=cfg.seed)
        self.finetune = self._starting_model()
        self.fl_config = FederatedConfig(
            rounds=cfg.rounds,
            clients_per_round=cfg.clients_per_round,
            local_epochs=cfg.local_epochs,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            server_optimizer=cfg.server_optimizer,
            server_lr=cfg.server_lr if cfg.server_lr is not None else float(self.clients_per_round),
            server_lr_schedule=cfg.server_lr_schedule,
            eval_every=cfg.eval_every,
            dropout=cfg.dropout,
            straggler=cfg.straggler,
            seed=cfg.seed,
            workers=cfg.workers,
            sparse_updates=cfg.sparse_updates,
            max_buffer_bytes=int(cfg.max_buffer_gib * 2**30),
        )
        self.aggregator = self._aggregator()
        self.trainer = self._trainer()
        self.sampler = self._sampler()
        self.poisoning = self._poisoning()
        self.setup_seconds = time.perf_counter() - t0


    def _read_checkpoint(self) -> Any:
        """``--init``: the checkpoint's (config, state dict), refused now if it does not fit the data or model."""
        cfg = self.config
        if not cfg.init:
            return None
        from fedsecure.recsys.checkpoint import check_compatible, load_checkpoint

        config, state = load_checkpoint(cfg.init)
        check_compatible(config, cfg.model, cfg.model_args, self.data, path=cfg.init)
        return config, state

    def _split_off_public(self) -> tuple[np.ndarray, Interactions | None]:
        """The public users (``--pretrain-users``, or those a checkpoint was trained on) leave the split entirely."""
        cfg = self.config
        from fedsecure.recsys.split import choose_users, split_off_users

        if cfg.pretrain_users:
            users = choose_users(self.data, cfg.pretrain_users, cfg.seed)
        elif self._checkpoint is not None:
            from fedsecure.recsys.checkpoint import public_user_ids

            users = public_user_ids(self._checkpoint[0], self.data)
        else:
            users = np.zeros(0, dtype=np.int64)
        if users.size == 0:
            return users, None
        public, self.split = split_off_users(self.split, users)
        if len(self.split.test) == 0 or len(self.split.train) == 0:
            raise ValueError(f"removing the {users.size} public users leaves no private user to train or evaluate")
        return users, public

    def _starting_model(self) -> dict[str, Any] | None:
        """Pretrain centrally on the public users or load ``--init``; then add the adapter. What it did, as a record."""
        cfg = self.config
        report: dict[str, Any] = {}
        if self._checkpoint is not None:
            from fedsecure.recsys.checkpoint import load_into

            config, state = self._checkpoint
            load_into(self.model, state, path=cfg.init)
            report["init"] = {"path": cfg.init, "fedsecure_version": config.get("fedsecure_version"),
                              "public_users": int(self.public_users.size), "note": config.get("note", "")}
            self._checkpoint = (config, None)  # the weights now live in the model
        elif self.public_data is not None:
            t0 = time.perf_counter()
            if cfg.pretrain_epochs:
                train_central(self.model, self.public_data, epochs=cfg.pretrain_epochs,
                              batch_size=cfg.pretrain_batch_size, lr=cfg.pretrain_lr, optimizer="adam", seed=cfg.seed)
            report["pretrain"] = {
                "public_users": int(self.public_users.size), "public_interactions": len(self.public_data),
                "epochs": cfg.pretrain_epochs, "lr": cfg.pretrain_lr, "optimizer": "adam",
                "batch_size": cfg.pretrain_batch_size, "seconds": time.perf_counter() - t0,
            }
        if report or self.public_users.size:
            self.model.eval()
            report["before_federated"] = self.evaluator(self.model)  # the starting model on the private users
            self.pretrained_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        total = sum(p.numel() for p in self.model.parameters())
        if cfg.adapter == "lora":
            from fedsecure.recsys.adapters import add_lora

            torch.manual_seed(cfg.seed)
            add_lora(self.model, cfg.lora_rank, alpha=cfg.lora_alpha, items=cfg.adapter_items)
            report["adapter"] = {"kind": "lora", "rank": cfg.lora_rank,
                                 "alpha": cfg.lora_alpha if cfg.lora_alpha is not None else float(cfg.lora_rank),
                                 "targets": list(self.model.lora_targets), "items": cfg.adapter_items}
        if not report:
            return None
        sent = sum(p.numel() for _, p in self.model.shared_parameters())
        report["parameters"] = {"model": total, "sent_per_client": sent,
                                "frozen": sum(p.numel() for p in self.model.parameters() if not p.requires_grad)}
        return report

    def checkpoint_config(self, note: str) -> dict[str, Any]:
        from fedsecure.recsys.checkpoint import make_config

        return make_config(self.config.model, self.config.model_args, self.data, public_users=self.public_users,
                           note=note)

    def save_pretrained(self, path: Any) -> Any:
        """Write the starting model (pretrained or loaded, before any adapter) as a checkpoint."""
        from fedsecure.recsys.checkpoint import save_checkpoint
        from fedsecure.recsys.models import build_model

        if not hasattr(self, "pretrained_state"):
            raise ValueError("--save-pretrained needs --pretrain-users (nothing was pretrained)")
        model = build_model(self.config.model, self.split.train.n_users, self.split.train.n_items,
                            **self.config.model_args)
        model.load_state_dict(self.pretrained_state)
        return save_checkpoint(path, model, self.checkpoint_config(
            f"pretrained on {self.public_users.size} public users"))

    def final_model(self) -> Any:
        """The trained model as the server deploys it: a copy with any adapter merged into the base."""
        import copy

        from fedsecure.recsys.adapters import is_adapted, merge_lora

        model = copy.deepcopy(self.model)
        return merge_lora(model) if is_adapted(model) else model

    def save(self, path: Any) -> Any:
        """Write the trained model (adapter merged) as a checkpoint that ``--init`` accepts."""
        from fedsecure.recsys.checkpoint import save_checkpoint

        return save_checkpoint(path, self.final_model(), self.checkpoint_config(
            f"federated ({self.config.adapter} adapter) after {self.config.rounds} rounds"))

    def _adjust(self, option: str, requested: Any, used: Any, reason: str) -> None:
        self.adjustments.append({"option": f"--{option}", "requested": requested, "used": used, "reason": reason})

    def _protocol(self, client_noise: Any = None) -> SumProtocol:
        cfg = self.config
        from fedsecure.compress import parse_compression

        spec = parse_compression(cfg.compress)
        if spec.kind != "none":
            return self._compressed_protocol(spec)
        if cfg.secure == "none":
            return PlainSum()
        if cfg.secure in ("secagg", "secagg+"):
            from fedsecure.secagg.sum import SecAggSum

            return SecAggSum(
                # user-level DP clips updates to L2 norm `clip`, which bounds every coordinate too
                clip_range=cfg.clip if cfg.dp.startswith("user") else cfg.clip_range,
                graph="complete" if cfg.secure == "secagg" else "sparse",
                dropout_rate=max(cfg.dropout, 0.05),
                active=cfg.secagg_active,
                client_noise=client_noise,
            )
        from fedsecure.ckks.sum import CKKSSum

        # User-level DP samples Poisson(W / N) rounds: Binomial(N, W / N) clients, so only the population
        # bounds a round's size; sizing CKKS for it loses no round to the limit (the per-client input bound,
        # max_abs_sum / N, is 2^18 / N: 430 for ml-latest-small's 610 users, far above any clip norm).
        poisson = cfg.dp.startswith("user")
        return CKKSSum(max_clients=len(self.clients) if poisson else max(self.clients_per_round, 1))

    def _compressed_protocol(self, spec: Any) -> SumProtocol:
        """--compress: a quantized or top-k plaintext sum (rotated when asked), or the modular b-bit SecAgg(+) ring."""
        from fedsecure.fl import compression

        cfg = self.config
        if spec.kind == "topk":
            return compression.TopKPlainSum(spec.fraction)
        if cfg.secure != "none":
            # q<b> and rotate-q<b> are the same here: the ring always rotates (its scale relies on it)
            return compression.SecAggRingSum(
                spec.bits, norm_bound=cfg.compress_clip, context=f"fedsecure-run seed={cfg.seed}".encode(),
                graph="complete" if cfg.secure == "secagg" else "sparse", dropout_rate=max(cfg.dropout, 0.05),
                active=cfg.secagg_active)
        inner: SumProtocol = compression.QuantizedPlainSum(spec.bits, bucket=spec.bucket)
        if not spec.rotate:
            return inner
        # the rotation seed is public shared randomness: both sides know the run's seed and the round number
        return compression.RotatedSum(inner, f"fedsecure-run seed={cfg.seed}".encode())

    def _delta(self, population: int) -> float:
        return self.config.delta if self.config.delta is not None else min(1e-5, 1.0 / (10 * population))

    def _root_clients(self) -> list:
        """FLTrust: a few clients' data held by the server as clean root data (taken out of the sampled ones)."""
        cfg = self.config
        if cfg.aggregator != "fltrust":
            return []
        rng = np.random.default_rng([cfg.seed, 0x1007])
        k = max(1, int(round(cfg.root_fraction * len(self.clients))))
        chosen = set(rng.choice(len(self.clients), size=k, replace=False).tolist())
        root = [c for i, c in enumerate(self.clients) if i in chosen]
        self.clients = [c for i, c in enumerate(self.clients) if i not in chosen]
        return root

    def _robust(self) -> Aggregator:
        from fedsecure.robust import RobustAggregator, make_rule
        from fedsecure.robust.grouped import GroupedRobustAggregator

        cfg = self.config
        options = {"row_aware": True} if cfg.row_aware else {}
        if cfg.weighted:
            options["weighted"] = True
        rule = make_rule(cfg.aggregator, **options)
        if not cfg.groups:
            return RobustAggregator(rule, byzantine=cfg.byzantine)
        malicious = int(round(cfg.malicious * len(self.clients))) if cfg.malicious else None
        return GroupedRobustAggregator(rule, self._protocol(), cfg.groups, byzantine=cfg.byzantine,
                                       malicious=malicious, seed=cfg.seed)

    def _poison_data(self) -> None:
        """Data poisoning rewrites the training data before anything is built from it."""
        from fedsecure.attacks.data_poisoning import DATA_ATTACKS, make_data_attack

        cfg = self.config
        if cfg.attack not in DATA_ATTACKS:
            return
        poisoned = make_data_attack(cfg.attack).poison(self.split, cfg.malicious, seed=cfg.seed)
        self.split = poisoned.honest_split()  # poisoned training data; utility measured on honest users only
        self.malicious_users = list(poisoned.malicious_users)
        self.target_items = list(poisoned.target_items)

    def _insert_canaries(self) -> Any:
        """DP runs: add the one-run audit's canaries to the training data (nothing otherwise)."""
        cfg = self.config
        if cfg.dp == "none" or cfg.audit_canaries == 0:
            return None
        from fedsecure.attacks.inference.canaries import default_canaries, insert_canaries

        kind = "users" if cfg.dp.startswith("user") else "interactions"
        train = self.split.train
        m = cfg.audit_canaries if cfg.audit_canaries is not None else default_canaries(
            kind, int(np.count_nonzero(np.bincount(train.users, minlength=train.n_users))), len(train))
        self.split, canaries = insert_canaries(self.split, m, kind, cfg.seed)
        return canaries

    def aggregator_audit(self, canaries: int = 1000) -> dict[str, Any]:
        """White-box one-run audit of this run's own central DP aggregator, as configured, over the run's rounds.

        A twin of the aggregator (same clip, noise multiplier, sampling rate,
        delta and *the same noise source*, a fresh accountant) aggregates
        ``canaries`` Dirac gradient canaries for ``rounds`` rounds
        (:func:`~fedsecure.attacks.inference.dp_audit.audit_dp_aggregator`), so
        its claimed epsilon is the run's own. The model-level canary audit
        rarely separates one user in a full run; this one catches a run whose
        aggregator adds too little noise for its claim (e.g. noise switched off).
        """
        from fedsecure.attacks.inference.dp_audit import audit_dp_aggregator
        from fedsecure.dp.user_level import CentralDPFedAvg

        agg = self.aggregator
        twin = CentralDPFedAvg(PlainSum(), clip=agg.clip, noise_multiplier=agg.noise_multiplier,
                               expected_clients=agg.expected_clients, sample_rate=agg.sample_rate, delta=agg.delta,
                               population=agg.population, accountant=agg.accountant.accountant, noise=agg.noise)
        return audit_dp_aggregator(twin, canaries=canaries, rounds=self.config.rounds, seed=self.config.seed)

    def canary_audit(self) -> dict[str, Any] | None:
        """The one-run audit (Steinke, Nasr & Jagielski 2023) of the model as it stands; None without canaries."""
        if self.canaries is None:
            return None
        from fedsecure.attacks.inference.canaries import canary_audit

        report = self.trainer.privacy_report() or self.aggregator.privacy_report() or {}
        return canary_audit(self.model, self.canaries, self.split.train, delta=float(report.get("delta") or 0.0),
                            seed=self.config.seed)

    def _poisoning(self) -> Any:
        cfg = self.config
        from fedsecure.attacks import ATTACKS, PoisoningPlan, make_attack

        if cfg.attack not in ATTACKS:
            return None
        options: dict[str, Any] = {}
        if cfg.attack == "adaptive-grouped":
            options["group_size"] = max(1, self.clients_per_round // max(cfg.groups, 1))
        if cfg.attack_scale is not None:
            options[SCALED_ATTACKS[cfg.attack]] = cfg.attack_scale
        if cfg.attack == "item-promotion":
            from fedsecure.attacks.promotion import item_popularity

            options.update(popularity=item_popularity(self.split.train), seed=cfg.seed)
        attack = make_attack(cfg.attack, **options)
        if getattr(attack, "target_items", None):
            self.target_items = list(attack.target_items)
        return PoisoningPlan.choose(attack, [c.client_id for c in self.clients], cfg.malicious, seed=cfg.seed,
                                    colluding=cfg.colluding)

    def evaluate(self, model: Any) -> dict[str, Any]:
        """The evaluator's metrics, plus the promoted items' exposure ratio over honest users under a promotion attack."""
        metrics = self.evaluator(model)
        if self.target_items and self.evaluator.task == "ranking":
            from fedsecure.attacks.metrics import exposure_ratio

            bad = set(self.malicious_users) | (set(self.poisoning.malicious) if self.poisoning is not None else set())
            er = exposure_ratio(model.score_fn(self.split.train), self.split, self.target_items, k=self.config.k,
                                exclude_users=sorted(bad), seed=self.config.seed)
            metrics.update({key: value for key, value in er.items() if key.startswith("er@")})
        return metrics

    def _aggregator(self) -> Aggregator:
        cfg = self.config
        if cfg.aggregator != "fedavg":
            return self._robust()
        if not cfg.dp.startswith("user"):
            return FedAvg(self._protocol())
        from fedsecure.dp import user_level

        n = len(self.clients)
        common = dict(
            clip=cfg.clip, expected_clients=float(self.clients_per_round), delta=self._delta(n),
            noise=self._noise(),
        )
        if cfg.dp == "user-central":
            if cfg.target_epsilon is not None:
                return user_level.CentralDPFedAvg.calibrated(
                    self._protocol(), target_epsilon=cfg.target_epsilon, rounds=cfg.rounds, population=n, **common
                )
            return user_level.CentralDPFedAvg(
                self._protocol(), noise_multiplier=cfg.noise_multiplier, sample_rate=self.clients_per_round / n,
                population=n, **common,
            )
        return self._distributed_dp(common, n)

    def _distributed_dp(self, common: dict[str, Any], population: int) -> Aggregator:
        """Clients add discrete Gaussian noise inside pairwise masking; only the noisy sum is decoded.

        The noise is calibrated to the fewest clients whose sum can ever be
        unmasked: the Shamir threshold ``t`` for SecAgg at the low end of the
        Poisson sample size (the protocol aborts below it), and for SecAgg+ a
        lower bound on the survivors (three standard deviations under the
        expected sample and dropout), below which the aggregator refuses to
        release the round.
        """
        from fedsecure.dp.distributed import DiscreteGaussianNoise
        from fedsecure.dp.user_level import DistributedDPFedAvg, distributed_noise_multiplier_for

        cfg = self.config
        w = self.clients_per_round
        dim = sum(p.numel() for _, p in self.model.shared_parameters())
        plain = self._protocol()
        q = w / population
        # Clients are Poisson-sampled: the sample size is Binomial(N, q) and the survivors
        # Binomial(N, q (1 - p)); three standard deviations under the mean is the low end planned for.
        if cfg.secure == "secagg":
            low = max(3, int(w - 3 * np.sqrt(w * (1 - q))))  # secure aggregation needs 3 clients
            min_clients = plain.params_for(low).t  # type: ignore[attr-defined]
        else:
            p = max(cfg.dropout, 0.05)
            mean = w * (1 - p)
            min_clients = max(2, int(mean - 3 * np.sqrt(mean * (1 - q * (1 - p)))))

        def build(z: float) -> tuple[Any, SumProtocol]:
            hook = DiscreteGaussianNoise(
                noise_multiplier=z, clip=cfg.clip, min_clients=min_clients, dim=dim, noise=common["noise"]
            )
            return hook, self._protocol(client_noise=hook)

        z = cfg.noise_multiplier
        if z is None:
            # The noise's headroom lowers the protocol's scale, and the scale sets the rounding
            # term of the sensitivity: calibrate at the scale of the noisy protocol until it settles.
            scale = plain.encoding_for(w).scale  # type: ignore[attr-defined]
            for _ in range(4):
                z = distributed_noise_multiplier_for(
                    cfg.target_epsilon, common["delta"], q, cfg.rounds, clip=cfg.clip, min_clients=min_clients,
                    dim=dim, scale=scale, rounding_slack=1.0,
                )
                noisy_scale = build(z)[1].encoding_for(w).scale  # type: ignore[attr-defined]
                if noisy_scale >= scale:
                    break
                scale = noisy_scale
        hook, protocol = build(z)
        return DistributedDPFedAvg(
            protocol, noise_multiplier=z, sample_rate=q, min_clients=min_clients,
            dim=dim, population=population, client_noise=hook, **common,
        )

    def _sampler(self) -> FixedSizeSampling | PoissonSampling:
        """User-level DP accounts Poisson sampling at rate W / N: draw exactly that, from a secret source."""
        cfg = self.config
        if cfg.dp.startswith("user"):
            return PoissonSampling(self.clients_per_round / len(self.clients), self._noise())
        return FixedSizeSampling(cfg.clients_per_round, cfg.seed)

    def _noise(self) -> Any:
        from fedsecure.dp.noise import NoiseSource

        return NoiseSource.insecure_seeded(self.config.seed) if self.config.insecure_seeded_noise else NoiseSource()

    def _trainer(self) -> LocalTrainer:
        cfg = self.config
        if cfg.dp != "dpsgd":
            return SGDTrainer(cfg.optimizer)
        from fedsecure.dp.sgd import DPSGDTrainer

        return DPSGDTrainer(
            noise_multiplier=cfg.noise_multiplier, max_grad_norm=cfg.clip, target_epsilon=cfg.target_epsilon,
            delta=self._delta(max(int(np.median([len(c.rows) for c in self.clients])), 1)),
            noise=self._noise(), planned_rounds=cfg.rounds, optimizer=cfg.optimizer,
        )

    def run(self, on_round: Callable[[RoundRecord], None] | None = None) -> dict[str, Any]:
        """Train federatedly; return the full result (config, metrics per evaluation, timings, privacy, versions)."""
        trainer = FederatedTrainer(
            self.model, self.split.train, self.clients, config=self.fl_config,
            aggregator=self.aggregator, trainer=self.trainer, evaluate=self.evaluate, sampler=self.sampler,
            poisoning=self.poisoning, reference_clients=self.reference_clients,
        )
        if trainer.serial_reason is not None and not any(a["option"] == "--workers" for a in self.adjustments):
            self._adjust("workers", self.config.workers, 1, f"clients train in this process: {trainer.serial_reason}")
        t0 = time.perf_counter()
        try:
            history = trainer.run(on_round)
        except KeyboardInterrupt:
            partial = self._result(trainer.history, time.perf_counter() - t0, status="interrupted")
            raise Interrupted(partial) from None
        except Exception as exc:
            partial = self._result(trainer.history, time.perf_counter() - t0, status="failed")
            partial["error"] = f"{type(exc).__name__}: {exc}"
            raise RunFailed(partial, exc) from exc
        return self._result(history, time.perf_counter() - t0)

    def _result(self, history: Any, seconds: float, status: str = "complete") -> dict[str, Any]:
        """The run's record; ``status`` is "complete", or "interrupted" with the rounds done so far."""
        evaluations = history.evaluations
        if self.canaries is not None and self._canary_audit is None and status == "complete":
            try:
                self._canary_audit = self.canary_audit()
            except Exception as exc:  # noqa: BLE001 - the run's record is kept whatever the audit does
                self._canary_audit = {"error": f"canary audit failed: {exc}"}
        if self.config.dp == "user-central" and self._aggregator_audit is None and status == "complete":
            try:
                self._aggregator_audit = self.aggregator_audit()
            except Exception as exc:  # noqa: BLE001 - the run's record is kept whatever the audit does
                self._aggregator_audit = {"error": f"aggregator audit failed: {exc}"}
        try:
            privacy = self.privacy()
        except Exception as exc:  # noqa: BLE001 - a partial record is worth more than the exception
            privacy = {"mechanism": "unknown", "error": f"privacy report failed: {exc}"}
        return {
            "schema_version": SCHEMA_VERSION,
            "status": status,
            "rounds_completed": len(history.rounds),
            "adjustments": list(self.adjustments),
            "config": asdict(self.config),
            "data": {
                "source": self.data.source, "users": self.data.n_users, "items": self.data.n_items,
                "interactions": len(self.data), "clients": len(self.clients),
                "clients_per_round": self.clients_per_round,
            },
            "sampling": self.sampler.describe(),
            "protocol": self.evaluator.protocol,
            "n_negatives": self.n_negatives,
            "final": evaluations[-1] if evaluations else {},
            "popularity": self._popularity() if evaluations or status == "complete" else {},
            # DP runs: the popularity ranking released under the accountant's (epsilon, delta), the private
            # comparator a deployment could release instead of the DP model
            "private_popularity": self._private_popularity(privacy) if status == "complete" else None,
            "evaluations": evaluations,
            "rounds": history.to_dict(),
            "aggregator": self.aggregator.describe(),
            "poisoning": self._poisoning_report(),
            "finetune": self.finetune,
            "root_clients": [c.client_id for c in self.reference_clients],
            "trainer": self.trainer.describe(),
            "privacy": privacy,
            "communication": self._communication(history),
            "timings": {"setup_seconds": self.setup_seconds, "train_seconds": seconds},
            "versions": library_versions(),
        }

    def _communication(self, history: Any) -> dict[str, Any]:
        """Bytes up and down per client: the mean over the applied rounds, and float32's for comparison."""
        rounds = [r for r in history.rounds if r.bytes_up_per_client is not None]
        dim = sum(p.numel() for _, p in self.model.shared_parameters())
        dense = 4 * (dim + 1)  # a float32 update and its weight
        out: dict[str, Any] = {"compress": self.config.compress, "rounds": len(rounds),
                               "float32_update_bytes": dense}
        # plaintext and central DP: clients send the rows they touched; secure modes send every coordinate
        # (masked or encrypted) so that which rows a client touched stays hidden, at the dense cost
        out["sparse_updates"] = bool(rounds and rounds[-1].stats.get("sparse_updates"))
        if rounds:
            up = float(np.mean([r.bytes_up_per_client for r in rounds]))
            down = float(np.mean([r.bytes_down_per_client for r in rounds]))
            out.update(bytes_up_per_client=up, bytes_down_per_client=down, upload_ratio_vs_float32=dense / up,
                       bytes_up_total=float(sum(r.bytes_up_per_client * r.sampled for r in rounds)),
                       bytes_down_total=float(sum(r.bytes_down_per_client * r.sampled for r in rounds)))
        return out

    def _popularity(self) -> dict[str, Any]:
        try:
            return self.evaluator.popularity()
        except Exception as exc:  # noqa: BLE001 - the run's own metrics are kept whatever the baseline does
            return {"error": f"popularity baseline failed: {exc}"}

    def _private_popularity(self, privacy: dict[str, Any]) -> dict[str, Any] | None:
        """DP ranking runs: :class:`~fedsecure.recsys.baselines.PrivatePopularity` at the run's spent epsilon.

        One Gaussian release with user-level L2 sensitivity 1, its noise
        multiplier the smallest whose epsilon (RDP, sampling rate 1, one step)
        is at or under the accountant's epsilon at the same delta. User-level
        DP implies example-level DP at the same epsilon, so the comparator is
        also valid beside an example-level DP-SGD run. None without DP.
        """
        if self.config.dp == "none" or self.evaluator.task != "ranking":
            return None
        if self._private_pop is not None:
            return self._private_pop
        import math

        from fedsecure.dp.accounting import noise_multiplier_for

        eps, delta = privacy.get("epsilon"), privacy.get("delta")
        try:
            if not (isinstance(eps, (int, float)) and math.isfinite(eps) and eps > 0 and delta):
                return {"error": f"no finite epsilon to match (epsilon {eps}, delta {delta})"}
            sigma = noise_multiplier_for(float(eps), float(delta), 1.0, 1)
            pop = self.evaluator.private_popularity(sigma, self._noise())
        except Exception as exc:  # noqa: BLE001 - the run's own record is kept whatever the baseline does
            return {"error": f"private popularity baseline failed: {exc}"}
        self._private_pop = {**pop, "epsilon": float(eps), "delta": float(delta)}
        return self._private_pop

    def _poisoning_report(self) -> dict[str, Any] | None:
        cfg = self.config
        if cfg.attack == "none":
            return None
        if self.poisoning is not None:
            return {**self.poisoning.describe(), "kind": "model", "fraction": cfg.malicious,
                    "malicious_clients": sorted(self.poisoning.malicious), "target_items": self.target_items}
        return {"attack": {"name": cfg.attack}, "kind": "data", "fraction": cfg.malicious,
                "malicious": len(self.malicious_users), "malicious_clients": self.malicious_users,
                "target_items": self.target_items}

    def privacy(self) -> dict[str, Any]:
        """What the run spent, as the DP component reports it; says so when there is no DP."""
        report = self.trainer.privacy_report() or self.aggregator.privacy_report()
        if report is None:
            return {"mechanism": "none", "epsilon": float("inf")}
        if self.config.dp.startswith("user"):
            report["client_sampling"] = self.sampler.describe()
        if self._aggregator_audit is not None:
            report["aggregator_audit"] = self._aggregator_audit
            report["aggregator_epsilon_lower_bound"] = self._aggregator_audit.get("epsilon_lb")
        if self.canaries is not None:
            # the audited lower bound beside the accountant's epsilon (absent until the run completes)
            audit = self._canary_audit or {"note": "computed when the run completes"}
            report["audit"] = {**audit, "canaries": self.canaries.m, "kind": self.canaries.kind}
            report["epsilon_lower_bound"] = audit.get("epsilon_lb")
        return report

    def run_central(self, epochs: int | None = None) -> dict[str, Any]:
        """The same model and examples trained in one place for ``epochs`` passes (default: ``rounds``)."""
        cfg = self.config
        t0 = time.perf_counter()
        evaluations = train_central(
            self.model, self.split.train, epochs=epochs or cfg.rounds, batch_size=cfg.batch_size, lr=cfg.lr,
            optimizer=cfg.optimizer, seed=cfg.seed, evaluate=self.evaluator, eval_every=cfg.eval_every,
        )
        return {"final": evaluations[-1], "evaluations": evaluations, "train_seconds": time.perf_counter() - t0}
