"""What every rule shares: input checks, non-finite rows, and memory-bounded column-chunked numpy kernels.

A round's matrix can be large (``n = 1000`` clients by ``d = 100,000``
parameters is 400 MB of float32), so nothing here makes a full copy of it:
kernels walk it in blocks of columns (about :data:`CHUNK_BYTES` of float64 per
block) and accumulate in float64.

Non-finite rows. A row holding NaN or inf can only come from a faulty client,
and NaN would poison any coordinate statistic. :class:`Rule` drops such rows
before the rule runs and lowers ``f`` by their number (they are certainly
among the at most ``f`` faulty rows, so the remaining ``n - k`` rows hold at
most ``f - k`` faulty ones). With ``n >= min_clients(f)`` checked beforehand,
``n - k >= min_clients(f - k)`` holds for every rule here, so a client that
sends NaN is excluded and never aborts the round.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from .base import RobustConfigError, RobustRule, RuleResult

#: below this many multiply-adds the Gram block is an einsum loop, not BLAS: on a loaded machine a
#: multi-threaded BLAS call can take 0.3 s to start whatever its size (measured here, OpenBLAS 0.3.31)
SMALL_PRODUCT = 10_000_000

#: float64 bytes per block of columns in the chunked kernels: bounds the temporaries, and 2 MB keeps a
#: block's temporaries near the cache (1 MB L2 per core here; 8 MB blocks made the distance pass 2x slower)
CHUNK_BYTES = 2 << 20


def column_blocks(n: int, d: int, itemsize: int = 8, chunk_bytes: int | None = None) -> Iterator[slice]:
    """Slices of ``range(d)`` such that an ``n x block`` array of ``itemsize`` bytes stays near ``chunk_bytes``."""
    step = max(1, (CHUNK_BYTES if chunk_bytes is None else chunk_bytes) // (max(n, 1) * itemsize))
    for start in range(0, d, step):
        yield slice(start, min(d, start + step))


def as_matrix(x: Any, name: str) -> np.ndarray:
    """``x`` as an ``n x d`` float array (float32 and float64 kept as they are, no copy)."""
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"{name}: updates must be an n x d matrix, got shape {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name}: updates must have at least one row and one column, got shape {x.shape}")
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float64)
    return x


def finite_rows(x: np.ndarray) -> np.ndarray:
    """Boolean (n,): rows with no NaN or inf.

    One summing pass in the input's dtype (no temporary): a row holding NaN
    or inf has a non-finite sum, and a finite row has a finite sum unless the
    sum overflows; only rows with a non-finite sum are then checked value by
    value. Half the cost of ``np.isfinite`` over the matrix.
    """
    with np.errstate(over="ignore", invalid="ignore"):
        ok = np.isfinite(np.add.reduce(x, axis=1))
    for i in np.flatnonzero(~ok):
        ok[i] = bool(np.isfinite(x[i]).all())
    return ok


def row_norms(x: np.ndarray) -> np.ndarray:
    """L2 norm of each row, accumulated in float64."""
    acc = np.zeros(x.shape[0])
    for blk in column_blocks(*x.shape):
        b = x[:, blk]
        acc += np.einsum("ij,ij->i", b, b, dtype=np.float64)
    return np.sqrt(acc)


#: float32 inputs: partial sums run in float32 over at most this many terms, then add up in float64
#: (half the memory traffic of converting to float64 first; the error of a float32 sum of k terms is
#: at most about k * 6e-8 of the sum of magnitudes)
FLOAT32_SPAN = 512


def distances_to(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``||x_i - p||`` for every row, from the differences themselves (no cancellation).

    float64 throughout for float64 input; for float32 input each block of at
    most :data:`FLOAT32_SPAN` columns is differenced and summed in float32
    and the blocks add up in float64.
    """
    n, d = x.shape
    acc = np.zeros(n)
    if x.dtype == np.float32:
        p32 = np.asarray(p, dtype=np.float32)
        step = min(FLOAT32_SPAN, max(1, CHUNK_BYTES // (4 * max(n, 1))))
        with np.errstate(over="ignore", invalid="ignore"):
            for start in range(0, d, step):
                q = x[:, start:start + step] - p32[start:start + step]
                acc += np.einsum("ij,ij->i", q, q)
        big = np.flatnonzero(~np.isfinite(acc))  # squares past float32's range (values beyond ~1e19)
        if big.size:
            acc[big] = distances_to(x[big].astype(np.float64), np.asarray(p, dtype=np.float64)) ** 2
        return np.sqrt(acc)
    for blk in column_blocks(*x.shape):
        b = x[:, blk].astype(np.float64)  # a plain conversion, then in place: faster than a mixed-type subtraction
        b -= p[blk]
        acc += np.einsum("ij,ij->i", b, b)
    return np.sqrt(acc)


def row_dots(x: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``x_i . p`` for every row, in float64."""
    acc = np.zeros(x.shape[0])
    p = np.asarray(p, dtype=np.float64)
    for blk in column_blocks(*x.shape):
        acc += np.einsum("ij,j->i", x[:, blk], p[blk], dtype=np.float64)
    return acc


def weighted_row_sum(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``sum_i w_i x_i`` (``w`` of length n), accumulated in float64.

    For float32 input, groups of at most 64 rows are summed in float32 (one
    BLAS ``w @ X`` each, over the full width) and the groups add up in
    float64 (redone in float64 if a float32 partial sum overflowed); float64
    input is summed in float64 block by block.
    """
    n, d = x.shape
    w = np.asarray(w, dtype=np.float64)
    if x.dtype == np.float32:
        out = np.zeros(d)
        w32 = w.astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            for r in range(0, n, 64):
                out += w32[r:r + 64] @ x[r:r + 64]
        if np.isfinite(out).all():
            return out
    out = np.empty(d)
    for blk in column_blocks(*x.shape):
        out[blk] = np.einsum("i,ij->j", w, x[:, blk], dtype=np.float64)
    return out


def pairwise_sq_distances(x: np.ndarray) -> np.ndarray:
    """``D[i, j] = ||x_i - x_j||^2`` as one matrix product: ``|a|^2 + |b|^2 - 2 a.b``.

    The Gram matrix is accumulated in float64 over blocks of columns, each
    block translated first so that its row of median norm (within the block)
    sits at the origin. Distances do not change under a translation, and the
    translation shrinks ``|a|^2`` towards the honest distances, which is what
    limits the cancellation of the identity. The column mean would not do: one
    Byzantine row of 1e30s shifts every honest row by 1e30 / n and the honest
    distances drown in round-off; with fewer than n / 2 such rows the
    median-norm row is within the honest rows' scale. Negative round-off is
    clamped to 0, the matrix is made exactly symmetric and its diagonal
    is exactly 0.
    """
    n = x.shape[0]
    gram = np.zeros((n, n))
    for blk in column_blocks(*x.shape):
        b = x[:, blk].astype(np.float64)
        sq_block = np.einsum("ij,ij->i", b, b)
        b -= b[np.argpartition(sq_block, n // 2)[n // 2]]
        if n * n * b.shape[1] <= SMALL_PRODUCT:
            gram += np.einsum("ik,jk->ij", b, b)
        else:
            gram += b @ b.T
    sq = np.diag(gram).copy()
    dist = sq[:, None] + sq[None, :]
    dist -= 2.0 * gram
    dist += dist.T  # exactly symmetric (a + b == b + a), so mutual nearest neighbours tie exactly
    dist *= 0.5
    np.maximum(dist, 0.0, out=dist)
    np.fill_diagonal(dist, 0.0)
    return dist


def check_positive(name: str, option: str, value: Any, *, allow_none: bool = False, integer: bool = False,
                   minimum: float = 0.0, strict: bool = True) -> Any:
    """Refuse a bad option value with :class:`RobustConfigError` naming the rule and the option."""
    if value is None and allow_none:
        return None
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kind) or not np.isfinite(value):
        raise RobustConfigError(f"{name}: {option} must be a finite {'integer' if integer else 'number'}, got {value!r}")
    if (strict and value <= minimum) or (not strict and value < minimum):
        raise RobustConfigError(f"{name}: {option} must be {'>' if strict else '>='} {minimum:g}, got {value!r}")
    return int(value) if integer else float(value)


class Rule(RobustRule):
    """The template every rule here follows: check the input, drop non-finite rows, run :meth:`_combine`.

    Subclasses implement ``_min_clients(f)`` (the published condition) and
    ``_combine(x, weights, f, **kw)`` over finite rows, with row indices
    relative to the rows they were given; :meth:`combine` maps them back.
    """

    def _min_clients(self, f: int) -> int:
        return 2 * f + 1

    def min_clients(self) -> int:
        return self._min_clients(self.f)

    def combine(self, x: np.ndarray, weights: np.ndarray | None = None, **kw: Any) -> RuleResult:
        x = as_matrix(x, self.name)
        n = x.shape[0]
        self.check(n)
        if weights is not None:
            weights = np.asarray(weights, dtype=np.float64)
            if weights.shape != (n,):
                raise ValueError(f"{self.name}: weights must have shape ({n},), got {weights.shape}")
        touched = kw.get("touched")
        if touched is not None:
            touched = np.asarray(touched, dtype=bool)
            if touched.shape != x.shape:
                raise ValueError(f"{self.name}: touched must have the shape of the updates {x.shape}, got {touched.shape}")
            kw["touched"] = touched
        ok = finite_rows(x)
        keep = None
        if not ok.all():
            keep = np.flatnonzero(ok)
            x = x[keep]
            weights = None if weights is None else weights[keep]
            if touched is not None:
                kw["touched"] = touched[keep]
        f = self.f if keep is None else max(self.f - (n - keep.size), 0)
        if x.shape[0] < self._min_clients(f):  # unreachable after check(n); kept as a guard
            raise RobustConfigError(f"{self.name}: {x.shape[0]} finite updates left, needs {self._min_clients(f)}")
        res = self._combine(x, weights, f, **kw)
        if keep is not None:
            res = _remap(res, keep, n)
            res.extra["non_finite_rows"] = [int(i) for i in np.flatnonzero(~ok)]
        res.aggregate = np.asarray(res.aggregate, dtype=np.float64)
        return res

    def _combine(self, x: np.ndarray, weights: np.ndarray | None, f: int, **kw: Any) -> RuleResult:
        raise NotImplementedError


def _remap(res: RuleResult, keep: np.ndarray, n: int) -> RuleResult:
    if res.selected is not None:
        res.selected = [int(keep[i]) for i in res.selected]
    if res.clipped is not None:
        res.clipped = [int(keep[i]) for i in res.clipped]
    if res.weights is not None:
        full = [0.0] * n
        for i, w in zip(keep, res.weights):
            full[int(i)] = float(w)
        res.weights = full
    return res
