"""The round loop as a specification: weighting, privacy of private parameters, determinism, failures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.fl.aggregation import (
    AggregationError,
    AggregationResult,
    Aggregator,
    ClientUpdate,
    FedAvg,
    PlainSum,
    SumProtocol,
    SumResult,
)
from fedsecure.dp.noise import NoiseSource
from fedsecure.fl.engine import FederatedConfig, FederatedTrainer, ServerOptimizer, SharedParameters, server_lr_at
from fedsecure.fl.sampling import FixedSizeSampling, PoissonSampling
from fedsecure.recsys.models import build_model
from fedsecure.recsys.partition import cross_device, cross_silo
from fedsecure.recsys.split import leave_last_out
from fedsecure.recsys.synthetic import generate


@pytest.fixture(scope="module")
def small():
    data = generate(n_users=40, n_items=60, mean_interactions=12, seed=3)
    return leave_last_out(data)


class Recording(Aggregator):
    """A real FedAvg that also keeps what the server received."""

    name = "recording"

    def __init__(self) -> None:
        self.inner = FedAvg()
        self.received: list[list[ClientUpdate]] = []

    def aggregate(self, updates: Sequence[ClientUpdate], *, round_index: int, dropouts=None) -> AggregationResult:
        self.received.append(list(updates))
        return self.inner.aggregate(updates, round_index=round_index, dropouts=dropouts)


# --- FedAvg -----------------------------------------------------------------------------------


@settings(max_examples=50, deadline=None)
@given(
    st.lists(
        # weights are example counts
        st.tuples(st.integers(0, 5000), st.lists(st.floats(-1.0, 1.0), min_size=3, max_size=3)),
        min_size=1,
        max_size=8,
    ).filter(lambda xs: sum(w for w, _ in xs) > 0)
)
def test_fedavg_is_the_capped_weighted_mean(clients):
    updates = [ClientUpdate(i, np.array(d, dtype=np.float32), float(w)) for i, (w, d) in enumerate(clients)]
    result = FedAvg(max_weight=1000.0).aggregate(updates, round_index=1)
    w = np.array([min(w, 1000.0) for w, _ in clients])
    d = np.array([u.delta for u in updates], dtype=np.float64)
    expected = (w[:, None] * d).sum(0) / w.sum()
    np.testing.assert_allclose(result.delta, expected, rtol=1e-5, atol=1e-6)
    assert result.included == tuple(range(len(clients)))


def test_fedavg_weights_by_examples_worked_example():
    updates = [ClientUpdate(0, np.array([1.0, 0.0], dtype=np.float32), 3.0),
               ClientUpdate(1, np.array([0.0, 2.0], dtype=np.float32), 1.0)]
    result = FedAvg().aggregate(updates, round_index=1)
    np.testing.assert_allclose(result.delta, [0.75, 0.5], rtol=1e-6)


def test_fedavg_excludes_dropped_clients_from_numerator_and_denominator():
    updates = [ClientUpdate(i, np.full(4, float(i), dtype=np.float32), 1.0) for i in range(4)]
    result = FedAvg().aggregate(updates, round_index=1, dropouts={3: "upload"})
    np.testing.assert_allclose(result.delta, np.full(4, 1.0))
    assert result.included == (0, 1, 2) and 3 in result.excluded


def test_fedavg_counts_clipped_coordinates_when_the_protocol_is_bounded():
    class Bounded(PlainSum):
        input_bound = 0.5

    updates = [ClientUpdate(0, np.array([2.0, -0.1], dtype=np.float32), 1.0)]
    result = FedAvg(Bounded()).aggregate(updates, round_index=1)
    np.testing.assert_allclose(result.delta, [0.5, -0.1], rtol=1e-6)
    assert result.stats["clipped_coordinates"] == 1


def test_fedavg_rejects_mismatched_lengths_and_empty_rounds():
    with pytest.raises(AggregationError, match="different lengths"):
        FedAvg().aggregate([ClientUpdate(0, np.zeros(2), 1.0), ClientUpdate(1, np.zeros(3), 1.0)], round_index=4)
    with pytest.raises(AggregationError, match="no client updates"):
        FedAvg().aggregate([], round_index=4)


def test_client_update_rejects_bad_weight_and_shape():
    with pytest.raises(ValueError, match="weight"):
        ClientUpdate(7, np.zeros(2), -1.0)
    with pytest.raises(ValueError, match="1-D"):
        ClientUpdate(7, np.zeros((2, 2)), 1.0)


# --- server optimizers ------------------------------------------------------------------------


def test_server_avg_applies_lr_times_delta():
    x, d = np.array([1.0, 2.0]), np.array([0.5, -1.0])
    np.testing.assert_allclose(ServerOptimizer("avg", 2.0).step(x, d), [2.0, 0.0])


def test_fedadam_first_step_moves_each_coordinate_by_about_lr():
    opt = ServerOptimizer("fedadam", 0.1, tau=1e-9)
    x = opt.step(np.zeros(3), np.array([1e-3, -2.0, 5.0]))
    # m = 0.1 d, sqrt(v) = 0.1 |d|: the step is lr * sign(d)
    np.testing.assert_allclose(x, [0.1, -0.1, 0.1], rtol=1e-5)


@given(lr=st.floats(1e-4, 10.0), rounds=st.integers(1, 500))
def test_cosine_server_step_starts_at_lr_and_decays_monotonically_above_zero(lr, rounds):
    steps = [server_lr_at(lr, "cosine", r, rounds) for r in range(1, rounds + 1)]
    assert steps[0] == pytest.approx(lr)
    assert all(a >= b for a, b in zip(steps, steps[1:])) and steps[-1] > 0
    if rounds % 2 == 0:  # round rounds / 2 + 1 takes half the step
        assert steps[rounds // 2] == pytest.approx(lr / 2)
    assert [server_lr_at(lr, "constant", r, rounds) for r in (1, rounds)] == [lr, lr]


def test_the_engine_applies_the_scheduled_server_step(small):
    t = make_trainer(small, rounds=4, server_optimizer="avg", server_lr=2.0, server_lr_schedule="cosine")
    t.run()
    used = [r.stats["server_lr"] for r in t.history.rounds]
    np.testing.assert_allclose(used, [2.0 * 0.5 * (1 + np.cos(np.pi * r / 4)) for r in range(4)])
    with pytest.raises(ValueError, match="unknown server lr schedule 'step'; choose one of: constant, cosine"):
        FederatedConfig(server_lr_schedule="step")


# --- the round loop ---------------------------------------------------------------------------


def make_trainer(split, *, model="mf-implicit", aggregator=None, seed=0, **cfg):
    torch.manual_seed(seed)
    m = build_model(model, split.train.n_users, split.train.n_items, dim=8)
    config = FederatedConfig(rounds=cfg.pop("rounds", 2), batch_size=16, lr=0.5, seed=seed, **cfg)
    return FederatedTrainer(m, split.train, cross_device(split.train), config=config, aggregator=aggregator)


def test_private_parameters_never_appear_in_what_clients_send(small):
    rec = Recording()
    trainer = make_trainer(small, model="ncf", aggregator=rec, rounds=1)
    shared = SharedParameters(trainer.model)
    assert not any(n.startswith("user_") for n in shared.names)
    private_before = {n: p.detach().clone() for n, p in trainer.model.private_parameters()}
    trainer.run()
    sent = rec.received[0]
    assert {u.delta.size for u in sent} == {shared.size}
    assert shared.size == sum(p.numel() for n, p in trainer.model.named_parameters() if not n.startswith("user_"))
    # the private tables did train (so they exist and changed) but are not part of any update
    changed = [n for n, p in trainer.model.private_parameters() if not torch.equal(p, private_before[n])]
    assert changed == ["user_gmf.weight", "user_mlp.weight"]


def test_a_client_changes_only_its_own_private_rows(small):
    trainer = make_trainer(small, rounds=1)
    before = trainer.model.user_factors.weight.detach().clone()
    client = trainer.clients[sorted(trainer.clients)[0]]
    trainer.client_update(client.client_id, trainer.shared.get(), 1)
    after = trainer.model.user_factors.weight.detach()
    moved = torch.nonzero((after != before).any(1)).flatten().tolist()
    assert moved == client.users.tolist()


def test_same_seed_same_run(small):
    runs = []
    for _ in range(2):
        t = make_trainer(small, seed=5, clients_per_round=0.5, dropout=0.2, straggler=0.3)
        t.run()
        runs.append(t.shared.get())
    np.testing.assert_array_equal(runs[0], runs[1])
    other = make_trainer(small, seed=6, clients_per_round=0.5)
    other.run()
    assert not np.array_equal(runs[0], other.shared.get())


def test_sampling_dropout_and_stragglers_are_recorded(small):
    t = make_trainer(small, rounds=3, clients_per_round=10, dropout=0.3, straggler=0.5)
    history = t.run()
    for r in history.rounds:
        assert r.sampled == 10
        assert r.included + len(r.excluded) == 10
    assert sum(len(r.excluded) for r in history.rounds) > 0
    assert sum(r.stragglers for r in history.rounds) > 0


def test_fixed_size_sampling_is_exact_and_seeded():
    ids = np.arange(100, 300)
    a, b = FixedSizeSampling(0.25, seed=4), FixedSizeSampling(0.25, seed=4)
    first = a.sample(ids, 1)
    assert first.size == 50 and np.unique(first).size == 50 and np.isin(first, ids).all()
    np.testing.assert_array_equal(first, b.sample(ids, 1))
    assert not np.array_equal(first, a.sample(ids, 2))


def test_poisson_sampling_includes_each_client_at_its_rate_from_the_secret_source():
    ids, q, rounds = np.arange(1000), 0.2, 30
    sampler = PoissonSampling(q, NoiseSource())
    draws = [sampler.sample(ids, r) for r in range(rounds)]
    sizes = np.array([d.size for d in draws])
    sd = np.sqrt(rounds * ids.size * q * (1 - q))
    assert abs(sizes.sum() - rounds * ids.size * q) < 5 * sd
    assert len({d.size for d in draws}) > 1  # not a fixed-size sample
    for d in draws:
        assert np.all(np.diff(d) > 0) and np.isin(d, ids).all()
    # a second source keyed from the OS draws a different sample for the same round
    assert not np.array_equal(PoissonSampling(q, NoiseSource()).sample(ids, 0), draws[0])
    np.testing.assert_array_equal(PoissonSampling(1.0, NoiseSource()).sample(ids[::-1], 0), ids)
    with pytest.raises(ValueError, match="rate must be in"):
        PoissonSampling(0.0, NoiseSource())


def test_a_round_that_samples_nobody_changes_nothing(small):
    class Nobody:
        def sample(self, ids, round_index):
            return ids[:0]

        def describe(self):
            return {"sampling": "none"}

    t = make_trainer(small, rounds=1)
    t.sampler = Nobody()
    before = t.shared.get()
    record = t.run().rounds[0]
    assert record.sampled == 0 and record.error == "no client sampled"
    np.testing.assert_array_equal(t.shared.get(), before)


def test_an_aborted_aggregation_leaves_the_global_model_unchanged(small):
    class Failing(SumProtocol):
        name = "failing"

        def sum(self, vectors: Mapping[int, np.ndarray], *, dropouts=None) -> SumResult:
            raise AggregationError("too few survivors")

    t = make_trainer(small, aggregator=FedAvg(Failing()), rounds=1)
    before = t.shared.get()
    record = t.run().rounds[0]
    assert record.error == "too few survivors" and record.included == 0
    np.testing.assert_array_equal(t.shared.get(), before)


def test_evaluation_every_r_rounds_and_after_the_last(small):
    t = make_trainer(small, rounds=5, eval_every=2)
    t.evaluate = lambda model: {"calls": 1.0}
    assert [e["round"] for e in t.run().evaluations] == [2, 4, 5]


def test_cross_silo_clients_hold_many_users(small):
    clients = cross_silo(small.train, 4, seed=0)
    m = build_model("mf", small.train.n_users, small.train.n_items, dim=4)
    t = FederatedTrainer(m, small.train, clients, config=FederatedConfig(rounds=1, batch_size=32, lr=0.1))
    record = t.run().rounds[0]
    assert record.sampled == len(clients) == record.included
    assert sum(len(c.users) for c in clients) == len(np.unique(small.train.users))


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("rounds", 0, "rounds"),
        ("clients_per_round", 2.5, "whole"),
        ("dropout", 1.0, "dropout"),
        ("server_optimizer", "sgdx", "choose one of: avg, fedadam"),
        ("lr", 0.0, "lr"),
    ],
)
def test_bad_config_is_named(field, value, message):
    with pytest.raises(ValueError, match=message):
        FederatedConfig(**{field: value})
