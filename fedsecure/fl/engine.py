"""The federated round loop: sample, train locally, protect, aggregate, apply, evaluate.

One round of :class:`FederatedTrainer`:

1. sample clients (:mod:`fedsecure.fl.sampling`: a fraction or a count,
   seeded per round; or Poisson sampling from a secret source in DP runs);
2. decide who drops out (probability ``dropout``; each drop happens at a stage
   of the aggregator's protocol, chosen uniformly) and who straggles
   (probability ``straggler``; a straggler completes only ``straggler_work``
   of its local steps before the deadline);
3. each sampled client starts from the global shared parameters and its own
   private ones, trains locally (:class:`~fedsecure.fl.local.LocalTrainer`)
   and reports the change of the shared parameters only; in an attack
   experiment the malicious clients replace theirs
   (:class:`~fedsecure.attacks.poisoning.PoisoningPlan`), and rules that
   need the server's own update on clean root data (FLTrust) get it from the
   ``reference_clients``, which are never sampled;
4. the :class:`~fedsecure.fl.aggregation.Aggregator` turns the updates into
   one update (plaintext, masked, encrypted, noised or robust: the loop does
   not know which);
5. a :class:`ServerOptimizer` applies it;
6. every ``eval_every`` rounds (and after the last) the model is evaluated.

Each applied round records what travels per sampled client
(``bytes_up_per_client``, ``bytes_down_per_client``): up, the protocol's
``upload_bytes`` (payloads, masked ring elements, ciphertexts, plus the
protocol's key-agreement and unmasking messages where it counts them) over
the sampled clients, or the float32 update when the aggregator reports none;
down, the float32 global shared parameters each client starts from plus the
protocol's ``download_bytes`` over the sampled clients.

Everything random (sampling, dropouts, local shuffling, negatives, model
initialisation) derives from ``seed``, so a run is reproducible; protocol
keys, masks, DP noise and the Poisson sample that DP accounting relies on do
not, by design.
"""

from __future__ import annotations

import ctypes
import itertools
import math
import multiprocessing as mp
import os
import signal
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from fedsecure.fl.aggregation import AggregationError, Aggregator, ClientUpdate, FedAvg, RowBlock, SparseRows
from fedsecure.fl.local import LocalTrainer, SGDTrainer
from fedsecure.fl.sampling import ClientSampler, FixedSizeSampling
from fedsecure.recsys.data import Interactions
from fedsecure.recsys.models import Recommender
from fedsecure.recsys.partition import ClientData

SERVER_OPTIMIZERS = ("avg", "fedadam")
#: how the server step changes over the rounds: ``constant``, or ``cosine`` from ``server_lr`` in round 1
#: down towards 0 in the last round (half a cosine period over ``rounds``)
SERVER_LR_SCHEDULES = ("constant", "cosine")


def server_lr_at(lr: float, schedule: str, round_index: int, rounds: int) -> float:
    """The server step of round ``round_index`` (1-based) of ``rounds``: ``lr``, or its cosine decay."""
    if schedule == "constant":
        return lr
    if schedule == "cosine":
        return lr * 0.5 * (1.0 + math.cos(math.pi * (round_index - 1) / rounds))
    raise ValueError(f"unknown server lr schedule {schedule!r}; choose one of: {', '.join(SERVER_LR_SCHEDULES)}")


