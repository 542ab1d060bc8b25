"""SASRec's sampled losses: the estimators' algebra, and that a step touches only the rows it samples."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from fedsecure.recsys.losses import sampled_bce, sampled_partition, sampled_softmax
from fedsecure.recsys.models import SASRec
from fedsecure.recsys.synthetic import generate

scores_st = st.lists(st.floats(-6, 6), min_size=2, max_size=7)


@settings(max_examples=60, deadline=None)
@given(scores=scores_st, data=st.data())
def test_every_item_sampled_once_is_the_full_softmax(scores, data):
    n = len(scores)
    pos = data.draw(st.integers(0, n - 1))
    s = torch.tensor(scores, dtype=torch.float64)
    ids = torch.arange(n)
    # each item once, expected count S Q_j = n * (1/n) = 1: the correction is log 1 = 0
    got = sampled_softmax(s[pos], s, torch.zeros(n, dtype=torch.float64), accidental=ids == pos)
    want = F.cross_entropy(s[None], torch.tensor([pos]))
    torch.testing.assert_close(got, want.to(got.dtype), atol=1e-12, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(scores=scores_st, weights=st.lists(st.floats(0.05, 5.0), min_size=7, max_size=7),
       samples=st.integers(1, 2), data=st.data())
def test_the_log_q_corrected_partition_is_unbiased(scores, weights, samples, data):
    """E over S draws with replacement from Q of Z_hat equals Z = sum_i exp(s_i), for any Q with full support."""
    n = len(scores)
    pos = data.draw(st.integers(0, n - 1))
    s = torch.tensor(scores, dtype=torch.float64)
    q = torch.tensor(weights[:n], dtype=torch.float64)
    q = q / q.sum()
    expectation = torch.zeros((), dtype=torch.float64)
    for draw in itertools.product(range(n), repeat=samples):  # every outcome, weighted by its probability
        j = torch.tensor(draw)
        z_hat = sampled_partition(s[pos], s[j], torch.log(samples * q[j]), accidental=j == pos)
        expectation += torch.prod(q[j]) * z_hat
    torch.testing.assert_close(expectation, s.exp().sum(), atol=1e-9, rtol=1e-9)


def test_without_the_correction_a_popularity_proposal_is_biased():
    s = torch.tensor([0.0, 3.0, -1.0, 2.0], dtype=torch.float64)
    q = torch.tensor([0.7, 0.1, 0.1, 0.1], dtype=torch.float64)
    uncorrected = sum(q[j] * sampled_partition(s[0], s[j:j + 1], torch.zeros(1, dtype=torch.float64),
                                               accidental=torch.tensor([j == 0])) for j in range(4))
    assert abs(float(uncorrected) - float(s.exp().sum())) > 1.0  # the correction is what makes it unbiased


def test_bce_is_the_papers_loss_and_drops_accidental_hits():
    pos, neg = torch.tensor(1.5), torch.tensor([0.3, -2.0, 1.0])
    want = -math.log(torch.sigmoid(pos)) - sum(math.log(1 - torch.sigmoid(x)) for x in neg)
    torch.testing.assert_close(sampled_bce(pos, neg), torch.tensor(want, dtype=torch.float32))
    dropped = sampled_bce(pos, neg, accidental=torch.tensor([False, False, True]))
    torch.testing.assert_close(dropped, torch.tensor(want + math.log(1 - torch.sigmoid(neg[2])), dtype=torch.float32))


@pytest.fixture(scope="module")
def data():
    return generate(n_users=40, n_items=300, mean_interactions=8, seed=2)


@pytest.mark.parametrize("loss", ["sampled-softmax", "bce"])
def test_a_sampled_step_touches_only_the_looked_up_item_rows(data, loss):
    torch.manual_seed(0)
    model = SASRec(data.n_users, data.n_items, dim=8, blocks=1, heads=1, max_len=10, loss=loss, n_sampled=3)
    model.set_item_counts(np.bincount(data.items, minlength=data.n_items))
    batch = model.examples(data, np.flatnonzero(data.users < 4), np.random.default_rng(0))  # four users
    model.loss(batch).backward()
    touched = torch.zeros(data.n_items + 1, dtype=torch.bool)
    for key in ("inputs", "targets", "negatives"):
        touched[batch[key].reshape(-1)] = True
    touched[0] = False  # padding gets no gradient
    nonzero = model.item_emb.weight.grad.abs().sum(1) > 0
    # (a looked-up row may still get zero: bce's negatives at padding positions are masked out)
    assert nonzero.sum() > 10 and not nonzero[~touched].any()
    assert (~touched).sum() > data.n_items // 3  # most of the catalogue is untouched: the property has teeth


def test_the_full_softmax_touches_every_item_row(data):
    torch.manual_seed(0)
    model = SASRec(data.n_users, data.n_items, dim=8, blocks=1, heads=1, max_len=10, loss="full")
    batch = model.examples(data, np.arange(len(data)), np.random.default_rng(0))
    model.loss(batch).backward()
    assert (model.item_emb.weight.grad[1:].abs().sum(1) > 0).all()
    assert not model.sparse_gradients


def test_there_is_one_item_table_and_it_scores_the_items(data):
    model = SASRec(data.n_users, data.n_items, dim=8, blocks=1, heads=1, max_len=10)
    tables = [n for n, p in model.named_parameters() if p.shape[0] in (data.n_items, data.n_items + 1)]
    assert tables == ["item_emb.weight"]
    model.eval()
    scores = model.score_fn(data)(np.array([0, 1]))
    with torch.no_grad():
        seqs = model._sequences(data, np.arange(len(data)), 10)[1][:2]
        h = model.encode(torch.from_numpy(seqs))[:, -1]
    torch.testing.assert_close(scores, h @ model.item_emb.weight[1:].T)


def test_sampled_negatives_follow_the_proposal_and_carry_its_log_expected_count(data):
    model = SASRec(data.n_users, data.n_items, dim=8, blocks=1, heads=1, max_len=10, n_sampled=50)
    counts = np.zeros(data.n_items)
    counts[:3] = [1000.0, 500.0, 0.0]
    model.set_item_counts(counts)
    batch = model.examples(data, np.arange(len(data)), np.random.default_rng(0))
    neg = batch["negatives"].numpy() - 1
    q = (counts + 1) / (counts.sum() + data.n_items)
    np.testing.assert_allclose(batch["log_expected"].numpy(), np.log(50 * q[neg]), rtol=1e-5)
    share = np.mean(neg == 0)
    assert abs(share - q[0]) < 4 * math.sqrt(q[0] * (1 - q[0]) / neg.size)


def test_length_batches_cut_padding_without_changing_the_loss(data):
    torch.manual_seed(0)
    model = SASRec(data.n_users, data.n_items, dim=8, blocks=1, heads=1, max_len=30, dropout=0.0)
    examples = model.examples(data, np.arange(len(data)), np.random.default_rng(0))
    batches = model.minibatches(examples, 8, np.random.default_rng(1))
    assert sorted(i for b in batches for i in b["inputs"].shape[:1]) and sum(len(b["inputs"]) for b in batches) == 40
    assert min(b["inputs"].shape[1] for b in batches) < 30  # some batch was cut
    with torch.no_grad():
        whole = model.loss(examples)
        parts = sum(model.loss(b) * len(b["inputs"]) for b in batches) / 40
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(loss="softmax"), dict(loss="full", n_sampled=5),
                                    dict(loss="bce", n_sampled=0)])
def test_bad_loss_arguments_are_refused(kwargs):
    with pytest.raises(ValueError):
        SASRec(3, 20, **kwargs)
