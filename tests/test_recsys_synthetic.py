"""The synthetic generator: determinism, realistic shape, and a factor-model signal beyond popularity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsecure.recsys.baselines import Popularity
from fedsecure.recsys.metrics import evaluate_ranking
from fedsecure.recsys.split import leave_last_out
from fedsecure.recsys.synthetic import generate


@pytest.fixture(scope="module")
def default():
    return generate()


def rank_frequency_slope(data, exclude_tail=0.5) -> float:
    counts = np.sort(np.bincount(data.items, minlength=data.n_items))[::-1]
    top = int(len(counts) * (1 - exclude_tail))
    return float(np.polyfit(np.log(np.arange(1, top + 1)), np.log(counts[:top] + 1), 1)[0])


def test_same_seed_same_data_other_seed_other_data():
    a, b, c = generate(200, 300, 20, seed=11), generate(200, 300, 20, seed=11), generate(200, 300, 20, seed=12)
    for name in ("users", "items", "ratings", "timestamps"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert len(a) != len(c) or not np.array_equal(a.items, c.items)
    assert a.source == b.source and "seed=11" in a.source


def test_default_data_looks_like_ratings_data(default):
    d = default
    assert (d.n_users, d.n_items) == (1000, 1700)
    activity = np.bincount(d.users, minlength=d.n_users)
    assert activity.min() >= 5 and activity.max() <= d.n_items // 2
    assert 40 <= activity.mean() <= 60  # mean_interactions = 50
    assert activity.max() > 4 * np.median(activity)  # heavy-tailed activity
    assert len(np.unique(d.users * d.n_items + d.items)) == len(d)  # a user consumes an item once
    assert set(np.unique(d.ratings).tolist()) <= {x / 2 for x in range(2, 11)}
    assert 3.0 < d.ratings.mean() < 4.5 and d.ratings.std() > 0.5
    indptr, order = d.user_index()
    t = d.timestamps[order]
    same_user = np.diff(d.users[order]) == 0
    assert np.all(np.diff(t)[same_user] > 0)  # strictly increasing per user


def test_item_popularity_follows_a_power_law_set_by_the_exponent(default):
    flat = rank_frequency_slope(generate(500, 1000, 30, popularity_exponent=0.5, seed=1))
    steep = rank_frequency_slope(generate(500, 1000, 30, popularity_exponent=1.5, seed=1))
    slope = rank_frequency_slope(default)
    assert steep < slope < flat < 0
    assert -1.2 < slope < -0.4  # Zipf-like head at the default exponent 1
    counts = np.sort(np.bincount(default.items, minlength=default.n_items))[::-1]
    assert counts[:170].sum() > 0.4 * len(default)  # the top 10% of items take a large share


def _svd_and_popularity_hr(data):
    """Full-catalogue HR@10 of PureSVD (rank 16) and of popularity on a leave-last-out split of ``data``."""
    split = leave_last_out(data)
    matrix = np.zeros((data.n_users, data.n_items), np.float32)
    matrix[split.train.users, split.train.items] = 1.0
    # PureSVD, rank 16: U_k S_k V_k^T = U_k U_k^T M, with U_k the top eigenvectors of M M^T.
    _, eigvecs = np.linalg.eigh(matrix.astype(np.float64) @ matrix.T)
    top = eigvecs[:, -16:]
    low_rank = torch.from_numpy(top @ (top.T @ matrix))
    svd = evaluate_ranking(lambda users: low_rank[torch.from_numpy(users)], split, n_negatives=0)["hr@10"]
    pop = evaluate_ranking(Popularity(split.train).scores, split, n_negatives=0)["hr@10"]
    return svd, pop


def test_a_factor_model_beats_popularity_which_beats_random(default):
    svd, pop = _svd_and_popularity_hr(default)
    assert pop > 10 * (10 / default.n_items)  # popularity is a meaningful baseline
    assert svd > 1.5 * pop  # low-rank preference structure a factor model can learn


@pytest.mark.parametrize("kwargs", [dict(n_users=0), dict(n_items=5), dict(mean_interactions=2), dict(rank=0),
                                    dict(popularity_exponent=-1.0)])
def test_bad_generator_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        generate(**kwargs)


# -- the resampling path (large catalogues) ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def resampled():
    return generate(exact=False)


def test_the_default_size_is_drawn_exactly_and_the_resampled_draw_is_another_deterministic_set(default, resampled):
    exact = generate(exact=True)
    np.testing.assert_array_equal(default.items, exact.items)  # below the threshold, exact is the default
    again = generate(exact=False)
    np.testing.assert_array_equal(resampled.items, again.items)
    np.testing.assert_array_equal(resampled.timestamps, again.timestamps)
    assert not np.array_equal(resampled.items, default.items)
    # the activity draw comes before step 4, so each user has the same number of interactions either way
    np.testing.assert_array_equal(np.bincount(default.users, minlength=1000), np.bincount(resampled.users, minlength=1000))


def test_resampling_keeps_the_shape_of_the_exact_draw(default, resampled):
    d = resampled
    assert len(np.unique(d.users * d.n_items + d.items)) == len(d)  # a user consumes an item once
    assert abs(rank_frequency_slope(d) - rank_frequency_slope(default)) < 0.15
    exact_pop = np.bincount(default.items, minlength=default.n_items)
    sampled_pop = np.bincount(d.items, minlength=d.n_items)
    assert np.corrcoef(np.log1p(exact_pop), np.log1p(sampled_pop))[0, 1] > 0.85  # same items are popular
    # the finite candidate pool weakens the preference tilt a little (documented): ratings 4.21 vs 4.32 here
    assert 0 < default.ratings.mean() - d.ratings.mean() < 0.2


def test_resampling_keeps_the_preference_signal(resampled):
    svd, pop = _svd_and_popularity_hr(resampled)
    assert svd > 1.3 * pop  # 0.239 vs 0.165 at seed 0: weaker than the exact draw's 1.5x (the pool's tilt bias)


def test_users_whose_candidates_are_too_few_are_drawn_exactly():
    # a steep prior puts nearly every candidate on a handful of items: most users fall back to the exact draw
    d = generate(60, 200, 20, popularity_exponent=6.0, seed=4, exact=False)
    counts = np.bincount(d.users, minlength=60)
    assert counts.min() >= 5
    assert len(np.unique(d.users * d.n_items + d.items)) == len(d)
    assert np.array_equal(counts, np.bincount(generate(60, 200, 20, popularity_exponent=6.0, seed=4).users,
                                              minlength=60))
