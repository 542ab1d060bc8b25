"""The secure DP noise source: its distributions, its unpredictability, its insecure mode."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from fedsecure.dp.noise import NoiseSource

# Statistical tests use a false-alarm rate of 1e-6 each: they can fail, but only if the
# sampler is wrong (or with probability 1e-6).
P_MIN = 1e-6


def test_gaussian_is_standard_normal_float32_and_float64() -> None:
    src = NoiseSource()
    for dtype in (torch.float32, torch.float64):
        z = src.gaussian((400, 500), 3.0, dtype=dtype)
        assert z.shape == (400, 500) and z.dtype == dtype
        x = z.double().flatten().numpy() / 3.0
        assert stats.kstest(x, "norm").pvalue > P_MIN
        # variance of the sample variance of n normals is 2/n
        assert abs(x.var() - 1.0) < 5 * math.sqrt(2 / x.size)


def test_gaussian_pairs_are_uncorrelated() -> None:
    # Box-Muller returns cos and sin halves from the same radius: they must be uncorrelated.
    n = 200_001
    z = NoiseSource().gaussian(n, 1.0, dtype=torch.float64).numpy()
    half = (n + 1) // 2
    a, b = z[: n - half], z[half:]
    assert abs(np.corrcoef(a, b)[0, 1]) < 5 / math.sqrt(a.size)
    assert abs(np.corrcoef(a**2, b**2)[0, 1]) < 6 / math.sqrt(a.size)


def test_two_sources_differ_even_under_a_fixed_torch_seed() -> None:
    torch.manual_seed(0)
    a = NoiseSource().gaussian(64, 1.0)
    torch.manual_seed(0)
    b = NoiseSource().gaussian(64, 1.0)
    assert not torch.equal(a, b)
    assert NoiseSource().secure
    assert "os.urandom" in NoiseSource().describe()


def test_one_source_never_repeats_its_stream() -> None:
    src = NoiseSource()
    assert src.random_bytes(64) != src.random_bytes(64)


def test_insecure_seeded_is_reproducible_and_says_so() -> None:
    a = NoiseSource.insecure_seeded(7)
    b = NoiseSource.insecure_seeded(7)
    assert torch.equal(a.gaussian(100, 1.0), b.gaussian(100, 1.0))
    assert np.array_equal(a.discrete_gaussian(100, 5.0), b.discrete_gaussian(100, 5.0))
    assert not torch.equal(NoiseSource.insecure_seeded(8).gaussian(100, 1.0), NoiseSource.insecure_seeded(7).gaussian(100, 1.0))
    assert not a.secure
    assert "INSECURE" in a.describe() and "VOID" in a.describe()
    with pytest.raises(TypeError, match="seed must be an int"):
        NoiseSource.insecure_seeded("7")  # type: ignore[arg-type]


def test_uniform_open_interval() -> None:
    u = NoiseSource().uniform_np(100_000)
    assert u.min() > 0 and u.max() < 1
    assert stats.kstest(u, "uniform").pvalue > P_MIN


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_bad_scale_is_rejected(bad: float) -> None:
    src = NoiseSource()
    with pytest.raises(ValueError, match="std"):
        src.gaussian(3, bad)
    with pytest.raises(ValueError, match="sigma"):
        src.discrete_gaussian(3, bad)


def test_bad_dtype_is_rejected() -> None:
    with pytest.raises(TypeError, match="dtype"):
        NoiseSource().gaussian(3, 1.0, dtype=torch.int64)


def _discrete_gaussian_pmf(sigma: float, support: np.ndarray) -> np.ndarray:
    ks = np.arange(-int(40 * sigma) - 40, int(40 * sigma) + 41)
    norm = np.exp(-(ks.astype(np.float64) ** 2) / (2 * sigma**2)).sum()
    return np.exp(-(support.astype(np.float64) ** 2) / (2 * sigma**2)) / norm


@pytest.mark.parametrize("sigma", [0.3, 1.0, 2.5, 7.0])
def test_discrete_gaussian_matches_its_pmf(sigma: float) -> None:
    n = 200_000
    x = NoiseSource().discrete_gaussian(n, sigma)
    assert x.dtype == np.int64
    lim = int(math.ceil(4 * sigma)) + 1
    support = np.arange(-lim, lim + 1)
    expected = _discrete_gaussian_pmf(sigma, support) * n
    observed = np.array([(x == k).sum() for k in support], dtype=np.float64)  # support is O(sigma), not O(n)
    tail_exp = n - expected.sum()
    tail_obs = n - observed.sum()
    keep = expected > 5
    f_obs = np.append(observed[keep], tail_obs + observed[~keep].sum())
    f_exp = np.append(expected[keep], tail_exp + expected[~keep].sum())
    if f_exp[-1] < 5:  # merge a negligible tail into the last kept cell
        f_obs[-2] += f_obs[-1]
        f_exp[-2] += f_exp[-1]
        f_obs, f_exp = f_obs[:-1], f_exp[:-1]
    assert stats.chisquare(f_obs, f_exp).pvalue > P_MIN


@settings(deadline=None, max_examples=15)
@given(sigma=st.floats(min_value=1.0, max_value=1e5))
def test_discrete_gaussian_variance_is_sigma_squared(sigma: float) -> None:
    # For sigma >= 1 the discrete Gaussian's variance equals sigma^2 to ~1e-15 (CKS'20);
    # the sample variance of n draws has relative standard error sqrt(2/n).
    n = 60_000
    x = NoiseSource().discrete_gaussian(n, sigma).astype(np.float64)
    assert abs(x.mean()) < 6 * sigma / math.sqrt(n)
    assert abs(x.var() / sigma**2 - 1) < 6 * math.sqrt(2 / n)


def test_discrete_gaussian_zero_sigma_and_shapes() -> None:
    src = NoiseSource()
    assert np.array_equal(src.discrete_gaussian((2, 3), 0.0), np.zeros((2, 3), dtype=np.int64))
    assert src.discrete_gaussian((4, 5), 2.0).shape == (4, 5)
    assert src.gaussian(0, 1.0).numel() == 0


def test_forked_children_and_pickled_copies_draw_independent_noise() -> None:
    import multiprocessing as mp
    import pickle

    # Forked workers inherit the module-level source's key and counter; without re-keying, each
    # child's first draw would equal the parent's next one (and each other's).
    with mp.get_context("fork").Pool(2) as pool:
        a, b = pool.map(_draw_inherited, [0, 1], chunksize=1)
    mine = _SRC_FOR_FORK.random_bytes(32)
    assert len({a, b, mine}) == 3
    src = NoiseSource()
    copy = pickle.loads(pickle.dumps(src))
    assert copy.secure and copy.random_bytes(32) != src.random_bytes(32)
    with pytest.raises(TypeError, match="cannot be sent"):
        pickle.dumps(NoiseSource.insecure_seeded(1))


_SRC_FOR_FORK = NoiseSource()


def _draw_inherited(_: int) -> bytes:
    return _SRC_FOR_FORK.random_bytes(32)
