"""Client-local training: how one client turns its examples into new parameters.

The round loop calls a :class:`LocalTrainer` once per sampled client with the
model already holding the round's global shared parameters and the client's
own private ones. Plain training is :class:`SGDTrainer`; example-level DP-SGD
(``fedsecure.dp.sgd``) implements the same interface, so privacy at the client
is a choice of trainer, not a change to the loop.

A model here is any ``nn.Module`` with a ``loss(batch) -> Tensor`` method and
batches are dicts of tensors whose first dimension indexes examples.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

Batch = dict[str, torch.Tensor]

OPTIMIZERS = ("sgd", "adam")


def batch_size_of(examples: Batch) -> int:
    return next(iter(examples.values())).shape[0]


def minibatches(examples: Batch, batch_size: int, rng: np.random.Generator) -> list[Batch]:
    """Shuffled minibatches covering every example once (the last one may be smaller)."""
    n = batch_size_of(examples)
    perm = torch.from_numpy(rng.permutation(n))
    return [{k: v[idx] for k, v in examples.items()} for idx in perm.split(batch_size)]


def make_optimizer(name: str, params: Any, lr: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; choose one of: {', '.join(OPTIMIZERS)}")


@contextmanager
def sparse_embedding_gradients(model: nn.Module, enabled: bool) -> Iterator[None]:
    """Let every ``nn.Embedding`` of ``model`` produce sparse gradients while inside.

    With plain SGD a step then costs in proportion to the rows a batch looks
    up rather than to the size of the tables: the difference between a
    federated round dominated by catalogue-sized zero-fills and one that is
    not. Only for models whose tables are used by lookup alone (they declare
    ``sparse_gradients = True``); dense uses of a table's weight would mix
    sparse and dense gradients.
    """
    embeddings = [m for m in model.modules() if isinstance(m, nn.Embedding)] if enabled else []
    before = [m.sparse for m in embeddings]
    for m in embeddings:
        m.sparse = True
    try:
        yield
    finally:
        for m, s in zip(embeddings, before):
            m.sparse = s


@contextmanager
def intra_op_threads(n: int) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads while inside, restoring the previous count.

    A local step works on a few hundred rows: its kernels are far too small
    for intra-op parallelism to pay for its synchronisation, and when the
    cores are shared with other processes every step waits for the slowest
    thread to be scheduled (measured here: an epoch of MF at batch 256 ran
    10x slower with 2 threads than with 1 on a loaded 2-core machine).
    """
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != before:
            torch.set_num_threads(before)


class LocalTrainer(ABC):
    """Trains a model in place on one client's examples."""

    name: str = "abstract"
    #: True when ``train`` keeps no state across calls, so clients may train in other processes
    parallel_safe: bool = False

    @abstractmethod
    def train(
        self,
        model: nn.Module,
        examples: Batch,
        *,
        client_id: int,
        epochs: int,
        batch_size: int,
        lr: float,
        rng: np.random.Generator,
        work_fraction: float = 1.0,
    ) -> int:
        """Train ``model`` in place; return the number of optimizer steps taken.

        ``work_fraction`` < 1 simulates a straggler that stops early: only that
        fraction of the steps (at least one) is taken.
        """

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def privacy_report(self) -> dict[str, Any] | None:
        """Privacy spent so far (DP trainers); None for non-private training."""
        return None


class SGDTrainer(LocalTrainer):
    """Plain minibatch training with a fresh optimizer per client and round."""

    name = "plain"
    parallel_safe = True

    def __init__(self, optimizer: str = "sgd", *, threads: int = 1) -> None:
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose one of: {', '.join(OPTIMIZERS)}")
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        self.optimizer = optimizer
        self.threads = threads

    def train(
        self,
        model: nn.Module,
        examples: Batch,
        *,
        client_id: int,
        epochs: int,
        batch_size: int,
        lr: float,
        rng: np.random.Generator,
        work_fraction: float = 1.0,
    ) -> int:
        opt = make_optimizer(self.optimizer, model.parameters(), lr)
        batcher = getattr(model, "minibatches", minibatches)  # a model may batch its own way (SASRec: by length)
        batches = [b for _ in range(epochs) for b in batcher(examples, batch_size, rng)]
        if work_fraction < 1.0:
            batches = batches[: max(1, int(len(batches) * work_fraction))]
        model.train()
        sparse = self.optimizer == "sgd" and getattr(model, "sparse_gradients", False)
        with sparse_embedding_gradients(model, sparse), intra_op_threads(self.threads):
            for batch in batches:
                opt.zero_grad(set_to_none=True)
                model.loss(batch).backward()
                opt.step()
        return len(batches)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "optimizer": self.optimizer, "threads": self.threads}
