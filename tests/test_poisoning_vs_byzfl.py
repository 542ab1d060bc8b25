"""Our attacks against ByzFL's (``byzfl`` 0.0.11, byzfl/attacks/attacks.py) on the same inputs.

ByzFL has SignFlipping, InnerProductManipulation, ALittleIsEnough and Gaussian; scaling, min-max, min-sum and
the adaptive grouped attack have no ByzFL counterpart. A ByzFL attack returns the one Byzantine vector; ours
returns one row per malicious client. ByzFL's top-level ``__init__`` imports torchvision (through its FL
simulator), so ``byzfl.attacks`` is loaded under a stub parent package that skips that ``__init__``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import pytest

from fedsecure.attacks.alie import ALittleIsEnough
from fedsecure.attacks.gaussian import Gaussian
from fedsecure.attacks.ipm import InnerProductManipulation
from fedsecure.attacks.sign_flip import SignFlip


def load_byzfl_attacks():
    """``byzfl.attacks`` without running ``byzfl/__init__.py``, or None with the reason."""
    if "byzfl.attacks" in sys.modules:
        return sys.modules["byzfl.attacks"], None
    try:
        spec = importlib.util.find_spec("byzfl")
    except (ImportError, ValueError) as e:
        return None, f"byzfl not importable: {e}"
    if spec is None or not spec.submodule_search_locations:
        return None, "byzfl is not installed (pip install --no-deps byzfl==0.0.11)"
    if "byzfl" not in sys.modules:
        stub = types.ModuleType("byzfl")
        stub.__path__ = list(spec.submodule_search_locations)
        stub.__spec__ = spec
        sys.modules["byzfl"] = stub
    try:
        return importlib.import_module("byzfl.attacks"), None
    except Exception as e:  # torch / scipy missing, or a byzfl that does not load
        return None, f"byzfl.attacks does not import: {type(e).__name__}: {e}"


byzfl_attacks, reason = load_byzfl_attacks()
pytestmark = pytest.mark.skipif(byzfl_attacks is None, reason=reason or "")

RNG = np.random.default_rng(2024)
CASES = [RNG.normal(size=(r, d)) * s + o for r, d, s, o in [(2, 1, 1.0, 0.0), (5, 7, 1.0, 0.0), (12, 300, 0.3, 1.5),
                                                                (40, 1000, 2.0, -0.5)]]


def ours(attack, benign: np.ndarray, honest: np.ndarray | None) -> np.ndarray:
    return attack.craft(benign, honest, np.random.default_rng(0))


@pytest.mark.parametrize("x", CASES, ids=lambda x: f"{x.shape[0]}x{x.shape[1]}")
def test_sign_flip_matches_byzfl(x):
    crafted = ours(SignFlip(), x, None)
    theirs = byzfl_attacks.SignFlipping()
    # ByzFL sends -mean(vectors): the mean of our colluders' updates
    np.testing.assert_allclose(crafted.mean(axis=0), theirs(x), rtol=1e-12, atol=1e-12)
    # and each client's own flip is ByzFL's on that one vector
    for row, mine in zip(x, crafted):
        np.testing.assert_array_equal(mine, theirs(row[None, :]))


@pytest.mark.parametrize("x", CASES, ids=lambda x: f"{x.shape[0]}x{x.shape[1]}")
@pytest.mark.parametrize("tau", [0.1, 1.0, 2.0, 100.0])
def test_ipm_matches_byzfl(x, tau):
    theirs = byzfl_attacks.InnerProductManipulation(tau=tau)(x)
    benign = RNG.normal(size=(3, x.shape[1]))
    for row in ours(InnerProductManipulation(epsilon=tau), benign, x):  # omniscient: the honest mean
        np.testing.assert_allclose(row, theirs, rtol=1e-12, atol=1e-12)
    for row in ours(InnerProductManipulation(epsilon=tau, omniscient=False), x, None):  # from its own updates
        np.testing.assert_allclose(row, theirs, rtol=1e-12, atol=1e-12)


def test_ipm_default_differs_from_byzfls_on_purpose():
    assert InnerProductManipulation().epsilon == 0.1 and byzfl_attacks.InnerProductManipulation().tau == 2.0


@pytest.mark.parametrize("x", CASES, ids=lambda x: f"{x.shape[0]}x{x.shape[1]}")
@pytest.mark.parametrize("tau", [0.5, 1.5, 3.0])
def test_alie_matches_byzfl_with_z_minus_tau(x, tau):
    """ByzFL's ALIE is mu + tau sigma (sample std, ddof=1); ours is mu - z sigma, so z = -tau."""
    theirs = byzfl_attacks.ALittleIsEnough(tau=tau)(x)
    benign = RNG.normal(size=(4, x.shape[1]))
    for row in ours(ALittleIsEnough(z=-tau), benign, x):
        np.testing.assert_allclose(row, theirs, rtol=1e-12, atol=1e-12)
    for row in ours(ALittleIsEnough(z=-tau, omniscient=False), x, None):
        np.testing.assert_allclose(row, theirs, rtol=1e-12, atol=1e-12)


def test_alie_default_z_max_matches_byzfl_at_that_tau():
    """Our default z is the paper's z_max (n = 20, m = 4: Phi^{-1}(0.65)); ByzFL takes tau as given."""
    honest = RNG.normal(size=(16, 50))
    z = 0.38532046640756773
    theirs = byzfl_attacks.ALittleIsEnough(tau=-z)(honest)
    np.testing.assert_allclose(ours(ALittleIsEnough(), np.zeros((4, 50)), honest)[0], theirs, rtol=1e-12)


def test_alie_and_ipm_match_byzfls_torch_path():
    """ByzFL also takes torch tensors (float32, torch.var unbiased): the same within float32 precision."""
    torch = pytest.importorskip("torch")
    x = CASES[2]
    t = torch.from_numpy(x)
    np.testing.assert_allclose(ours(ALittleIsEnough(z=-1.5), x[:2], x)[0],
                               byzfl_attacks.ALittleIsEnough(tau=1.5)(t).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ours(InnerProductManipulation(epsilon=2.0), x[:2], x)[0],
                               byzfl_attacks.InnerProductManipulation(tau=2.0)(t).numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mu, sigma", [(0.0, 1.0), (0.5, 2.0), (-1.0, 0.1)])
def test_gaussian_matches_byzfl_given_the_same_generator(monkeypatch, mu, sigma):
    """ByzFL draws from numpy's global generator (``random_tool`` returns ``np.random``); handed the same
    seeded generator instead, its draw equals ours row by row."""
    d, m = 257, 3
    gen = np.random.default_rng(99)
    monkeypatch.setattr(sys.modules["byzfl.attacks.attacks"], "random_tool", lambda vectors: gen)
    attack = byzfl_attacks.Gaussian(mu=mu, sigma=sigma)
    theirs = np.stack([attack(np.zeros((5, d))) for _ in range(m)])
    mine = Gaussian(sigma=sigma, mu=mu).craft(np.zeros((m, d)), None, np.random.default_rng(99))
    np.testing.assert_array_equal(mine, theirs)


def test_gaussian_has_byzfls_distribution_from_its_own_generator():
    np.random.seed(5)
    theirs = byzfl_attacks.Gaussian(mu=0.5, sigma=2.0)(np.zeros((3, 100_000)))
    mine = Gaussian(sigma=2.0, mu=0.5).craft(np.zeros((1, 100_000)), None, np.random.default_rng(5))[0]
    for a in (theirs, mine):
        assert abs(a.mean() - 0.5) < 0.03 and abs(a.std() - 2.0) < 0.03
