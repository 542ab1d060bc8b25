"""Accounting: our numbers against Opacus's and dp-accounting's own, calibration, validation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.dp import accounting as acc
from fedsecure.dp.validation import PrivacyConfigError, check_clip, check_delta, resolve_noise_multiplier

SETTINGS = [  # (noise multiplier, sample rate, steps, delta)
    (1.1, 0.01, 1000, 1e-5),
    (0.8, 0.05, 200, 1e-6),
    (2.0, 0.1, 50, 1e-5),
    (5.0, 1.0, 10, 1e-6),
]


@pytest.mark.parametrize(("z", "q", "steps", "delta"), SETTINGS)
def test_opacus_rdp_equals_dp_accounting_rdp(z: float, q: float, steps: int, delta: float) -> None:
    ours = acc.epsilon(z, q, steps, delta, "rdp")
    google = acc.epsilon(z, q, steps, delta, "dpa-rdp")
    assert ours == pytest.approx(google, rel=1e-3)


@pytest.mark.parametrize(("z", "q", "steps", "delta"), SETTINGS[:3])
def test_opacus_prv_agrees_with_dp_accounting_pld_within_1_percent(z: float, q: float, steps: int, delta: float) -> None:
    prv = acc.epsilon(z, q, steps, delta, "prv")
    pld = acc.epsilon(z, q, steps, delta, "dpa-pld")
    assert prv == pytest.approx(pld, rel=0.01)
    # both near-tight accountants beat RDP, which is an upper bound
    assert max(prv, pld) <= acc.epsilon(z, q, steps, delta, "rdp") * 1.001


def test_rdp_matches_opacus_accountant_object() -> None:
    from opacus.accountants import RDPAccountant

    o = RDPAccountant()
    for _ in range(30):
        o.step(noise_multiplier=1.3, sample_rate=0.02)
    ours = acc.PrivacyAccountant("rdp")
    for _ in range(30):
        ours.step(1.3, 0.02)
    assert ours.history == (("gaussian", 1.3, 0.02, 30),)
    assert ours.epsilon(1e-5) == pytest.approx(o.get_epsilon(delta=1e-5, alphas=list(acc.RDP_ORDERS)), rel=1e-9)
    # our order grid extends Opacus's default one, so it can only be tighter, and not by much here
    default = o.get_epsilon(delta=1e-5)
    assert ours.epsilon(1e-5) <= default and ours.epsilon(1e-5) == pytest.approx(default, rel=0.01)


def test_epsilon_reported_after_every_step_matches_opacus_at_every_step() -> None:
    # The aggregators report epsilon after each round; the one-step RDP is cached and scaled by the
    # step count, which must give Opacus's number at every count, and the cache must not drift.
    from opacus.accountants import RDPAccountant

    o, ours = RDPAccountant(), acc.PrivacyAccountant("rdp")
    for step in range(1, 8):
        o.step(noise_multiplier=0.9, sample_rate=0.2)
        ours.step(0.9, 0.2)
        if step in (1, 7):
            expected = o.get_epsilon(delta=1e-5, alphas=list(acc.RDP_ORDERS))
            assert ours.epsilon(1e-5) == pytest.approx(expected, rel=1e-9)


def test_stepping_composes_like_one_shot_and_mixed_histories_add_up() -> None:
    a = acc.PrivacyAccountant("dpa-pld")
    a.step(1.0, 0.05, 40)
    a.step(1.0, 0.05, 60)
    assert a.steps == 100 and len(a.history) == 1
    assert a.epsilon(1e-5) == pytest.approx(acc.epsilon(1.0, 0.05, 100, 1e-5, "dpa-pld"), rel=1e-9)
    b = acc.PrivacyAccountant("rdp")
    b.step(1.0, 0.05, 10)
    b.step(2.0, 0.05, 10)
    assert acc.epsilon(2.0, 0.05, 20, 1e-5) < b.epsilon(1e-5) < acc.epsilon(1.0, 0.05, 20, 1e-5)
    assert acc.PrivacyAccountant().epsilon(1e-5) == 0.0
    c = acc.PrivacyAccountant()
    c.step(0.0, 0.1)
    assert c.epsilon(1e-5) == math.inf


@pytest.mark.parametrize(
    ("accountant", "target", "q", "steps"),
    [("rdp", 1.0, 0.02, 300), ("dpa-pld", 4.0, 0.1, 100), ("rdp", 8.0, 1.0, 20)],
)
def test_calibration_lands_at_or_under_target_and_close(accountant: str, target: float, q: float, steps: int) -> None:
    z = acc.noise_multiplier_for(target, 1e-5, q, steps, accountant)  # type: ignore[arg-type]
    assert acc.epsilon(z, q, steps, 1e-5, accountant) <= target  # type: ignore[arg-type]
    # not wastefully far under: 1% less noise already overshoots
    assert acc.epsilon(z * 0.99, q, steps, 1e-5, accountant) > target  # type: ignore[arg-type]


def test_calibration_agrees_with_opacus_get_noise_multiplier() -> None:
    from opacus.accountants.utils import get_noise_multiplier

    ours = acc.noise_multiplier_for(2.0, 1e-5, 0.02, 500, "rdp")
    theirs = get_noise_multiplier(
        target_epsilon=2.0, target_delta=1e-5, sample_rate=0.02, steps=500, accountant="rdp",
        epsilon_tolerance=0.005, alphas=list(acc.RDP_ORDERS),
    )
    assert ours == pytest.approx(theirs, rel=0.01)


def test_unreachable_target_is_a_config_error() -> None:
    with pytest.raises(PrivacyConfigError, match="cannot be reached"):
        acc.noise_multiplier_for(0.05, 1e-5, 1.0, 10_000_000, "rdp")


@settings(deadline=None, max_examples=12)
@given(
    z=st.floats(min_value=0.5, max_value=20.0),
    q=st.floats(min_value=1e-3, max_value=0.9),
)
def test_zhu_wang_bound_brackets_the_exact_subsampled_gaussian(z: float, q: float) -> None:
    # The Gaussian is 1/(2 z^2)-zCDP; the Zhu-Wang general bound must be an upper bound on the
    # exact subsampled-Gaussian RDP (Opacus, integer orders) and differ from it only in the
    # factor 3 on the l >= 3 terms, i.e. by at most log(3)/(alpha-1).
    from opacus.accountants.analysis.rdp import compute_rdp

    orders = np.asarray(acc.INT_ORDERS, dtype=np.float64)
    exact = np.asarray(compute_rdp(q=q, noise_multiplier=z, steps=1, orders=orders))
    bound = acc.subsampled_zcdp_rdp(1 / (2 * z * z), q)
    ok = np.isfinite(exact)
    assert np.all(bound[ok] >= exact[ok] * (1 - 1e-9) - 1e-12)
    assert np.all(bound <= orders / (2 * z * z) * (1 + 1e-12))  # never worse than no subsampling
    assert np.all(bound[ok] <= exact[ok] + np.log(3) / (orders[ok] - 1) + 1e-9)


def test_zcdp_without_subsampling_equals_gaussian() -> None:
    z = 3.0
    a = acc.PrivacyAccountant("rdp")
    a.step_zcdp(1 / (2 * z * z), 1.0, 25)
    b = acc.PrivacyAccountant("rdp")
    b.step(z, 1.0, 25)
    # same RDP curve alpha/(2 z^2); only the order grid differs (integers vs. Opacus's finer grid)
    assert a.epsilon(1e-6) == pytest.approx(b.epsilon(1e-6), rel=0.01)
    assert a.epsilon(1e-6) >= b.epsilon(1e-6) * (1 - 1e-9)


def test_zcdp_needs_an_rdp_backend() -> None:
    with pytest.raises(PrivacyConfigError, match="use 'rdp'"):
        acc.PrivacyAccountant("prv").step_zcdp(0.1, 0.5)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(delta=1e-3), r"delta 0.001 is >= 1/n"),
        (dict(delta=0.0), "delta must be in"),
        (dict(delta=1.5), "delta must be in"),
        (dict(target_epsilon=0.0, noise_multiplier=None), "target epsilon must be finite and > 0"),
        (dict(target_epsilon=-1.0, noise_multiplier=None), "target epsilon must be finite and > 0"),
        (dict(noise_multiplier=-0.5), "noise multiplier must be finite and >= 0"),
        (dict(clip=0.0), "clip norm must be finite and > 0"),
        (dict(clip=-1.0), "clip norm must be finite and > 0"),
        (dict(sample_rate=0.0), "sample rate must be in"),
        (dict(target_epsilon=1.0), "exactly one of"),
        (dict(target_epsilon=0.01, noise_multiplier=None, sample_rate=1.0, steps=10_000_000), "cannot be reached"),
        (dict(accountant="moments"), "unknown accountant"),
    ],
)
def test_invalid_settings_raise_before_training(kwargs: dict, match: str) -> None:
    base = dict(delta=1e-5, population=10_000, sample_rate=0.01, steps=100, clip=1.0, noise_multiplier=1.0)
    base.update(kwargs)
    with pytest.raises(PrivacyConfigError, match=match):
        resolve_noise_multiplier(**base)  # type: ignore[arg-type]
    assert issubclass(PrivacyConfigError, ValueError)


def test_valid_plan_reports_what_it_spends() -> None:
    plan = resolve_noise_multiplier(
        delta=1e-5, population=10_000, sample_rate=0.01, steps=100, clip=1.0, target_epsilon=2.0,
        accountant="dpa-pld",
    )
    assert plan.calibrated and plan.epsilon <= 2.0 and plan.noise_multiplier > 0
    assert check_delta(1e-6, 1000) == 1e-6
    assert check_clip(0.5) == 0.5
