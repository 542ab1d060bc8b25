"""Decrypted sums equal numpy sums within the stated bound, for any length and client count."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import os

from fedsecure.ckks import CKKSSum, ClientEncryptor, ClientIdentity, KeyHolder, StreamingAggregator
from fedsecure.fl.aggregation import AggregationError, ClientUpdate, FedAvg

SLOTS = 4096  # values per ciphertext at the default parameters
EDGE_LENGTHS = [1, 2, SLOTS // 2 - 1, SLOTS // 2, SLOTS // 2 + 1, SLOTS - 1, SLOTS, SLOTS + 1, 3 * SLOTS + 7]
IDS = [ClientIdentity(i) for i in range(8)]


@pytest.fixture(scope="module")
def holder():
    return KeyHolder(clients=[c.registration for c in IDS])


@pytest.fixture(scope="module")
def encryptors(holder):
    return [ClientEncryptor(holder.public_context(), c) for c in IDS]


def _round(holder, length):
    r = os.urandom(16)
    return r, StreamingAggregator(holder.aggregator_context(), length, round_id=r, clients=holder.registrations)


@given(
    length=st.one_of(st.sampled_from(EDGE_LENGTHS), st.integers(1, 20_000)),
    n=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    magnitude=st.sampled_from([1e-6, 1.0, 100.0]),
    weighted=st.booleans(),
)
@settings(max_examples=30, deadline=None)
def test_decrypted_sum_matches_numpy(holder, encryptors, length, n, seed, magnitude, weighted):
    rng = np.random.default_rng(seed)
    xs = rng.uniform(-magnitude, magnitude, (n, length))
    ws = rng.uniform(0, 1, n) if weighted else np.ones(n)
    r, agg = _round(holder, length)
    for i in range(n):
        agg.add(encryptors[i].encrypt(xs[i], round_id=r, weight=ws[i]), sender=i)
    assert agg.count == n
    out = holder.decrypt(agg.aggregate())
    expected = (ws[:, None] * xs).sum(0)
    assert out.shape == (length,)
    assert np.max(np.abs(out - expected)) <= holder.error_bound(n, length)


def test_millions_of_values(holder, encryptors):
    length = 1_048_577  # 2^20 + 1: 257 ciphertexts, the last with one value
    rng = np.random.default_rng(7)
    xs = rng.uniform(-1, 1, (2, length))
    r, agg = _round(holder, length)
    for i in range(2):
        blob = encryptors[i].encrypt(xs[i], round_id=r)
        # bytes per value: about 8 (the masked c0 half; the key holder computes c1), 2x float32
        assert len(blob) / length < 8.05
        agg.add(blob, sender=i)
    out = holder.decrypt(agg.aggregate())
    assert np.max(np.abs(out - xs.sum(0))) <= holder.error_bound(2, length) <= 1e-6


@given(n=st.integers(1, 8), seed=st.integers(0, 2**32 - 1), drop=st.data())
@settings(max_examples=10, deadline=None)
def test_ckks_sum_with_dropouts_sums_the_survivors(n, seed, drop):
    proto = CKKSSum(min_contributions=1)
    rng = np.random.default_rng(seed)
    vectors = {100 + i: rng.uniform(-1, 1, 300) for i in range(n)}
    dropouts = {
        c: s
        for c in vectors
        if (s := drop.draw(st.sampled_from([None, "encrypt", "upload"]), label=f"client {c}")) is not None
    }
    survivors = tuple(sorted(set(vectors) - set(dropouts)))
    if not survivors:
        with pytest.raises(AggregationError):
            proto.sum(vectors, dropouts=dropouts)
        return
    r = proto.sum(vectors, dropouts=dropouts)
    assert r.included == survivors
    assert set(r.excluded) == set(dropouts)
    expected = np.sum([vectors[c] for c in survivors], axis=0)
    assert np.max(np.abs(r.total - expected)) <= r.stats["error_bound"]
    assert r.stats["contributions"] == len(survivors)


def test_ckks_sum_refuses_below_min_contributions():
    proto = CKKSSum(min_contributions=3)
    vectors = {i: np.ones(10) for i in range(3)}
    with pytest.raises(AggregationError, match="minimum is 3"):
        proto.sum(vectors, dropouts={0: "upload"})


def test_ckks_sum_excludes_bad_vectors_and_sums_the_rest():
    proto = CKKSSum(max_clients=16)
    rng = np.random.default_rng(3)
    good = {i: rng.uniform(-1, 1, 1000) for i in range(4)}
    bad = {
        10: np.ones(999),  # wrong length
        11: np.full(1000, np.nan),  # not finite
        12: np.full(1000, 2 * proto.input_bound),  # outside the input bound
        13: np.ones((10, 100)),  # not 1-D
    }
    r = proto.sum({**good, **bad})
    assert r.included == (0, 1, 2, 3)
    assert set(r.excluded) == set(bad)
    assert "wrong length 999" in r.excluded[10] and "non-finite" in r.excluded[11]
    assert "input bound" in r.excluded[12] and "1-D" in r.excluded[13]
    assert all(r.excluded[c].startswith(f"client {c}") for c in bad)
    assert np.max(np.abs(r.total - sum(good.values()))) <= r.stats["error_bound"]


def test_stats_report_wire_cost_timings_and_params():
    r = CKKSSum().sum({i: np.zeros(8192) for i in range(2)})
    s = r.stats
    assert 8.0 <= s["bytes_per_value"] < 8.1 and s["float32_ratio"] == s["bytes_per_value"] / 4
    assert s["encrypt_seconds"] > 0 and s["aggregate_seconds"] > 0 and s["decrypt_seconds"] > 0
    # clients upload only to the aggregator; the key holder downloads the aggregate alone
    assert s["aggregator_download_bytes"] == s["upload_bytes"]
    assert s["key_holder_download_bytes"] == s["aggregate_bytes"] < s["upload_bytes"]
    assert s["params"]["security_bits"] >= 128 and 0 < s["error_bound"] < 1e-6


def test_fedavg_over_ckks_matches_plaintext_fedavg():
    rng = np.random.default_rng(5)
    updates = [ClientUpdate(i, rng.normal(0, 0.1, 3000), float(rng.integers(1, 50))) for i in range(5)]
    proto = CKKSSum()
    secure = FedAvg(proto, max_weight=50).aggregate(updates, round_index=0)
    plain = FedAvg(max_weight=50).aggregate(updates, round_index=0)
    # the mean divides the sum by the total weight, so its error is the sum's bound over that weight
    bound = secure.stats["error_bound"] * (1 + 1 / secure.stats["total_weight"]) / secure.stats["total_weight"]
    assert np.max(np.abs(secure.delta - plain.delta)) <= bound
    assert secure.stats["clipped_coordinates"] == 0


def test_every_round_gets_a_fresh_round_id_and_decrypts_once():
    """The adapter runs each call as its own round: a new round id, one decryption, the key holder's policy."""
    proto = CKKSSum()
    vectors = {i: np.full(100, 0.25) for i in range(3)}
    first, second = proto.sum(vectors), proto.sum(vectors)
    assert first.stats["round_id"] != second.stats["round_id"]
    assert len(proto._keys().used_rounds) == 2
    assert np.max(np.abs(second.total - 0.75)) <= second.stats["error_bound"]


