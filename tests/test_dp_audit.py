"""Empirical epsilon lower bounds: valid against mechanisms of known epsilon, and they catch broken DP.

A lower bound must never exceed the true epsilon (up to its 5% error
probability, tested over many trials with a binomial allowance), must be
positive when the mechanism is weak, and must exceed the claimed epsilon when
the noise is switched off while the accountant still claims it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import brentq
from scipy.stats import binom, norm

from fedsecure.attacks.inference.dp_audit import (
    audit_dp_aggregator,
    clopper_pearson_upper,
    empirical_epsilon,
    epsilon_from_rates,
    one_run_audit,
    one_run_epsilon,
    one_run_p_value,
)
from fedsecure.dp.noise import NoiseSource
from fedsecure.dp.user_level import CentralDPFedAvg
from fedsecure.experiment import Experiment, RunConfig
from fedsecure.fl.aggregation import PlainSum
from fedsecure.recsys.synthetic import generate

TRIALS = 40
# a valid 95% bound exceeds the truth in at most 5% of trials: allow the count a correct bound
# exceeds with probability below 0.1%
ALLOWED = int(binom.ppf(0.999, TRIALS, 0.05))


def gaussian_epsilon(sigma: float, delta: float) -> float:
    """Exact epsilon of the Gaussian mechanism with sensitivity 1 (Balle & Wang, ICML 2018, Theorem 8)."""
    def excess(eps):
        return norm.cdf(0.5 / sigma - eps * sigma) - math.exp(eps) * norm.cdf(-0.5 / sigma - eps * sigma) - delta
    return brentq(excess, 0.0, 200.0)


class ZeroNoise(NoiseSource):
    """A broken noise source: the accountant is told about noise that is never added."""

    def gaussian_np(self, shape, std, dtype=np.float64):
        return np.zeros(shape, dtype=dtype)


# -- building blocks ---------------------------------------------------------------------------------------------


def test_clopper_pearson_upper_bound_of_known_cases():
    # no successes in n: the bound solves (1 - p)^n = 1 - level
    assert clopper_pearson_upper(0, 10, 0.95) == pytest.approx(1 - 0.05 ** (1 / 10))
    assert clopper_pearson_upper(10, 10, 0.95) == 1.0
    assert clopper_pearson_upper(50, 100, 0.95) > 0.5


def test_epsilon_from_rates_is_the_hypothesis_testing_bound():
    assert epsilon_from_rates(0.1, 0.1) == pytest.approx(math.log(9))
    assert epsilon_from_rates(0.5, 0.5) == 0.0
    assert epsilon_from_rates(0.0, 0.5) == math.inf
    assert epsilon_from_rates(0.1, 0.1, delta=0.05) == pytest.approx(math.log(0.85 / 0.1))


def test_one_run_p_value_without_delta_is_the_binomial_tail_and_the_bound_is_its_inverse():
    # every guess correct, delta = 0: p = q^r, so the bound is logit(0.05^(1/r))
    for r in (10, 100, 1000):
        q = 0.05 ** (1 / r)
        assert one_run_epsilon(r, r, r, delta=0.0) == pytest.approx(math.log(q / (1 - q)), abs=1e-3)
    assert one_run_p_value(100, 50, 30, 1.0, 0.0) == pytest.approx(binom.sf(29, 50, 1 / (1 + math.exp(-1))))
    assert one_run_epsilon(100, 50, 25, delta=1e-5) == 0.0  # chance accuracy proves nothing


@settings(max_examples=30, deadline=None)
@given(m=st.integers(10, 400), frac=st.floats(0.05, 1.0), acc=st.floats(0.0, 1.0),
       delta=st.sampled_from([0.0, 1e-6, 1e-3]))
def test_one_run_bound_grows_with_correct_guesses_and_with_less_delta(m, frac, acc, delta):
    r = max(1, int(frac * m))
    v = int(acc * r)
    eps = one_run_epsilon(m, r, v, delta=delta)
    assert eps >= 0
    if v < r:
        assert one_run_epsilon(m, r, v + 1, delta=delta) >= eps
    assert one_run_epsilon(m, r, v, delta=0.0) >= eps - 1e-3
    if 0 < eps < math.inf:  # the bound is where the p-value crosses 5%
        assert one_run_p_value(m, r, v, eps, delta) < 0.05 <= one_run_p_value(m, r, v, eps + 2e-3, delta) + 1e-12


# -- against mechanisms of known epsilon -----------------------------------------------------------------------


@pytest.mark.parametrize("selection", ["split", "bonferroni"])
@pytest.mark.parametrize("sigma", [0.5, 1.0, 2.0])
def test_empirical_bound_never_exceeds_a_gaussian_mechanisms_epsilon(sigma, selection):
    delta = 1e-5
    true_eps = gaussian_epsilon(sigma, delta)
    rng = np.random.default_rng(int(sigma * 100))
    n = 2000
    labels = np.r_[np.ones(n), np.zeros(n)]
    bounds = [empirical_epsilon(np.r_[rng.normal(1, sigma, n), rng.normal(0, sigma, n)], labels, delta=delta,
                                selection=selection, seed=t)["epsilon_lb"] for t in range(TRIALS)]
    assert sum(b > true_eps for b in bounds) <= ALLOWED, (true_eps, max(bounds))
    if sigma <= 0.5:  # a weak mechanism (epsilon ~ 9.8) is shown to leak
        assert np.median(bounds) > 2.0


def test_empirical_bound_never_exceeds_a_laplace_mechanisms_epsilon():
    eps = 1.0  # Laplace with scale 1 / eps on a sensitivity-1 count is (eps, 0)-DP
    rng = np.random.default_rng(7)
    n = 3000
    labels = np.r_[np.ones(n), np.zeros(n)]
    bounds = [empirical_epsilon(np.r_[rng.laplace(1, 1 / eps, n), rng.laplace(0, 1 / eps, n)], labels,
                                seed=t)["epsilon_lb"] for t in range(TRIALS)]
    assert sum(b > eps for b in bounds) <= ALLOWED
    assert np.median(bounds) > 0.2  # Laplace is tight at the tails: the bound sees a good part of it


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_one_run_audit_never_exceeds_the_epsilon_of_independent_gaussian_canaries(sigma):
    """Canary j's score is its inclusion bit plus N(0, sigma^2): (eps, delta)-DP per canary, eps known."""
    delta = 1e-5
    true_eps = gaussian_epsilon(sigma, delta)
    rng = np.random.default_rng(11)
    m = 1000
    bounds = []
    for _ in range(TRIALS):
        included = rng.random(m) < 0.5
        bounds.append(one_run_audit(included + rng.normal(0, sigma, m), included, delta=delta)["epsilon_lb"])
    assert sum(b > true_eps for b in bounds) <= ALLOWED, (true_eps, max(bounds))


