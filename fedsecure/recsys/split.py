"""Per-user train / test splits, each stating its protocol in words.

* :func:`leave_last_out` -- the ranking protocol (He et al., NCF, WWW 2017):
  each user's latest interactions by timestamp are the test items.
* :func:`random_holdout` -- the rating-prediction protocol: a random fraction
  of each user's ratings is held out.

Both are per user, so every test user also has training data and the model
has an embedding for them. Train and test keep the table's row order and its
id space.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsecure.recsys.data import Interactions

__all__ = ["Split", "leave_last_out", "random_holdout"]


@dataclass(frozen=True, eq=False)
class Split:
    """A train / test pair over one id space, and the protocol that produced it."""

    train: Interactions
    test: Interactions
    protocol: str


def _position_in_user(data: Interactions, order: np.ndarray, indptr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the rows in ``order`` (grouped by user): their 0-based position within the user, and the user's count."""
    users = data.users[order]
    counts = np.diff(indptr)
    position = np.arange(len(order), dtype=np.int64) - indptr[users]
    return position, counts[users]


def _split(data: Interactions, test_rows: np.ndarray, protocol: str) -> Split:
    is_test = np.zeros(len(data), dtype=bool)
    is_test[test_rows] = True
    return Split(train=data.select(~is_test), test=data.select(is_test), protocol=protocol)


def leave_last_out(data: Interactions, n_test: int = 1) -> Split:
    """Per user, the latest ``n_test`` interactions go to test; the rest to train.

    "Latest" is by timestamp, ties broken by row order (the later row counts as
    later). Users with ``<= n_test`` interactions stay entirely in train, so
    every test user keeps at least one training interaction.
    """
    if n_test < 1:
        raise ValueError(f"n_test must be >= 1, got {n_test}")
    indptr, order = data.user_index()
    position, count = _position_in_user(data, order, indptr)
    test_rows = order[(count > n_test) & (position >= count - n_test)]
    n_test_users = int(np.count_nonzero(np.diff(indptr) > n_test))
    protocol = (
        f"leave-last-out: per user, the latest {n_test} interaction(s) by timestamp (ties: later row) are the "
        f"test set; users with <= {n_test} interactions stay entirely in train "
        f"({len(test_rows)} test rows over {n_test_users} users, {len(data) - len(test_rows)} train rows)"
    )
    return _split(data, test_rows, protocol)


def random_holdout(data: Interactions, test_fraction: float = 0.2, seed: int = 0) -> Split:
    """Per user, a uniformly random ``round(test_fraction * n_u)`` of the user's rows go to test.

    The count is capped at ``n_u - 1`` so every user keeps a training row
    (users with a single row stay in train). Seeded: the same data and seed
    give the same split.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    counts = np.bincount(data.users, minlength=data.n_users)
    # A random key per row; sorting by (user, key) is a uniform permutation within each user.
    order = np.lexsort((rng.random(len(data)), data.users))
    indptr = np.zeros(data.n_users + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    position, count = _position_in_user(data, order, indptr)
    n_test_u = np.minimum(np.floor(test_fraction * count + 0.5), count - 1)
    test_rows = order[position < n_test_u]
    protocol = (
        f"random holdout: per user, a uniformly random {test_fraction:g} of the ratings (rounded, at least one "
        f"kept for training) are the test set, seed {seed} ({len(test_rows)} test rows, "
        f"{len(data) - len(test_rows)} train rows)"
    )
    return _split(data, test_rows, protocol)


def choose_users(data: Interactions, fraction: float, seed: int) -> np.ndarray:
    """A seeded uniform ``round(fraction * U)`` of the ``U`` users with any interaction (sorted dense ids)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--pretrain-users must be a fraction in (0, 1), got {fraction}")
    active = np.flatnonzero(np.bincount(data.users, minlength=data.n_users))
    k = int(round(fraction * active.size))
    if k < 1 or k >= active.size:
        raise ValueError(f"--pretrain-users {fraction:g} of {active.size} users leaves "
                         f"{'no public' if k < 1 else 'no private'} user")
    rng = np.random.default_rng([seed, 0x9B1C])
    return np.sort(rng.choice(active, size=k, replace=False))


def split_off_users(split: Split, users: np.ndarray) -> tuple[Interactions, Split]:
    """Take ``users`` wholly out of ``split``: ``(their rows, train and test alike; the rest as a Split)``.

    Used for pretraining on a public part of the users: their data trains the
    model centrally, and they are neither federated clients nor evaluated.
    The remaining split keeps the id space; its protocol says who was removed.
    """
    users = np.asarray(users, dtype=np.int64)
    public_train = np.isin(split.train.users, users)
    public_test = np.isin(split.test.users, users)
    train, test = split.train.select(public_train), split.test.select(public_test)
    public = Interactions(
        users=np.concatenate([train.users, test.users]), items=np.concatenate([train.items, test.items]),
        ratings=np.concatenate([train.ratings, test.ratings]),
        timestamps=np.concatenate([train.timestamps, test.timestamps]), n_users=train.n_users,
        n_items=train.n_items, raw_user_ids=train.raw_user_ids, raw_item_ids=train.raw_item_ids, source=train.source,
    )
    rest_test = split.test.select(~public_test)
    protocol = (f"{split.protocol}; the {users.size} public (pretraining) users are removed from training and "
                f"evaluation: {len(np.unique(rest_test.users))} remaining users are evaluated")
    return public, Split(train=split.train.select(~public_train), test=rest_test, protocol=protocol)
