"""Model-poisoning attacks (fedsecure.attacks): each on a worked example, its defining property, and the plan."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fedsecure.attacks import ATTACKS, AttackConfigError, ModelPoisoning, PoisoningPlan, make_attack
from fedsecure.attacks.adaptive_grouped import AdaptiveGrouped, expected_touched_groups
from fedsecure.attacks.alie import ALittleIsEnough, alie_z_max
from fedsecure.attacks.gaussian import Gaussian
from fedsecure.attacks.ipm import InnerProductManipulation
from fedsecure.attacks.min_max import MinMax, MinSum, pairwise_sq_distances
from fedsecure.attacks.scaling import Scaling
from fedsecure.attacks.sign_flip import SignFlip
from fedsecure.fl.aggregation import ClientUpdate

RNG = np.random.default_rng(0)
OPTIONS = {"adaptive-grouped": {"group_size": 3}}


def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def sq_dist(x: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Squared distances from x to each row, computed directly (not by the attack's expansion)."""
    return ((rows - x) ** 2).sum(axis=1)


# values on a 0.01 grid in [-100, 100]: far from underflow, where squared distances would vanish
finite = st.integers(-10_000, 10_000).map(lambda i: i / 100)


def matrices(min_rows: int = 2, max_rows: int = 8, max_cols: int = 12):
    return st.tuples(st.integers(min_rows, max_rows), st.integers(1, max_cols)).flatmap(
        lambda s: hnp.arrays(np.float64, s, elements=finite))


# --- the registry ----------------------------------------------------------------------------------------------


MODEL_POISONING = ["sign-flip", "scaling", "gaussian", "alie", "ipm", "min-max", "min-sum", "adaptive-grouped"]


@pytest.mark.parametrize("name", MODEL_POISONING)
def test_every_model_poisoning_attack_builds_by_name_and_crafts_m_rows(name):
    attack = make_attack(name, **OPTIONS.get(name, {}))
    assert isinstance(attack, ModelPoisoning) and attack.name == name
    benign, honest = RNG.normal(size=(3, 7)), RNG.normal(size=(9, 7))
    if attack.needs_global:  # what the engine hands it: the global model and its layout (here one item table)
        attack.layout, attack.global_params = [("item_factors", (7, 1), 0)], RNG.normal(size=7)
    out = attack.craft(benign, honest if attack.omniscient else None, rng())
    assert out.shape == (3, 7) and np.isfinite(out).all()
    assert attack.describe()["name"] == name and attack.describe()["omniscient"] == attack.omniscient


def test_registry_holds_the_model_poisoning_names_and_unknown_names_are_refused():
    assert set(ATTACKS) >= set(MODEL_POISONING)
    with pytest.raises(AttackConfigError, match="unknown attack 'nope'"):
        make_attack("nope")


@pytest.mark.parametrize("name", ["alie", "ipm", "min-max", "min-sum", "adaptive-grouped"])
def test_statistical_attacks_are_omniscient_by_default_and_can_be_told_otherwise(name):
    opts = dict(OPTIONS.get(name, {}))
    assert make_attack(name, **opts).omniscient is True
    if name in ("alie", "adaptive-grouped"):
        opts["n_clients"] = 12
    assert make_attack(name, omniscient=False, **opts).omniscient is False


@pytest.mark.parametrize("name", ["sign-flip", "scaling", "gaussian"])
def test_update_only_attacks_are_not_omniscient(name):
    assert make_attack(name).omniscient is False


