"""Rating and ranking metrics, and the evaluation protocols that produce them.

Rating prediction: ``RMSE = sqrt(mean((p - y)^2))``, ``MAE = mean(|p - y|)``.

Ranking, per evaluation row (a user and one held-out item ``t``):

* **rank** of ``t`` among the candidates, 0-based, under *random tie-breaking
  in expectation*: ``rank = #{j : s_j > s_t} + #{j != t : s_j = s_t} / 2``.
  Ties therefore neither flatter nor punish a model (a constant scorer gets
  the middle rank, not the best one).
* ``HR@K = 1[rank < K]`` and ``NDCG@K = 1[rank < K] / log2(rank + 2)``; with a
  single relevant item the ideal DCG is 1, so NDCG is this one term. Both are
  averaged over rows.

Two candidate sets are reported, and they are not comparable with each other:

* **full catalogue**: every item except the user's *training* items (their
  scores are set to ``-inf``; the row's own test item is never excluded);
* **sampled**: the test item plus ``n_negatives`` items drawn uniformly without
  replacement from the items the user never interacted with (in train or
  test), seeded -- the 1 + 99 protocol of He et al. (NCF, WWW 2017).

Every metric comes with its 95% interval (``<metric>_ci95``), a bootstrap
over the evaluated users (:mod:`fedsecure.stats`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from fedsecure.recsys.data import Interactions
from fedsecure.recsys.split import Split
from fedsecure.stats import CI_SUFFIX, bootstrap_users

__all__ = ["rmse", "mae", "target_ranks", "hit_ndcg", "ranking_rows", "evaluate_ranking", "evaluate_rating", "CI_SUFFIX"]


def _pair(pred, target) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred, dtype=np.float64)
    y = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target, dtype=np.float64)
    if p.shape != y.shape:
        raise ValueError(f"predictions have shape {p.shape} but targets have shape {y.shape}")
    if p.size == 0:
        raise ValueError("cannot compute an error over zero predictions")
    if not np.all(np.isfinite(p)):
        raise ValueError("predictions contain NaN or infinite values")
    return p, y


def rmse(pred, target) -> float:
    """Root mean squared error ``sqrt(mean((pred - target)^2))``."""
    p, y = _pair(pred, target)
    return float(np.sqrt(np.mean((p - y) ** 2)))


def mae(pred, target) -> float:
    """Mean absolute error ``mean(|pred - target|)``."""
    p, y = _pair(pred, target)
    return float(np.mean(np.abs(p - y)))


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based expected rank of ``targets[b]`` in row ``b`` of ``scores`` (``[B, n]``), as float.

    ``rank = #(strictly higher) + #(other items tied) / 2`` -- the expected rank
    when ties are broken uniformly at random. Items excluded beforehand carry
    ``-inf`` and so rank below every finite score. NaN scores are rejected.
    """
    if scores.ndim != 2 or targets.ndim != 1 or targets.shape[0] != scores.shape[0]:
        raise ValueError(f"need scores [B, n] and targets [B]; got {tuple(scores.shape)} and {tuple(targets.shape)}")
    if torch.isnan(scores).any():
        raise ValueError("scores contain NaN")
    t = scores.gather(1, targets.long().view(-1, 1))
    higher = (scores > t).sum(dim=1)
    tied = (scores == t).sum(dim=1) - 1
    return higher.to(torch.float64) + tied.to(torch.float64) / 2


