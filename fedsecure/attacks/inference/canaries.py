"""Canaries for the one-run DP audit of a federated run (Steinke, Nasr & Jagielski, NeurIPS 2023).

A DP run inserts ``m`` canaries into its training data, each independently
with probability 1/2, trains once, scores every canary, and turns the
auditor's guesses into a lower bound on epsilon
(:func:`fedsecure.attacks.inference.dp_audit.one_run_audit`), reported beside
the accountant's epsilon. The canary is the unit the DP claim protects:

* ``kind="users"`` (user-level DP, ``--dp user-central`` / ``user-distributed``):
  ``m`` synthetic users with new ids, each with as many interactions as a
  randomly drawn real user has and with items drawn without replacement in
  proportion to their training popularity (plus one), so canaries look like
  the data. An included canary is an ordinary client. Score: minus the mean
  loss of the canary's data after fitting a fresh user embedding against the
  released shared parameters
  (:func:`fedsecure.attacks.inference.membership.fit_user_losses`), which is
  all the server releases about a user.
* ``kind="interactions"`` (example-level DP-SGD, ``--dp dpsgd``): ``m``
  (user, item) pairs, the user drawn among real users with training data, the
  item by popularity among those the user never interacted with. Score: the
  model's standardised score of the pair
  (:func:`fedsecure.attacks.inference.membership.interaction_statistic`).
  Each training row gives the model one positive example and its sampled
  negatives; the canary's signal is its positive.

Which canaries are included is drawn from ``numpy.random.default_rng`` seeded
by the run seed: the audit is an evaluation, not a secret, and a seeded draw
makes it reproducible. The canaries have no test rows, so the run's utility
metrics are measured on real users only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from fedsecure.recsys.data import Interactions
from fedsecure.recsys.split import Split

__all__ = ["CanarySet", "KINDS", "default_canaries", "insert_canaries", "score_canaries", "canary_audit"]

KINDS = ("users", "interactions")


@dataclass(frozen=True, eq=False)
class CanarySet:
    """The canaries of one run: who they are, their data, and which were included."""

    kind: str
    included: np.ndarray  # bool [m]
    users: np.ndarray  # int [m]: the canary user (kind "users") or the user of the canary pair
    data: Interactions  # every canary's rows (included or not), in the run's id space
    owner: np.ndarray  # int [len(data)]: the canary each row belongs to

    @property
    def m(self) -> int:
        return int(self.included.size)


def default_canaries(kind: str, population: int, train_rows: int) -> int:
    """A small default: a tenth of the users (user canaries) or a hundredth of the rows, within [16, 100]."""
    base = population // 10 if kind == "users" else train_rows // 100
    return int(min(100, max(16, base)))


def _with_users(data: Interactions, n_users: int, **columns: np.ndarray) -> Interactions:
    raw = np.concatenate([np.asarray(data.raw_user_ids), -1 - np.arange(n_users - data.n_users)]) \
        if n_users > data.n_users else data.raw_user_ids
    cols = {"users": data.users, "items": data.items, "ratings": data.ratings, "timestamps": data.timestamps}
    cols.update(columns)
    return Interactions(n_users=n_users, n_items=data.n_items, raw_user_ids=raw, raw_item_ids=data.raw_item_ids,
                        source=data.source, **cols)


def insert_canaries(split: Split, m: int, kind: str, seed: int, *, items: str = "popularity") -> tuple[Split, CanarySet]:
    """``split`` with the included canaries added to its training rows, and the canary set.

    User canaries take ids ``n_users .. n_users + m - 1`` (both tables of the
    split get the larger id space; the test table gains no rows).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown canary kind {kind!r}; choose one of: {', '.join(KINDS)}")
    if m < 1:
        raise ValueError(f"need at least one canary, got {m}")
    train, test = split.train, split.test
    rng = np.random.default_rng([seed, 0xCA7A])
    included = rng.random(m) < 0.5
    if items not in ("uniform", "popularity"):
        raise ValueError(f"canary items must be 'uniform' or 'popularity', got {items!r}")
    weight = np.bincount(train.items, minlength=train.n_items).astype(np.float64) + 1.0
    if items == "uniform":
        weight = np.ones(train.n_items)
    t_max = int(train.timestamps.max()) if len(train) else 0
    rating_pool = train.ratings if len(train) else np.array([1.0], dtype=np.float32)
    if kind == "users":
        n0 = train.n_users
        counts = np.bincount(train.users, minlength=n0)
        active = counts[counts > 0]
        sizes = np.minimum(rng.choice(active, size=m), train.n_items)
        users, items, owner = [], [], []
        for j, n in enumerate(sizes):
            # Gumbel top-k: n distinct items with probability proportional to weight
            keys = np.log(weight) + rng.gumbel(size=weight.size)
            chosen = np.argpartition(-keys, n - 1)[:n]
            users.append(np.full(n, n0 + j))
            items.append(chosen)
            owner.append(np.full(n, j))
        u, i, o = np.concatenate(users), np.concatenate(items), np.concatenate(owner)
        canary_users = n0 + np.arange(m)
        n_users = n0 + m
    else:
        n_users = train.n_users
        all_users = np.concatenate([train.users, test.users]).astype(np.int64)
        all_items = np.concatenate([train.items, test.items]).astype(np.int64)
        touched = np.bincount(np.unique(all_users * train.n_items + all_items) // train.n_items, minlength=n_users)
        # users with training rows who have not interacted with the whole catalogue
        active = np.flatnonzero((np.bincount(train.users, minlength=n_users) > 0) & (touched < train.n_items))
        if active.size == 0:
            raise ValueError("no user can take a canary interaction: every user has interacted with every item")
        seen = set((all_users * train.n_items + all_items).tolist())
        u = rng.choice(active, size=m)
        i = np.empty(m, dtype=np.int64)
        p = weight / weight.sum()
        for j in range(m):
            # a user touches a small part of the catalogue: a few draws find a new item
            for item in rng.choice(train.n_items, size=64, p=p):
                if int(u[j]) * train.n_items + int(item) not in seen:
                    break
            else:  # a user who has seen nearly everything: any item they have not seen
                unseen = [x for x in range(train.n_items) if int(u[j]) * train.n_items + x not in seen]
                item = unseen[int(rng.integers(len(unseen)))] if unseen else int(rng.integers(train.n_items))
            seen.add(int(u[j]) * train.n_items + int(item))
            i[j] = int(item)
        o = np.arange(m)
        canary_users = u
    canary_data = _with_users(
        train.select(np.zeros(0, dtype=np.int64)), n_users,
        users=u, items=i, ratings=rng.choice(rating_pool, size=u.size),
        timestamps=t_max + 1 + np.arange(u.size),
    )
    take = included[o]
    new_train = _with_users(
        train, n_users,
        users=np.concatenate([train.users, u[take]]), items=np.concatenate([train.items, i[take]]),
        ratings=np.concatenate([train.ratings, canary_data.ratings[take]]),
        timestamps=np.concatenate([train.timestamps, canary_data.timestamps[take]]),
    )
    new_test = _with_users(test, n_users)
    protocol = (f"{split.protocol}; plus {int(included.sum())} of {m} audit canaries ({kind}) in train only")
    return Split(train=new_train, test=new_test, protocol=protocol), CanarySet(kind, included, canary_users,
                                                                                canary_data, o)


def score_canaries(model: Any, canaries: CanarySet, train: Interactions, *, fit_steps: int = 30,
                   seed: int = 0) -> np.ndarray:
    """Each canary's membership score under ``model`` (higher = looks included)."""
    from fedsecure.attacks.inference.membership import fit_user_losses, interaction_statistic

    if canaries.kind == "users":
        return -fit_user_losses(model, canaries.data, canaries.users, steps=fit_steps, seed=seed)
    return interaction_statistic(model, canaries.data, np.arange(len(canaries.data)), train)


def canary_audit(model: Any, canaries: CanarySet, train: Interactions, *, delta: float,
                 confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The one-run audit of ``model``: scores the canaries and bounds epsilon from below."""
    from fedsecure.attacks.inference.dp_audit import one_run_audit

    scores = score_canaries(model, canaries, train, seed=seed)
    audit = one_run_audit(scores, canaries.included, delta=delta, confidence=confidence)
    audit["kind"] = canaries.kind
    return audit