@pytest.mark.parametrize("name, options, message", [
    ("sign-flip", {"scale": -1}, "scale must be finite and > 0"),
    ("scaling", {"gamma": 0}, "gamma must be finite and > 0"),
    ("gaussian", {"sigma": -1.0}, "sigma must be finite and >= 0"),
    ("gaussian", {"sigma": "x"}, "sigma must be a number"),
    ("ipm", {"epsilon": float("nan")}, "epsilon must be finite"),
    ("alie", {"z": float("inf")}, "z must be finite"),
    ("alie", {"omniscient": False}, "give n_clients"),
    ("alie", {"omniscient": "False"}, "omniscient must be True or False"),
    ("min-max", {"omniscient": 0}, "omniscient must be True or False"),
    ("alie", {"n_clients": 0}, "n_clients must be an integer >= 1"),
    ("min-max", {"perturbation": "cosine"}, "unknown perturbation 'cosine'"),
    ("min-sum", {"tolerance": 0}, "tolerance must be finite and > 0"),
    ("adaptive-grouped", {"group_size": 0}, "group_size must be an integer >= 1"),
    ("adaptive-grouped", {"group_size": 2.5}, "group_size must be an integer >= 1"),
    ("adaptive-grouped", {"group_size": 4, "omniscient": False}, "give n_clients"),
])
def test_bad_parameters_get_a_named_error(name, options, message):
    with pytest.raises(AttackConfigError, match=message):
        make_attack(name, **options)


def test_adaptive_grouped_requires_the_group_size():
    with pytest.raises(TypeError):
        make_attack("adaptive-grouped")


def test_bad_input_shapes_are_refused():
    with pytest.raises(AttackConfigError, match="m x d"):
        SignFlip().craft(np.zeros(3), None, rng())
    with pytest.raises(AttackConfigError, match="h x 3"):
        InnerProductManipulation().craft(np.zeros((2, 3)), np.zeros((2, 4)), rng())


# --- sign flip, scaling, Gaussian ------------------------------------------------------------------------------


def test_sign_flip_worked_example():
    benign = np.array([[1.0, -2.0], [0.0, 3.0]])
    np.testing.assert_array_equal(SignFlip().craft(benign, None, rng()), [[-1.0, 2.0], [0.0, -3.0]])
    np.testing.assert_array_equal(SignFlip(scale=2.0).craft(benign, None, rng()), [[-2.0, 4.0], [0.0, -6.0]])


@settings(max_examples=50, deadline=None)
@given(matrices(min_rows=1), st.floats(0.1, 10))
def test_sign_flip_points_against_the_benign_mean(benign, scale):
    crafted = SignFlip(scale=scale).craft(benign, None, rng())
    mu = benign.mean(axis=0)
    np.testing.assert_allclose(crafted.mean(axis=0) @ mu, -scale * (mu @ mu), rtol=1e-9, atol=1e-9)
    if mu @ mu > 1e-6:
        assert crafted.mean(axis=0) @ mu < 0


def test_sign_flip_of_honest_like_updates_has_negative_inner_product_with_the_honest_mean():
    direction = np.linspace(1, 2, 20)
    honest = direction + 0.1 * RNG.normal(size=(10, 20))
    benign = direction + 0.1 * RNG.normal(size=(3, 20))
    crafted = SignFlip().craft(benign, None, rng())
    assert (crafted @ honest.mean(axis=0) < 0).all()


def test_scaling_worked_example():
    x = np.array([[1.0, -2.0]])
    np.testing.assert_array_equal(Scaling(gamma=3.0, objective="backdoor").craft(x, None, rng()), [[3.0, -6.0]])
    np.testing.assert_array_equal(Scaling(gamma=3.0).craft(x, None, rng()), [[-3.0, 6.0]])  # untargeted: reversed
    assert Scaling().gamma == 10.0 and Scaling().objective == "untargeted"
    with pytest.raises(AttackConfigError, match="objective"):
        Scaling(objective="nope")


@settings(max_examples=50, deadline=None)
@given(matrices(min_rows=1), st.floats(0.5, 100))
def test_scaling_multiplies_each_norm_by_gamma(benign, gamma):
    for objective, sign in (("backdoor", 1.0), ("untargeted", -1.0)):
        crafted = Scaling(gamma=gamma, objective=objective).craft(benign, None, rng())
        np.testing.assert_allclose(np.linalg.norm(crafted, axis=1), gamma * np.linalg.norm(benign, axis=1),
                                   rtol=1e-12)
        np.testing.assert_allclose(crafted, sign * gamma * benign, rtol=1e-12)


