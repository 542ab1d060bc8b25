"""The workload: a seeded synthetic implicit-feedback data set, split by user over the SuperNodes, and an MF model.

Each SuperNode is a silo holding a disjoint set of users. The item side of the
model (item factors and biases) is shared and securely aggregated; the user
factors are private: they stay in the node's ``Context`` and never leave it.
"""

from __future__ import annotations

import numpy as np
import torch

from fedsecure.fl.local import SGDTrainer
from fedsecure.recsys.models import ImplicitMatrixFactorization
from fedsecure.recsys.partition import cross_silo
from fedsecure.recsys.split import leave_last_out
from fedsecure.recsys.synthetic import generate


def load_silo(run_config, partition_id: int, num_partitions: int):
    """The training interactions and this silo's rows (the same data on every node: it is seeded)."""
    data = generate(n_users=int(run_config["n-users"]), n_items=int(run_config["n-items"]), mean_interactions=20.0,
                    rank=4, seed=int(run_config["data-seed"]))
    train = leave_last_out(data).train
    silos = cross_silo(train, num_partitions)
    return train, silos[partition_id % len(silos)]


def build_model(run_config) -> ImplicitMatrixFactorization:
    torch.manual_seed(int(run_config["data-seed"]))
    return ImplicitMatrixFactorization(int(run_config["n-users"]), int(run_config["n-items"]),
                                       dim=int(run_config["embedding-dim"]))


def shared_arrays(model) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().astype(np.float32).copy() for _, p in model.shared_parameters()]


def set_shared(model, arrays) -> None:
    with torch.no_grad():
        for (_, p), a in zip(model.shared_parameters(), arrays):
            p.copy_(torch.from_numpy(np.asarray(a, dtype=np.float32)))


def private_arrays(model) -> list[np.ndarray]:
    return [p.detach().cpu().numpy().copy() for _, p in model.private_parameters()]


def set_private(model, arrays) -> None:
    with torch.no_grad():
        for (_, p), a in zip(model.private_parameters(), arrays):
            p.copy_(torch.from_numpy(np.asarray(a)))


def train(model, train_data, rows, run_config, seed: int) -> float:
    """Local epochs of SGD on this silo's rows; returns the mean training loss after training."""
    rng = np.random.default_rng(seed)
    examples = model.examples(train_data, rows, rng)
    SGDTrainer("sgd").train(model, examples, client_id=seed, epochs=int(run_config["local-epochs"]),
                            batch_size=int(run_config["batch-size"]), lr=float(run_config["learning-rate"]), rng=rng)
    with torch.no_grad():
        return float(model.loss(model.examples(train_data, rows, rng)))