def test_one_run_audit_of_a_weak_mechanism_is_positive():
    rng = np.random.default_rng(12)
    included = rng.random(1000) < 0.5
    audit = one_run_audit(included + rng.normal(0, 0.1, 1000), included, delta=1e-5)
    assert audit["correct"] == audit["guesses"] == 500 and audit["epsilon_lb"] > 3


# -- the DP code itself ------------------------------------------------------------------------------------


def dp_fedavg(noise_multiplier, noise=None):
    # 1000 canaries and one background client, 100 expected per round (q ~ 0.1)
    return CentralDPFedAvg(PlainSum(), clip=1.0, noise_multiplier=noise_multiplier, expected_clients=100,
                           sample_rate=100 / 1001, delta=1e-5, population=1001, noise=noise)


@pytest.mark.parametrize("noise_multiplier", [0.7, 2.0])
def test_the_white_box_audit_of_user_level_dp_fedavg_stays_under_its_claim(noise_multiplier):
    audit = audit_dp_aggregator(dp_fedavg(noise_multiplier), canaries=1000, rounds=10)
    assert 0.5 < audit["claimed_epsilon"] < 10
    assert audit["epsilon_lb"] <= audit["claimed_epsilon"]


def test_a_broken_dp_configuration_is_caught():
    """Noise switched off while the accountant still claims epsilon ~ 1: the audited bound exceeds the claim."""
    audit = audit_dp_aggregator(dp_fedavg(2.0, noise=ZeroNoise()), canaries=1000, rounds=10)
    assert audit["claimed_epsilon"] < 1.2
    assert audit["epsilon_lb"] > 3 * audit["claimed_epsilon"]


