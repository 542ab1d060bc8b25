"""A seeded synthetic interaction set with the structure of real recommendation data.

The generative story (all draws from ``numpy.random.default_rng(seed)``; this
is simulation data, not secret randomness):

1. **Item popularity** is Zipfian: the item of popularity rank ``k`` (a random
   permutation of the ids) has prior weight ``pi_k ∝ (k + 1) ** -s`` with
   ``s = popularity_exponent``.
2. **Low-rank preferences**: user and item factors with i.i.d. ``N(0, 1/r)``
   entries give an affinity ``a_ui = sqrt(r) <p_u, q_i>`` of unit variance.
3. **Heavy-tailed activity**: user ``u`` makes ``n_u`` interactions,
   ``n_u`` log-normal (sigma 0.8) with mean ``mean_interactions``, clipped to
   ``[5, n_items // 2]``.
4. **Which items**: ``u`` consumes ``n_u`` distinct items drawn without
   replacement with probability ``∝ pi_i * exp(beta * a_ui)`` (Gumbel top-k,
   ``beta = 2``). Popularity alone is thus a meaningful baseline, while the
   affinity term is what a factor model can learn on top of it (a rank-16
   truncated SVD of the training matrix roughly doubles popularity's
   full-catalogue HR@10 at the default size). The observed rank-frequency
   slope is flatter than ``-s`` because preferences spread consumption.
5. **Ratings** (explicit, 1..5 in half stars) are ``3.5 + 0.8 a_ui + b_u + b_i +
   noise`` rounded to the nearest half and clipped; every row is also an
   implicit interaction.
6. **Timestamps** increase per user from a user-specific start. Items are
   consumed in an order that drifts through the latent space (sorted by a
   per-user random direction ``w_u`` plus noise), so consecutive items are
   related and a sequential model has signal to find.
"""

from __future__ import annotations

import numpy as np

from fedsecure.recsys.data import Interactions

__all__ = ["generate"]

_AFFINITY_WEIGHT = 2.0  # beta: how strongly preference (vs. popularity) drives consumption
_MIN_INTERACTIONS = 5
_ACTIVITY_SIGMA = 0.8
_START_TIME = 1_000_000_000  # 2001-09-09, Unix seconds
_SPAN = 3 * 365 * 86400


def generate(
    n_users: int = 1000,
    n_items: int = 1700,
    mean_interactions: float = 50.0,
    rank: int = 8,
    popularity_exponent: float = 1.0,
    seed: int = 0,
) -> Interactions:
    """Generate a seeded synthetic interaction set (see the module docstring for the model).

    The same arguments always give the same data. Memory is bounded by
    processing users in blocks of the ``n_users x n_items`` affinity matrix.
    """
    if n_users < 1 or n_items < 2 * _MIN_INTERACTIONS:
        raise ValueError(f"need n_users >= 1 and n_items >= {2 * _MIN_INTERACTIONS}, got {n_users}, {n_items}")
    if not mean_interactions >= _MIN_INTERACTIONS:
        raise ValueError(f"mean_interactions must be >= {_MIN_INTERACTIONS}, got {mean_interactions}")
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    if not popularity_exponent >= 0:
        raise ValueError(f"popularity_exponent must be >= 0, got {popularity_exponent}")
    rng = np.random.default_rng(seed)

    popularity_rank = rng.permutation(n_items)
    log_prior = -popularity_exponent * np.log1p(popularity_rank)
    p = rng.standard_normal((n_users, rank)) / np.sqrt(rank)
    q = rng.standard_normal((n_items, rank)) / np.sqrt(rank)
    # <p_u, q_i> sums r products of variance 1/r**2, so it has variance 1/r; sqrt(r) makes it unit.
    scale = np.sqrt(rank)
    user_bias = rng.normal(0.0, 0.4, n_users)
    item_bias = rng.normal(0.0, 0.3, n_items)
    direction = rng.standard_normal((n_users, rank))

    mu = np.log(mean_interactions) - _ACTIVITY_SIGMA**2 / 2  # log-normal with the requested mean
    activity = np.exp(rng.normal(mu, _ACTIVITY_SIGMA, n_users))
    activity = np.clip(np.rint(activity), _MIN_INTERACTIONS, n_items // 2).astype(np.int64)
    start = _START_TIME + rng.integers(0, _SPAN, n_users)

    block = max(1, 2_000_000 // n_items)
    users, items, ratings, times = [], [], [], []
    for lo in range(0, n_users, block):
        hi = min(n_users, lo + block)
        b = hi - lo
        n_u = activity[lo:hi]
        width = int(n_u.max())
        affinity = (p[lo:hi] @ q.T) * scale
        # Gumbel top-k: the n_u largest of log-weight + Gumbel noise are a weighted sample without replacement.
        keys = log_prior + _AFFINITY_WEIGHT * affinity + rng.gumbel(size=(b, n_items))
        top = np.argpartition(-keys, width - 1, axis=1)[:, :width]
        take = np.arange(width)[None, :] < n_u[:, None]
        # argpartition leaves the first `width` unordered; order them by key so `take` keeps the n_u best.
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
        row = np.broadcast_to(np.arange(lo, hi)[:, None], top.shape)
        u_sel, i_sel = row[take], top[take]
        a_sel = affinity[u_sel - lo, i_sel]

        noise = rng.normal(0.0, 0.5, len(u_sel))
        r = 3.5 + 0.8 * a_sel + user_bias[u_sel] + item_bias[i_sel] + noise
        r = np.clip(np.round(r * 2) / 2, 1.0, 5.0)

        # Order of consumption: drift along the user's direction in latent space.
        drift = np.einsum("nr,nr->n", q[i_sel], direction[u_sel]) + rng.normal(0.0, 0.3, len(u_sel))
        seq = np.lexsort((drift, u_sel))
        u_sel, i_sel, r = u_sel[seq], i_sel[seq], r[seq]
        gaps = rng.exponential(86400.0, len(u_sel)).astype(np.int64) + 1
        first = np.r_[True, u_sel[1:] != u_sel[:-1]]
        # Cumulative gaps restarted per user: subtract the running total at each user's first row.
        csum = np.cumsum(gaps)
        base = np.maximum.accumulate(np.where(first, csum - gaps, 0))
        t = start[u_sel] + (csum - base)

        # Rows in time order overall within the block, as a log would be written.
        users.append(u_sel)
        items.append(i_sel)
        ratings.append(r)
        times.append(t)

    users_a = np.concatenate(users)
    times_a = np.concatenate(times)
    log_order = np.lexsort((users_a, times_a))
    return Interactions(
        users=users_a[log_order],
        items=np.concatenate(items)[log_order],
        ratings=np.concatenate(ratings)[log_order].astype(np.float32),
        timestamps=times_a[log_order],
        n_users=n_users,
        n_items=n_items,
        raw_user_ids=np.arange(n_users, dtype=np.int64),
        raw_item_ids=np.arange(n_items, dtype=np.int64),
        source=(
            f"synthetic(n_users={n_users}, n_items={n_items}, mean_interactions={mean_interactions}, "
            f"rank={rank}, popularity_exponent={popularity_exponent}, seed={seed})"
        ),
    )
