"""The popularity baseline, reported beside every model.

Ranking: every user gets the same scores, the items' training interaction
counts ``c_i``. Rating prediction: the global mean plus a *shrunk* item bias
(Koren, "Factor in the neighbors", TKDD 2010; lambda = 25 as there)::

    r_hat(u, i) = mu + b_i,   b_i = sum_{u in R(i)} (r_ui - mu) / (lambda + |R(i)|)

The damping ``lambda`` pulls the bias of rarely rated items toward 0 (an
item with one rating of 5 is not predicted 5): it acts as ``lambda`` virtual
ratings at the global mean. Items with no training ratings get ``mu``.

:class:`PrivatePopularity` is the differentially private comparator a
deployment could release instead of a DP model: item counts under
user-level ``(epsilon, delta)``-DP. Each user contributes ``1 / sqrt(n_u)``
to each of its ``n_u`` distinct items (its vector has L2 norm 1, so adding
or removing a user moves the counts by at most 1 in L2), and the Gaussian
mechanism adds ``N(0, sigma^2)`` to every item. The caller calibrates
``sigma`` (for a target epsilon: the smallest noise multiplier whose
one-release epsilon meets it, :func:`fedsecure.dp.accounting.noise_multiplier_for`
with sampling rate 1 and one step; recsys itself knows no accountant).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fedsecure.recsys.data import Interactions

__all__ = ["Popularity", "PrivatePopularity"]


class Popularity:
    """Most-popular ranking and mean + shrunk-item-bias rating prediction, fit on ``train``."""

    def __init__(self, train: Interactions, shrinkage: float = 25.0) -> None:
        if len(train) == 0:
            raise ValueError("cannot fit the popularity baseline on an empty training set")
        if not shrinkage >= 0:
            raise ValueError(f"shrinkage must be >= 0, got {shrinkage}")
        self.n_users = train.n_users
        self.n_items = train.n_items
        self.shrinkage = float(shrinkage)
        counts = np.bincount(train.items, minlength=train.n_items)
        self.counts = torch.from_numpy(counts.astype(np.float32))
        ratings = train.ratings.astype(np.float64)
        self.global_mean = float(ratings.mean())
        residual = np.bincount(train.items, weights=ratings - self.global_mean, minlength=train.n_items)
        self.item_bias = residual / (self.shrinkage + counts) if self.shrinkage > 0 else np.divide(
            residual, counts, out=np.zeros_like(residual), where=counts > 0
        )

    def scores(self, users: np.ndarray) -> torch.Tensor:
        """``[len(users), n_items]``: each row is the item interaction counts."""
        users = np.asarray(users)
        if users.size and (users.min() < 0 or users.max() >= self.n_users):
            raise IndexError(f"user ids must lie in [0, {self.n_users})")
        return self.counts.expand(len(users), -1).clone()

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings ``mu + b_i`` (float32) for the pairs ``(users[j], items[j])``."""
        users, items = np.asarray(users), np.asarray(items)
        if users.shape != items.shape:
            raise ValueError(f"users and items differ in shape: {users.shape} vs {items.shape}")
        if items.size and (items.min() < 0 or items.max() >= self.n_items):
            raise IndexError(f"item ids must lie in [0, {self.n_items})")
        return (self.global_mean + self.item_bias[items]).astype(np.float32)


class PrivatePopularity:
    """Item counts under user-level DP: L2 sensitivity 1, Gaussian noise of std ``sigma`` from ``noise``."""

    def __init__(self, train: Interactions, sigma: float, noise: Any) -> None:
        if len(train) == 0:
            raise ValueError("cannot fit the private popularity baseline on an empty training set")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.n_users, self.n_items = train.n_users, train.n_items
        self.sigma = float(sigma)
        pairs = np.unique(train.users.astype(np.int64) * train.n_items + train.items)
        users, items = pairs // train.n_items, pairs % train.n_items
        per_user = np.bincount(users, minlength=train.n_users)
        weights = 1.0 / np.sqrt(per_user[users])
        counts = np.bincount(items, weights=weights, minlength=train.n_items)
        counts = counts + noise.gaussian_np(counts.shape, self.sigma)
        self.counts = torch.from_numpy(counts.astype(np.float32))

    def scores(self, users: np.ndarray) -> torch.Tensor:
        """``[len(users), n_items]``: each row is the noisy weighted item counts."""
        return self.counts.expand(len(np.asarray(users)), -1).clone()

    def describe(self) -> dict[str, Any]:
        return {"name": "private-popularity", "noise_multiplier": self.sigma,
                "sensitivity": "L2 1 per user (1/sqrt(n_u) per item)"}
