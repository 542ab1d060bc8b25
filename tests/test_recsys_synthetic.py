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


def test_a_factor_model_beats_popularity_which_beats_random(default):
    split = leave_last_out(default)
    matrix = np.zeros((default.n_users, default.n_items), np.float32)
    matrix[split.train.users, split.train.items] = 1.0
    # PureSVD, rank 16: U_k S_k V_k^T = U_k U_k^T M, with U_k the top eigenvectors of M M^T.
    _, eigvecs = np.linalg.eigh(matrix.astype(np.float64) @ matrix.T)
    top = eigvecs[:, -16:]
    low_rank = torch.from_numpy(top @ (top.T @ matrix))
    svd = evaluate_ranking(lambda users: low_rank[torch.from_numpy(users)], split, n_negatives=0)["hr@10"]
    pop = evaluate_ranking(Popularity(split.train).scores, split, n_negatives=0)["hr@10"]
    assert pop > 10 * (10 / default.n_items)  # popularity is a meaningful baseline
    assert svd > 1.5 * pop  # low-rank preference structure a factor model can learn


@pytest.mark.parametrize("kwargs", [dict(n_users=0), dict(n_items=5), dict(mean_interactions=2), dict(rank=0),
                                    dict(popularity_exponent=-1.0)])
def test_bad_generator_arguments_are_rejected(kwargs):
    with pytest.raises(ValueError):
        generate(**kwargs)
