"""SecAggSum: the engine-facing adapter (FedAvg over secure aggregation equals plaintext FedAvg)."""

import warnings

import numpy as np
import pytest

from fedsecure.fl.aggregation import AggregationError, ClientUpdate, FedAvg, PlainSum
from fedsecure.secagg import ConfigurationError, SecAggSum
from fedsecure.secagg import messages as m


@pytest.mark.parametrize("graph,name", [("complete", "secagg"), ("sparse", "secagg+")])
def test_fedavg_over_secagg_matches_plaintext_within_quantization(graph, name):
    proto = SecAggSum(graph=graph, clip_range=0.5, dropout_rate=0.1)
    assert proto.name == name and proto.input_bound == 0.5
    ups = [ClientUpdate(i, np.sin(np.arange(50) * (i + 1)) * 0.6, float(10 + i)) for i in range(24)]  # some clipped
    drops = {2: "share_keys", 7: "masked_input", 11: "unmasking"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sec = FedAvg(proto).aggregate(ups, round_index=0, dropouts=drops)
    clipped = [ClientUpdate(u.client_id, np.clip(u.delta, -0.5, 0.5), u.weight) for u in ups]
    plain = FedAvg(PlainSum()).aggregate(clipped, round_index=0, dropouts={2: "x", 7: "x"})
    assert sec.included == plain.included  # 11 sent its input before dropping: it is in the sum
    enc = proto.encoding_for(24)
    # delta = S / W; both S and W carry at most n/(2 scale) error.
    assert sec.stats["clipped_coordinates"] > 0
    # delta = S / W with S, W each within n/(2 scale); W >= 0.1 here (weights/1000), plus float32 inputs.
    assert np.abs(sec.delta - plain.delta).max() <= 2 * 24 / (2 * enc.scale) / 0.1 + 1e-6
    st = sec.stats
    for key in ("upload_bytes", "download_bytes", "stage_seconds", "k", "t", "bits",
                "failure_probability", "privacy_failure_probability", "quantization_error_bound"):
        assert key in st
    # The masked vectors travel packed to 32 bits: header + an empty complaint list (4 bytes) + 51 * 4 bytes + tag,
    # not 8 bytes per coordinate.
    assert st["upload_bytes_by_stage"]["masked_input"] == (24 - 2) * (m.HEADER.size + 4 + 51 * 4 + m.TAG_BYTES)


def test_too_few_survivors_raise_aggregation_error_not_a_wrong_sum():
    proto = SecAggSum(graph="complete", active=True)  # n=6: t=4 > k/2
    vecs = {u: np.full(4, 0.1) for u in range(6)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(AggregationError, match="t="):
            proto.sum(vecs, dropouts={u: "masked_input" for u in range(4)})
    with pytest.raises(AggregationError, match="at least 2"):
        proto.sum({0: np.zeros(3)})
    with pytest.raises(AggregationError, match="different lengths"):
        proto.sum({0: np.zeros(3), 1: np.zeros(4)})


def test_bad_configuration_and_bad_stage_names_are_refused():
    with pytest.raises(ConfigurationError, match="graph"):
        SecAggSum(graph="ring")
    with pytest.raises(ConfigurationError, match="client_noise"):
        SecAggSum(client_noise=object())
    with pytest.raises(ValueError, match="unknown dropout stage"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            SecAggSum().sum({u: np.zeros(2) for u in range(5)}, dropouts={1: "upload"})
    assert SecAggSum(active=True).stages == ("advertise_keys", "seed_reveal", "share_keys", "masked_input",
                                             "consistency_check", "unmasking", "exclusion")


class PatternNoise:
    """Deterministic noise *values* (the real sampler lives in fedsecure.dp); checks the hook's plumbing."""

    def sample(self, size, scale):
        return np.full(size, 7, dtype=np.int64)

    def max_abs_sum(self, n_clients, scale):
        return 7.0 * n_clients


def test_client_noise_is_added_in_encoded_units_before_masking():
    proto = SecAggSum(graph="complete", client_noise=PatternNoise())
    vecs = {u: np.full(3, 0.25) for u in range(6)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = proto.sum(vecs)
    enc = proto.encoding_for(6)
    assert np.allclose(r.total, 6 * 0.25 + 6 * 7 / enc.scale, atol=enc.max_error(6))


def _cheater(monkeypatch, bad: int, what: str):
    """Make client ``bad`` of every simulated round deal shares of a secret other than its public one."""
    import os

    import fedsecure.secagg.simulator as sim
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    class Cheater(sim.SecAggClient):
        def receive(self, data):
            out = super().receive(data)
            if self.id == bad and self.stage == "commitments":  # after advertising, before dealing
                if what == "mask_key":
                    self._mask_sk = X25519PrivateKey.generate()
                else:
                    self._self_seed = os.urandom(32)
            return out

    monkeypatch.setattr(sim, "SecAggClient", Cheater)


def test_semi_honest_a_client_caught_dealing_inconsistent_shares_costs_one_round_then_is_left_out(monkeypatch):
    """Semi-honest mode (no identity keys, malicious clients outside its model): one malicious dealer can make
    one round abort with ReconstructionError naming it, never a wrong sum; SecAggSum then leaves it out."""
    from fedsecure.secagg import ReconstructionError

    _cheater(monkeypatch, 4, "mask_key")
    proto = SecAggSum(graph="complete")
    vecs = {u: np.full(6, 0.1 * u) for u in range(8)}
    with pytest.raises(ReconstructionError, match="client 4"):
        proto.sum(vecs, dropouts={4: "masked_input"})
    assert 4 in proto.blocked
    res = proto.sum(vecs, dropouts={4: "masked_input"})
    assert 4 not in res.included and "inconsistent" in res.excluded[4]
    assert np.allclose(res.total, sum(vecs[u] for u in res.included), atol=1e-5)


@pytest.mark.parametrize("what, dropouts", [("self_mask", {}), ("mask_key", {4: "masked_input"})])
def test_active_a_client_dealing_inconsistent_shares_is_excluded_and_the_round_sums_the_others(monkeypatch, what,
                                                                                             dropouts):
    """Active mode: one malicious dealer never aborts a round. A client dealing shares of a self-mask seed other
    than the one it committed to (and surviving), or of a masking key other than the advertised one (and then
    dropping), is excluded in that same round by a verified proof and the round returns the exact sum of the
    other seven; nothing is blocked for later rounds (there is nothing to catch up on)."""
    _cheater(monkeypatch, 4, what)
    proto = SecAggSum(graph="complete", active=True)
    vecs = {u: np.full(6, 0.1 * u) for u in range(8)}
    res = proto.sum(vecs, dropouts=dropouts)
    assert res.included == (0, 1, 2, 3, 5, 6, 7)
    assert "verified proof" in res.excluded[4] and "inconsistent" in res.excluded[4]
    assert np.allclose(res.total, sum(vecs[u] for u in res.included), atol=1e-5)
    assert proto.blocked == {}


def _streamed(proto, vecs, dropouts=None, keep=None):
    """One round through ``proto.open`` (the engine's path), vector by vector in client order."""
    session = proto.open(sorted(vecs), dropouts=dropouts)
    for u in sorted(vecs):
        session.add(u, vecs[u] if keep is None else keep(u))
    return session.result()


@pytest.mark.parametrize("graph,active,dropouts", [
    ("complete", False, {}),
    ("sparse", False, {1: "advertise_keys", 4: "share_keys", 9: "masked_input", 13: "unmasking"}),
    ("sparse", True, {3: "seed_reveal", 8: "masked_input", 10: "consistency_check", 14: "unmasking"}),
])
def test_a_streamed_round_gives_exactly_the_round_over_all_vectors(graph, active, dropouts):
    """Inputs given one at a time after the key exchange (late input) sum to exactly what the round over all
    vectors at once gives, with the same clients in and out, whoever drops where."""
    rng = np.random.default_rng(5)
    vecs = {u: rng.uniform(-0.9, 0.9, 40).astype(np.float32) for u in range(16)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proto = SecAggSum(graph=graph, active=active, dropout_rate=0.3)
        assert proto.streaming and FedAvg(proto).streaming
        whole = proto.sum(vecs, dropouts=dropouts)
        streamed = _streamed(proto, vecs, dropouts)
    np.testing.assert_array_equal(streamed.total, whole.total)
    assert streamed.included == whole.included and set(streamed.excluded) == set(whole.excluded)
    assert set(dropouts) - {u for u, s in dropouts.items() if s in ("unmasking", "consistency_check")} \
        <= set(streamed.excluded)
    expect = sum(np.float64(vecs[u]) for u in streamed.included)
    np.testing.assert_allclose(streamed.total, expect, atol=proto.encoding_for(16).max_error(16))
    assert streamed.stats["upload_bytes"] == whole.stats["upload_bytes"]
    assert streamed.stats["download_bytes"] == whole.stats["download_bytes"]


@pytest.mark.parametrize("workers", [1, 2])
def test_a_streamed_round_lets_go_of_each_input_once_added(workers):
    """The server keeps a running masked sum: no client's input (nor a copy the round could reach) outlives
    its ``add``, so a round holds O(d) of inputs whatever its n."""
    import gc
    import weakref

    refs = []

    def fresh(u):
        v = np.full(30, 0.01 * u, dtype=np.float32)
        refs.append(weakref.ref(v))
        return v

    alive = []
    proto = SecAggSum(graph="sparse", workers=workers)
    session = proto.open(list(range(12)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for u in range(12):
            session.add(u, fresh(u))
            gc.collect()
            alive.append(sum(r() is not None for r in refs))
        res = session.result()
    assert alive == [0] * 12
    np.testing.assert_allclose(res.total, sum(0.01 * u for u in range(12)), atol=1e-4)


def test_a_streamed_round_blocks_a_client_caught_dealing_inconsistent_shares(monkeypatch):
    """Semi-honest, streamed: the cheater's round aborts naming it (never a wrong sum) and the next round
    leaves it out."""
    from fedsecure.secagg import ReconstructionError

    _cheater(monkeypatch, 4, "mask_key")
    proto = SecAggSum(graph="complete")
    vecs = {u: np.full(6, 0.1 * u) for u in range(8)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ReconstructionError, match="client 4"):
            _streamed(proto, vecs, {4: "masked_input"})
        assert 4 in proto.blocked
        res = _streamed(proto, vecs, {4: "masked_input"})
    assert 4 not in res.included and "inconsistent" in res.excluded[4]
    assert np.allclose(res.total, sum(vecs[u] for u in res.included), atol=1e-5)
