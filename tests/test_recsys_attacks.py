"""Recommender-targeted attacks: the exposure ratio, item promotion on every model, fake users and rating flips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedsecure.attacks import ATTACKS, AttackConfigError, PoisoningPlan, make_attack
from fedsecure.attacks.data_poisoning import DATA_ATTACKS, FakeUsers, RatingFlip, make_data_attack
from fedsecure.attacks.metrics import exposure_ratio
from fedsecure.attacks.promotion import ItemPromotion, choose_targets, item_popularity, item_tables
from fedsecure.fl.engine import FederatedConfig, FederatedTrainer, SharedParameters
from fedsecure.recsys.data import Interactions
from fedsecure.recsys.metrics import evaluate_ranking
from fedsecure.recsys.models import build_model
from fedsecure.recsys.partition import cross_device
from fedsecure.recsys.split import Split, leave_last_out, random_holdout
from fedsecure.recsys.synthetic import generate
from fedsecure.stats import bootstrap_users


def table(users, items, n_users, n_items, ratings=None) -> Interactions:
    users, items = np.asarray(users), np.asarray(items)
    return Interactions(users=users, items=items, ratings=np.ones(users.size) if ratings is None else ratings,
                        timestamps=np.arange(users.size), n_users=n_users, n_items=n_items,
                        raw_user_ids=np.arange(n_users), raw_item_ids=np.arange(n_items), source="toy")


# --- exposure ratio ---------------------------------------------------------------------------------------------

# 3 users, 5 items. Training: user 0 holds item 0, user 1 item 3 (a target), user 2 item 1.
TOY = Split(train=table([0, 1, 2], [0, 3, 1], 3, 5), test=table([0, 1, 2], [4, 2, 0], 3, 5), protocol="toy")
TOY_SCORES = torch.tensor([
    [9.0, 1.0, 5.0, 3.0, 0.0],  # item 0 excluded; item 3 is behind item 2 only: rank 1; item 4 last: rank 3
    [1.0, 2.0, 3.0, 4.0, 5.0],  # holds item 3 (not eligible for it); item 4 first: rank 0
    [3.0, 9.0, 2.0, 2.0, 2.0],  # item 1 excluded; items 3 and 4: 1 higher + 2 tied / 2 = rank 2
])


def toy_scores(users: np.ndarray) -> torch.Tensor:
    return TOY_SCORES[torch.from_numpy(np.asarray(users))]


def test_exposure_ratio_on_a_worked_example():
    # k = 2. Item 3: eligible users 0 and 2 (user 1 holds it); hit for user 0 (rank 1), miss for 2 (rank 2): 1/2.
    # Item 4: eligible 0, 1, 2; only user 1 (rank 0) hits: 1/3. ER@2 = (1/2 + 1/3) / 2 = 5/12.
    er = exposure_ratio(toy_scores, TOY, [3, 4], k=2)
    assert er["er@2"] == pytest.approx(5 / 12)
    assert er["er@2_per_target"] == pytest.approx({3: 1 / 2, 4: 1 / 3})
    assert er["n_eval_users"] == 3
    lo, hi = er["er@2_ci95"]
    assert 0 <= lo <= er["er@2"] <= hi <= 1
    # batching changes nothing
    assert exposure_ratio(toy_scores, TOY, [3, 4], k=2, batch_size=1) == er


def test_exposure_ratio_leaves_out_excluded_users_and_counts_ties_half():
    er = exposure_ratio(toy_scores, TOY, [3, 4], k=2, exclude_users=[1])  # the one user who had item 4 on top
    assert er["er@2_per_target"] == pytest.approx({3: 1 / 2, 4: 0.0}) and er["n_eval_users"] == 2
    # k = 3: user 2's tied rank 2 is now inside (2 < 3), user 0's item 4 (rank 3) still is not
    assert exposure_ratio(toy_scores, TOY, [3, 4], k=3)["er@3_per_target"] == pytest.approx({3: 1.0, 4: 2 / 3})
    assert exposure_ratio(toy_scores, TOY, [4], k=2, users=[0, 2])["er@2"] == 0.0


def test_exposure_ratio_interval_is_the_user_bootstrap_for_one_target():
    er = exposure_ratio(toy_scores, TOY, [4], k=2, seed=3)
    assert er["er@2_ci95"] == list(bootstrap_users(np.array([0, 1, 2]), np.array([0.0, 1.0, 0.0]), seed=3))


@pytest.mark.parametrize("targets, message", [([], "at least one target"), ([5], r"lie in \[0, 5\)"),
                                              ([2, 2], "repeat")])
def test_exposure_ratio_refuses_bad_targets(targets, message):
    with pytest.raises(ValueError, match=message):
        exposure_ratio(toy_scores, TOY, targets)


# --- item promotion: the crafted rows on every model ------------------------------------------------------------

SMALL = generate(n_users=30, n_items=40, mean_interactions=8, seed=3)
SMALL_SPLIT = leave_last_out(SMALL)
TABLES = {
    "mf": {"item_factors.weight": 0, "item_bias.weight": 0},
    "mf-implicit": {"item_factors.weight": 0, "item_bias.weight": 0},
    "ncf": {"item_gmf.weight": 0, "item_mlp.weight": 0},
    "sasrec": {"item_emb.weight": 1},  # item i is row i + 1 of item_emb, which also scores the items (tied)
}


def promotion_setup(model_name: str, **options):
    torch.manual_seed(0)
    model = build_model(model_name, SMALL.n_users, SMALL.n_items)
    shared = SharedParameters(model)
    attack = ItemPromotion([5, 17], popularity=item_popularity(SMALL_SPLIT.train), **options)
    attack.layout, attack.global_params = shared.layout(), shared.get().astype(np.float64)
    return model, shared, attack


@pytest.mark.parametrize("model_name", sorted(TABLES))
def test_item_tables_are_found_in_every_model_layout(model_name):
    _, shared, _ = promotion_setup(model_name)
    found = {t.name: t.shift for t in item_tables(shared.layout())}  # n_items read from the layout
    assert found == TABLES[model_name]
    assert {t.name: t.shift for t in item_tables(shared.layout(), SMALL.n_items)} == found


@pytest.mark.parametrize("model_name", sorted(TABLES))
def test_item_promotion_writes_only_the_target_rows_and_keeps_the_rest_of_the_benign_update(model_name):
    model, shared, attack = promotion_setup(model_name, boost=1.0)
    g = attack.global_params
    benign = np.random.default_rng(1).normal(size=(3, shared.size))
    out = attack.craft(benign, None, np.random.default_rng(2))
    assert out.shape == benign.shape
    changed = np.flatnonzero((out != benign).any(axis=0))
    expected, layout = [], {name: (shape, offset) for name, shape, offset in shared.layout()}
    popular = attack.popular_items(item_tables(shared.layout()), g, SMALL.n_items, np.array([5, 17]))
    for name, shift in TABLES[model_name].items():
        shape, offset = layout[name]
        width = int(np.prod(shape[1:])) if len(shape) > 1 else 1
        rows = g[offset : offset + shape[0] * width].reshape(shape[0], width)[shift:]  # row i is item i
        if width == 1:  # a bias: raised to max + (max - mean), never lowered
            goal = 2 * rows.max(axis=0) - rows.mean(axis=0)
        else:  # the popular items' mean direction, at their mean norm
            centre = rows[popular].mean(axis=0)
            goal = centre / np.linalg.norm(centre) * np.linalg.norm(rows[popular], axis=1).mean()
        for t in (5, 17):
            cols = offset + (t + shift) * width + np.arange(width)
            expected.append(cols)
            # boost 1: the target row lands exactly on the goal
            landed = np.maximum(goal, rows[t]) if width == 1 else goal
            np.testing.assert_allclose(g[cols] + out[:, cols], np.broadcast_to(landed, (3, width)), atol=1e-12)
    assert set(changed) <= set(np.concatenate(expected).tolist())
    # boost scales the change linearly
    attack.boost = 3.0
    np.testing.assert_allclose(attack.craft(benign, None, np.random.default_rng(2))[:, changed] / 3,
                               out[:, changed], rtol=1e-12)
    # every malicious client sends the same crafted rows
    assert (out[:, changed] == out[:1, changed]).all()


def test_item_promotion_popular_items_come_from_counts_or_from_the_global_biases():
    _, shared, attack = promotion_setup("mf-implicit")
    counts = item_popularity(SMALL_SPLIT.train)
    tables = item_tables(shared.layout())
    top = attack.popular_items(tables, attack.global_params, SMALL.n_items, np.array([5, 17]))
    assert set(counts[top]) <= set(np.sort(counts)[::-1][: len(top) + 2]) and not {5, 17} & set(top)
    blind = ItemPromotion([5], n_popular=3)
    g = attack.global_params.copy()
    bias = next(t for t in tables if t.name == "item_bias.weight")
    g[bias.columns(np.array([30, 31, 32]))] = 10.0  # the items the global model ranks highest by bias
    assert sorted(blind.popular_items(tables, g, SMALL.n_items, np.array([5]))) == [30, 31, 32]


def test_item_promotion_is_registered_and_checks_its_inputs():
    assert ATTACKS["item-promotion"] == "promotion:ItemPromotion"
    attack = make_attack("item-promotion", target_items=[1], boost=3.0)
    assert isinstance(attack, ItemPromotion) and attack.needs_global and not attack.omniscient
    with pytest.raises(AttackConfigError, match="needs the shared-parameter layout"):
        attack.craft(np.zeros((1, 4)), None, np.random.default_rng(0))
    with pytest.raises(AttackConfigError, match="boost must be finite and > 0"):
        ItemPromotion([1], boost=0)
    with pytest.raises(AttackConfigError, match="target items"):
        ItemPromotion([-1])


def test_choose_targets_picks_from_the_less_popular_half_with_interactions():
    counts = np.array([0, 1, 2, 3, 50, 60, 70, 80, 0, 4])
    chosen = {t for s in range(20) for t in choose_targets(counts, 2, seed=s)}
    assert chosen <= {1, 2, 3, 9} and len(chosen) > 2  # 8 active items: the 4 least popular, never the unused
    assert choose_targets(counts, 2, seed=4) == choose_targets(counts, 2, seed=4)
    attack = ItemPromotion(popularity=counts, n_targets=2, seed=4)
    assert attack.target_items == choose_targets(counts, 2, seed=4)


# --- item promotion end to end: FedAvg on synthetic data --------------------------------------------------------


@pytest.mark.slow
def test_item_promotion_raises_the_target_exposure_far_above_the_clean_run():
    data = generate(n_users=200, n_items=300, mean_interactions=30, seed=0)
    split = leave_last_out(data)
    clients = cross_device(split.train)
    counts = item_popularity(split.train)
    targets = choose_targets(counts, 1, seed=0)
    results = {}
    for attacked in (False, True):
        torch.manual_seed(0)
        model = build_model("mf-implicit", data.n_users, data.n_items)
        config = FederatedConfig(rounds=10, clients_per_round=50, lr=8.0, batch_size=256,
                                 server_optimizer="fedadam", server_lr=0.1, eval_every=100, seed=0)
        plan = (PoisoningPlan.choose(ItemPromotion(targets, popularity=counts), [c.client_id for c in clients],
                                     0.1, seed=0) if attacked else None)
        FederatedTrainer(model, split.train, clients, config=config, poisoning=plan).run()
        score = model.score_fn(split.train)
        malicious = sorted(plan.malicious) if plan else []
        results[attacked] = (exposure_ratio(score, split, targets, exclude_users=malicious),
                             evaluate_ranking(score, split, n_negatives=0)["hr@10"])
    (clean, clean_hr), (attack, attack_hr) = results[False], results[True]
    # measured: clean ER@10 0.000, attacked 0.943 [0.90, 0.98]; HR@10 0.165 clean, 0.150 attacked
    assert clean["er@10"] < 0.05
    assert attack["er@10"] > clean["er@10"] + 0.4
    assert attack["er@10_ci95"][0] > clean["er@10_ci95"][1]
    assert attack_hr > 0.5 * clean_hr  # only the target rows were poisoned: the model still recommends


# --- data poisoning ---------------------------------------------------------------------------------------------

EXPLICIT = generate(n_users=60, n_items=90, mean_interactions=12, seed=5)


@pytest.mark.parametrize("profile", ["random", "average", "bandwagon"])
@pytest.mark.parametrize("make_split", [leave_last_out, random_holdout])
def test_fake_users_append_m_training_only_users_whose_profiles_hold_the_targets(profile, make_split):
    split = make_split(EXPLICIT)
    n = split.train.n_users
    poisoned = FakeUsers(profile, target_items=[7, 40], profile_size=12).poison(split, 0.1, seed=1)
    train, test = poisoned.split.train, poisoned.split.test
    m = round(0.1 * n)
    assert poisoned.malicious_users == list(range(n, n + m)) and poisoned.target_items == [7, 40]
    assert train.n_users == test.n_users == n + m and train.n_items == test.n_items == split.train.n_items
    assert train.raw_user_ids.shape == test.raw_user_ids.shape == (n + m,)
    assert np.unique(train.raw_user_ids).size == n + m
    # the real rows are untouched, the test set gains nothing
    k = len(split.train)
    for col in ("users", "items", "ratings", "timestamps"):
        np.testing.assert_array_equal(getattr(train, col)[:k], getattr(split.train, col))
        np.testing.assert_array_equal(getattr(test, col), getattr(split.test, col))
    fake_users, fake_items = train.users[k:], train.items[k:]
    assert set(fake_users) == set(range(n, n + m)) and not np.isin(test.users, fake_users).any()
    for u in range(n, n + m):
        items = fake_items[fake_users == u]
        assert items.size == 12 and np.unique(items).size == 12 and {7, 40} <= set(items)
    fake_ratings = train.ratings[k:]
    r_max = split.train.ratings.max()
    assert (fake_ratings[np.isin(fake_items, [7, 40])] == r_max).all()
    assert fake_ratings.min() >= split.train.ratings.min() and fake_ratings.max() <= r_max
    if profile == "bandwagon":
        counts = item_popularity(split.train)
        counts[[7, 40]] = -1
        assert set(fake_items) == {7, 40} | set(np.argsort(-counts, kind="stable")[:10])


def test_fake_users_on_implicit_data_choose_unpopular_targets_and_keep_the_rating_and_evaluation_working():
    data = generate(n_users=60, n_items=90, mean_interactions=12, seed=5)
    implicit = table(data.users, data.items, data.n_users, data.n_items)
    split = leave_last_out(implicit)
    poisoned = make_data_attack("fake-users").poison(split, 0.05, seed=2)
    counts = item_popularity(split.train)
    (t,) = poisoned.target_items
    assert counts[t] > 0 and counts[t] <= np.median(counts[counts > 0])
    assert (poisoned.split.train.ratings == 1.0).all()
    model = build_model("mf-implicit", poisoned.split.train.n_users, data.n_items)
    er = exposure_ratio(model.score_fn(poisoned.split.train), poisoned.split, [t],
                        exclude_users=poisoned.malicious_users)
    assert er["n_eval_users"] == np.unique(split.test.users).size  # fake users have no test rows
    assert evaluate_ranking(model.score_fn(poisoned.split.train), poisoned.split, n_negatives=5)["n_eval_users"] \
        == er["n_eval_users"]


def test_rating_flip_flips_exactly_the_malicious_users_ratings():
    split = random_holdout(EXPLICIT, seed=0)
    poisoned = RatingFlip().poison(split, 0.2, seed=3)
    train, before = poisoned.split.train, split.train
    bad = np.isin(before.users, poisoned.malicious_users)
    assert len(poisoned.malicious_users) == round(0.2 * before.n_users) and poisoned.target_items == []
    r_min, r_max = before.ratings.min(), before.ratings.max()
    np.testing.assert_array_equal(train.ratings[bad], r_max + r_min - before.ratings[bad])
    np.testing.assert_array_equal(train.ratings[~bad], before.ratings[~bad])
    np.testing.assert_array_equal(train.items, before.items)
    assert poisoned.split.test is split.test
    honest = poisoned.honest_split()
    assert honest.train is train and set(honest.test.users) == set(split.test.users) - set(poisoned.malicious_users)
    # flipping twice is the identity
    again = RatingFlip().poison(poisoned.split, 0.2, seed=3)
    np.testing.assert_array_equal(again.split.train.ratings, before.ratings)


def test_rating_flip_on_implicit_data_gives_the_malicious_users_the_least_popular_items():
    data = generate(n_users=60, n_items=90, mean_interactions=12, seed=5)
    split = leave_last_out(table(data.users, data.items, data.n_users, data.n_items))
    poisoned = make_data_attack("rating-flip").poison(split, 0.1, seed=0)
    train, before = poisoned.split.train, split.train
    bad = np.isin(before.users, poisoned.malicious_users)
    np.testing.assert_array_equal(train.items[~bad], before.items[~bad])
    least = np.argsort(item_popularity(before), kind="stable")
    for u in poisoned.malicious_users:
        rows = before.users == u
        assert set(train.items[rows]) == set(least[: rows.sum()].tolist())
    assert (train.ratings == 1.0).all() and np.array_equal(train.users, before.users)


def test_data_attacks_registry_and_bad_configuration():
    assert set(DATA_ATTACKS) == {"fake-users", "rating-flip"}
    assert not set(DATA_ATTACKS) & set(ATTACKS)
    with pytest.raises(AttackConfigError, match="unknown data-poisoning attack 'nope'"):
        make_data_attack("nope")
    with pytest.raises(AttackConfigError, match="unknown profile 'segment'"):
        FakeUsers("segment")
    with pytest.raises(AttackConfigError, match=r"fraction must be in \(0, 1\)"):
        RatingFlip().poison(SMALL_SPLIT, 1.0)
    with pytest.raises(AttackConfigError, match="target items must lie"):
        FakeUsers(target_items=[SMALL.n_items]).poison(SMALL_SPLIT, 0.1)