def test_untargeted_scaling_reverses_the_round_mean_where_sign_flip_does_not():
    """With 10 % malicious clients, boosting the reversed update turns the mean against the honest one."""
    honest = np.tile([[1.0, 0.5]], (9, 1))
    flipped = np.vstack([honest, SignFlip().craft(honest[:1], None, rng())]).mean(axis=0)
    scaled = np.vstack([honest, Scaling().craft(honest[:1], None, rng())]).mean(axis=0)
    assert flipped @ honest[0] > 0 > scaled @ honest[0]


def test_gaussian_is_reproducible_from_the_generator_and_has_the_stated_moments():
    benign = np.zeros((4, 25_000))
    a = Gaussian(sigma=2.0, mu=0.5).craft(benign, None, np.random.default_rng(7))
    b = Gaussian(sigma=2.0, mu=0.5).craft(benign, None, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.shape == benign.shape
    assert abs(a.mean() - 0.5) < 0.01 and abs(a.std() - 2.0) < 0.01
    assert not np.array_equal(a[0], a[1])  # each client draws its own noise
    np.testing.assert_array_equal(Gaussian(sigma=0.0).craft(np.ones((2, 3)), None, rng()), np.zeros((2, 3)))


def test_gaussian_ignores_the_benign_values():
    g1 = Gaussian().craft(np.zeros((2, 5)), None, np.random.default_rng(3))
    g2 = Gaussian().craft(np.full((2, 5), 9.0), None, np.random.default_rng(3))
    np.testing.assert_array_equal(g1, g2)


# --- ALIE ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, m, z", [
    # s = floor(n/2 + 1) - m, z = Phi^{-1}((n - s)/n), values from scipy.stats.norm.ppf
    (50, 12, 0.5828415072712162),  # s = 14, Phi^{-1}(0.72)
    (10, 2, 0.2533471031357997),  # s = 4, Phi^{-1}(0.6)
    (20, 4, 0.38532046640756773),  # s = 7, Phi^{-1}(0.65)
    (3, 1, 0.43072729929545744),  # s = 1, Phi^{-1}(2/3)
    (2, 1, 0.0),  # s = 1, Phi^{-1}(1/2)
])
def test_alie_z_max_is_the_papers_formula(n, m, z):
    assert alie_z_max(n, m) == pytest.approx(z, abs=1e-12)


def test_alie_z_max_keeps_one_honest_supporter_with_a_malicious_majority():
    # n = 4, m = 3: the paper's s = 0; we keep s = 1, z = Phi^{-1}(3/4)
    assert alie_z_max(4, 3) == pytest.approx(0.6744897501960817, abs=1e-12)
    assert alie_z_max(1, 1) == 0.0


def test_alie_worked_example():
    honest = np.array([[0.0, 0.0], [2.0, 4.0]])  # mu = (1, 2), sample std = (sqrt 2, 2 sqrt 2)
    out = ALittleIsEnough(z=1.0).craft(np.zeros((3, 2)), honest, rng())
    np.testing.assert_allclose(out, np.tile([1 - math.sqrt(2), 2 - 2 * math.sqrt(2)], (3, 1)), rtol=1e-12)


def test_alie_default_z_comes_from_the_rounds_n_and_m():
    honest, benign = RNG.normal(size=(16, 5)), RNG.normal(size=(4, 5))
    out = ALittleIsEnough().craft(benign, honest, rng())
    expected = honest.mean(axis=0) - 0.38532046640756773 * honest.std(axis=0, ddof=1)  # n = 20, m = 4
    np.testing.assert_allclose(out, np.tile(expected, (4, 1)), rtol=1e-12)
    # an attacker told n uses it instead of m + h
    out = ALittleIsEnough(n_clients=50).craft(RNG.normal(size=(12, 5)), honest, rng())
    np.testing.assert_allclose(out[0], honest.mean(axis=0) - 0.5828415072712162 * honest.std(axis=0, ddof=1))


