"""Shamir sharing over GF(2^31 - 1), tested against its algebra."""

import os

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from fedsecure.secagg import shamir

FAST = settings(deadline=None, max_examples=60)
secrets32 = st.binary(min_size=32, max_size=32)


@FAST
@given(secret=secrets32, t=st.integers(1, 12), extra=st.integers(0, 6), data=st.data())
def test_any_t_shares_reconstruct(secret, t, extra, data):
    xs = data.draw(st.lists(st.integers(1, shamir.PRIME - 1), min_size=t + extra, max_size=t + extra, unique=True))
    sh = shamir.split(secret, xs, t)
    subset = data.draw(st.permutations(range(len(xs))))[:t]
    assert shamir.reconstruct([xs[i] for i in subset], sh[subset]) == secret


@FAST
@given(a=secrets32, b=secrets32, t=st.integers(1, 8))
def test_sharing_is_linear(a, b, t):
    xs = list(range(1, t + 3))
    sa, sb = shamir.split(a, xs, t), shamir.split(b, xs, t)
    lam = shamir.lagrange_at_zero(xs[:t])
    limbs = ((lam[:, None] * ((sa[:t] + sb[:t]) % shamir.PRIME)) % shamir.PRIME).sum(axis=0) % shamir.PRIME
    assert np.array_equal(limbs, (shamir.bytes_to_limbs(a) + shamir.bytes_to_limbs(b)) % shamir.PRIME)


@FAST
@given(secret=secrets32, other=secrets32, t=st.integers(2, 8))
def test_t_minus_1_shares_fit_every_secret(secret, other, t):
    """Perfect privacy: the t-1 shares, together with *any* secret at x=0, lie on a degree-(t-1) polynomial."""
    xs = list(range(5, 5 + t))
    sh = shamir.split(secret, xs, t)
    # Interpolate through (0, other) and the first t-1 shares; the polynomial exists and hits them all.
    pts = [0] + xs[: t - 1]
    ys = np.vstack([shamir.bytes_to_limbs(other), sh[: t - 1]])
    # Evaluate that polynomial back at x = xs[0]..xs[t-2] via Lagrange basis on pts.
    for j, xj in enumerate(xs[: t - 1]):
        val = np.zeros(shamir.LIMBS, dtype=np.int64)
        for i, xi in enumerate(pts):
            num, den = 1, 1
            for m, xm in enumerate(pts):
                if m != i:
                    num = num * (xj - xm) % shamir.PRIME
                    den = den * (xi - xm) % shamir.PRIME
            val = (val + ys[i] * (num * pow(den, shamir.PRIME - 2, shamir.PRIME) % shamir.PRIME)) % shamir.PRIME
        assert np.array_equal(val, sh[j])


def test_fewer_than_t_shares_do_not_reconstruct_and_corruption_is_detected_or_changes_result():
    secret = os.urandom(32)
    xs = [1, 2, 3, 4, 5]
    sh = shamir.split(secret, xs, 4)
    try:
        assert shamir.reconstruct(xs[:3], sh[:3]) != secret
    except ValueError:
        pass
    bad = sh[:4].copy()
    bad[0, 0] = (bad[0, 0] + 1) % shamir.PRIME
    try:
        assert shamir.reconstruct(xs[:4], bad) != secret
    except ValueError:
        pass


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="distinct"):
        shamir.split(bytes(32), [1, 1, 2], 2)
    with pytest.raises(ValueError, match="threshold"):
        shamir.split(bytes(32), [1, 2], 3)
    with pytest.raises(ValueError, match="32 bytes"):
        shamir.split(bytes(31), [1, 2], 2)
    with pytest.raises(ValueError, match="field element"):
        shamir.share_from_bytes(b"\xff" * shamir.SHARE_BYTES)


def test_coefficients_are_uniform_field_elements():
    v = shamir.random_field_elements(20000)
    assert v.min() >= 0 and v.max() < shamir.PRIME
    assert abs(v.mean() / shamir.PRIME - 0.5) < 0.02


@FAST
@given(t=st.integers(1, 40), data=st.data())
def test_python_integer_interpolation_equals_the_vectorised_one(t, data):
    """Small thresholds interpolate in Python ints; both paths give the same limbs on arbitrary field elements."""
    xs = data.draw(st.lists(st.integers(1, shamir.PRIME - 1), min_size=t, max_size=t, unique=True))
    ys = np.array(data.draw(st.lists(st.lists(st.integers(0, shamir.PRIME - 1), min_size=shamir.LIMBS,
                                              max_size=shamir.LIMBS), min_size=t, max_size=t)), dtype=np.int64)
    lam = shamir.lagrange_at_zero(xs)
    vectorised = [int(sum(int(lam[i]) * int(ys[i, j]) for i in range(t)) % shamir.PRIME) for j in range(shamir.LIMBS)]
    assert shamir._reconstruct_small(xs, ys.tolist()) == vectorised
    secret = os.urandom(32)
    big = list(range(1, t + 1))
    assert shamir.reconstruct(big, shamir.split(secret, big, t)) == secret  # either path, by t
