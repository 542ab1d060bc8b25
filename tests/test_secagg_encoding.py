"""Fixed-point ring encoding and bit packing (fedsecure.secagg.encoding)."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

from fedsecure.secagg.encoding import FixedPointEncoding, pack, packed_size, ring_dtype, unpack
from fedsecure.secagg.errors import ConfigurationError

FAST = settings(deadline=None, max_examples=60)


@FAST
@given(bits=st.integers(2, 64), data=st.data())
def test_pack_unpack_roundtrip_and_size(bits, data):
    length = data.draw(st.integers(1, 50))
    hi = (1 << bits) - 1
    vals = data.draw(st.lists(st.integers(0, hi), min_size=length, max_size=length))
    r = np.array(vals, dtype=np.uint64).astype(ring_dtype(bits))
    blob = pack(r, bits)
    assert len(blob) == packed_size(length, bits) == (length * bits + 7) // 8
    assert np.array_equal(unpack(blob, bits, length), r)


def test_unpack_rejects_wrong_length_and_dirty_padding():
    blob = pack(np.array([1, 2, 3], dtype=np.uint32), 5)  # 15 bits -> 2 bytes, 1 padding bit
    with pytest.raises(ValueError, match="expected 2"):
        unpack(blob + b"\x00", 5, 3)
    with pytest.raises(ValueError, match="padding"):
        unpack(bytes([blob[0], blob[1] | 0x80]), 5, 3)


@FAST
@given(
    n=st.integers(1, 40),
    bits=st.sampled_from([12, 20, 32, 40, 64]),
    clip=st.floats(0.01, 100),
    data=st.data(),
)
def test_sum_of_encodings_decodes_within_bound(n, bits, clip, data):
    try:
        enc = FixedPointEncoding.for_sum(n, clip, bits=bits)
    except ConfigurationError:
        return  # a refusal is the right answer when even one level per clip range does not fit
    xs = data.draw(hnp.arrays(np.float64, (n, 7), elements=st.floats(-clip, clip, allow_nan=False)))
    acc = np.zeros(7, dtype=enc.dtype)
    for x in xs:
        acc += enc.encode(x)  # wraps mod 2^32 / 2^64 on purpose
    acc &= enc.dtype((1 << bits) - 1) if bits < 64 else enc.dtype(-1 & 0xFFFFFFFFFFFFFFFF)
    got = enc.decode(acc)
    assert np.all(np.abs(got - xs.sum(axis=0)) <= enc.max_error(n) * (1 + 1e-9) + 1e-12 * np.abs(xs).sum(axis=0))


@FAST
@given(n=st.integers(1, 10**6), bits=st.integers(8, 64), clip=st.floats(1e-3, 1e3))
def test_chosen_scale_cannot_wrap(n, bits, clip):
    try:
        enc = FixedPointEncoding.for_sum(n, clip, bits=bits)
    except ConfigurationError as e:
        assert "ring cannot hold" in str(e)
        return
    worst = n * np.ceil(clip * enc.scale)
    assert worst <= 2 ** (bits - 1) - 1
    enc.check_capacity(n)
    with pytest.raises(ConfigurationError, match="could wrap"):
        enc.check_capacity(int(2 ** (bits - 1) // max(1, np.ceil(clip * enc.scale))) + 1)


class FixedNoise:
    """A deterministic integer pattern standing in for *values* of noise (not for randomness)."""

    def __init__(self, amp):
        self.amp = amp

    def sample(self, size, scale):
        return np.where(np.arange(size) % 2 == 0, self.amp, -self.amp).astype(np.int64)

    def max_abs_sum(self, n_clients, scale):
        return float(n_clients * self.amp)


def test_noise_headroom_is_reserved_and_noise_decodes_exactly():
    plain = FixedPointEncoding.for_sum(100, 1.0, bits=20)
    noisy = FixedPointEncoding.for_sum(100, 1.0, bits=20, noise=FixedNoise(3000))
    assert noisy.scale < plain.scale
    x = np.full(4, 0.5)
    r = noisy.encode(x, FixedNoise(3000).sample(4, noisy.scale))
    assert np.allclose(noisy.decode(r), 0.5 + np.array([3000, -3000, 3000, -3000]) / noisy.scale)
    with pytest.raises(ConfigurationError, match="DP noise"):
        FixedPointEncoding.for_sum(100, 1.0, bits=20, noise=FixedNoise(2**20))


def test_encode_refuses_out_of_range_and_nan():
    enc = FixedPointEncoding.for_sum(4, 1.0)
    with pytest.raises(ValueError, match="coordinate 1 .* outside the clip range"):
        enc.encode(np.array([0.0, 1.5]))
    with pytest.raises(ValueError, match="NaN"):
        enc.encode(np.array([np.nan]))


def test_stochastic_rounding_is_unbiased_within_one_level():
    enc = FixedPointEncoding(bits=32, scale=4.0, clip=1.0, stochastic=True)
    x = np.full(20000, 0.1)  # 0.4 levels
    q = enc.quantize(x)
    assert set(np.unique(q).tolist()) <= {0, 1}
    assert abs(q.mean() - 0.4) < 0.03


@FAST
@given(
    n=st.integers(1, 10**4),
    bits=st.integers(2, 32),
    clip=st.floats(1e-3, 1e3),
    dtype=st.sampled_from([np.float32, np.float64]),
    data=st.data(),
)
def test_one_buffer_word_encoding_equals_the_int64_reference(n, bits, clip, dtype, data):
    """The fast path (float -> int32 in the input's own precision) is bit-identical to round(x * scale) mod 2^bits."""
    try:
        enc = FixedPointEncoding.for_sum(n, clip, bits=bits)
    except ConfigurationError:
        return
    c = float(dtype(clip))
    c = np.nextafter(dtype(c), dtype(0)) if c > clip else c  # stay inside the clip range in x's precision
    x = data.draw(hnp.arrays(dtype, data.draw(st.integers(1, 40)),
                             elements=st.floats(-float(c), float(c), width=32 if dtype == np.float32 else 64)))
    reference = np.rint(x.astype(np.float64) * enc.scale).astype(np.int64).astype(np.uint64) & np.uint64(enc.modulus_mask)
    got = enc.encode(x)
    assert got.dtype == np.uint32
    assert np.array_equal(got.astype(np.uint64), reference)
    # a non-power-of-two scale takes the general path and still matches the reference
    odd = FixedPointEncoding(bits=bits, scale=enc.scale * 0.75, clip=enc.clip)
    ref_odd = np.rint(x.astype(np.float64) * odd.scale).astype(np.int64).astype(np.uint64) & np.uint64(odd.modulus_mask)
    assert np.array_equal(odd.encode(x).astype(np.uint64), ref_odd)
