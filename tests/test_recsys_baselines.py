"""The popularity baseline: counts for ranking, mean + shrunk item bias for ratings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.recsys.baselines import Popularity
from fedsecure.recsys.data import Interactions


def train_table() -> Interactions:
    # item 0 rated 5, 5; item 1 rated 1; items 2, 3 never rated. Global mean 11/3.
    users, items = np.array([0, 1, 1]), np.array([0, 0, 1])
    return Interactions(users, items, np.array([5.0, 5.0, 1.0], np.float32), np.arange(3), 3, 4,
                        np.arange(3), np.arange(4), "test")


def test_scores_are_the_training_counts_for_every_user():
    pop = Popularity(train_table())
    scores = pop.scores(np.array([2, 0]))
    assert scores.shape == (2, 4)
    assert scores.tolist() == [[2.0, 1.0, 0.0, 0.0]] * 2
    scores[0, 0] = -1  # callers may mask in place; the baseline must not change
    assert pop.scores(np.array([1])).tolist() == [[2.0, 1.0, 0.0, 0.0]]


def test_predict_is_global_mean_plus_shrunk_item_bias():
    mu = 11 / 3
    pop = Popularity(train_table(), shrinkage=1.0)
    got = pop.predict(np.array([0, 1, 2]), np.array([0, 1, 2]))
    # b_0 = 2 (5 - mu) / (1 + 2), b_1 = (1 - mu) / (1 + 1), b_2 = 0 (no ratings)
    assert got == pytest.approx([mu + 2 * (5 - mu) / 3, mu + (1 - mu) / 2, mu], rel=1e-6)
    unshrunk = Popularity(train_table(), shrinkage=0.0).predict(np.array([0, 0, 0]), np.array([0, 1, 3]))
    assert unshrunk == pytest.approx([5.0, 1.0, mu], rel=1e-6)  # plain item means, mu when unrated
    default = Popularity(train_table()).predict(np.array([0]), np.array([1]))
    assert default == pytest.approx([mu + (1 - mu) / 26], rel=1e-6)  # lambda = 25


def test_bad_input_is_rejected():
    pop = Popularity(train_table())
    with pytest.raises(IndexError, match="item ids"):
        pop.predict(np.array([0]), np.array([4]))
    with pytest.raises(ValueError, match="shape"):
        pop.predict(np.array([0, 1]), np.array([0]))
    with pytest.raises(ValueError, match="empty"):
        Popularity(train_table().select(np.array([], dtype=np.int64)))


# -- the private popularity baseline -------------------------------------------------------------


def _weighted_counts(train):
    """PrivatePopularity's pre-noise counts, recomputed with its noise switched off."""
    from fedsecure.recsys.baselines import PrivatePopularity

    class _Zero:
        def gaussian_np(self, shape, std):
            return np.zeros(shape)

    return PrivatePopularity(train, 1.0, _Zero()).counts.numpy().astype(np.float64)


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 7)), min_size=2, max_size=40), st.integers(0, 5))
@settings(max_examples=60, deadline=None)
def test_private_popularity_has_user_level_l2_sensitivity_one(pairs, removed):
    """Removing one user (all its interactions, repeats included) moves the counts by at most 1 in L2."""
    from fedsecure.recsys.data import Interactions

    users = np.array([u for u, _ in pairs])
    items = np.array([i for _, i in pairs])
    full = Interactions(users, items, np.ones(len(pairs), dtype=np.float32), np.zeros(len(pairs), dtype=np.int64), 6, 8,
                        np.arange(6), np.arange(8), "test")
    keep = users != removed
    if not keep.any():
        return
    rest = Interactions(users[keep], items[keep], np.ones(int(keep.sum()), dtype=np.float32),
                        np.zeros(int(keep.sum()), dtype=np.int64), 6, 8, np.arange(6), np.arange(8), "test")
    assert np.linalg.norm(_weighted_counts(full) - _weighted_counts(rest)) <= 1 + 1e-6


def test_private_popularity_noise_meets_its_epsilon_and_ranks_like_popularity_when_loose():
    from fedsecure.dp.accounting import epsilon
    from fedsecure.dp.noise import NoiseSource
    from fedsecure.recsys.baselines import PrivatePopularity
    from fedsecure.recsys.synthetic import generate

    train = generate(n_users=300, n_items=200, seed=1)
    from fedsecure.dp.accounting import noise_multiplier_for

    sigma = noise_multiplier_for(0.5, 1e-5, 1.0, 1)
    assert epsilon(sigma, 1.0, 1, 1e-5) <= 0.5
    tight = PrivatePopularity(train, sigma, NoiseSource.insecure_seeded(0))
    loose = PrivatePopularity(train, 1e-3, NoiseSource.insecure_seeded(0))
    exact = _weighted_counts(train)
    top = lambda c: set(np.argsort(-c)[:20].tolist())  # noqa: E731
    assert len(top(loose.counts.numpy()) & top(exact)) >= 19
    assert len(top(tight.counts.numpy()) & top(exact)) < len(top(loose.counts.numpy()) & top(exact))
