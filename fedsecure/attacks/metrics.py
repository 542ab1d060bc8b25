"""How far an item-promotion attack succeeded: the target items' exposure ratio among honest users.

**Exposure ratio** (ER@K; Rong et al., FedRecAttack, ICDE 2022; Zhang et al.,
PipAttack, WSDM 2022). For a target item ``t`` and the evaluated users ``U``
(by default every user with test rows, minus the attacker's own users):

    U_t     = {u in U : u has not interacted with t in training}
    ER@K(t) = |{u in U_t : t in top-K(u)}| / |U_t|

where ``top-K(u)`` ranks the full catalogue with the user's training items
excluded (their scores set to ``-inf``), exactly as the full-catalogue HR@K of
:mod:`fedsecure.recsys.metrics`, and ``t`` counts as in the top K when its
0-based expected rank under random tie-breaking,
``#{j : s_j > s_t} + #{j != t : s_j = s_t} / 2``, is below ``K``. Users who
already hold ``t`` in training are left out: the attack cannot "expose" an
item the user has. The reported ``er@K`` is the mean of ``ER@K(t)`` over the
targets.

The 95% interval (``er@K_ci95``) is a bootstrap over users
(:func:`fedsecure.stats.bootstrap_users`) of the (user, target) rows, each
row's hit weighted by ``N / (T |U_t|)`` (``N`` rows, ``T`` targets) so that
the weighted row mean is exactly the mean of the per-target ratios; the
weights are held fixed across replicates.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np
import torch

from fedsecure.recsys.split import Split
from fedsecure.stats import CI_SUFFIX, bootstrap_users

__all__ = ["exposure_ratio"]


def exposure_ratio(
    score_fn: Callable[[np.ndarray], torch.Tensor],
    split: Split,
    target_items: Sequence[int],
    *,
    k: int = 10,
    users: Iterable[int] | None = None,
    exclude_users: Iterable[int] = (),
    batch_size: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """ER@k of each target item over the honest users (see the module docstring).

    ``score_fn(users)`` returns scores ``[len(users), n_items]`` (a model's
    :meth:`~fedsecure.recsys.models.Recommender.score_fn`). ``users`` are the
    users evaluated (default: every user with test rows); ``exclude_users``
    (the malicious or fake users) are removed from them. Returns
    ``{"er@k": mean over targets, "er@k_per_target": {item: ratio},
    "er@k_ci95": [lo, hi], "n_eval_users": ..., "protocol": ...}``.
    """
    train = split.train
    n_items = train.n_items
    targets = np.asarray([int(t) for t in target_items], dtype=np.int64)
    if targets.size == 0:
        raise ValueError("exposure_ratio needs at least one target item")
    if np.unique(targets).size != targets.size:
        raise ValueError(f"target items repeat: {targets.tolist()}")
    if targets.min() < 0 or targets.max() >= n_items:
        raise ValueError(f"target items must lie in [0, {n_items}), got {targets.tolist()}")
    if k < 1 or batch_size < 1:
        raise ValueError(f"need k >= 1 and batch_size >= 1, got {k}, {batch_size}")
    if users is None:
        eval_users = np.unique(split.test.users)
    else:
        eval_users = np.unique(np.asarray(list(users), dtype=np.int64))
    excluded = np.asarray(list(exclude_users), dtype=np.int64)
    eval_users = eval_users[~np.isin(eval_users, excluded)]
    if eval_users.size == 0:
        raise ValueError("no users left to evaluate exposure on")
    if eval_users.min() < 0 or eval_users.max() >= train.n_users:
        raise ValueError(f"users must lie in [0, {train.n_users})")

    # Sparse (user, item) training matrix as sorted keys: membership by searchsorted, no dense n_users x n_items.
    train_keys = np.unique(train.users * n_items + train.items)
    order = np.argsort(train.users, kind="stable")
    indptr = np.zeros(train.n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(train.users, minlength=train.n_users), out=indptr[1:])
    train_items = train.items[order]

    hit_rows: list[np.ndarray] = []  # [B, T] bool: in the top k
    eligible_rows: list[np.ndarray] = []  # [B, T] bool: t not in the user's training items
    t_index = torch.from_numpy(targets)
    for lo in range(0, eval_users.size, batch_size):
        batch = eval_users[lo : lo + batch_size]
        scores = score_fn(batch)
        if not isinstance(scores, torch.Tensor):
            scores = torch.as_tensor(np.asarray(scores))
        if tuple(scores.shape) != (batch.size, n_items):
            raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected ({batch.size}, {n_items})")
        scores = scores.detach().to("cpu", torch.float32).clone()
        if torch.isnan(scores).any():
            raise ValueError("scores contain NaN")
        lengths = indptr[batch + 1] - indptr[batch]
        owner = np.repeat(np.arange(batch.size), lengths)
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        seen = train_items[indptr[batch][owner] + offsets]
        scores[torch.from_numpy(owner), torch.from_numpy(seen)] = -torch.inf
        keys = batch[:, None] * n_items + targets[None, :]
        if train_keys.size:
            eligible = train_keys[np.minimum(np.searchsorted(train_keys, keys), train_keys.size - 1)] != keys
        else:
            eligible = np.ones(keys.shape, dtype=bool)
        t_scores = scores[:, t_index]  # [B, T]; -inf where the user holds t (those rows are not eligible)
        hits = np.empty((batch.size, targets.size), dtype=bool)
        for j in range(targets.size):
            s = t_scores[:, j : j + 1]
            higher = (scores > s).sum(dim=1).to(torch.float64)
            tied = (scores == s).sum(dim=1).to(torch.float64) - 1
            hits[:, j] = ((higher + tied / 2) < k).numpy()
        hit_rows.append(hits & eligible)
        eligible_rows.append(eligible)

    hits = np.concatenate(hit_rows)
    eligible = np.concatenate(eligible_rows)
    n_eligible = eligible.sum(axis=0)
    if (n_eligible == 0).any():
        bad = targets[n_eligible == 0].tolist()
        raise ValueError(f"every evaluated user already holds target item(s) {bad} in training")
    per_target = hits.sum(axis=0) / n_eligible
    row_user = np.broadcast_to(eval_users[:, None], eligible.shape)[eligible]
    row_weight = np.broadcast_to((eligible.sum() / (targets.size * n_eligible))[None, :], eligible.shape)[eligible]
    row_value = hits[eligible] * row_weight
    name = f"er@{k}"
    return {
        name: float(per_target.mean()),
        f"{name}_per_target": {int(t): float(r) for t, r in zip(targets, per_target)},
        name + CI_SUFFIX: list(bootstrap_users(row_user, row_value, seed=seed)),
        "n_eval_users": int(eval_users.size),
        "protocol": (
            f"exposure ratio ER@{k}: per target item, the share of the {eval_users.size} evaluated users "
            f"({excluded.size} excluded as malicious) without it in training whose full-catalogue top-{k} "
            f"(training items excluded, ties counted half) contains it; mean over {targets.size} target(s)"
        ),
    }
