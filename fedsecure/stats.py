"""Uncertainty of reported metrics: bootstrap over evaluated users, spread over seeds, paired comparisons.

Every metric fedsecure reports is a mean over evaluated rows (HR@k, NDCG@k)
or a root mean square (RMSE). Two sources of uncertainty are reported:

* **Over users** (one run): a percentile bootstrap that resamples the
  evaluated *users* with replacement (all of a user's rows go together, since
  they are not independent) and recomputes the metric. With ``U`` users and a
  metric near ``p`` the half-width is about ``1.96 sqrt(p (1 - p) / U)``: for
  HR@10 near 0.05 over 610 users that is 0.017 (standard error 0.009).
* **Over seeds** (several runs): the mean, the sample standard deviation, the
  per-seed values, and the Student-t 95% interval of the mean.
* **For a rerun** (other seeds): the interval of the mean over seeds
  narrows as seeds are added, but a rerun on ``m`` new seeds
  carries its own noise. :func:`rerun_interval` is the Student-t prediction
  interval where that rerun's mean should fall (95% of the time, under the
  same normal model as the interval of the mean):
  ``mean +- t sd sqrt(1/n + 1/m)``. A rerun on one new seed falls in a much
  wider interval than the mean's.

A comparison of two configurations is *resolved* only when the 95% interval
of their difference excludes zero. :func:`paired_seeds` pairs runs by seed
(paired t); :func:`paired_users` pairs one run of each on the same users
(paired bootstrap over users). Comparing unpaired intervals by eye is weaker
than either: use these.

The bootstrap's resampling draws come from a seeded numpy generator: they are
not secrets, and a fixed seed makes a reported interval reproducible.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

LEVEL = 0.95
DEFAULT_REPS = 1000
#: the key of a metric's 95% interval, beside the metric itself (``"hr@10_ci95": [lo, hi]``)
CI_SUFFIX = "_ci95"


@functools.lru_cache(maxsize=256)
def _t_quantile(level: float, df: int) -> float:
    from scipy.stats import t  # scipy comes with opacus

    return float(t.ppf(0.5 + level / 2, df))


def _per_user(users: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-user sums of ``values`` and row counts (users relabelled 0..U-1)."""
    _, inverse = np.unique(np.asarray(users), return_inverse=True)
    sums = np.bincount(inverse, weights=np.asarray(values, dtype=np.float64))
    counts = np.bincount(inverse).astype(np.float64)
    return sums, counts


