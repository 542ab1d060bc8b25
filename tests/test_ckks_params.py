"""Parameter sets: the HE standard's security table, refusal below it, the stated error bound."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.ckks import CKKSParams, CKKSSum, InsecureParametersError, KeyHolder, summation_params
from fedsecure.ckks.params import MAX_LOG_Q, check_security, error_bound, security_level


def test_table_matches_the_standard_at_128_bits():
    assert MAX_LOG_Q[128] == {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}


@pytest.mark.parametrize("level", [128, 192, 256])
def test_default_sets_meet_their_level_and_leave_room(level):
    p = summation_params(level)
    assert p.security_bits >= level
    assert p.log_q <= MAX_LOG_Q[level][p.poly_modulus_degree]
    assert p.max_abs_sum >= 2**17
    assert p.values_per_ciphertext == p.poly_modulus_degree


@given(
    n=st.sampled_from([1024, 2048, 4096, 8192, 16384, 32768]),
    log_q=st.integers(10, 900),
)
@settings(max_examples=200, deadline=None)
def test_security_level_is_monotone_in_the_table(n, log_q):
    level = security_level(n, log_q)
    for lv, table in MAX_LOG_Q.items():
        assert (log_q <= table[n]) == (level >= lv)


def test_below_128_bits_is_refused_unless_forced():
    weak = CKKSParams(2048, (60,), 40)  # 60 > 54 bits allowed at N=2048
    assert weak.security_bits == 0
    with pytest.raises(InsecureParametersError, match="force_insecure"):
        check_security(weak, 128)
    with pytest.raises(InsecureParametersError):
        KeyHolder(weak)
    with pytest.raises(InsecureParametersError):
        CKKSSum(params=weak)
    check_security(weak, 128, force_insecure=True)
    KeyHolder(weak, force_insecure=True)


def test_asking_for_more_security_than_a_set_gives_is_refused():
    with pytest.raises(InsecureParametersError, match="256"):
        check_security(summation_params(128), 256)
    with pytest.raises(InsecureParametersError):
        summation_params(100)


@pytest.mark.parametrize(
    "args", [(3000, (60,), 40), (4096, (61,), 40), (4096, (60,), 57), (4096, (), 40), (4096, (60,), 10)]
)
def test_malformed_parameters_are_named(args):
    with pytest.raises(ValueError):
        CKKSParams(*args)


@given(
    n=st.integers(1, 200),
    d=st.integers(1, 10**7),
    p=st.floats(1e-30, 1e-3),
)
@settings(max_examples=100, deadline=None)
def test_error_bound_is_a_tail_bound(n, d, p):
    """The bound t satisfies the union bound it claims, and grows with n, d and 1/p."""
    sd = np.linspace(1e-9, 3e-9, 2048)
    t = error_bound(sd, n, d, failure_probability=p, max_abs=0.0) - 2.0**-45
    per_slot = 2 * -(-d // 4096)
    s = sd * np.sqrt(n)
    assert np.sum(per_slot * 2 * np.exp(-(t**2) / (2 * s**2))) <= p * (1 + 1e-9)
    assert error_bound(sd, n + 1, d, failure_probability=p) >= error_bound(sd, n, d, failure_probability=p)
    assert error_bound(sd, n, d, failure_probability=p / 2) >= error_bound(sd, n, d, failure_probability=p)