def test_alie_non_omniscient_uses_the_malicious_clients_own_updates():
    benign, honest = RNG.normal(size=(4, 6)), RNG.normal(loc=5.0, size=(16, 6))
    attack = ALittleIsEnough(omniscient=False, n_clients=20)
    out = attack.craft(benign, None, rng())
    np.testing.assert_allclose(out[0], benign.mean(axis=0) - 0.38532046640756773 * benign.std(axis=0, ddof=1))
    np.testing.assert_array_equal(out, attack.craft(benign, honest, rng()))  # never looks at honest


@settings(max_examples=50, deadline=None)
@given(matrices(), st.floats(0.0, 5.0))
def test_alie_stays_within_z_sigma_of_the_mean_coordinatewise(honest, z):
    out = ALittleIsEnough(z=z).craft(honest[:1], honest, rng())
    mu, sigma = honest.mean(axis=0), honest.std(axis=0, ddof=1)
    assert (np.abs(out - mu) <= z * sigma + 1e-9 * (1 + np.abs(mu))).all()
    assert (out == out[0]).all()  # all colluders send the same update


# --- IPM -------------------------------------------------------------------------------------------------------


def test_ipm_worked_example():
    honest = np.array([[1.0, 2.0], [3.0, 4.0]])
    out = InnerProductManipulation(epsilon=0.5).craft(np.zeros((2, 2)), honest, rng())
    np.testing.assert_allclose(out, [[-1.0, -1.5], [-1.0, -1.5]])


@settings(max_examples=50, deadline=None)
@given(matrices(min_rows=1), st.floats(0.01, 100))
def test_ipm_has_negative_inner_product_with_the_honest_mean(honest, epsilon):
    mu = honest.mean(axis=0)
    out = InnerProductManipulation(epsilon=epsilon).craft(np.zeros((3, honest.shape[1])), honest, rng())
    np.testing.assert_allclose(out @ mu, -epsilon * (mu @ mu) * np.ones(3), rtol=1e-9, atol=1e-9)
    if mu @ mu > 1e-6:
        assert (out @ mu < 0).all()


def test_ipm_non_omniscient_uses_the_benign_mean():
    benign = np.array([[2.0, 0.0], [0.0, 2.0]])
    out = InnerProductManipulation(epsilon=1.0, omniscient=False).craft(benign, None, rng())
    np.testing.assert_array_equal(out, [[-1.0, -1.0], [-1.0, -1.0]])


# --- min-max and min-sum ---------------------------------------------------------------------------------------


def authors_search(feasible, gamma_init: float = 10.0, tol: float = 1e-5) -> float:
    """The loop of Shejwalkar & Houmansadr's code (lamda, lamda_fail, lamda_succ), transcribed."""
    lamda, step, succ = gamma_init, gamma_init, 0.0
    while abs(succ - lamda) > tol:
        if feasible(lamda):
            succ = lamda
            lamda = lamda + step / 2
        else:
            lamda = lamda - step / 2
        step = step / 2
    return succ


def closed_form_gamma(kind: str, ref: np.ndarray, p: np.ndarray) -> float:
    """gamma* solved exactly: the largest root of the binding quadratic(s)."""
    mu = ref.mean(axis=0)
    a = mu - ref
    aa, ap, pp = (a * a).sum(axis=1), a @ p, p @ p
    d2 = pairwise_sq_distances(ref)
    if kind == "min-max":
        t = d2.max()
        return float(np.min((-ap + np.sqrt(np.maximum(ap**2 - pp * (aa - t), 0.0))) / pp))
    t = d2.sum(axis=1).min()  # sum_i a_i = 0, so sum_i ||a_i + gamma p||^2 = sum aa + r gamma^2 pp
    return float(math.sqrt(max(t - aa.sum(), 0.0) / (ref.shape[0] * pp)))


