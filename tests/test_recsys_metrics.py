"""Metrics against hand-worked examples, a brute-force reference, and their algebra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.recsys.data import Interactions
from fedsecure.recsys.metrics import evaluate_ranking, evaluate_rating, hit_ndcg, mae, rmse, target_ranks
from fedsecure.recsys.split import Split, leave_last_out
from fedsecure.recsys.synthetic import generate


def table(users, items, n_users, n_items, ratings=None) -> Interactions:
    users = np.asarray(users, np.int64)
    return Interactions(users, np.asarray(items, np.int64),
                        np.ones(len(users), np.float32) if ratings is None else np.asarray(ratings, np.float32),
                        np.arange(len(users)), n_users, n_items, np.arange(n_users), np.arange(n_items), "test")


def test_rmse_and_mae_worked_example():
    pred, target = np.array([1.0, 2.0, 3.0]), np.array([1.0, 4.0, 0.0])  # errors 0, -2, 3
    assert rmse(pred, target) == pytest.approx(math.sqrt(13 / 3))
    assert mae(pred, target) == pytest.approx(5 / 3)
    assert rmse(torch.tensor(pred), torch.tensor(target)) == pytest.approx(math.sqrt(13 / 3))
    with pytest.raises(ValueError, match="shape"):
        rmse(pred, target[:2])
    with pytest.raises(ValueError, match="NaN"):
        mae(np.array([np.nan]), np.array([1.0]))


def test_target_ranks_worked_example_with_ties_and_exclusions():
    scores = torch.tensor([[3.0, 1.0, 2.0, 2.0], [3.0, 1.0, 2.0, 2.0], [3.0, 1.0, 2.0, 2.0],
                           [7.0, 7.0, 7.0, 7.0], [-torch.inf, 1.0, 0.0, -torch.inf]])
    targets = torch.tensor([0, 2, 1, 3, 2])
    # 0: best -> 0; 2: one higher + one tie/2 -> 1.5; 1: three higher -> 3; all tied: 3/2; -inf rank below finite.
    assert target_ranks(scores, targets).tolist() == [0.0, 1.5, 3.0, 1.5, 1.0]
    with pytest.raises(ValueError, match="NaN"):
        target_ranks(torch.tensor([[0.0, float("nan")]]), torch.tensor([0]))


def test_hit_ndcg_at_the_k_boundary():
    hit, ndcg = hit_ndcg(torch.tensor([0.0, 9.0, 9.5, 10.0, 3.0]), k=10)
    assert hit.tolist() == [1.0, 1.0, 1.0, 0.0, 1.0]
    expected = [1.0, 1 / math.log2(11), 1 / math.log2(11.5), 0.0, 1 / math.log2(5)]
    assert ndcg.tolist() == pytest.approx(expected)
    assert hit_ndcg(torch.tensor([1.0]), k=1)[0].tolist() == [0.0]


@settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.integers(-3, 3), min_size=6, max_size=6), min_size=1, max_size=5),
       st.integers(-1000, 1000))
def test_ranks_are_shift_invariant_and_sum_to_the_pair_count(rows, shift):
    scores = torch.tensor(rows, dtype=torch.float64)
    n = scores.shape[1]
    all_targets = torch.arange(n).repeat(len(rows), 1)
    ranks = torch.stack([target_ranks(scores, all_targets[:, j]) for j in range(n)], dim=1)
    shifted = torch.stack([target_ranks(scores + shift, all_targets[:, j]) for j in range(n)], dim=1)
    assert torch.equal(ranks, shifted)
    # Expected ranks under random tie-breaking are a fair share of the positions 0..n-1.
    assert torch.all(ranks.sum(dim=1) == n * (n - 1) / 2)
    assert torch.all((ranks >= 0) & (ranks <= n - 1))


def worked_split() -> Split:
    # 2 users, 5 items. u0 trained on 0, 1 and tests on 3; u1 trained on 1, 2 and tests on 4.
    train = table([0, 0, 1, 1], [0, 1, 1, 2], 2, 5)
    test = table([0, 1], [3, 4], 2, 5)
    return Split(train, test, "worked example")


SCORES = torch.tensor([[10.0, 9.0, 1.0, 5.0, 2.0], [4.0, 0.0, 9.0, 1.0, 3.0]])


def test_evaluate_ranking_worked_example_excludes_training_items():
    calls = []

    def score_fn(users):
        calls.append(users.tolist())
        return SCORES[torch.from_numpy(users)]

    # u0: items 0, 1 excluded -> test item 3 (score 5) ranks 0.
    # u1: items 1, 2 excluded (2 would win with 9) -> item 0 (score 4) beats the test item (3) -> rank 1.
    r1 = evaluate_ranking(score_fn, worked_split(), k=1, n_negatives=0)
    assert (r1["hr@1"], r1["ndcg@1"], r1["n_eval_users"]) == (0.5, 0.5, 2)
    r2 = evaluate_ranking(score_fn, worked_split(), k=2, n_negatives=0)
    assert r2["hr@2"] == 1.0 and r2["ndcg@2"] == pytest.approx((1 + 1 / math.log2(3)) / 2)
    assert "hr@2_sampled0" not in r2 and "worked example" in r2["protocol"] and "HR@2" in r2["protocol"]
    assert calls[0] == [0, 1]
    # Sampled: u0 never touched {2, 4}, u1 never touched {0, 3}; with both as negatives
    # the ranks are 0 (5 > 1, 2) and 1 (3 < 4) again.
    with pytest.raises(ValueError, match="user 0 has only 2 never-interacted items"):
        evaluate_ranking(score_fn, worked_split(), k=1, n_negatives=3)
    r3 = evaluate_ranking(score_fn, worked_split(), k=1, n_negatives=2)
    assert (r3["hr@1_sampled2"], r3["ndcg@1_sampled2"]) == (0.5, 0.5)


def test_every_test_item_is_one_row_and_competes_with_the_others():
    train = table([0], [0], 1, 4)
    test = table([0, 0], [1, 2], 1, 4)
    scores = torch.tensor([[9.0, 3.0, 2.0, 1.0]])
    r = evaluate_ranking(lambda u: scores[torch.from_numpy(u)], Split(train, test, "two test items"), k=1,
                         n_negatives=0)
    # item 1 ranks 0 (item 0 excluded); item 2 ranks 1 behind the other test item -> HR@1 = 1/2.
    assert (r["hr@1"], r["n_eval_users"], r["n_eval_rows"]) == (0.5, 1, 2)


def reference(scores: np.ndarray, split: Split, k: int) -> tuple[float, float]:
    """Per-row Python loop: the definition, written plainly."""
    hits, ndcgs = [], []
    for u, t in zip(split.test.users, split.test.items):
        s = scores[u].astype(np.float64)
        excluded = set(split.train.items[split.train.users == u].tolist()) - {int(t)}
        cand = [j for j in range(len(s)) if j not in excluded]
        rank = sum(s[j] > s[t] for j in cand) + sum(s[j] == s[t] for j in cand if j != t) / 2
        hits.append(rank < k)
        ndcgs.append(1 / math.log2(rank + 2) if rank < k else 0.0)
    return float(np.mean(hits)), float(np.mean(ndcgs))


@pytest.mark.parametrize("n_test", [1, 2])
def test_full_catalogue_metrics_match_a_brute_force_reference(n_test):
    data = generate(n_users=40, n_items=60, mean_interactions=8, seed=n_test)
    split = leave_last_out(data, n_test=n_test)
    scores = np.random.default_rng(0).integers(0, 6, (data.n_users, data.n_items)).astype(np.float32)  # many ties
    got = evaluate_ranking(lambda u: torch.from_numpy(scores[u]), split, k=5, n_negatives=0, batch_size=7)
    hr, ndcg = reference(scores, split, k=5)
    assert got["hr@5"] == pytest.approx(hr) and got["ndcg@5"] == pytest.approx(ndcg)


def test_sampled_negatives_never_include_interacted_items_and_are_seeded():
    data = generate(n_users=150, n_items=300, mean_interactions=20, seed=1)
    split = leave_last_out(data, n_test=2)
    interacted = np.zeros((data.n_users, data.n_items), dtype=bool)
    interacted[data.users, data.items] = True
    # Interacted items score 100, the rest 0. If any interacted item (train or the other test item)
    # were sampled as a negative, it would outrank the test item; only never-touched negatives keep rank 0.
    scores = torch.from_numpy(np.where(interacted, 100.0, 0.0).astype(np.float32))
    r = evaluate_ranking(lambda u: scores[torch.from_numpy(u)], split, k=1, n_negatives=99)
    assert r["hr@1_sampled99"] == 1.0 and r["ndcg@1_sampled99"] == 1.0
    # Full catalogue: the other test item ties at 100 -> rank 0.5, still a hit at k = 1.
    assert r["hr@1"] == 1.0 and r["ndcg@1"] == pytest.approx(1 / math.log2(2.5))

    random_scores = torch.from_numpy(np.random.default_rng(2).random((data.n_users, data.n_items)).astype(np.float32))
    fn = lambda u: random_scores[torch.from_numpy(u)]  # noqa: E731
    a = evaluate_ranking(fn, split, seed=3, batch_size=64)
    b = evaluate_ranking(fn, split, seed=3, batch_size=32)
    c = evaluate_ranking(fn, split, seed=4)
    assert a["hr@10_sampled99"] == evaluate_ranking(fn, split, seed=3, batch_size=64)["hr@10_sampled99"]
    assert a["hr@10"] == b["hr@10"] == c["hr@10"]  # full catalogue does not depend on the seed
    assert (a["hr@10_sampled99"], a["ndcg@10_sampled99"]) == (b["hr@10_sampled99"], b["ndcg@10_sampled99"])
    assert (a["ndcg@10_sampled99"], a["hr@10_sampled99"]) != (c["ndcg@10_sampled99"], c["hr@10_sampled99"])


def test_score_fn_of_the_wrong_shape_is_rejected():
    with pytest.raises(ValueError, match=r"shape \(2, 4\), expected \(2, 5\)"):
        evaluate_ranking(lambda u: torch.zeros(len(u), 4), worked_split(), n_negatives=0)


def test_evaluate_rating_worked_example():
    test = table([0, 1, 1], [0, 0, 1], 2, 2, ratings=[4.0, 2.0, 5.0])
    r = evaluate_rating(lambda u, i: np.array([3.0, 3.0, 5.0]), test)  # errors 1, -1, 0
    assert (r["rmse"], r["mae"]) == (pytest.approx(math.sqrt(2 / 3)), pytest.approx(2 / 3))
    # the intervals resample the two users: user 0 alone has error 1, user 1 alone (1, 0)
    lo, hi = r["rmse_ci95"]
    assert math.sqrt(1 / 2) - 1e-12 <= lo <= r["rmse"] <= hi <= 1.0 + 1e-12
    lo, hi = r["mae_ci95"]
    assert 0.5 - 1e-12 <= lo <= r["mae"] <= hi <= 1.0 + 1e-12