def hit_ndcg(ranks: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row ``HR@k = 1[rank < k]`` and ``NDCG@k = 1[rank < k] / log2(rank + 2)`` for 0-based ranks."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    ranks = ranks.to(torch.float64)
    hit = ranks < k
    ndcg = torch.where(hit, 1.0 / torch.log2(ranks + 2.0), torch.zeros_like(ranks))
    return hit.to(torch.float64), ndcg


def _csr(users: np.ndarray, items: np.ndarray, n_users: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(users, kind="stable")
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.cumsum(np.bincount(users, minlength=n_users), out=indptr[1:])
    return indptr, items[order]


def _gather_segments(indptr: np.ndarray, values: np.ndarray, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each position b in ``users``: (b repeated, the CSR values of users[b]) concatenated."""
    lengths = indptr[users + 1] - indptr[users]
    owner = np.repeat(np.arange(len(users)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    return owner, values[indptr[users][owner] + offsets]


def max_negatives(split: Split) -> int:
    """The largest ``n_negatives`` every test user can supply: the fewest never-interacted items of any test user."""
    train, test = split.train, split.test
    if len(test) == 0:
        return 0
    n_items = train.n_items
    all_users = np.concatenate([train.users, test.users])
    all_items = np.concatenate([train.items, test.items])
    n_seen = np.bincount(np.unique(all_users * n_items + all_items) // n_items, minlength=train.n_users)
    return int((n_items - n_seen[np.unique(test.users)]).min())


def ranking_rows(
    score_fn: Callable[[np.ndarray], torch.Tensor],
    split: Split,
    *,
    k: int = 10,
    n_negatives: int = 99,
    seed: int = 0,
    batch_size: int = 256,
) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """Per-row HR@k and NDCG@k of ``score_fn`` on ``split.test``: ``(users, {metric: values}, protocol)``.

    Row ``i`` is one (user, test item) pair of ``split.test`` (sorted by user,
    stably), owned by ``users[i]``; the same split and seed give the same rows
    for every model, so two models' rows pair up (``fedsecure.stats.paired_users``).
    """
    train, test = split.train, split.test
    n_items = train.n_items
    if len(test) == 0:
        raise ValueError("the split has no test interactions to evaluate")
    if (test.n_users, test.n_items) != (train.n_users, n_items):
        raise ValueError(
            f"train and test id spaces differ: ({train.n_users}, {n_items}) vs ({test.n_users}, {test.n_items})"
        )
    if k < 1 or batch_size < 1 or n_negatives < 0:
        raise ValueError(f"need k >= 1, batch_size >= 1, n_negatives >= 0; got {k}, {batch_size}, {n_negatives}")
    train_ptr, train_items = _csr(train.users, train.items, train.n_users)
    all_users = np.concatenate([train.users, test.users])
    all_items = np.concatenate([train.items, test.items])
    seen_ptr, seen_items = _csr(all_users, all_items, train.n_users)
    if n_negatives:
        # Distinct (user, item) pairs: raw logs may repeat a pair.
        n_seen = np.bincount(np.unique(all_users * n_items + all_items) // n_items, minlength=train.n_users)
        test_users = np.unique(test.users)
        short = test_users[n_items - n_seen[test_users] < n_negatives]
        if len(short):
            u = int(short[0])
            raise ValueError(
                f"user {u} has only {n_items - n_seen[u]} never-interacted items, fewer than "
                f"n_negatives={n_negatives} (--negatives on the command line); the largest that works here is "
                f"{int((n_items - n_seen[test_users]).min())}"
            )
    rng = np.random.default_rng(seed)

    order = np.argsort(test.users, kind="stable")
    eval_users, eval_items = test.users[order], test.items[order]
    hits, ndcgs, s_hits, s_ndcgs = [], [], [], []
    for lo in range(0, len(eval_users), batch_size):
        users, targets = eval_users[lo : lo + batch_size], eval_items[lo : lo + batch_size]
        uniq, inverse = np.unique(users, return_inverse=True)
        scores = score_fn(uniq)
        if not isinstance(scores, torch.Tensor):
            scores = torch.as_tensor(np.asarray(scores))
        if tuple(scores.shape) != (len(uniq), n_items):
            raise ValueError(f"score_fn returned shape {tuple(scores.shape)}, expected ({len(uniq)}, {n_items})")
        scores = scores.detach().to("cpu", torch.float32)[torch.from_numpy(inverse)]  # a copy, one row per eval row
        t = torch.from_numpy(targets)
        target_scores = scores.gather(1, t.view(-1, 1))

        if n_negatives:
            # Uniform sample without replacement from never-interacted items: the n smallest
            # of i.i.d. uniform keys, with seen items' keys pushed past every unseen one.
            # One key row per eval row, drawn in row order, so batch_size does not change the sample.
            keys = rng.random((len(users), n_items))
            owner, items = _gather_segments(seen_ptr, seen_items, users)
            keys[owner, items] = 2.0
            negatives = np.argpartition(keys, n_negatives - 1, axis=1)[:, :n_negatives]
            candidates = torch.cat([target_scores, scores.gather(1, torch.from_numpy(negatives))], dim=1)
            h, n = hit_ndcg(target_ranks(candidates, torch.zeros(len(users), dtype=torch.long)), k)
            s_hits.append(h)
            s_ndcgs.append(n)

        owner, items = _gather_segments(train_ptr, train_items, users)
        scores[torch.from_numpy(owner), torch.from_numpy(items)] = -torch.inf
        scores.scatter_(1, t.view(-1, 1), target_scores)  # the row's own test item is never excluded
        h, n = hit_ndcg(target_ranks(scores, t), k)
        hits.append(h)
        ndcgs.append(n)

    n_users = len(np.unique(test.users))
    rows = {f"hr@{k}": torch.cat(hits).numpy(), f"ndcg@{k}": torch.cat(ndcgs).numpy()}
    if n_negatives:
        rows[f"hr@{k}_sampled{n_negatives}"] = torch.cat(s_hits).numpy()
        rows[f"ndcg@{k}_sampled{n_negatives}"] = torch.cat(s_ndcgs).numpy()
    sampled = (
        f"; sampled: the test item + {n_negatives} negatives drawn uniformly without replacement from the "
        f"user's never-interacted items (seed {seed})"
        if n_negatives
        else ""
    )
    protocol = (
        f"{split.protocol}. Ranking over {len(test)} (user, test item) rows of {n_users} users; "
        f"0-based rank with ties counted half; HR@{k} = [rank < {k}], NDCG@{k} = [rank < {k}] / log2(rank + 2). "
        f"Full catalogue: all {n_items} items except the user's training items{sampled}"
    )
    return eval_users, rows, protocol


def evaluate_ranking(
    score_fn: Callable[[np.ndarray], torch.Tensor],
    split: Split,
    *,
    k: int = 10,
    n_negatives: int = 99,
    seed: int = 0,
    batch_size: int = 256,
) -> dict[str, Any]:
    """HR@k and NDCG@k of ``score_fn`` on ``split.test``, full-catalogue and sampled, with 95% intervals.

    ``score_fn(users)`` returns float scores ``[len(users), n_items]``. Every
    (user, test item) pair of ``split.test`` is one evaluation row. Keys:
    ``hr@{k}``, ``ndcg@{k}``, ``hr@{k}_sampled{n}``, ``ndcg@{k}_sampled{n}``
    (omitted when ``n_negatives == 0``), each with ``<metric>_ci95`` beside
    it (bootstrap over the evaluated users, :func:`fedsecure.stats.bootstrap_users`),
    ``n_eval_users``, ``n_eval_rows`` and ``protocol``. The negatives come
    from ``numpy.random.default_rng(seed)``, so a seed fixes them for every
    model compared.
    """
    users, rows, protocol = ranking_rows(score_fn, split, k=k, n_negatives=n_negatives, seed=seed,
                                         batch_size=batch_size)
    result: dict[str, Any] = {}
    for name, values in rows.items():
        result[name] = float(values.mean())
        result[name + CI_SUFFIX] = list(bootstrap_users(users, values, seed=seed))
    result["n_eval_users"] = int(np.unique(users).size)
    result["n_eval_rows"] = int(users.size)
    result["protocol"] = protocol
    return result


def evaluate_rating(predict_fn: Callable[[np.ndarray, np.ndarray], np.ndarray], test: Interactions) -> dict[str, Any]:
    """RMSE and MAE of ``predict_fn(users, items)`` against ``test.ratings``, each with a 95% interval
    (``<metric>_ci95``, bootstrap over the test users)."""
    if len(test) == 0:
        raise ValueError("the test set is empty")
    pred = predict_fn(test.users, test.items)
    p, y = _pair(pred, test.ratings)
    err = p - y
    return {
        "rmse": rmse(pred, test.ratings),
        "rmse" + CI_SUFFIX: list(bootstrap_users(test.users, err**2, root=True)),
        "mae": mae(pred, test.ratings),
        "mae" + CI_SUFFIX: list(bootstrap_users(test.users, np.abs(err))),
    }
