"""User-level DP-FedAvg: clipping, central noise, distributed integer noise, accounting, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from fedsecure.dp.accounting import epsilon as central_epsilon
from fedsecure.dp.distributed import DiscreteGaussianNoise, ddg_zcdp_rho, quantized_sensitivity
from fedsecure.dp.noise import NoiseSource
from fedsecure.dp.user_level import (
    CentralDPFedAvg,
    DistributedDPFedAvg,
    clip_l2,
    distributed_epsilon,
)
from fedsecure.dp.validation import PrivacyConfigError
from fedsecure.fl.aggregation import AggregationError, ClientUpdate, PlainSum

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


@settings(deadline=None, max_examples=60)
@given(x=arrays(np.float64, st.integers(1, 40), elements=finite), clip=st.floats(min_value=1e-3, max_value=1e3))
def test_clip_l2_bounds_the_norm_and_keeps_the_direction(x: np.ndarray, clip: float) -> None:
    y, was = clip_l2(x, clip)
    norm = np.linalg.norm(x)
    assert np.linalg.norm(y) <= clip
    assert was == (norm > clip)
    if not was:
        assert np.array_equal(y, x)
    else:
        # same direction: y = c x with 0 < c < 1
        c = clip / norm
        np.testing.assert_allclose(y, x * c, rtol=1e-12, atol=1e-300)


def test_clip_l2_rejects_non_finite() -> None:
    with pytest.raises(ValueError, match="non-finite"):
        clip_l2(np.array([1.0, np.nan]), 1.0)


def _updates(n: int, d: int, scale: float = 0.5, seed: int = 0) -> list[ClientUpdate]:
    rng = np.random.default_rng(seed)  # data only; never noise
    return [ClientUpdate(i, rng.normal(size=d) * scale, float(rng.integers(1, 50))) for i in range(n)]


def _clipped_sum(updates: list[ClientUpdate], clip: float, exclude: set[int] = frozenset()) -> np.ndarray:
    return np.sum([clip_l2(u.delta, clip)[0] for u in updates if u.client_id not in exclude], axis=0)


def _central(z: float, n: int = 20, **kw) -> CentralDPFedAvg:
    base = dict(clip=1.0, noise_multiplier=z, expected_clients=n, sample_rate=0.05, delta=1e-6, population=400)
    base.update(kw)
    return CentralDPFedAvg(PlainSum(), **base)


def test_central_without_noise_is_the_fixed_denominator_mean_of_clipped_updates() -> None:
    ups = _updates(12, 30)
    agg = _central(0.0, n=10)
    res = agg.aggregate(ups, round_index=0, dropouts={3: "upload"})
    np.testing.assert_allclose(res.delta, _clipped_sum(ups, 1.0, {3}) / 10.0, rtol=1e-12, atol=1e-15)
    assert res.included == tuple(i for i in range(12) if i != 3)
    assert res.stats["clipped_clients"] == sum(np.linalg.norm(u.delta) > 1.0 for u in ups)
    assert res.stats["privacy"]["epsilon"] == math.inf


def test_central_noise_has_std_z_times_clip_and_privacy_record() -> None:
    d, z, clip = 200_000, 1.3, 0.7
    ups = _updates(5, d, scale=0.01)
    agg = _central(z, n=5, clip=clip)
    res = agg.aggregate(ups, round_index=0)
    err = res.delta * 5.0 - _clipped_sum(ups, clip)
    assert abs(err.std() / (z * clip) - 1) < 6 * math.sqrt(2 / d)
    p = res.stats["privacy"]
    assert p["noise_multiplier"] == z and p["clip"] == clip and p["delta"] == 1e-6 and p["accountant"] == "rdp"
    assert "os.urandom" in p["noise_source"] and not p["privacy_claim_void"]
    assert p["epsilon"] == pytest.approx(central_epsilon(z, 0.05, 1, 1e-6))
    assert p["mechanism"].startswith("user-level DP-FedAvg, central")


def test_insecure_noise_is_flagged_in_every_result() -> None:
    agg = _central(1.0, noise=NoiseSource.insecure_seeded(1))
    p = agg.aggregate(_updates(3, 4), round_index=0).stats["privacy"]
    assert p["privacy_claim_void"] and "VOID" in p["noise_source"]


def test_epsilon_accumulates_one_step_per_round() -> None:
    agg = _central(1.0)
    eps = []
    for r in range(3):
        eps.append(agg.aggregate(_updates(4, 8, seed=r), round_index=r).stats["privacy"]["epsilon"])
    assert eps[0] < eps[1] < eps[2]
    assert eps[2] == pytest.approx(central_epsilon(1.0, 0.05, 3, 1e-6))


def test_calibrated_aggregators_end_at_or_under_target() -> None:
    target, rounds, pop, w = 3.0, 4, 500, 25
    c = CentralDPFedAvg.calibrated(
        PlainSum(), target_epsilon=target, rounds=rounds, clip=1.0, expected_clients=w, population=pop, delta=1e-5
    )
    dd = DistributedDPFedAvg.calibrated(
        PlainSum(), target_epsilon=target, rounds=rounds, clip=1.0, expected_clients=w, population=pop,
        delta=1e-5, min_clients=10, dim=16,
    )
    for r in range(rounds):
        ups = _updates(w, 16, seed=r)
        pc = c.aggregate(ups, round_index=r).stats["privacy"]
        pd = dd.aggregate(ups, round_index=r).stats["privacy"]
    assert pc["epsilon"] <= target and pd["epsilon"] <= target
    assert pc["epsilon"] > 0.9 * target and pd["epsilon"] > 0.9 * target
    # distributed pays for quantization and a looser subsampling bound: it needs more noise
    assert dd.noise_multiplier >= c.noise_multiplier


# -- distributed ---------------------------------------------------------------------------------


def test_sum_of_client_integer_noise_has_the_variance_the_accountant_assumes() -> None:
    z, clip, m, d, scale = 0.9, 1.0, 8, 4000, 2.0**10
    hook = DiscreteGaussianNoise(noise_multiplier=z, clip=clip, min_clients=m, dim=d)
    sigma = hook.local_sigma(scale)
    d2, d1 = hook.sensitivity(scale)
    assert d2 == scale * clip + math.sqrt(d)  # rounding slack 1 (nearest or stochastic rounding)
    # the accountant's rho is that of a Gaussian sum of variance m sigma^2 on sensitivity Delta_2
    assert hook.rho(scale) == pytest.approx(d2**2 / (2 * m * sigma**2), rel=1e-12)
    assert hook.rho(scale) == pytest.approx(1 / (2 * z * z), rel=1e-12)
    for n in (m, 3 * m):
        total = np.sum([hook.sample(d, scale) for _ in range(n)], axis=0).astype(np.float64)
        assert total.dtype == np.float64 and abs(total.mean()) < 6 * math.sqrt(n) * sigma / math.sqrt(d)
        assert abs(total.var() / (n * sigma**2) - 1) < 6 * math.sqrt(2 / d)


@settings(deadline=None, max_examples=25)
@given(
    sigma=st.floats(min_value=3.0, max_value=1e6),
    n=st.integers(1, 500),
    d2=st.floats(min_value=1.0, max_value=1e6),
)
def test_ddg_rho_is_the_gaussian_rho_for_non_tiny_sigma(sigma: float, n: int, d2: float) -> None:
    # tau <= 10 n exp(-pi^2 sigma^2) < 1e-35 for sigma >= 3: KLS's bound is the Gaussian's.
    rho = ddg_zcdp_rho(sigma, n, d2, d2 * d2)
    assert rho >= d2**2 / (2 * n * sigma**2) * (1 - 1e-12)  # sqrt-then-square costs an ulp
    assert rho == pytest.approx(d2**2 / (2 * n * sigma**2), rel=1e-9)


def test_ddg_rho_grows_when_sigma_is_tiny() -> None:
    # below sigma ~ 1 the discrete Gaussian sum is not Gaussian-like and tau must be paid
    assert ddg_zcdp_rho(0.3, 10, 2.0, 4.0) > 4.0 / (2 * 10 * 0.09)


def _ring_sum(vals: list[np.ndarray], bits: int) -> np.ndarray:
    """Sum in Z_{2^bits} (as a secure aggregation server decodes it), signed representative."""
    mod = 1 << bits
    acc = np.zeros_like(vals[0], dtype=object)
    for v in vals:
        acc = (acc + (v.astype(object) % mod)) % mod
    half = mod >> 1
    return np.array([int(a - mod) if a >= half else int(a) for a in acc], dtype=np.int64)


def test_ring_sized_by_max_abs_sum_does_not_wrap_even_at_worst_case_inputs() -> None:
    n, clip, scale, d = 30, 1.0, 2.0**12, 64
    hook = DiscreteGaussianNoise(noise_multiplier=2.0, clip=clip, min_clients=n, dim=d)
    need = n * math.ceil(clip * scale) + hook.max_abs_sum(n, scale)
    bits = math.ceil(math.log2(need + 1)) + 1  # signed: |sum| <= 2^(bits-1) - 1
    assert need <= 2 ** (bits - 1) - 1
    k = np.full(d, math.ceil(clip * scale), dtype=np.int64)  # every coordinate at the bound
    for sign in (1, -1):
        vals = [sign * k + hook.sample(d, scale) for _ in range(n)]
        exact = np.sum(vals, axis=0)
        np.testing.assert_array_equal(_ring_sum(vals, bits), exact)
    # the headroom really is for the noise: it is many standard deviations of the noise sum
    assert hook.max_abs_sum(n, scale) > 10 * math.sqrt(n) * hook.local_sigma(scale)


def _distributed(**kw) -> DistributedDPFedAvg:
    base = dict(
        clip=1.0, noise_multiplier=1.0, expected_clients=20, sample_rate=0.05, delta=1e-6, population=400,
        min_clients=8, dim=500, scale=2.0**14,
    )
    base.update(kw)
    return DistributedDPFedAvg(PlainSum(), **base)


def test_distributed_decodes_an_integer_noisy_sum_of_the_clipped_updates() -> None:
    agg = _distributed()
    ups = _updates(12, 500, scale=0.1)
    res = agg.aggregate(ups, round_index=0, dropouts={0: "upload", 5: "upload"})
    s = agg.scale
    total = res.delta * 20.0 * s  # back to encoded units
    assert np.array_equal(total, np.rint(total))  # only integers were ever summed
    rounded = np.sum([np.rint(clip_l2(u.delta, 1.0)[0] * s) for u in ups if u.client_id not in (0, 5)], axis=0)
    noise = total - rounded
    sigma = agg.client_noise.local_sigma(s)
    assert abs(noise.var() / (10 * sigma**2) - 1) < 6 * math.sqrt(2 / 500)
    p = res.stats["privacy"]
    assert p["min_clients"] == 8 and p["scale"] == s and p["rho_per_round"] == pytest.approx(0.5, rel=1e-9)
    assert p["mechanism"].startswith("user-level DP-FedAvg, distributed")
    assert p["epsilon"] == pytest.approx(
        distributed_epsilon(1.0, 0.05, 1, 1e-6, clip=1.0, min_clients=8, dim=500, scale=s), rel=1e-9
    )
    # accounted no better than the central Gaussian at the same noise multiplier
    assert p["epsilon"] >= central_epsilon(1.0, 0.05, 1, 1e-6)


def test_distributed_refuses_to_release_with_too_few_survivors() -> None:
    agg = _distributed(min_clients=10)
    ups = _updates(11, 500)
    with pytest.raises(AggregationError, match="fewer than min_clients=10"):
        agg.aggregate(ups, round_index=3, dropouts={1: "upload", 2: "upload"})
    assert agg.rounds == 0 and agg.accountant.steps == 0  # nothing released, nothing spent


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(accountant="prv"), "needs an RDP accountant"),
        (dict(scale=1000.0), "power of two"),
        (dict(min_clients=0), "min_clients must be >= 1"),
        (dict(noise_multiplier=-1.0), "noise multiplier"),
        (dict(clip=0.0), "clip norm"),
        (dict(delta=0.01), "1/n"),
        (dict(scale=2.0**48), "headroom"),
    ],
)
def test_distributed_invalid_settings(kw: dict, match: str) -> None:
    with pytest.raises(PrivacyConfigError, match=match):
        _distributed(**kw)


def test_hook_given_but_not_in_protocol_is_refused() -> None:
    hook = DiscreteGaussianNoise(noise_multiplier=1.0, clip=1.0, min_clients=8, dim=500)
    with pytest.raises(PrivacyConfigError, match="protocol does not add it"):
        _distributed(client_noise=hook)


def test_hook_rejects_other_dimensions() -> None:
    hook = DiscreteGaussianNoise(noise_multiplier=1.0, clip=1.0, min_clients=2, dim=10)
    with pytest.raises(PrivacyConfigError, match="calibrated for dim 10"):
        hook.sample(11, 4.0)
    agg = _distributed(dim=10)
    with pytest.raises(AggregationError, match="calibrated for 10"):
        agg.aggregate(_updates(10, 11), round_index=0)


def test_quantization_inflates_sensitivity_by_rounding_slack_sqrt_d() -> None:
    d2, d1 = quantized_sensitivity(1.0, 2.0**8, 10_000, 0.5)
    assert d2 == 256 + 50 and d1 == min(d2 * d2, 100 * d2)


# -- composed with the real pairwise-mask protocol ------------------------------------------------


def _secagg_setup(d: int, n: int, min_clients: int, t: int, **kw):
    from fedsecure.secagg.sum import SecAggSum

    hook = DiscreteGaussianNoise(noise_multiplier=1.0, clip=1.0, min_clients=min_clients, dim=d)
    protocol = SecAggSum(clip_range=1.0, client_noise=hook, t=t, dropout_rate=0.01, failure_target=0.5, **kw)
    agg = DistributedDPFedAvg(
        protocol, clip=1.0, noise_multiplier=1.0, expected_clients=n, sample_rate=0.1, delta=1e-5,
        min_clients=min_clients, dim=d, client_noise=hook,
    )
    return hook, agg


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_distributed_noise_inside_secagg_end_to_end() -> None:
    d, n = 1500, 10
    hook, agg = _secagg_setup(d, n, min_clients=7, t=7)
    ups = _updates(n, d, scale=0.05)
    res = agg.aggregate(ups, round_index=0, dropouts={4: "masked_input"})
    assert 4 not in res.included and len(res.included) == 9
    s = res.stats["scale"]
    total = res.delta * n * s
    assert np.array_equal(total, np.rint(total))  # the server decoded an integer sum in the ring
    rounded = np.sum([np.rint(clip_l2(u.delta, 1.0)[0] * s) for u in ups if u.client_id != 4], axis=0)
    noise = total - rounded
    # only the noisy sum was decoded, and its noise is that of 9 clients' discrete Gaussians
    assert abs(noise.var() / (9 * hook.local_sigma(s) ** 2) - 1) < 6 * math.sqrt(2 / d)
    p = res.stats["privacy"]
    assert p["scale"] == s and p["rho_per_round"] == pytest.approx(0.5, rel=1e-9)
    assert p["noise_source"] == hook.noise.describe()


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_secagg_threshold_below_min_clients_is_refused() -> None:
    _, agg = _secagg_setup(50, 10, min_clients=8, t=6)
    with pytest.raises(AggregationError, match="threshold t=6 .* below min_clients=8"):
        agg.aggregate(_updates(10, 50), round_index=0)


def test_ring_too_small_for_the_noise_is_refused_not_wrapped() -> None:
    from fedsecure.secagg.encoding import FixedPointEncoding
    from fedsecure.secagg.errors import ConfigurationError

    hook = DiscreteGaussianNoise(noise_multiplier=50.0, clip=1.0, min_clients=2, dim=10_000)
    # at 12 bits, even one level per unit of clip leaves no room for this much noise
    with pytest.raises(ConfigurationError, match="noise bound"):
        FixedPointEncoding.for_sum(100, 1.0, bits=12, noise=hook)
    enc = FixedPointEncoding.for_sum(100, 1.0, bits=32, noise=hook)
    assert 100 * math.ceil(enc.scale) + hook.max_abs_sum(100, enc.scale) <= 2**31 - 1