def test_more_clients_than_max_clients_is_an_explicit_error():
    proto = CKKSSum(max_clients=3)
    with pytest.raises(AggregationError, match="4 clients exceed max_clients=3"):
        proto.sum({i: np.zeros(10) for i in range(4)})


def test_poisson_sampled_dp_rounds_never_exceed_the_ckks_limit():
    """Issue 11 item 9: with --secure ckks --dp user-central the sample size is Binomial(N, W/N); the experiment
    sizes CKKSSum for the population, so every round that samples anyone is aggregated, none lost to the limit."""
    from fedsecure.experiment import Experiment, RunConfig
    from fedsecure.recsys.synthetic import generate

    data = generate(n_users=40, n_items=60, mean_interactions=12, seed=2)
    cfg = RunConfig(model="mf-implicit", setting="cross-device", secure="ckks", dp="user-central",
                    noise_multiplier=1.0, clip=0.5, clients_per_round=0.1, delta=1e-3, rounds=12, eval_every=12,
                    batch_size=32, lr=0.5, server_optimizer="avg", server_lr=1.0, n_negatives=20,
                    model_args={"dim": 8}, seed=4)
    exp = Experiment(cfg, data=data)
    proto = exp.aggregator.protocol
    assert proto.max_clients == len(exp.clients) and proto.input_bound >= cfg.clip
    result = exp.run()
    rounds = result["rounds"]
    assert max(r["sampled"] for r in rounds) > exp.clients_per_round  # some rounds drew more than W
    assert all(not r["error"] or r["sampled"] == 0 for r in rounds)
    assert result["privacy"]["rounds"] == sum(r["sampled"] > 0 for r in rounds)


def test_a_malformed_contribution_costs_its_fault_group_not_the_round():
    """One client signs uniform residues as its c0: CKKSSum still returns the exact sum of the other fault
    groups, names the lost group's clients, and reports it; with a single group the round would be lost."""
    from fedsecure.ckks.keys import contribution_message
    from fedsecure.ckks.wire import ContributionBlob, chunks_digest

    proto = CKKSSum(fault_groups=3, min_group=4)
    xs = {i: np.random.default_rng(i).uniform(-0.1, 0.1, 5000) for i in range(12)}
    enc = proto._client(7)
    honest = enc.encrypt

    def malformed(x, *, round_id, weight=1.0):
        p = ContributionBlob.from_bytes(honest(x, round_id=round_id, weight=weight), sender=7)
        q = int(enc._role.moduli[0])
        junk = tuple((np.frombuffer(os.urandom(len(c)), "<u8") % q).astype("<u8").tobytes() for c in p.chunks)
        sig = enc.identity.sign(contribution_message(enc.context_id, round_id, 7, p.length, chunks_digest(junk)))
        return ContributionBlob(p.context_id, round_id, 7, p.length, junk, sig).to_bytes()

    enc.encrypt = malformed
    r = proto.sum(xs)
    assert r.stats["fault_groups"] == 3 and r.stats["failed_groups"] == 1
    lost = sorted(set(xs) - set(r.included))
    assert 7 in lost and len(lost) == 4 and all("fault group" in r.excluded[c] for c in lost)
    assert np.max(np.abs(r.total - sum(xs[c] for c in r.included))) <= r.stats["error_bound"]