def test_min_max_and_min_sum_worked_example():
    # reference {(0,0), (2,0)}: mu = (1,0), sample std = (sqrt 2, 0), p = -std
    ref = np.array([[0.0, 0.0], [2.0, 0.0]])
    for attack in (MinMax(tolerance=1e-9), MinSum(tolerance=1e-9)):
        mu, p, gamma = attack.search(ref)
        np.testing.assert_array_equal(mu, [1.0, 0.0])
        np.testing.assert_allclose(p, [-math.sqrt(2), 0.0])
        # min-max: (1 + gamma sqrt 2)^2 <= 4; min-sum: (1 - gamma sqrt 2)^2 + (1 + gamma sqrt 2)^2 <= 4
        assert gamma == pytest.approx(1 / math.sqrt(2), abs=1e-8)
        np.testing.assert_allclose(attack.craft(np.zeros((2, 2)), ref, rng()), np.zeros((2, 2)), atol=1e-8)


def test_min_max_and_min_sum_differ_where_the_constraints_do():
    ref = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    g_max, g_sum = MinMax(tolerance=1e-9).search(ref)[2], MinSum(tolerance=1e-9).search(ref)[2]
    p = -ref.std(axis=0, ddof=1)
    assert g_max == pytest.approx(closed_form_gamma("min-max", ref, p), abs=1e-8)
    assert g_sum == pytest.approx(closed_form_gamma("min-sum", ref, p), abs=1e-8)
    assert abs(g_max - g_sum) > 0.1


@pytest.mark.parametrize("cls", [MinMax, MinSum])
@pytest.mark.parametrize("perturbation", ["std", "unit-vector", "sign"])
@settings(max_examples=40, deadline=None)
@given(ref=matrices())
def test_min_max_min_sum_stay_within_the_honest_bound_and_gamma_is_maximal(cls, perturbation, ref):
    tol = 1e-6
    attack = cls(perturbation, tolerance=tol)
    mu, p, gamma = attack.search(ref)
    x = attack.craft(np.zeros((2, ref.shape[1])), ref, rng())
    np.testing.assert_allclose(x, np.tile(mu + gamma * p, (2, 1)))
    d2 = np.array([sq_dist(r, ref) for r in ref])
    scale = 1e-9 * (1 + d2.max() + (ref**2).sum())
    if cls is MinMax:
        bound, value = d2.max(), lambda g: sq_dist(mu + g * p, ref).max()
    else:
        bound, value = d2.sum(axis=1).min(), lambda g: sq_dist(mu + g * p, ref).sum()
    assert value(gamma) <= bound + scale  # within the honest max (resp. smallest sum)
    if p @ p > 0:
        exact = closed_form_gamma(attack.name, ref, p)
        assert gamma <= exact + 1e-6 * (1 + exact)
        assert gamma >= exact - tol - 1e-6 * (1 + exact)  # maximal up to the tolerance
        if exact > 1e-3:
            assert value(exact + 2 * tol + 1e-4 * exact) > bound  # a larger gamma breaks the bound
    else:
        assert gamma == 0.0


@pytest.mark.parametrize("cls", [MinMax, MinSum])
def test_search_agrees_with_the_authors_loop_where_theirs_is_not_capped(cls):
    ref = RNG.normal(size=(12, 30))
    attack = cls(tolerance=1e-5)
    mu, p, gamma = attack.search(ref)
    bound = pairwise_sq_distances(ref).max() if cls is MinMax else pairwise_sq_distances(ref).sum(axis=1).min()

    def feasible(g):
        d = sq_dist(mu + g * p, ref)
        return (d.max() if cls is MinMax else d.sum()) <= bound

    theirs = authors_search(feasible)
    assert 0 < theirs < 19.99
    assert gamma == pytest.approx(theirs, abs=2e-5)


def test_search_is_not_capped_at_twice_gamma_init():
    ref = np.array([[0.0, 0.0], [100.0, 0.0], [0.0, 1.0]])  # gamma* far above 20 for the unit vector
    mu, p, gamma = MinMax("unit-vector").search(ref)
    assert gamma > 20
    assert gamma == pytest.approx(closed_form_gamma("min-max", ref, p), abs=1e-4)


