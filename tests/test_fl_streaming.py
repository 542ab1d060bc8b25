"""Rounds in O(model) memory: streamed aggregation, sparse updates, parallel clients.

The properties: a streamed round gives exactly what summing the collected
updates gives; the engine lets go of each update once it is added; sparse
updates carry only the rows a client touched and sum to exactly the dense
result; ``workers=2`` gives exactly ``workers=1``; rules that must see every
update refuse a round that would not fit their buffer, before it trains.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.dp.noise import NoiseSource
from fedsecure.dp.user_level import CentralDPFedAvg
from fedsecure.experiment import Experiment, RunConfig
from fedsecure.fl.aggregation import (
    AggregationError,
    AggregationResult,
    Aggregator,
    ClientUpdate,
    FedAvg,
    PlainSum,
    SparseRows,
    check_updates,
)
from fedsecure.fl.engine import FederatedConfig, FederatedTrainer
from fedsecure.recsys.models import build_model
from fedsecure.recsys.partition import cross_device, cross_silo
from fedsecure.recsys.split import leave_last_out
from fedsecure.recsys.synthetic import generate


@pytest.fixture(scope="module")
def small():
    return leave_last_out(generate(n_users=40, n_items=60, mean_interactions=12, seed=3))


def make_trainer(split, model="mf", aggregator=None, silos=0, **cfg):
    torch.manual_seed(0)
    train = split.train
    net = build_model(model, train.n_users, train.n_items, dim=8)
    clients = cross_silo(train, silos) if silos else cross_device(train)
    cfg.setdefault("rounds", 3)
    cfg.setdefault("lr", 0.5)
    return FederatedTrainer(net, train, clients, config=FederatedConfig(**cfg), aggregator=aggregator)


class CollectedFedAvg(Aggregator):
    """Weighted FedAvg as the engine computed it before streaming: every update kept, then summed."""

    name = "collected-fedavg"

    def aggregate(self, updates: Sequence[ClientUpdate], *, round_index: int, dropouts=None) -> AggregationResult:
        check_updates(updates, round_index)
        dropouts = dropouts or {}
        vectors = {}
        for u in updates:
            w = min(u.weight, 1000.0) / 1000.0
            vec = np.empty(u.delta.size + 1, dtype=np.float32)
            np.multiply(np.asarray(u.delta, dtype=np.float32), w, out=vec[:-1])
            vec[-1] = w
            vectors[u.client_id] = vec
        survivors = sorted(c for c in vectors if c not in dropouts)
        total = np.zeros(vectors[survivors[0]].size)
        for c in survivors:
            total += vectors[c]
        return AggregationResult(total[:-1] / total[-1], tuple(survivors))


def final_params(trainer):
    trainer.run()
    return torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()]).numpy().copy()


@pytest.mark.parametrize("model", ["mf", "mf-implicit"])
def test_a_streamed_round_equals_the_sum_of_the_collected_updates(small, model):
    kw = dict(clients_per_round=15, dropout=0.2, straggler=0.3, seed=4)
    streamed = make_trainer(small, model, FedAvg(), sparse_updates=False, **kw)
    assert streamed.aggregator.streaming and not CollectedFedAvg().streaming
    collected = make_trainer(small, model, CollectedFedAvg(), **kw)
    np.testing.assert_array_equal(final_params(streamed), final_params(collected))


class Watching(FedAvg):
    """FedAvg that notes, at each update it receives, how many earlier updates are still alive."""

    def __init__(self):
        super().__init__()
        self.refs, self.alive = [], []

    def open_round(self, clients, *, round_index, dropouts=None):
        inner = super().open_round(clients, round_index=round_index, dropouts=dropouts)
        outer = self

        class Session:
            def add(self, update):
                outer.alive.append(sum(r() is not None for r in outer.refs))
                outer.refs.append(weakref.ref(update.delta))
                inner.add(update)

            def result(self):
                return inner.result()

        return Session()


@pytest.mark.parametrize("workers,sparse", [(1, False), (1, True), (2, True)])
def test_the_engine_lets_go_of_each_update_once_added(small, workers, sparse):
    agg = Watching()
    t = make_trainer(small, "mf", agg, rounds=1, workers=workers, sparse_updates=sparse)
    t.run()
    assert len(agg.alive) == len(t.clients)
    # at most the one before (still bound while the next is produced): never the round's updates
    assert max(agg.alive) <= 1


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 6), width=st.integers(1, 4), seed=st.integers(0, 2**32 - 1),
    touched=st.floats(0.0, 1.0),
)
def test_sparse_rows_stand_for_the_dense_vector_and_add_exactly(rows, width, seed, touched):
    rng = np.random.default_rng(seed)
    layout = [("table", (rows, width), 0), ("bias", (rows,), rows * width), ("scalar", (1,), rows * width + rows)]
    dense = rng.normal(size=rows * width + rows + 1).astype(np.float32)
    keep = rng.random(rows) < touched
    dense[: rows * width].reshape(rows, width)[~keep] = 0
    sparse = SparseRows.from_dense(dense, layout)
    np.testing.assert_array_equal(sparse.dense(), dense)
    table = sparse.blocks[0] if keep.any() else None
    if table is not None and not keep.all():
        np.testing.assert_array_equal(table.rows, np.flatnonzero(keep))  # only the touched rows travel
    base = rng.normal(size=dense.size)
    a, b = base.copy(), base.copy()
    a += dense
    sparse.add_into(b)
    np.testing.assert_array_equal(a, b)
    assert sparse.nbytes <= dense.nbytes + 4 * rows  # ids add at most one int32 per row
    np.testing.assert_allclose(sparse.norm(), np.linalg.norm(dense.astype(np.float64)), rtol=1e-12)


def test_plaintext_clients_send_only_the_rows_they_touched_and_the_sum_is_unchanged(small):
    sent = {}

    class Recording(PlainSum):
        def open(self, clients, *, dropouts=None):
            inner = super().open(clients, dropouts=dropouts)
            add = inner.add

            def record(cid, vector):
                sent[cid] = vector
                add(cid, vector)

            inner.add = record
            return inner

    sparse = make_trainer(small, "mf", FedAvg(Recording()), rounds=2)
    dense = make_trainer(small, "mf", FedAvg(), rounds=2, sparse_updates=False)
    np.testing.assert_array_equal(final_params(sparse), final_params(dense))
    layout = {name: (shape, offset) for name, shape, offset in sparse.layout}
    item_offset = layout["item_factors.weight"][1]
    train = small.train
    for cid, vec in sent.items():
        assert isinstance(vec, SparseRows)
        blocks = {b.offset: b for b in vec.blocks}
        items = set(train.items[sparse.clients[cid].rows].tolist())
        sent_rows = set(blocks[item_offset].rows.tolist())
        assert sent_rows and sent_rows <= items  # MF (explicit ratings): exactly the rated items move
        assert blocks[item_offset].values.size == len(sent_rows) * 8
        assert vec.nbytes < (sparse.shared.size + 1) * 4
    record = sparse.history.rounds[-1]
    assert record.stats["sparse_updates"] and record.bytes_up_per_client < (sparse.shared.size + 1) * 4


def test_central_dp_sparse_equals_dense(small):
    def run(sparse):
        agg = CentralDPFedAvg(None, clip=0.5, noise_multiplier=0.3, expected_clients=20, sample_rate=0.5,
                              delta=1e-5, noise=NoiseSource.insecure_seeded(7))
        assert agg.accepts_sparse
        t = make_trainer(small, "mf-implicit", agg, clients_per_round=20, sparse_updates=sparse)
        out = final_params(t)
        return out, t.history.rounds[-1].stats
    (a, sa), (b, sb) = run(True), run(False)
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    assert sa["sparse_updates"] and not sb["sparse_updates"]


def test_secure_protocols_keep_updates_dense():
    from fedsecure.ckks.sum import CKKSSum
    from fedsecure.secagg.sum import SecAggSum

    for protocol in (SecAggSum(), CKKSSum()):
        assert not FedAvg(protocol).accepts_sparse
        assert not CentralDPFedAvg(protocol, clip=1, noise_multiplier=1, expected_clients=5, sample_rate=0.5,
                                   delta=1e-5).accepts_sparse
    assert FedAvg(CKKSSum()).streaming and FedAvg(SecAggSum()).streaming


def test_ckks_streams_a_round_and_reports_dense_traffic(small):
    from fedsecure.ckks.sum import CKKSSum

    t = make_trainer(small, "mf-implicit", FedAvg(CKKSSum(max_clients=64)), rounds=1, clients_per_round=6)
    t.run()
    record = t.history.rounds[0]
    assert record.error is None and record.included == 6
    assert not record.stats["sparse_updates"]
    assert record.bytes_up_per_client > (t.shared.size + 1) * 4  # ciphertexts cost more than floats


def config(**kw):
    base = dict(rounds=2, eval_every=2, seed=3, clients_per_round=12, n_negatives=20)
    base.update(kw)
    return RunConfig(**base)


@pytest.mark.parametrize("kw", [
    dict(model="mf-implicit"),
    dict(model="sasrec", model_args={"dim": 8, "blocks": 1, "max_len": 8}, lr=0.5),
    dict(model="ncf", setting="cross-silo", silos=4, clients_per_round=1.0),
    dict(model="mf-implicit", aggregator="median"),
])
def test_two_workers_give_exactly_the_result_of_one(small, kw):
    data = generate(n_users=50, n_items=70, mean_interactions=14, seed=9)
    runs = []
    for workers in (1, 2):
        e = Experiment(config(workers=workers, **kw), data=data)
        res = e.run()
        params = torch.cat([p.detach().reshape(-1) for p in e.model.parameters()]).numpy().copy()
        runs.append((params, res["final"], [r["stats"].get("total_weight") for r in res["rounds"]]))
        assert not any(a["option"] == "--workers" for a in res["adjustments"])
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1] and runs[0][2] == runs[1][2]


def test_worker_batches_give_the_same_result_and_bound_the_updates_in_flight(small, monkeypatch):
    import fedsecure.fl.engine as engine

    t = make_trainer(small, "mf", workers=2)
    for n in (1, 7, 40, 10**6):
        b = t._batch(n)
        assert b >= 1 and b <= max(1, -(-n // 8))  # about four batches per worker, never empty
        assert b == 1 or 2 * 2 * b * 4 * t.shared.size <= engine.IN_FLIGHT_BYTES
    data = generate(n_users=50, n_items=70, mean_interactions=14, seed=9)
    params = []
    for workers, budget in ((1, engine.IN_FLIGHT_BYTES), (2, engine.IN_FLIGHT_BYTES), (2, 1)):
        monkeypatch.setattr(engine, "IN_FLIGHT_BYTES", budget)  # 1 byte: one client per message
        e = Experiment(config(workers=workers, model="mf-implicit", clients_per_round=1.0), data=data)  # batches of 7
        e.run()
        params.append(torch.cat([p.detach().reshape(-1) for p in e.model.parameters()]).numpy().copy())
    np.testing.assert_array_equal(params[0], params[1])
    np.testing.assert_array_equal(params[0], params[2])


def test_a_stateful_local_trainer_keeps_clients_in_this_process():
    data = generate(n_users=30, n_items=40, mean_interactions=10, seed=2)
    e = Experiment(config(workers=2, setting="cross-silo", silos=3, dp="dpsgd", noise_multiplier=1.0,
                          clients_per_round=1.0, rounds=1, eval_every=1), data=data)
    res = e.run()
    notes = [a for a in res["adjustments"] if a["option"] == "--workers"]
    assert notes and notes[0]["used"] == 1 and "per-client state" in notes[0]["reason"]


def test_a_rule_that_must_see_every_update_refuses_a_round_over_its_buffer_before_training(small):
    from fedsecure.robust import make_rule
    from fedsecure.robust.base import RobustAggregator

    agg = RobustAggregator(make_rule("median"))
    t = make_trainer(small, "mf", agg, rounds=1, max_buffer_bytes=10_000)
    before = t.shared.get()
    private = t.model.user_factors.weight.detach().clone()
    with pytest.raises(ValueError, match=r"must see every update at once: 40 clients x 541 float32 values = .* GiB at least, above --max-buffer-gib"):
        t.run_round(1)
    np.testing.assert_array_equal(t.shared.get(), before)
    assert torch.equal(t.model.user_factors.weight, private)  # nobody trained


def test_an_aggregation_error_mid_stream_loses_the_round_but_every_client_still_trains(small):
    class FailsAtThird(PlainSum):
        def open(self, clients, *, dropouts=None):
            inner = super().open(clients, dropouts=dropouts)
            add, count = inner.add, []

            def add3(cid, vector):
                count.append(cid)
                if len(count) == 3:
                    raise AggregationError("third client's message is malformed")
                add(cid, vector)

            inner.add = add3
            return inner

    t = make_trainer(small, "mf", FedAvg(FailsAtThird()), rounds=1)
    before_shared, before_users = t.shared.get(), t.model.user_factors.weight.detach().clone()
    record = t.run().rounds[0]
    assert record.error == "third client's message is malformed"
    np.testing.assert_array_equal(t.shared.get(), before_shared)
    moved = (t.model.user_factors.weight != before_users).any(1).sum().item()
    assert moved == len(t.clients)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), touched=st.floats(0.0, 1.0), signed_zero=st.booleans())
def test_take_update_is_the_dense_difference_as_rows_and_puts_the_parameters_back(seed, touched, signed_zero):
    """What a client sends and where it leaves the model: the touched rows of (trained - global), exactly
    what ``SparseRows.from_dense`` of the dense difference lists, and the parameters equal to the global ones
    again, bit for bit (a -0.0 written over a 0.0 too), so the next client may start without a full copy."""
    from fedsecure.fl.engine import SharedParameters

    rng = np.random.default_rng(seed)
    model = build_model("ncf", 5, 9, dim=4)  # item embeddings, Linear weights and biases
    shared = SharedParameters(model)
    with torch.no_grad():
        model.item_gmf.weight[0] = 0.0  # a row of zeros, to write -0.0 over
    start = shared.get()
    start.flags.writeable = False
    with torch.no_grad():
        for _, p in model.shared_parameters():
            view = p.detach().numpy().reshape(p.shape[0] if p.dim() else 1, -1)
            rows = rng.random(view.shape[0]) < touched
            view[rows] += rng.normal(size=(int(rows.sum()), view.shape[1])).astype(np.float32)
        if signed_zero:
            model.item_gmf.weight[0] = -0.0
    trained = shared.get()
    expected = SparseRows.from_dense(trained - start, shared.layout())
    got = shared.take_update(start)
    assert [(b.offset, b.width) for b in got.blocks] == [(b.offset, b.width) for b in expected.blocks]
    for a, b in zip(got.blocks, expected.blocks):
        assert (a.rows is None) == (b.rows is None)
        if a.rows is not None:
            np.testing.assert_array_equal(a.rows, b.rows)
        np.testing.assert_array_equal(a.values, b.values)
    np.testing.assert_array_equal(got.dense(), trained - start)
    assert shared.get().view(np.uint32).tolist() == start.view(np.uint32).tolist()
