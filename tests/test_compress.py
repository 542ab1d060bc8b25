"""Compression codecs: the rotation is exact, quantization is unbiased (and a biased rounding is caught),
top-k with error feedback loses nothing over rounds, quantization lands in a ring that cannot wrap."""

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
@given(arrays(np.float64, st.integers(1, 300), elements=finite), st.sampled_from([1, 2, 8, 64]))
def test_rotation_is_orthogonal_and_inverts(x, block):
    rot = RandomizedHadamard(x.size, rotation_seed(b"ctx", 3), block=block)
    y = rot.forward(x)
    assert y.size == rot.padded and rot.padded % rot.block == 0 and rot.padded - x.size < rot.block
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


# -- quantization straight into the ring ------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.integers(1, 5000), st.integers(2, 16), st.floats(1e-6, 1e3))
def test_ring_for_levels_holds_the_worst_case_sum(n, bits, clip):
    levels = 2 ** (bits - 1) - 1
    enc = FixedPointEncoding.for_levels(n, clip, levels)
    assert enc.stochastic and enc.scale == levels / clip
    assert n * (levels + 1) <= 2 ** (enc.bits - 1) - 1  # no wrap even if every client is at the edge
    assert enc.bits <= bits + math.ceil(math.log2(n)) + 2  # and no wider than b + log2 n + 2
    x = np.array([clip, -clip])
    ring = sum(enc.encode(x).astype(np.uint64) for _ in range(min(n, 50))) & np.uint64(enc.modulus_mask)
    m = min(n, 50)
    np.testing.assert_array_equal(enc.signed(ring), [m * levels, -m * levels])
    with pytest.raises(Exception, match="ring"):
        FixedPointEncoding.for_levels(n, clip, levels, bits=enc.bits - 1)


def test_q8_ring_width_at_100_clients():
    assert FixedPointEncoding.for_levels(100, 1.0, 127).bits == 15  # 2.13x below float32, not 4x


def test_quantized_secagg_round_sums_in_a_narrow_ring():
    from fedsecure.fl.aggregation import ClientUpdate, FedAvg
    from fedsecure.secagg.sum import SecAggSum

    rng = np.random.default_rng(1)
    d, n, clip = 200, 5, 0.01
    proto = SecAggSum(clip_range=clip, quantize_bits=8, graph="complete")
    # weights at FedAvg's cap (w~ = 1): the sum's error is then at most n levels over a total weight of n
    updates = [ClientUpdate(c, rng.uniform(-clip, clip, d).astype(np.float32), 1000.0) for c in range(n)]
    res = FedAvg(proto).aggregate(updates, round_index=1)
    w = np.array([u.weight for u in updates])
    exact = sum(wi * u.delta.astype(np.float64) for wi, u in zip(w, updates)) / w.sum()
    assert res.stats["bits"] == 11  # 5 * 128 = 640 < 2^10
    step = clip / 127  # each client's coordinate is within one level of its input
    err = np.abs(res.delta - exact)
    assert err.max() < 1.01 * step and err.mean() > 0.01 * step  # quantized, within its bound
    masked = res.stats["upload_bytes_by_stage"]["masked_input"]
    assert masked == n * (58 + math.ceil((d + 1) * 11 / 8))


def test_parse_compression():
    assert parse_compression("none").kind == "none"
    assert parse_compression("q8").bits == 8 and not parse_compression("q8").rotate
    assert parse_compression("rotate-q4").rotate and parse_compression("rotate-q4").name == "rotate-q4"
    assert parse_compression("topk:0.1").fraction == 0.1
    for bad in ("q1", "q17", "topk:0", "topk:1.5", "topk:x", "zip", "rotate-topk:0.1"):
        with pytest.raises(ValueError, match="--compress"):
            parse_compression(bad)
