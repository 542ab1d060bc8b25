"""Packing: any length, every slot filled, layout commutes with addition."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedsecure.ckks.packing import chunk_count, pack, unpack

N = 64  # values per ciphertext in these algebra tests (the real value is 4096)
finite = st.floats(-1e6, 1e6, allow_nan=False)


@given(x=arrays(np.float64, st.integers(1, 5 * N + 3), elements=finite))
@settings(max_examples=200, deadline=None)
def test_unpack_inverts_pack(x):
    slots = pack(x, N)
    assert slots.shape == (chunk_count(x.size, N), N // 2)
    np.testing.assert_array_equal(unpack(slots, x.size), x)


@given(d=st.integers(1, 10 * N), data=st.data())
@settings(max_examples=100, deadline=None)
def test_packing_is_linear(d, data):
    a = data.draw(arrays(np.float64, d, elements=finite))
    b = data.draw(arrays(np.float64, d, elements=finite))
    np.testing.assert_allclose(unpack(pack(a, N) + pack(b, N), d), a + b, rtol=0, atol=0)


@given(d=st.integers(1, 10**7))
@settings(max_examples=200, deadline=None)
def test_every_slot_but_the_last_chunks_tail_is_used(d):
    c = chunk_count(d, 4096)
    assert (c - 1) * 4096 < d <= c * 4096


def test_real_and_imaginary_parts_both_carry_values():
    x = np.arange(1, N + 1, dtype=np.float64)
    s = pack(x, N)
    np.testing.assert_array_equal(s[0].real, x[: N // 2])
    np.testing.assert_array_equal(s[0].imag, x[N // 2 :])


@pytest.mark.parametrize("bad", [np.zeros(0), np.zeros((2, 2))])
def test_bad_shapes_are_refused(bad):
    with pytest.raises(ValueError):
        pack(bad, N)
