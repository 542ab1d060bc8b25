"""Compression codecs: the rotation is exact, quantization is unbiased (and a biased rounding is caught),
top-k with error feedback loses nothing over rounds, the modular b-bit ring sums exactly when it does not wrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedsecure.compress import (
    RandomizedHadamard,
    StochasticQuantizer,
    TopKErrorFeedback,
    fwht,
    parse_compression,
    rotation_seed,
)
from fedsecure.fl.compression import QuantizedPlainSum, RotatedSum, TopKPlainSum
from fedsecure.secagg.encoding import FixedPointEncoding

finite = st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False, width=32)


# -- rotation -------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(arrays(np.float64, st.integers(1, 600), elements=finite), st.sampled_from([1, 2, 8, 64, 256]))
def test_rotation_is_orthogonal_and_inverts(x, block):
    rot = RandomizedHadamard(x.size, rotation_seed(b"ctx", 3), block=block)
    y = rot.forward(x)
    # blocks: powers of two, descending, the largest at most `block`; the padding under one tail unit
    assert y.size == rot.padded == sum(rot.sizes) and 0 <= rot.padded - x.size < min(64, rot.block)
    assert all(s & (s - 1) == 0 for s in rot.sizes) and list(rot.sizes) == sorted(rot.sizes, reverse=True)
    assert rot.sizes[0] == rot.block <= block
    assert np.linalg.norm(y) == pytest.approx(np.linalg.norm(x), rel=1e-9, abs=1e-9)
    np.testing.assert_allclose(rot.inverse(y), x, rtol=0, atol=1e-9 * (1 + np.abs(x).max()))


def test_fwht_matches_the_hadamard_matrix():
    n = 8
    h = np.array([[(-1) ** bin(i & j).count("1") for j in range(n)] for i in range(n)]) / math.sqrt(n)
    x = np.arange(n, dtype=float) - 2.5
    np.testing.assert_allclose(fwht(x), h @ x, atol=1e-12)


def test_rotation_seed_is_shared_and_per_round():
    assert rotation_seed(b"run", 1) == rotation_seed(b"run", 1)
    assert rotation_seed(b"run", 1) != rotation_seed(b"run", 2) != rotation_seed(b"run2", 2)
    a = RandomizedHadamard(100, rotation_seed(b"run", 1)).signs
    assert np.array_equal(a, RandomizedHadamard(100, rotation_seed(b"run", 1)).signs)
    assert not np.array_equal(a, RandomizedHadamard(100, rotation_seed(b"run", 2)).signs)


def test_rotation_spreads_a_spike():
    x = np.zeros(4096)
    x[7] = 1.0
    y = RandomizedHadamard(x.size, rotation_seed(b"r", 0)).forward(x)
    assert np.abs(y).max() == pytest.approx(1 / 64)  # |x| / sqrt(block): the max shrinks 64-fold


# -- quantization: unbiased, with a positive control ------------------------------
def _bias_z(x: np.ndarray, quantizer: StochasticQuantizer, r: float, draws: int) -> float:
    """z-score of the mean error over draws and coordinates, using the stochastic-rounding variance."""
    delta = r / quantizer.levels
    errors = np.stack([quantizer.dequantize(quantizer.quantize(x, r)[0], r) - x for _ in range(draws)])
    frac = x / delta - np.floor(x / delta)
    se = delta * math.sqrt(float(np.sum(frac * (1 - frac)))) / (x.size * math.sqrt(draws))
    return float(errors.mean()) / se


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_stochastic_quantization_is_unbiased_and_nearest_rounding_is_not(bits):
    # fractional positions in (0.1, 0.4): round-to-nearest is biased downwards by 0.1..0.4 levels everywhere
    rng = np.random.default_rng(bits)
    q = StochasticQuantizer(bits)
    r = 1.0
    delta = r / q.levels
    x = (rng.integers(-q.levels, q.levels - 1, size=500) + rng.uniform(0.1, 0.4, size=500)) * delta
    z = _bias_z(x, q, r, draws=200)
    assert abs(z) < 5, f"stochastic rounding looks biased: z = {z:.2f}"  # false alarm ~ 6e-7
    z_biased = _bias_z(x, StochasticQuantizer(bits, stochastic=False), r, draws=200)
    assert z_biased < -50, f"the biased control was not caught: z = {z_biased:.2f}"


def test_stochastic_quantization_variance_is_within_its_bound():
    q = StochasticQuantizer(4)
    x = np.full(2000, 0.5 / q.levels)  # halfway between two levels: the worst case, variance Delta^2 / 4
    errors = q.dequantize(q.quantize(x, 1.0)[0], 1.0) - x
    bound = (1.0 / q.levels) ** 2 / 4
    assert errors.var() == pytest.approx(bound, rel=0.15)  # 2000 Bernoulli(1/2): the sd of the estimate is 2.2 %


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(1, 200), elements=finite), st.integers(2, 16))
def test_quantized_payload_round_trip(x, bits):
    q = StochasticQuantizer(bits)
    data = q.encode(x)
    assert len(data) == q.payload_size(x.size) == 4 + math.ceil(x.size * bits / 8)
    back = q.decode(data, x.size)
    r = float(np.abs(x).max())
    step = r / q.levels
    assert np.all(np.abs(back - x) <= step * (1 + 1e-6) + 1e-30)
    assert np.all(back[x == 0] == 0)  # exact zeros (untouched rows) stay zero
    with pytest.raises(ValueError, match="bytes"):
        q.decode(data + b"\0", x.size)


def test_rotated_quantized_sum_is_unbiased():
    rng = np.random.default_rng(5)
    vectors = {c: np.append(rng.standard_normal(300) * rng.uniform(0.01, 1), 0.5) for c in range(4)}
    true = sum(vectors.values())
    proto = RotatedSum(QuantizedPlainSum(2), b"test")
    draws = np.stack([proto.sum(vectors).total for _ in range(300)])
    err = draws[:, :-1] - true[:-1]
    z = err.mean() / (err.std() / math.sqrt(err.size / 1.0))  # coordinates nearly independent after rotation
    assert abs(z) < 5
    assert np.all(draws[:, -1] == pytest.approx(true[-1]))  # the weight travels exactly
    assert np.abs(err).mean() > 0  # and it is quantized, not passed through


def test_quantized_sum_of_row_sparse_updates_is_unbiased_and_sends_only_the_listed_rows():
    from fedsecure.fl.aggregation import SparseRows

    rng = np.random.default_rng(11)
    layout = [("items", (50, 4), 0), ("dense", (6,), 200)]
    vectors, touched = {}, np.zeros(206, dtype=bool)
    for c, rows in enumerate(([3, 7, 20], [7, 41], [])):
        x = np.zeros(206, dtype=np.float32)
        for r in rows:
            x[4 * r : 4 * r + 4] = rng.standard_normal(4)
        x[200:] = rng.standard_normal(6)
        touched |= x != 0
        vectors[c] = SparseRows.from_dense(x, layout).appended(0.25 * (c + 1), np.float32)
    true = sum(v.dense(np.float64) for v in vectors.values())
    proto = QuantizedPlainSum(4)
    assert proto.accepts_sparse
    results = [proto.sum(vectors) for _ in range(400)]
    draws = np.stack([r.total for r in results])
    assert np.all(draws[:, :-1][:, ~touched] == 0)  # coordinates of untouched rows stay exactly 0
    assert np.all(draws[:, -1] == pytest.approx(true[-1]))  # the weight travels exactly
    err = draws[:, :-1] - true[:-1]
    assert np.abs(err).mean() > 0  # quantized, not passed through
    np.testing.assert_allclose(draws[:, :-1].mean(0), true[:-1], atol=0.1)  # unbiased (6 sd of the mean)
    # bytes: per client the range, b-bit codes of the listed values, the weight, and the int32 row ids
    expected = sum(4 + math.ceil(4 * n / 8) + 4 + 4 * k for n, k in ((3 * 4 + 6, 3), (2 * 4 + 6, 2), (6, 0)))
    assert results[0].stats["upload_bytes"] == expected
    assert expected < 3 * (4 + math.ceil(4 * 206 / 8) + 4)  # fewer than three dense 4-bit payloads


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, st.integers(0, 300), elements=finite), st.integers(2, 16), st.integers(1, 80))
def test_bucketed_payload_round_trip(x, bits, bucket):
    q = StochasticQuantizer(bits, bucket=bucket)
    data = q.encode(x)
    assert len(data) == q.payload_size(x.size) == 4 * math.ceil(x.size / bucket) + math.ceil(x.size * bits / 8)
    back = q.decode(data, x.size)
    for j in range(0, x.size, bucket):  # each bucket within one step of its own range
        part = x[j:j + bucket]
        step = float(np.abs(part).max()) / q.levels
        assert np.all(np.abs(back[j:j + bucket] - part) <= step * (1 + 1e-6) + 1e-30)
    assert np.all(back[x == 0] == 0)
    with pytest.raises(ValueError, match="bucket"):
        q.decode(data + b"\0", x.size)


@pytest.mark.parametrize("bits", [2, 4])
def test_bucketed_quantization_is_unbiased_and_cuts_the_error_of_mixed_magnitudes(bits):
    # an adapter-like block of small values beside a few large item-row values: one range per vector lets the
    # large ones set the step for all; a range per bucket of 32 does not
    rng = np.random.default_rng(bits)
    x = np.concatenate([1e-3 * rng.standard_normal(960), rng.standard_normal(64)])
    one, buckets = StochasticQuantizer(bits), StochasticQuantizer(bits, bucket=32)
    draws = np.stack([buckets.decode(buckets.encode(x), x.size) for _ in range(400)])
    err = draws - x
    # the per-bucket error bound sum_j d_j r_j^2 / (4 L^2), and the one-range bound d r^2 / (4 L^2)
    ranges = np.abs(x).reshape(-1, 32).max(axis=1)
    bound = float(np.sum(32 * ranges**2)) / (4 * buckets.levels**2)
    assert np.mean(np.sum(err**2, axis=1)) <= bound * 1.05
    one_err = np.stack([one.decode(one.encode(x), x.size) for _ in range(50)]) - x
    small = slice(0, 960)  # the small block's error: set by its own ranges, not by the large values'
    assert np.mean(np.sum(err[:, small] ** 2, axis=1)) < 0.01 * np.mean(np.sum(one_err[:, small] ** 2, axis=1))
    # unbiased: the mean error per draw (over the small block, and over all) is iid across draws, z within 5
    for part in (err[:, small], err):
        per_draw = part.mean(axis=1)
        assert abs(per_draw.mean()) <= 5 * per_draw.std() / math.sqrt(len(per_draw))
    assert np.abs(err).mean() > 0


def test_bucketed_sum_of_row_sparse_updates_counts_a_range_per_bucket():
    from fedsecure.fl.aggregation import SparseRows

    rng = np.random.default_rng(3)
    layout = [("items", (50, 4), 0), ("dense", (6,), 200)]
    vectors = {}
    for c, rows in enumerate(([3, 7, 20], [7, 41])):
        x = np.zeros(206, dtype=np.float32)
        for r in rows:
            x[4 * r : 4 * r + 4] = rng.standard_normal(4)
        x[200:] = 1e-3 * rng.standard_normal(6)
        vectors[c] = SparseRows.from_dense(x, layout).appended(1.0, np.float32)
    result = QuantizedPlainSum(2, bucket=4).sum(vectors)
    # per client: one float32 range per 4 listed values, 2-bit codes, the weight, and the int32 row ids
    assert result.stats["upload_bytes"] == sum(4 * math.ceil(n / 4) + math.ceil(2 * n / 8) + 4 + 4 * k
                                               for n, k in ((3 * 4 + 6, 3), (2 * 4 + 6, 2)))
    assert result.stats["quantize_bucket"] == 4


# -- top-k with error feedback ---------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(st.lists(arrays(np.float64, 50, elements=st.floats(-10, 10, width=32)), min_size=1, max_size=6),
       st.sampled_from([0.02, 0.1, 0.5, 1.0]))
def test_topk_error_feedback_delays_but_never_loses(updates, fraction):
    tk = TopKErrorFeedback(fraction)
    sent = np.zeros(50)
    for x in updates:
        idx, val = tk.compress(7, x)
        assert idx.size <= tk.k_for(50) and np.all(np.diff(idx.astype(np.int64)) > 0)
        sent += TopKErrorFeedback.decode(TopKErrorFeedback.encode(idx, val), 50)
    np.testing.assert_allclose(sent + tk.residual(7, 50), np.sum(updates, axis=0), atol=1e-9)
    assert np.all(tk.residual(8, 50) == 0)  # residuals are per client


def test_topk_sends_the_largest_and_is_biased():
    tk = TopKErrorFeedback(0.25)
    x = np.array([0.1, -5.0, 0.2, 3.0, 0.0, 0.05, -0.3, 0.01])
    idx, val = tk.compress(0, x)
    assert idx.tolist() == [1, 3] and val.tolist() == [-5.0, 3.0]
    assert np.abs(tk.decode(tk.encode(idx, val), 8) - x).sum() > 0.5  # one round alone is biased


def test_topk_plain_sum_counts_its_bytes():
    vectors = {c: np.append(np.arange(100.0) * (c + 1), 1.0) for c in range(3)}
    res = TopKPlainSum(0.1).sum(vectors)
    assert res.stats["upload_bytes"] == 3 * (4 + 8 * 10 + 4)


# -- quantization in a modular b-bit ring (SecAgg / SecAgg+) -------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(2, 16), st.integers(1, 12), st.integers(1, 40), st.integers(0, 2**32 - 1), st.integers(-8, 8))
def test_modular_ring_recovers_the_sum_exactly_when_it_does_not_wrap(bits, n, d, seed, exp):
    """Inputs on the grid (x = q / scale, scale a power of two) round to themselves even stochastically: the
    centred residue of the ring sum is then exactly the sum when |sum q| < 2^(b-1), and the sum mod 2^b
    (centred) when it wraps."""
    rng = np.random.default_rng(seed)
    scale = 2.0**exp
    half = 2 ** (bits - 1)
    qs = rng.integers(-half, half, size=(n, d))
    norm = float(np.sqrt((qs.astype(float) ** 2).sum(axis=1)).max() / scale) or 1.0
    enc = FixedPointEncoding(bits=bits, scale=scale, clip=norm, stochastic=True, modular=True)
    ring = np.zeros(d, dtype=np.uint64)
    for q in qs:
        r = enc.encode(q / scale)
        assert r.dtype == enc.dtype and int(r.max(initial=0)) < 2**bits
        ring = (ring + r.astype(np.uint64)) & np.uint64(enc.modulus_mask)
    total = qs.sum(axis=0)
    centred = (total + half) % (2 * half) - half
    np.testing.assert_array_equal(enc.signed(ring), centred)
    np.testing.assert_array_equal(enc.decode(ring) * scale, centred)
    fits = np.abs(total + 0.5) < half  # [-2^(b-1), 2^(b-1)): no wrap
    np.testing.assert_array_equal(enc.decode(ring)[fits], total[fits] / scale)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([2, 4, 8]), arrays(np.float64, 6, elements=st.floats(-1, 1, allow_nan=False)))
def test_modular_ring_rounding_is_unbiased(bits, x):
    scale = 0.93 * (2 ** (bits - 1) - 1)  # |x * scale| < 2^(b-1) - 1: no wrap; most values between levels
    enc = FixedPointEncoding(bits=bits, scale=scale, clip=10.0, stochastic=True, modular=True)
    draws = 4000
    q = np.stack([enc.signed(enc.encode(x)) for _ in range(draws)]).astype(float)
    y = x * scale
    frac = y - np.floor(y)
    assert np.all((q == np.floor(y)) | (q == np.floor(y) + 1))  # one level either side
    sd = np.sqrt(np.maximum(frac * (1 - frac), 1e-12) / draws)
    z = (q.mean(axis=0) - y) / sd
    assert np.all(np.abs(z[frac > 1e-9]) < 5.5)  # six coordinates; false alarm ~ 2e-7
    assert np.all(q[:, frac <= 1e-9] == np.round(y[frac <= 1e-9]))


def test_modular_ring_refuses_a_vector_above_its_norm_bound_and_a_wide_scale():
    enc = FixedPointEncoding(bits=8, scale=10.0, clip=1.0, stochastic=True, modular=True)
    enc.encode(np.array([0.6, 0.8]))  # norm 1: at the bound
    with pytest.raises(ValueError, match="norm"):
        enc.encode(np.array([0.6, 0.81]))
    with pytest.raises(ValueError, match="NaN"):
        enc.encode(np.array([0.1, np.nan]))
    with pytest.raises(Exception, match="stochastic"):
        FixedPointEncoding(bits=8, scale=10.0, clip=1.0, stochastic=False, modular=True)
    lo, hi = FixedPointEncoding.ring_scale_range(8, 10, 1.0, 4096)
    for scale, ok in ((lo, True), (hi, True), (lo * 0.99, False), (hi * 1.01, False)):
        e = FixedPointEncoding(bits=8, scale=scale, clip=1.0, stochastic=True, modular=True)
        if ok:
            e.check_capacity(10, length=4096)
        else:
            with pytest.raises(Exception, match="outside"):
                e.check_capacity(10, length=4096)
    # for_ring clamps the sum's norm bound to [clip, n clip], so its scale is always one a client accepts
    for s in (1e-9, 0.5, 3.0, 1e9):
        FixedPointEncoding.for_ring(8, 10, 1.0, 4096, s).check_capacity(10, length=4096)


def test_rotation_with_its_permutation_is_an_orthogonal_matrix():
    rot = RandomizedHadamard(70, rotation_seed(b"ctx", 1), block=16)
    assert rot.blocks == 5 and rot.perm is not None and sorted(rot.perm.tolist()) == list(range(rot.padded))
    assert not np.array_equal(rot.perm, np.arange(rot.padded))
    r = np.stack([rot.forward(e) for e in np.eye(70)], axis=1)  # padded x 70: the columns R e_i
    np.testing.assert_allclose(r.T @ r, np.eye(70), atol=1e-12)
    inv = np.stack([rot.inverse(e) for e in np.eye(rot.padded)], axis=1)  # 70 x padded
    np.testing.assert_allclose(inv, r.T, atol=1e-12)  # the inverse is the transpose, exactly


def test_permutation_spreads_a_block_of_mass_over_all_blocks():
    x = np.zeros(64 * 1024)
    x[:1024] = 1.0  # all the mass in the first 1024 coordinates, as the popular items' rows
    y = RandomizedHadamard(x.size, rotation_seed(b"r", 0), block=1024).forward(x)
    per_block = (y.reshape(64, 1024) ** 2).sum(axis=1)
    assert per_block.max() < 2 * per_block.mean()  # without the permutation one block would hold it all


def _ring_vectors(rng, n, d):
    return {c: np.append(rng.standard_normal(d) * 0.05 * (rng.random(d) < 0.1), 0.02 * (c + 1)) for c in range(n)}


def test_secagg_ring_sum_is_unbiased_and_sends_b_bits_per_coordinate():
    from fedsecure.fl.compression import SecAggRingSum

    rng = np.random.default_rng(3)
    n, d = 4, 300
    vectors = _ring_vectors(rng, n, d)
    true = sum(vectors.values())
    proto = SecAggRingSum(4, norm_bound=2.0, context=b"test", graph="complete")
    draws = []
    for _ in range(40):
        res = proto.sum(vectors)
        draws.append(res.total)
    draws = np.stack(draws)
    assert res.stats["bits"] == 4 and res.stats["modular_ring"]
    padded = res.stats["rotation_padded_length"]
    # 301 coordinates: blocks of 256 and 64 (not one of 512)
    assert padded == 320 and res.stats["upload_bytes_by_stage"]["masked_input"] == n * (58 + padded * 4 // 8)
    assert res.stats["ring_overflow_coordinates"] == 0 and res.stats["clipped_clients"] == 0
    err = draws - true
    z = err.mean() / (err.std() / math.sqrt(err.size))
    assert abs(z) < 5 and np.abs(err).mean() > 0  # unbiased, and quantized
    # the second round's scale follows the first round's decoded sum, inside the range a client accepts
    assert res.stats["ring_sum_norm_bound"] < n * 2.0


def test_secagg_ring_recovers_a_fedavg_mean_at_8_bits_and_counts_wraps():
    from fedsecure.fl.aggregation import ClientUpdate, FedAvg
    from fedsecure.fl.compression import SecAggRingSum

    rng = np.random.default_rng(4)
    n, d = 6, 2000
    updates = [ClientUpdate(c, (rng.standard_normal(d) * 0.01).astype(np.float32), 100.0 * (c + 1)) for c in range(n)]
    w = np.array([u.weight for u in updates]) / 1000
    exact = sum(wi * u.delta.astype(np.float64) for wi, u in zip(w, updates)) / w.sum()
    proto = SecAggRingSum(8, norm_bound=0.3, context=b"fedavg", graph="complete")  # above every norm here
    agg = FedAvg(proto)
    for r in range(1, 4):
        res = agg.aggregate(updates, round_index=r)
        assert res.stats["clipped_clients"] == 0 and res.stats["ring_overflow_coordinates"] == 0
    # expected relative errors (sd): ~5% on the update sum, ~1% on the total weight
    rel = np.linalg.norm(res.delta - exact) / np.linalg.norm(exact)
    assert rel < 0.15 and res.stats["total_weight"] == pytest.approx(w.sum(), rel=0.05)
    assert res.stats["ring_sum_norm_bound"] < 2 * np.linalg.norm(sum(wi * u.delta for wi, u in zip(w, updates)))
    # a scale far too fine for the sum (an estimate from a tiny previous sum; six aligned clients at the
    # bound now): coordinates wrap, the simulation counts them, and the sum is off
    proto._previous = (1e-6, n)
    same = np.append(updates[0].delta, 0.0)
    same *= 0.3 / np.linalg.norm(same)
    res = proto.sum({c: same for c in range(n)})
    assert res.stats["ring_overflow_coordinates"] > 0.1 * res.stats["ring_coordinates"]
    assert np.linalg.norm(res.total - n * same) > 0.5 * np.linalg.norm(n * same)


def test_a_client_refuses_a_modular_ring_scale_outside_its_range():
    import dataclasses

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from fedsecure.secagg import messages as m
    from fedsecure.secagg.client import SecAggClient
    from fedsecure.secagg.errors import PolicyViolation
    from fedsecure.secagg.params import evaluate
    from fedsecure.secagg.policy import ClientPolicy
    from fedsecure.secagg.server import SecAggServer

    n, d = 5, 64
    key = Ed25519PrivateKey.generate()
    enc = FixedPointEncoding.for_ring(8, n, 1.0, d, 2.0)
    server = SecAggServer(range(n), d, evaluate(n, n - 1, 2, graph="complete", dropout_rate=0.0), enc, signing_key=key)
    policy = ClientPolicy(dropout_rate=0.0, server_key=server.public_key)
    x = np.full(d, 0.1)  # norm 0.8
    assert len(SecAggClient(0, x, policy=policy).receive(server.config_message)) == 1
    with pytest.raises(PolicyViolation, match="norm"):
        SecAggClient(0, np.full(d, 0.2), policy=policy).receive(server.config_message)  # norm 1.6 > 1
    _, hi = FixedPointEncoding.ring_scale_range(8, n, 1.0, d)
    cfg = server.config
    assert cfg.modular and m.RoundConfig.parse(cfg.body()).modular
    bad = dataclasses.replace(cfg, scale=hi * 4).body()
    header = m.Header(m.RoundConfig.TYPE, server.round_id, m.SERVER, m.SERVER)
    with pytest.raises(PolicyViolation, match="outside"):
        SecAggClient(0, x, policy=policy).receive(m.sign_broadcast(header, bad, key, config=True))


def test_parse_compression():
    assert parse_compression("none").kind == "none"
    assert parse_compression("q8").bits == 8 and not parse_compression("q8").rotate
    assert parse_compression("rotate-q4").rotate and parse_compression("rotate-q4").name == "rotate-q4"
    assert parse_compression("topk:0.1").fraction == 0.1
    assert parse_compression("q8").bucket is None
    assert parse_compression("q4/64").bucket == 64 and parse_compression("Q4/64").name == "q4/64"
    assert parse_compression("rotate-q2/128").name == "rotate-q2/128"
    for bad in ("q1", "q17", "topk:0", "topk:1.5", "topk:x", "zip", "rotate-topk:0.1", "q4/", "q4/0", "q4/x",
                "q4/-8", "q1/64"):
        with pytest.raises(ValueError, match="--compress"):
            parse_compression(bad)