@pytest.mark.parametrize("cls", [MinMax, MinSum])
def test_min_max_min_sum_non_omniscient_search_the_benign_updates(cls):
    benign, honest = RNG.normal(size=(5, 8)), RNG.normal(loc=3.0, size=(10, 8))
    attack = cls(omniscient=False)
    mu, p, gamma = attack.search(benign)
    np.testing.assert_allclose(attack.craft(benign, None, rng()), np.tile(mu + gamma * p, (5, 1)))
    one = cls(omniscient=False).craft(benign[:1], None, rng())  # one update: no spread, it sends itself
    np.testing.assert_array_equal(one, benign[:1])


def test_min_max_crafts_for_a_large_float32_model():
    ref = RNG.normal(size=(20, 50_000)).astype(np.float32)
    out = MinMax().craft(ref[:3], ref, rng())
    assert out.shape == (3, 50_000) and np.isfinite(out).all()


# --- adaptive attack on grouped secure aggregation -------------------------------------------------------------


def test_expected_touched_groups_worked_example():
    # n = 20, m = 4, k = 5: g = 4; P[a group holds no malicious] = C(16,5)/C(20,5) = 4368/15504
    g, b = expected_touched_groups(20, 4, 5)
    assert g == 4 and b == pytest.approx(4 * (1 - 4368 / 15504))
    assert expected_touched_groups(20, 4, 1) == (20, pytest.approx(4.0))  # singleton groups: each one its own
    assert expected_touched_groups(10, 3, 10) == (1, 1.0)  # one group: it is touched


def test_adaptive_grouped_worked_example():
    attack = AdaptiveGrouped(group_size=5)
    honest, benign = RNG.normal(size=(16, 6)), RNG.normal(size=(4, 6))
    plan = attack.plan(4, honest)
    b = 4 * (1 - 4368 / 15504)  # 2.873 touched groups of g = 4
    # z_G = z_max(g = 4, round(b) = 3): s = floor(3) - 3 = 0, kept at 1, so Phi^{-1}(3/4)
    assert plan["z"] == pytest.approx(0.6744897501960817, abs=1e-12)
    assert plan["per_group"] == pytest.approx(4 / b)
    assert plan["shift"] == pytest.approx(0.6744897501960817 * math.sqrt(5) * b / 4)
    out = attack.craft(benign, honest, rng())
    expected = honest.mean(axis=0) - plan["shift"] * honest.std(axis=0, ddof=1)
    np.testing.assert_allclose(out, np.tile(expected, (4, 1)), rtol=1e-12)


def test_adaptive_grouped_with_singleton_groups_is_alie():
    honest, benign = RNG.normal(size=(16, 6)), RNG.normal(size=(4, 6))
    np.testing.assert_allclose(AdaptiveGrouped(group_size=1).craft(benign, honest, rng()),
                               ALittleIsEnough().craft(benign, honest, rng()), rtol=1e-12)


def test_adaptive_grouped_non_omniscient_uses_own_updates_and_the_given_n():
    benign = RNG.normal(size=(4, 6))
    attack = AdaptiveGrouped(group_size=5, omniscient=False, n_clients=20)
    shift = AdaptiveGrouped(group_size=5).plan(4, np.zeros((16, 6)))["shift"]
    out = attack.craft(benign, None, rng())
    np.testing.assert_allclose(out[0], benign.mean(axis=0) - shift * benign.std(axis=0, ddof=1), rtol=1e-12)


def trimmed_mean(x: np.ndarray, trim: int) -> np.ndarray:
    return np.sort(x, axis=0)[trim : len(x) - trim].mean(axis=0)


RULES_OVER_GROUPS = {"median": lambda x: np.median(x, axis=0), "trimmed-mean": lambda x: trimmed_mean(x, 2)}