def bootstrap_users(
    users: np.ndarray,
    values: np.ndarray,
    *,
    root: bool = False,
    reps: int = DEFAULT_REPS,
    level: float = LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``mean(values)`` (or ``sqrt(mean(values))`` with ``root``) over resampled users.

    ``users[i]`` owns row ``i``. Each replicate draws the users with
    replacement (multinomial counts) and weighs their rows accordingly.
    """
    users, values = np.asarray(users), np.asarray(values, dtype=np.float64)
    if users.shape != values.shape or users.ndim != 1 or users.size == 0:
        raise ValueError(f"users and values must be equal-length non-empty 1-D arrays, got {users.shape}, {values.shape}")
    if not (0 < level < 1) or reps < 10:
        raise ValueError(f"need 0 < level < 1 and reps >= 10, got {level}, {reps}")
    sums, counts = _per_user(users, values)
    u = sums.size
    rng = np.random.default_rng(seed)
    stats = np.empty(reps)
    chunk = max(1, 2_000_000 // u)  # bound the weight matrix to ~16 MB
    for lo in range(0, reps, chunk):
        w = rng.multinomial(u, np.full(u, 1.0 / u), size=min(chunk, reps - lo)).astype(np.float64)
        stats[lo : lo + w.shape[0]] = (w @ sums) / np.maximum(w @ counts, 1e-300)
    if root:
        stats = np.sqrt(stats)
    a = (1 - level) / 2
    lo_, hi_ = np.quantile(stats, [a, 1 - a])
    return float(lo_), float(hi_)


def with_interval(metrics: Mapping[str, Any], key: str) -> str:
    """``value [lo, hi]`` when ``metrics`` carries the metric's 95% interval (``key + CI_SUFFIX``), else ``value``."""
    value = metrics.get(key, math.nan)
    shown = "inf" if isinstance(value, float) and math.isinf(value) else (
        f"{value:.4f}" if isinstance(value, float) else str(value))
    ci = metrics.get(key + CI_SUFFIX)
    return shown if ci is None else f"{shown} [{ci[0]:.4f}, {ci[1]:.4f}]"


@dataclass(frozen=True)
class SeedSummary:
    """A metric over seeds: the mean, the sample sd, the t interval of the mean, and every value."""

    mean: float
    sd: float
    ci95: tuple[float, float]
    values: tuple[float, ...]

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ci95"], d["values"], d["n_seeds"] = list(self.ci95), list(self.values), len(self.values)
        return d


def over_seeds(values: Sequence[float], *, level: float = LEVEL) -> SeedSummary:
    """Mean, sample sd and Student-t interval of per-seed values (one value: the interval is unbounded)."""
    v = np.asarray([float(x) for x in values], dtype=np.float64)
    if v.size == 0 or not np.all(np.isfinite(v)):
        raise ValueError(f"need at least one finite value, got {list(values)}")
    mean = float(v.mean())
    if v.size == 1:
        return SeedSummary(mean, math.nan, (-math.inf, math.inf), tuple(v.tolist()))
    sd = float(v.std(ddof=1))
    half = _t_quantile(level, v.size - 1) * sd / math.sqrt(v.size)
    return SeedSummary(mean, sd, (mean - half, mean + half), tuple(v.tolist()))


def rerun_interval(values: Sequence[float], new_seeds: int, *, level: float = LEVEL) -> tuple[float, float]:
    """Where the mean of ``new_seeds`` fresh seeds should fall: the Student-t prediction interval from these seeds.

    ``mean +- t(n - 1) * sd * sqrt(1/n + 1/new_seeds)``; it tends to the
    interval of the mean as ``new_seeds`` grows. Needs at least 2 values.
    """
    if new_seeds < 1:
        raise ValueError(f"a rerun needs at least one new seed, got {new_seeds}")
    s = over_seeds(values, level=level)
    n = len(s.values)
    if n < 2:
        raise ValueError(f"a rerun interval needs at least 2 seeds, got {n}")
    half = _t_quantile(level, n - 1) * s.sd * math.sqrt(1 / n + 1 / new_seeds)
    return s.mean - half, s.mean + half


@dataclass(frozen=True)
class Comparison:
    """The difference A - B of one metric, its 95% interval, and whether the interval resolves it."""

    metric: str
    difference: float
    relative: float  # difference / B
    ci95: tuple[float, float]
    method: str
    n: int  # seeds (paired t) or users (paired bootstrap)

    @property
    def resolved(self) -> bool:
        """True when the interval excludes zero: only then may a report say A and B differ."""
        return self.ci95[0] > 0 or self.ci95[1] < 0

    def verdict(self, a: str = "A", b: str = "B") -> str:
        if not self.resolved:
            return f"{a} and {b} are not resolved on {self.metric} (95% interval of the difference contains 0)"
        return f"{a} {'above' if self.difference > 0 else 'below'} {b} on {self.metric} (95% interval excludes 0)"

    def as_dict(self) -> dict:
        d = asdict(self)
        d["ci95"], d["resolved"] = list(self.ci95), self.resolved
        return d


def paired_seeds(metric: str, a: Mapping[int, float], b: Mapping[int, float], *, level: float = LEVEL) -> Comparison:
    """Paired t over the seeds both runs share: the interval of mean(a_s - b_s)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        raise ValueError(f"a paired comparison over seeds needs at least 2 shared seeds, got {seeds}")
    d = np.array([float(a[s]) - float(b[s]) for s in seeds])
    s = over_seeds(d, level=level)
    base = float(np.mean([float(b[k]) for k in seeds]))
    return Comparison(metric, s.mean, s.mean / base if base else math.nan, s.ci95, "paired t over seeds", len(seeds))


def paired_users(
    metric: str,
    users: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    *,
    reps: int = DEFAULT_REPS,
    level: float = LEVEL,
    seed: int = 0,
) -> Comparison:
    """Paired bootstrap over users of mean(a) - mean(b), where row i of both runs is the same (user, item)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"paired rows must align: {a.shape} vs {b.shape}")
    lo, hi = bootstrap_users(users, a - b, reps=reps, level=level, seed=seed)
    diff, base = float(a.mean() - b.mean()), float(b.mean())
    n = int(np.unique(np.asarray(users)).size)
    return Comparison(metric, diff, diff / base if base else math.nan, (lo, hi), "paired bootstrap over users", n)