@dataclass
class FederatedConfig:
    """Settings of the round loop (the protection mode lives in the aggregator)."""

    rounds: int = 20
    clients_per_round: float = 1.0  # a fraction in (0, 1], or a count >= 1 when > 1
    local_epochs: int = 1
    batch_size: int = 64
    lr: float = 0.05
    server_optimizer: str = "avg"
    server_lr: float = 1.0
    server_lr_schedule: str = "constant"
    eval_every: int = 5
    dropout: float = 0.0
    straggler: float = 0.0
    straggler_work: float = 0.5
    seed: int = 0
    #: processes that train a round's clients (1: in this process); results are identical for any count
    workers: int = 1
    #: send touched rows only when the aggregator lets the server see them (plaintext, central DP)
    sparse_updates: bool = True
    #: most memory a round may hold for aggregators that must see every update at once (robust rules,
    #: model poisoning, protocols that cannot stream); a larger round is refused before it trains
    max_buffer_bytes: int = 4 << 30

    def __post_init__(self) -> None:
        checks = [
            (self.rounds >= 1, f"rounds must be >= 1, got {self.rounds}"),
            (self.clients_per_round > 0, f"clients_per_round must be > 0, got {self.clients_per_round}"),
            (
                self.clients_per_round <= 1 or float(self.clients_per_round).is_integer(),
                f"clients_per_round above 1 is a count and must be whole, got {self.clients_per_round}",
            ),
            (self.local_epochs >= 1, f"local_epochs must be >= 1, got {self.local_epochs}"),
            (self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.server_lr > 0, f"server_lr must be > 0, got {self.server_lr}"),
            (self.eval_every >= 1, f"eval_every must be >= 1, got {self.eval_every}"),
            (0 <= self.dropout < 1, f"dropout must be in [0, 1), got {self.dropout}"),
            (0 <= self.straggler <= 1, f"straggler must be in [0, 1], got {self.straggler}"),
            (0 < self.straggler_work <= 1, f"straggler_work must be in (0, 1], got {self.straggler_work}"),
            (self.workers >= 1, f"workers must be >= 1, got {self.workers}"),
            (self.max_buffer_bytes > 0, f"max_buffer_bytes must be > 0, got {self.max_buffer_bytes}"),
            (
                self.server_optimizer in SERVER_OPTIMIZERS,
                f"unknown server optimizer {self.server_optimizer!r}; choose one of: {', '.join(SERVER_OPTIMIZERS)}",
            ),
            (
                self.server_lr_schedule in SERVER_LR_SCHEDULES,
                f"unknown server lr schedule {self.server_lr_schedule!r}; "
                f"choose one of: {', '.join(SERVER_LR_SCHEDULES)}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


class ServerOptimizer:
    """Applies the aggregated update ``delta`` to the global shared parameters ``x``.

    ``avg``: ``x <- x + lr * delta`` (``lr = 1`` is plain FedAvg).

    ``fedadam`` (Reddi et al., ICLR 2021, with Adam's bias correction):
    Adam on the pseudo-gradient ``-delta``. With ``t`` the number of steps,

        m <- beta1 m + (1 - beta1) delta,     v <- beta2 v + (1 - beta2) delta^2,
        x <- x + lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + tau).

    Each coordinate then moves by about ``lr`` per round whatever the scale
    of its update, which is what a recommender's item table needs: a round's
    mean update of a popular item is hundreds of times that of a rare one
    (and summing them diverges), while the mean update of every item is
    tiny (so averaging alone learns nothing). ``tau`` must sit below the
    update scale (about ``1e-4`` for a mean over hundreds of clients), or it
    turns Adam back into a damped average, and above the error of the
    protection mode's sum (CKKS adds ~1e-7 to every coordinate of a sum, ~1e-9
    to the mean), or a coordinate whose true update is zero takes a full
    ``lr`` step on noise: ``1e-6`` sits between the two.
    """

    def __init__(
        self, name: str, lr: float, *, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-6,
    ) -> None:
        if name not in SERVER_OPTIMIZERS:
            raise ValueError(f"unknown server optimizer {name!r}; choose one of: {', '.join(SERVER_OPTIMIZERS)}")
        self.name, self.lr = name, lr
        self.beta1, self.beta2, self.tau = beta1, beta2, tau
        self._m: np.ndarray | None = None
        self._v: np.ndarray | None = None
        self._t = 0

    def step(self, x: np.ndarray, delta: np.ndarray, lr: float | None = None) -> np.ndarray:
        """``x`` after one step on ``delta``, with step size ``lr`` (default: the optimizer's own)."""
        lr = self.lr if lr is None else lr
        if self.name == "avg":
            return x + lr * delta
        if self._m is None or self._v is None:
            self._m, self._v = np.zeros_like(delta), np.zeros_like(delta)
        self._t += 1
        self._m = self.beta1 * self._m + (1 - self.beta1) * delta
        self._v = self.beta2 * self._v + (1 - self.beta2) * delta * delta
        m_hat = self._m / (1 - self.beta1**self._t)
        v_hat = self._v / (1 - self.beta2**self._t)
        return x + lr * m_hat / (np.sqrt(v_hat) + self.tau)


class SharedParameters:
    """The model's shared parameters viewed as one flat float vector."""

    def __init__(self, model: Recommender) -> None:
        self.names = [n for n, _ in model.shared_parameters()]
        self.params = [p for _, p in model.shared_parameters()]
        if not self.params:
            raise ValueError(f"{type(model).__name__} has no shared parameters to federate")
        self.size = sum(p.numel() for p in self.params)

    # get/set run once per client per round; they copy through numpy views of
    # the parameters' storage because torch's intra-op threads make these
    # small copies 5-20x slower when the cores are shared.
    def layout(self) -> list[tuple[str, tuple[int, ...], int]]:
        """``(name, shape, offset)`` of each shared tensor inside the flat vector."""
        out, offset = [], 0
        for name, p in zip(self.names, self.params):
            out.append((name, tuple(p.shape), offset))
            offset += p.numel()
        return out

    def get(self) -> np.ndarray:
        """A float32 copy (the parameters' own precision; a wider copy only costs time per client)."""
        return np.concatenate([p.detach().numpy().reshape(-1) for p in self.params])

    def set(self, flat: np.ndarray) -> None:
        if flat.shape != (self.size,):
            raise ValueError(f"expected a flat vector of {self.size} values, got shape {flat.shape}")
        offset = 0
        for p in self.params:
            view = p.detach().numpy()  # shares p's storage: assigning writes the parameter in place
            view[...] = flat[offset : offset + p.numel()].reshape(view.shape)
            offset += p.numel()

    def take_update(self, global_flat: np.ndarray) -> SparseRows:
        """The change since ``global_flat`` as the rows it touched; those rows are put back.

        Afterwards the parameters equal ``global_flat`` again, bit for bit, so
        the next client starts from them without a full copy. A row counts as
        changed when any of its bits differs from ``global_flat``'s (exact
        whatever the trainer did); the result lists, like
        :meth:`SparseRows.from_dense` of the dense difference, the rows with a
        non-zero difference (a table whose rows all changed, whole). One
        comparison pass over the parameters plus work on the touched rows,
        instead of a full copy in, a full copy out, a subtraction and a scan.
        """
        if global_flat.shape != (self.size,):
            raise ValueError(f"expected a flat vector of {self.size} values, got shape {global_flat.shape}")
        blocks = []
        offset = 0
        for p in self.params:
            n = p.numel()
            shape = tuple(p.shape)
            rows_n = int(shape[0]) if shape else 1
            width = n // rows_n if rows_n else 1
            view = p.detach().numpy()
            if not n:
                continue
            if not view.flags.c_contiguous:  # reshape would copy: compare and restore through the dense path
                raise ValueError("shared parameters must be contiguous")
            v = view.reshape(rows_n, width)
            g = global_flat[offset : offset + n].reshape(rows_n, width)
            # bitwise, in the widest words a row splits into (8 bytes when it can: half the comparisons)
            bits = np.dtype(np.uint64 if (width * v.itemsize) % 8 == 0 else f"u{v.itemsize}")
            changed = np.flatnonzero(_any_per_row(v.view(bits) != g.view(bits)))
            if changed.size:
                d = v[changed] - g[changed]
                v[changed] = g[changed]
                keep = _any_per_row(d != 0)
                if not keep.all():
                    changed, d = changed[keep], d[keep]
                if changed.size == rows_n:
                    blocks.append(RowBlock(offset, width, None, d.reshape(-1)))
                elif changed.size:
                    ids = changed.astype(np.int32 if rows_n < 2**31 else np.int64)
                    blocks.append(RowBlock(offset, width, ids, d.reshape(-1)))
            offset += n
        return SparseRows(self.size, tuple(blocks))


def _any_per_row(mask: np.ndarray) -> np.ndarray:
    """``mask.any(axis=1)`` for a C-contiguous 2-D bool array, faster for narrow rows (numpy's reduction
    along a short inner axis costs several times the comparison that made ``mask``)."""
    rows, width = mask.shape
    if width == 1:
        return mask[:, 0]
    words = mask.view(np.uint64) if width % 8 == 0 else mask
    if words.shape[1] > 16:
        return words.any(axis=1)
    acc = words[:, 0].copy()
    for j in range(1, words.shape[1]):
        acc |= words[:, j]
    return acc.astype(bool, copy=False)


def client_torch_seed(seed: int, round_index: int, client_id: int) -> int:
    """The torch seed of one client's local training (dropout): a function of (seed, round, client) only."""
    return int(np.random.SeedSequence([seed, round_index, client_id, 0x70]).generate_state(1)[0])


def train_client(
    model: Recommender, shared: SharedParameters, trainer: LocalTrainer, train: Interactions, client: ClientData,
    global_flat: np.ndarray, round_index: int, config: FederatedConfig, work: float = 1.0,
) -> np.ndarray:
    """One client's local step, a pure function of (client, global parameters, round, seed).

    ``model`` must hold the client's private rows; its shared parameters are
    overwritten with ``global_flat`` (and are ``global_flat`` again on
    return). Returns the change of the shared parameters (float32). Every
    random choice derives from ``(config.seed, round_index,
    client.client_id)``, so the result does not depend on which process runs
    it or on what ran before; the same function is what a Flower
    ``ClientApp`` would call.
    """
    return train_client_rows(model, shared, trainer, train, client, global_flat, round_index, config, work).dense()


def train_client_rows(
    model: Recommender, shared: SharedParameters, trainer: LocalTrainer, train: Interactions, client: ClientData,
    global_flat: np.ndarray, round_index: int, config: FederatedConfig, work: float = 1.0, *,
    holds_global: bool = False,
) -> SparseRows:
    """:func:`train_client`, returning the change as the rows it touched (:meth:`SharedParameters.take_update`).

    ``holds_global``: the caller guarantees the shared parameters already
    equal ``global_flat`` (as they do after a previous call with the same
    ``global_flat``), which saves a full copy per client; on an exception
    they are left as training left them.
    """
    rng = np.random.default_rng([config.seed, round_index, client.client_id])
    if not holds_global:
        shared.set(global_flat)
    examples = model.examples(train, client.rows, rng)
    with torch.random.fork_rng(devices=[]):
        # the CPU generator only: torch.manual_seed also queues a seed for every lazily initialised
        # accelerator, capturing a Python stack trace each time (a third of a round's overhead on MF)
        torch.default_generator.manual_seed(client_torch_seed(config.seed, round_index, client.client_id))
        trainer.train(
            model, examples, client_id=client.client_id, epochs=config.local_epochs,
            batch_size=config.batch_size, lr=config.lr, rng=rng, work_fraction=work,
        )
    return shared.take_update(global_flat)


def _private_tables(model: Recommender) -> list[np.ndarray] | None:
    """Numpy views of the private tables when each is indexed by user (rows a client owns), else None."""
    tables = [p.detach().numpy() for _, p in model.private_parameters()]
    if any(t.ndim == 0 or t.shape[0] != model.n_users for t in tables):
        return None
    return tables


_WORKER: dict[str, Any] = {}


def _init_worker(state: dict[str, Any], raw: Any, size: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle (it stops the pool)
    torch.set_num_threads(1)
    _WORKER.clear()
    _WORKER.update(state)
    _WORKER["global"] = np.frombuffer(raw, dtype=np.float32, count=size)
    _WORKER["shared"] = SharedParameters(state["model"])
    _WORKER["tables"] = _private_tables(state["model"])


def _run_clients(tasks: list[tuple]) -> list[tuple[int, Any, float, list[np.ndarray]]]:
    """One batch of clients, trained one after another in this worker (one message each way per batch)."""
    return [_run_client(task) for task in tasks]


def _run_client(task: tuple[int, int, float, list[np.ndarray], bool, int]) -> tuple[int, Any, float, list[np.ndarray]]:
    cid, round_index, work, rows, sparse, generation = task
    w = _WORKER
    client = w["clients"][cid]
    for table, r in zip(w["tables"], rows):
        table[client.users] = r
    holds = w.get("generation") == generation  # this process's model holds this round's global parameters
    w["generation"] = None  # until this client has put its rows back
    delta = train_client_rows(w["model"], w["shared"], w["trainer"], w["train"], client, w["global"], round_index,
                              w["config"], work, holds_global=holds)
    w["generation"] = generation
    new_rows = [table[client.users].copy() for table in w["tables"]]
    return cid, (delta if sparse else delta.dense()), float(client.rows.size), new_rows


class ClientPool:
    """Worker processes that train clients, each started with a copy of the model and the data.

    The global parameters of a round travel once, through shared memory
    (:meth:`start_round`); a task carries a client id and its private rows,
    a result its update and new private rows. :meth:`map` sends the tasks in
    batches of ``batch`` clients (one message each way per batch: per-client
    messages cost MF on ml-latest-small as much CPU as its training) and
    yields results in the order of the tasks, keeping at most ``2 * workers``
    batches in flight, so a round holds a bounded number of updates
    (``2 * workers * batch``) whatever its number of clients.
    """

    def __init__(self, workers: int, state: dict[str, Any], size: int) -> None:
        methods = mp.get_all_start_methods()
        ctx = mp.get_context("fork" if "fork" in methods else "spawn")
        self.raw = ctx.RawArray(ctypes.c_float, max(size, 1))
        self.array = np.frombuffer(self.raw, dtype=np.float32, count=size)
        self.workers = workers
        self.window = 2 * workers
        self.pool = ctx.Pool(workers, initializer=_init_worker, initargs=(state, self.raw, size))
        self._finalizer = weakref.finalize(self, self.pool.terminate)
        #: bumped whenever the global parameters change: a worker whose model holds this generation's skips a copy
        self.generation = 0

    def start_round(self, global_flat: np.ndarray) -> None:
        self.generation += 1
        self.array[...] = global_flat

    def map(self, tasks: Iterator[tuple], batch: int = 1) -> Iterator[tuple]:
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        pending: deque = deque()
        tasks = iter(tasks)

        def submit() -> None:
            chunk = list(itertools.islice(tasks, batch))
            if chunk:
                pending.append(self.pool.apply_async(_run_clients, (chunk,)))

        for _ in range(self.window):
            submit()
        while pending:
            batch_results = pending.popleft().get()
            results = batch_results[::-1]
            # the pool's result thread may still hold the list it received: empty it, so that only `results`
            # refers to the updates, each popped as it is handed on
            batch_results.clear()
            submit()
            while results:
                yield results.pop()

    def close(self) -> None:
        self._finalizer()


#: bound on the client updates a round's worker batches hold at once (dense float32 bytes)
IN_FLIGHT_BYTES = 64 * 2**20


def default_workers() -> int:
    """All the cores this process may run on."""
    return os.cpu_count() or 1


@dataclass
class RoundRecord:
    round: int
    sampled: int
    included: int
    excluded: dict[int, str]
    stragglers: int
    train_seconds: float
    aggregate_seconds: float
    stats: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None
    error: str | None = None
    bytes_up_per_client: float | None = None
    bytes_down_per_client: float | None = None


@dataclass
class History:
    rounds: list[RoundRecord] = field(default_factory=list)

    @property
    def evaluations(self) -> list[dict[str, Any]]:
        return [{"round": r.round, **r.metrics} for r in self.rounds if r.metrics is not None]

    def to_dict(self) -> list[dict[str, Any]]:
        return [asdict(r) for r in self.rounds]


Evaluator = Callable[[Recommender], dict[str, Any]]
RoundCallback = Callable[[RoundRecord], None]


class FederatedTrainer:
    """Runs federated training of ``model`` over ``clients`` (partitions of ``train``)."""

    def __init__(
        self,
        model: Recommender,
        train: Interactions,
        clients: Sequence[ClientData],
        *,
        config: FederatedConfig | None = None,
        aggregator: Aggregator | None = None,
        trainer: LocalTrainer | None = None,
        evaluate: Evaluator | None = None,
        sampler: ClientSampler | None = None,
        poisoning: Any = None,
        reference_clients: Sequence[ClientData] = (),
    ) -> None:
        if not clients:
            raise ValueError("no clients: the partition produced no client with training data")
        self.model = model
        self.train = train
        self.clients = {c.client_id: c for c in clients}
        if len(self.clients) != len(clients):
            raise ValueError("client ids must be unique")
        self.config = config or FederatedConfig()
        self.aggregator = aggregator or FedAvg()
        self.trainer = trainer or SGDTrainer()
        self.evaluate = evaluate
        self.sampler = sampler or FixedSizeSampling(self.config.clients_per_round, self.config.seed)
        self.shared = SharedParameters(model)
        self.server_opt = ServerOptimizer(self.config.server_optimizer, self.config.server_lr)
        self.history = History()
        self._ids = np.array(sorted(self.clients), dtype=np.int64)
        self.poisoning = poisoning  # has .apply(updates, round_index, seed=, global_params=) -> updates
        if poisoning is not None and getattr(poisoning.attack, "needs_global", False):
            poisoning.attack.layout = self.shared.layout()
        self.reference = {c.client_id: c for c in reference_clients}
        if set(self.reference) & set(self.clients):
            raise ValueError("reference (root data) clients must not also be sampled clients")
        self.layout = self.shared.layout()
        self._pool: ClientPool | None = None
        #: the round's global parameters (read-only) while its clients train, and whether the model holds them
        self._round_global: np.ndarray | None = None
        self._holding: np.ndarray | None = None
        #: why clients train in this process although ``config.workers`` > 1 (None: they do not)
        self.serial_reason: str | None = None
        if self.config.workers > 1:
            if not getattr(self.trainer, "parallel_safe", False):
                self.serial_reason = f"the local trainer {self.trainer.name!r} keeps per-client state in this process"
            elif _private_tables(model) is None:
                self.serial_reason = "the model has private parameters that are not rows of a user table"

    @property
    def workers(self) -> int:
        """Processes that train clients (1 when they train in this process)."""
        return 1 if self.serial_reason is not None else self.config.workers

    def _ensure_pool(self) -> ClientPool:
        if self._pool is None:
            state = {"model": self.model, "train": self.train, "clients": {**self.clients, **self.reference},
                     "trainer": self.trainer, "config": self.config, "layout": self.layout}
            self._pool = ClientPool(self.workers, state, self.shared.size)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (a later round starts new ones)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _plan(self, round_index: int) -> tuple[np.ndarray, dict[int, str], set[int]]:
        """Sampled clients (sorted), who drops at which stage, and who straggles."""
        cfg = self.config
        sampled = self.sampler.sample(self._ids, round_index)
        rng = np.random.default_rng([cfg.seed, round_index, 0x5B])  # 0x5A seeds the fixed-size sample
        stages = self.aggregator.stages
        drop = rng.random(sampled.size) < cfg.dropout
        stage_idx = rng.integers(0, len(stages), size=sampled.size)
        dropouts = {int(c): stages[s] for c, d, s in zip(sampled, drop, stage_idx) if d}
        slow = rng.random(sampled.size) < cfg.straggler
        return sampled, dropouts, {int(c) for c in sampled[slow]}

    def client_update(self, client_id: int, global_flat: np.ndarray, round_index: int, work: float = 1.0) -> ClientUpdate:
        """Train one client from the global shared parameters (in this process); return its update."""
        rows = self._client_rows(client_id, global_flat, round_index, work)
        return ClientUpdate(rows.client_id, rows.delta.dense(), rows.weight)

    def _client_rows(self, client_id: int, global_flat: np.ndarray, round_index: int, work: float) -> ClientUpdate:
        """:meth:`client_update` with the change as touched rows (:class:`SparseRows`)."""
        client = self.clients[client_id] if client_id in self.clients else self.reference[client_id]
        # Inside a round the model holds the round's (read-only) global parameters between clients: each client
        # puts back the rows it changed, so the next one needs no full copy.
        holds = self._holding is not None and global_flat is self._holding
        self._holding = None
        delta = train_client_rows(self.model, self.shared, self.trainer, self.train, client, global_flat, round_index,
                                  self.config, work, holds_global=holds)
        if global_flat is self._round_global:  # read-only for the round: the model holds it until the next client
            self._holding = global_flat
        return ClientUpdate(client_id, delta, float(client.rows.size))

    def client_updates(
        self, ids: Sequence[int], global_flat: np.ndarray, round_index: int, stragglers: set[int] = frozenset(),
        *, sparse: bool = False,
    ) -> Iterator[ClientUpdate]:
        """The updates of ``ids``, in that order, each as soon as it is ready (trained over the workers)."""
        cfg = self.config

        def work(c: int) -> float:
            return cfg.straggler_work if c in stragglers else 1.0

        if self.workers == 1:
            for c in ids:
                u = self._client_rows(int(c), global_flat, round_index, work(int(c)))
                yield u if sparse else ClientUpdate(u.client_id, u.delta.dense(), u.weight)
            return
        pool = self._ensure_pool()
        pool.start_round(global_flat)
        tables = _private_tables(self.model)
        everyone = {**self.clients, **self.reference}
        tasks = ((int(c), round_index, work(int(c)), [t[everyone[int(c)].users] for t in tables], sparse,
                  pool.generation) for c in ids)
        for cid, delta, weight, rows in pool.map(tasks, batch=self._batch(len(ids))):
            for table, r in zip(tables, rows):
                table[everyone[cid].users] = r
            yield ClientUpdate(cid, delta, weight)

    def _batch(self, n: int) -> int:
        """Clients per message to a worker: about four batches per worker and round, while the updates in
        flight (``2 * workers`` batches, each bounded by its dense size) stay under ``IN_FLIGHT_BYTES``."""
        even = -(-n // (4 * self.workers))
        fits = IN_FLIGHT_BYTES // (2 * self.workers * 4 * max(self.shared.size, 1))
        return max(1, min(even, fits))

    def _check_buffer(self, n: int, round_index: int) -> None:
        """Refuse, before training, a round whose updates must all be held and would not fit the buffer."""
        why = None
        if self.poisoning is not None:
            why = "model poisoning crafts its updates from all the round's updates"
        elif not self.aggregator.streaming:
            protocol = getattr(getattr(self.aggregator, "protocol", None), "name", None)
            why = (f"aggregator {self.aggregator.name!r} must see every update at once"
                   if self.aggregator.needs_individual_updates or protocol is None
                   else f"protocol {protocol!r} holds every client's input until the round's sum")
        if why is None:
            return
        need = n * (self.shared.size + 1) * 4
        if need > self.config.max_buffer_bytes:
            raise ValueError(
                f"round {round_index}: {why}: {n} clients x {self.shared.size:,} float32 values = "
                f"{need / 2**30:.3g} GiB at least, above --max-buffer-gib {self.config.max_buffer_bytes / 2**30:.3g}; "
                "lower --clients-per-round, use --groups G (robust rules over streamed group sums), "
                "or raise --max-buffer-gib"
            )

    def run_round(self, round_index: int) -> RoundRecord:
        cfg = self.config
        sampled, dropouts, stragglers = self._plan(round_index)
        if sampled.size == 0:  # Poisson sampling can draw nobody: nothing to aggregate, nothing released
            return RoundRecord(round=round_index, sampled=0, included=0, excluded={}, stragglers=0,
                               train_seconds=0.0, aggregate_seconds=0.0, error="no client sampled")
        ids = [int(c) for c in sampled]
        self._check_buffer(len(ids), round_index)
        global_flat = self.shared.get()
        global_flat.flags.writeable = False  # clients train from it: nothing may change it during the round
        self._round_global, self._holding = global_flat, global_flat
        t0 = time.perf_counter()
        if self.reference and hasattr(self.aggregator, "set_reference"):
            ref = [self.client_update(c, global_flat, round_index).delta for c in sorted(self.reference)]
            self.aggregator.set_reference(np.mean(ref, axis=0))
        collect = self.poisoning is not None
        sparse = cfg.sparse_updates and self.aggregator.accepts_sparse and not collect
        agg_s = 0.0
        error: AggregationError | None = None
        session = None
        try:
            session = self.aggregator.open_round(ids, round_index=round_index, dropouts=dropouts)
        except AggregationError as exc:
            error = exc
        t_open = time.perf_counter()
        agg_s += t_open - t0
        collected: list[ClientUpdate] = []
        # Each update enters the aggregation as it arrives; after an aggregation error the remaining clients
        # still train (their private state moves on, as it would on their devices) but nothing is added.
        for update in self.client_updates(ids, global_flat, round_index, stragglers, sparse=sparse):
            if collect:
                collected.append(update)
                continue
            if session is not None:
                ta = time.perf_counter()
                try:
                    session.add(update)
                except AggregationError as exc:
                    error, session = exc, None
                agg_s += time.perf_counter() - ta
            del update
        self._round_global = self._holding = None  # the model's parameters change below (the server's step)
        if collect:
            collected = self.poisoning.apply(collected, round_index, seed=cfg.seed, global_params=global_flat)
            ta = time.perf_counter()
            for update in collected if session is not None else ():
                try:
                    session.add(update)
                except AggregationError as exc:
                    error, session = exc, None
                    break
            collected = []
            agg_s += time.perf_counter() - ta
        t1 = time.perf_counter()
        record = RoundRecord(
            round=round_index, sampled=int(sampled.size), included=0, excluded={},
            stragglers=len(stragglers), train_seconds=(t1 - t0) - agg_s, aggregate_seconds=0.0,
        )
        result = None
        if session is not None:
            try:
                result = session.result()
            except AggregationError as exc:
                error = exc
        record.aggregate_seconds = agg_s + time.perf_counter() - t1
        if result is None:
            # The round is lost, never applied wrongly: the model stays at the global state.
            self.shared.set(global_flat)
            record.error = str(error)
            record.excluded = dict(dropouts)
            return record
        lr = server_lr_at(cfg.server_lr, cfg.server_lr_schedule, round_index, cfg.rounds)
        self.shared.set(self.server_opt.step(global_flat, result.delta, lr))
        record.included = len(result.included)
        record.excluded = result.excluded
        record.stats = {**result.stats, "sparse_updates": sparse, "server_lr": lr}
        record.bytes_up_per_client, record.bytes_down_per_client = self._bytes_per_client(
            result.stats, int(sampled.size), global_flat)
        return record

    @staticmethod
    def _bytes_per_client(stats: dict[str, Any], sampled: int, global_flat: np.ndarray) -> tuple[float, float]:
        """Mean bytes up and down per sampled client in one round (see the module docstring)."""
        up = stats.get("upload_bytes")
        if up is None:  # an aggregator that sees each update: it travels as float32, with its weight
            up = sampled * (global_flat.size + 1) * 4
        down = sampled * global_flat.size * global_flat.itemsize + stats.get("download_bytes", 0)
        return float(up) / sampled, float(down) / sampled

    def run(self, on_round: RoundCallback | None = None) -> History:
        torch.manual_seed(self.config.seed)
        try:
            for r in range(1, self.config.rounds + 1):
                record = self.run_round(r)
                if self.evaluate is not None and (r % self.config.eval_every == 0 or r == self.config.rounds):
                    self.model.eval()
                    record.metrics = self.evaluate(self.model)
                self.history.rounds.append(record)
                if on_round is not None:
                    on_round(record)
        finally:
            self.close()
        return self.history


def train_central(
    model: Recommender,
    train: Interactions,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    optimizer: str = "sgd",
    seed: int = 0,
    evaluate: Evaluator | None = None,
    eval_every: int = 1,
    on_epoch: Callable[[int, dict[str, Any] | None, float], None] | None = None,
) -> list[dict[str, Any]]:
    """Train ``model`` on all of ``train`` in one place: the centralised reference.

    Uses the same examples, loss and local optimiser as a federated client, so
    a comparison at equal passes over the data isolates the effect of
    federation. Returns one evaluation record per evaluated epoch.
    """
    trainer = SGDTrainer(optimizer)
    rows = np.arange(len(train))
    torch.manual_seed(seed)
    evaluations = []
    for epoch in range(1, epochs + 1):
        rng = np.random.default_rng([seed, epoch, 0xC0])
        t0 = time.perf_counter()
        examples = model.examples(train, rows, rng)
        trainer.train(model, examples, client_id=-1, epochs=1, batch_size=batch_size, lr=lr, rng=rng)
        seconds = time.perf_counter() - t0
        metrics = None
        if evaluate is not None and (epoch % eval_every == 0 or epoch == epochs):
            model.eval()
            metrics = evaluate(model)
            evaluations.append({"epoch": epoch, **metrics})
        if on_epoch is not None:
            on_epoch(epoch, metrics, seconds)
    return evaluations
