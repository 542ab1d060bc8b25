"""Models: what is private, what examples look like, and that they learn."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from fedsecure.fl.local import SGDTrainer
from fedsecure.recsys.data import Interactions
from fedsecure.recsys.models import MODELS, SASRec, build_model
from fedsecure.recsys.synthetic import generate

PER_SAMPLE_FRIENDLY = (nn.Embedding, nn.Linear, nn.LayerNorm)


@pytest.fixture(scope="module")
def data() -> Interactions:
    return generate(n_users=30, n_items=50, mean_interactions=10, seed=1)


@pytest.mark.parametrize("name", list(MODELS))
def test_every_parameter_lives_in_a_per_sample_friendly_layer(name, data):
    model = build_model(name, data.n_users, data.n_items)
    owners = {id(p): m for m in model.modules() for p in m.parameters(recurse=False)}
    for pname, p in model.named_parameters():
        assert isinstance(owners[id(p)], PER_SAMPLE_FRIENDLY), f"{pname} is held by {type(owners[id(p)]).__name__}"


@pytest.mark.parametrize(
    "name, private",
    [
        ("mf", {"user_factors.weight", "user_bias.weight"}),
        ("mf-implicit", {"user_factors.weight"}),
        ("ncf", {"user_gmf.weight", "user_mlp.weight"}),
        ("sasrec", set()),
    ],
)
def test_user_indexed_tables_are_private_and_nothing_else(name, private, data):
    model = build_model(name, data.n_users, data.n_items)
    assert {n for n, _ in model.private_parameters()} == private
    for n, p in model.private_parameters():
        assert p.shape[0] == data.n_users, n
    shared = {n for n, _ in model.shared_parameters()}
    assert shared and not shared & private


@pytest.mark.parametrize("name", list(MODELS))
def test_training_lowers_the_loss_and_scores_cover_the_catalogue(name, data):
    torch.manual_seed(0)
    model = build_model(name, data.n_users, data.n_items)
    rows = np.arange(len(data))
    rng = np.random.default_rng(0)
    examples = model.examples(data, rows, rng)
    with torch.no_grad():
        before = model.loss(examples).item()
    lr = {"mf": 0.05, "sasrec": 0.01}.get(name, 1.0)
    trainer = SGDTrainer("adam" if name == "sasrec" else "sgd")
    for _ in range(5):
        trainer.train(model, examples, client_id=0, epochs=1, batch_size=32, lr=lr, rng=rng)
    model.eval()
    with torch.no_grad():
        after = model.loss(examples).item()
    assert after < before
    scores = model.score_fn(data)(np.array([0, 3, 7]))
    assert scores.shape == (3, data.n_items) and torch.isfinite(scores).all()


def test_implicit_negatives_avoid_the_clients_own_positives(data):
    model = build_model("mf-implicit", data.n_users, data.n_items, n_negatives=20)
    user = np.bincount(data.users).argmax()
    rows = np.flatnonzero(data.users == user)
    ex = model.examples(data, rows, np.random.default_rng(0))
    negatives = ex["items"][ex["labels"] == 0].numpy()
    positives = set(data.items[rows].tolist())
    density = len(positives) / data.n_items
    hit_rate = np.mean([i in positives for i in negatives])
    # one redraw: a negative is a positive with probability density^2
    assert hit_rate <= density**2 + 4 * np.sqrt(density**2 / negatives.size) + 1e-9
    assert (ex["labels"] == 1).sum() == rows.size


def test_sasrec_sequences_are_the_latest_items_right_aligned():
    data = Interactions(
        users=np.array([0, 0, 0, 1, 0]), items=np.array([4, 2, 3, 1, 0]),
        ratings=np.ones(5, dtype=np.float32), timestamps=np.array([30, 10, 20, 5, 40]),
        n_users=2, n_items=5, raw_user_ids=np.arange(2), raw_item_ids=np.arange(5), source="hand",
    )
    model = SASRec(2, 5, dim=8, blocks=1, heads=2, max_len=3)
    users, seqs = model._sequences(data, np.arange(5), 3)
    # user 0 in time order: items 2, 3, 4, 0 -> last three, shifted by one (0 is padding)
    assert users.tolist() == [0, 1]
    assert seqs.tolist() == [[4, 5, 1], [0, 0, 2]]


def test_unknown_model_lists_the_valid_ones():
    with pytest.raises(ValueError, match="choose one of: mf, mf-implicit, ncf, sasrec"):
        build_model("bert4rec", 3, 3)


def test_fit_private_fits_only_the_users_own_embeddings_and_leaves_the_model_alone(data):
    from fedsecure.recsys.models import fit_private

    torch.manual_seed(0)
    model = build_model("mf-implicit", data.n_users, data.n_items, dim=8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    users = np.array([1, 4, 7])
    fitted = fit_private(model, data, users, steps=40, lr=0.05, seed=3)
    for n, p in model.named_parameters():  # the model passed in is untouched
        assert torch.equal(p, before[n])
    for n, p in fitted.named_parameters():  # shared parameters frozen; only the chosen users' rows move
        if not fitted.is_private(n):
            assert torch.equal(p, before[n])
    moved = (fitted.user_factors.weight - fit_private(model, data, users, steps=0, seed=3).user_factors.weight)
    assert set(np.flatnonzero(moved.abs().sum(1).detach().numpy() > 0)) == set(users.tolist())
    rows = np.flatnonzero(np.isin(data.users, users))
    batch = model.examples(data, rows, np.random.default_rng(0))
    start = fit_private(model, data, users, steps=0, seed=3)
    assert float(fitted.loss(batch)) < float(start.loss(batch))  # the fit lowers the users' own loss
    # warm start keeps the trained embeddings as the starting point
    kept = fit_private(model, data, users, steps=0, seed=3, reinit=False)
    assert torch.equal(kept.user_factors.weight, before["user_factors.weight"])