# -- DP runs report the audit ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data():
    return generate(n_users=40, n_items=60, mean_interactions=12, seed=2)


BASE = dict(model="mf-implicit", setting="cross-device", rounds=2, eval_every=2, batch_size=32, lr=0.5,
            server_optimizer="avg", server_lr=1.0, n_negatives=20, model_args={"dim": 8})


def run(data, **overrides):
    base = dict(BASE)
    base.update(overrides)
    exp = Experiment(RunConfig(**base), data=data)
    return exp, exp.run()


@pytest.mark.parametrize("overrides, kind", [
    (dict(dp="user-central", noise_multiplier=1.0, clip=0.5, clients_per_round=0.5, delta=1e-3), "users"),
    (dict(dp="dpsgd", setting="cross-silo", silos=4, noise_multiplier=1.0, clip=1.0, delta=1e-4, rounds=1),
     "interactions"),
])
def test_a_dp_run_reports_the_one_run_audit_beside_the_accountants_epsilon(data, overrides, kind):
    exp, result = run(data, **overrides)
    privacy = result["privacy"]
    audit = privacy["audit"]
    assert audit["kind"] == kind and audit["canaries"] == 16 and "Steinke" in audit["method"]
    assert 0 <= privacy["epsilon_lower_bound"] <= privacy["epsilon"] < math.inf
    assert audit["guesses"] == 8 and 0 <= audit["correct"] <= 8
    # canaries never enter the evaluation: utility is measured on the real users
    assert result["final"]["n_eval_users"] == 40 and result["data"]["users"] == 40
    assert result["config"]["audit_canaries"] is None


def test_the_canary_count_is_an_option_and_zero_switches_the_audit_off(data):
    exp, result = run(data, dp="user-central", noise_multiplier=1.0, clients_per_round=0.5, delta=1e-3, rounds=1,
                      audit_canaries=0)
    assert exp.canaries is None and "audit" not in result["privacy"] and len(exp.clients) == 40
    exp, result = run(data, dp="user-central", noise_multiplier=1.0, clients_per_round=0.5, delta=1e-3, rounds=1,
                      audit_canaries=30)
    assert result["privacy"]["audit"]["canaries"] == 30
    assert len(exp.clients) == 40 + int(exp.canaries.included.sum())


def test_a_run_without_dp_is_unchanged(data):
    exp, result = run(data)
    assert exp.canaries is None and len(exp.clients) == 40 and exp.split.train.n_users == 40
    assert result["privacy"] == {"mechanism": "none", "epsilon": math.inf}
    with pytest.raises(ValueError, match="audit-canaries"):
        RunConfig(audit_canaries=10)
    with pytest.raises(ValueError, match="audit-canaries must be >= 0"):
        RunConfig(dp="user-central", noise_multiplier=1.0, audit_canaries=-1)


def test_a_full_run_with_its_noise_switched_off_is_caught_by_its_own_aggregator_audit(data):
    """The broken configuration in a whole run: the accountant claims epsilon 2, the aggregator adds nothing."""
    config = dict(dp="user-central", target_epsilon=2.0, clip=0.5, clients_per_round=0.5, delta=1e-5,
                  audit_canaries=0)
    honest = Experiment(RunConfig(**{**BASE, **config}), data=data)
    broken = Experiment(RunConfig(**{**BASE, **config}), data=data)
    broken.aggregator.noise = ZeroNoise()  # the accountant is not told
    for exp, caught in ((honest, False), (broken, True)):
        privacy = exp.run()["privacy"]
        claim, bound = privacy["epsilon"], privacy["aggregator_epsilon_lower_bound"]
        assert claim <= 2.0 and privacy["aggregator_audit"]["claimed_epsilon"] == pytest.approx(claim)
        assert (bound > claim) is caught, (claim, bound)