def grouped(updates: np.ndarray, groups: int, seed: int, rule: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """A rule over the means of a random partition into groups (as grouped mode forms them)."""
    order = np.random.default_rng(seed).permutation(len(updates))
    members = [order[i::groups] for i in range(groups)]
    means = np.stack([updates[rows].mean(axis=0) for rows in members])
    return RULES_OVER_GROUPS[rule](means), members


@pytest.mark.parametrize("rule", sorted(RULES_OVER_GROUPS))
def test_adaptive_grouped_moves_the_robust_group_aggregate_further_than_client_level_alie(rule):
    """20 groups of 5 (n = 100, m = 10). The touched groups' means land, on average, at the target
    ``mu - z_G sigma_G`` (z_G = z_max(20, 8) = Phi^{-1}(0.85)), inside the spread of the untouched groups'
    means (above their minimum), and pull the median (or trimmed mean) of the group means several times
    further than ALIE aimed at individual updates, whose shift the averaging inside a group dilutes."""
    n, m, k, d = 100, 10, 5, 400
    gen = np.random.default_rng(11)
    mu, sigma = np.linspace(-1, 1, d), np.linspace(0.5, 1.5, d)
    sigma_g = sigma / math.sqrt(k)
    adaptive = AdaptiveGrouped(group_size=k)
    z_g = adaptive.plan(m, np.zeros((n - m, d)))["z"]
    assert z_g == pytest.approx(1.0364333894937894, abs=1e-12)
    pulls: dict[str, list[float]] = {"alie": [], "adaptive": []}
    touched_offset, lowest_untouched = [], []
    for trial in range(10):
        updates = mu + sigma * gen.normal(size=(n, d))
        bad = np.arange(m)  # the partition is random, so which rows are malicious does not matter
        honest = updates[m:]
        clean, _ = grouped(updates, n // k, trial, rule)
        for key, attack in (("alie", ALittleIsEnough()), ("adaptive", adaptive)):
            poisoned = updates.copy()
            poisoned[bad] = attack.craft(updates[bad], honest, rng())
            aggregate, members = grouped(poisoned, n // k, trial, rule)
            pulls[key].append(float(np.mean((clean - aggregate) / sigma)))  # positive: towards mu - z sigma
            if key == "adaptive":
                means = (np.stack([poisoned[r].mean(axis=0) for r in members]) - mu) / sigma_g
                touched = np.array([bool(np.isin(r, bad).any()) for r in members])
                touched_offset.append(means[touched].mean())
                lowest_untouched.append(means[~touched].min(axis=0).mean())
    assert np.mean(pulls["adaptive"]) > 4 * np.mean(pulls["alie"]) > 0
    assert np.mean(touched_offset) == pytest.approx(-z_g, abs=0.2)
    assert np.mean(touched_offset) > np.mean(lowest_untouched) + 0.3


# --- the plan --------------------------------------------------------------------------------------------------


class Recorder(ModelPoisoning):
    """Records what craft() receives and sends a marker."""

    name = "recorder"

    def __init__(self, omniscient: bool) -> None:
        self.omniscient = omniscient
        self.calls: list[tuple[np.ndarray, np.ndarray | None]] = []

    def craft(self, benign, honest, rng):
        self.calls.append((benign.copy(), None if honest is None else honest.copy()))
        return np.full_like(benign, -7.0)


def updates(ids, d: int = 4, dtype=np.float32) -> list[ClientUpdate]:
    return [ClientUpdate(c, np.full(d, float(c), dtype=dtype), weight=float(c) + 0.5) for c in ids]


@pytest.mark.parametrize("n, fraction, m", [(10, 0.2, 2), (10, 0.25, 2), (7, 0.5, 4), (40, 0.1, 4), (10, 0.01, 1),
                                            (10, 0.0, 0)])
def test_plan_chooses_round_fraction_n_clients(n, fraction, m):
    plan = PoisoningPlan.choose(SignFlip(), range(100, 100 + n), fraction, seed=3)
    assert len(plan.malicious) == m and plan.malicious <= set(range(100, 100 + n))


def test_plan_choice_is_deterministic_from_the_seed_and_ignores_id_order():
    ids = list(range(50))
    a = PoisoningPlan.choose(SignFlip(), ids, 0.2, seed=5)
    assert a.malicious == PoisoningPlan.choose(SignFlip(), list(reversed(ids)), 0.2, seed=5).malicious
    assert len({PoisoningPlan.choose(SignFlip(), ids, 0.2, seed=s).malicious for s in range(5)}) > 1


@pytest.mark.parametrize("fraction", [-0.1, 1.0, 1.5])
def test_plan_refuses_a_fraction_outside_0_1(fraction):
    with pytest.raises(AttackConfigError, match="fraction"):
        PoisoningPlan.choose(SignFlip(), range(10), fraction)


def test_apply_replaces_exactly_the_malicious_updates_and_keeps_weights_order_and_dtype():
    ups = updates(range(8))
    plan = PoisoningPlan(Scaling(gamma=3.0, objective="backdoor"), frozenset({2, 5, 42}))  # 42 not sampled this round
    out = plan.apply(ups, round_index=0)
    assert [u.client_id for u in out] == list(range(8))
    assert [u.weight for u in out] == [u.weight for u in ups]
    for before, after in zip(ups, out):
        if before.client_id in (2, 5):
            np.testing.assert_array_equal(after.delta, 3.0 * before.delta)
        else:
            assert after is before
        assert after.delta.dtype == np.float32
    clean = updates([0, 1])
    assert all(a is b for a, b in zip(plan.apply(clean, round_index=0), clean))  # no malicious client sampled


def test_apply_gives_an_omniscient_attack_the_honest_updates_and_the_others_none():
    ups = updates(range(6))
    for omniscient in (True, False):
        rec = Recorder(omniscient)
        out = PoisoningPlan(rec, frozenset({1, 4})).apply(ups, round_index=2)
        (benign, honest), = rec.calls
        np.testing.assert_array_equal(benign[:, 0], [1, 4])
        if omniscient:
            np.testing.assert_array_equal(honest[:, 0], [0, 2, 3, 5])
        else:
            assert honest is None
        assert all((out[i].delta == -7).all() for i in (1, 4))


def test_non_colluding_clients_craft_alone():
    ups = updates(range(6))
    rec = Recorder(omniscient=False)
    PoisoningPlan(rec, frozenset({1, 3, 4}), colluding=False).apply(ups, round_index=0)
    assert [(b.shape[0], b[0, 0], h) for b, h in rec.calls] == [(1, 1.0, None), (1, 3.0, None), (1, 4.0, None)]
    # an omniscient attack, alone, sees nothing but its own update
    rec = Recorder(omniscient=True)
    PoisoningPlan(rec, frozenset({1, 3}), colluding=False).apply(ups, round_index=0)
    assert all(b.shape[0] == 1 and np.array_equal(h, b) for b, h in rec.calls)
    # so a lone ALIE client, with no spread to hide in, sends its own update
    out = PoisoningPlan(ALittleIsEnough(), frozenset({1, 3}), colluding=False).apply(ups, round_index=0)
    np.testing.assert_array_equal(out[3].delta, ups[3].delta)


def test_colluding_alie_sends_one_update_from_the_honest_statistics():
    ups = [ClientUpdate(c, RNG.normal(size=5), 1.0) for c in range(10)]
    out = PoisoningPlan(ALittleIsEnough(z=1.0), frozenset({0, 7})).apply(ups, round_index=0)
    honest = np.stack([ups[i].delta for i in range(10) if i not in (0, 7)])
    expected = honest.mean(axis=0) - honest.std(axis=0, ddof=1)
    np.testing.assert_allclose(out[0].delta, expected)
    np.testing.assert_allclose(out[7].delta, expected)


def test_apply_randomness_is_reproducible_per_seed_and_round():
    ups = updates(range(5), dtype=np.float64)
    plan = PoisoningPlan(Gaussian(), frozenset({0, 3}))
    a, b = plan.apply(ups, round_index=1, seed=9), plan.apply(ups, round_index=1, seed=9)
    np.testing.assert_array_equal(a[0].delta, b[0].delta)
    assert not np.array_equal(a[0].delta, plan.apply(ups, round_index=2, seed=9)[0].delta)
    assert not np.array_equal(a[0].delta, a[3].delta)
