"""What an attack knows of the honest distribution, and the checks every attack runs on its inputs.

An *omniscient* attack estimates the honest clients' distribution from their
actual updates (the setting of the ALIE, IPM and min-max / min-sum papers); a
non-omniscient one from its own malicious clients' benign updates, which are
draws from the same distribution (the "partial knowledge" setting of
Shejwalkar & Houmansadr). :func:`reference_updates` picks the set; when an
omniscient attack is handed no honest update (a round with only malicious
clients), it falls back to the benign ones.
"""

from __future__ import annotations

import math

import numpy as np

from .poisoning import AttackConfigError


def as_updates(name: str, benign: np.ndarray, honest: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None]:
    """``benign`` (``m x d``, ``m >= 1``) and ``honest`` (``h x d`` or None) as float64, shapes checked."""
    b = np.asarray(benign, dtype=np.float64)
    if b.ndim != 2 or b.shape[0] < 1:
        raise AttackConfigError(f"{name}: benign updates must be an m x d array with m >= 1, got shape {b.shape}")
    if honest is None:
        return b, None
    h = np.asarray(honest, dtype=np.float64)
    if h.ndim != 2 or h.shape[1] != b.shape[1]:
        raise AttackConfigError(f"{name}: honest updates must be an h x {b.shape[1]} array, got shape {h.shape}")
    return b, (h if h.shape[0] else None)


def reference_updates(omniscient: bool, benign: np.ndarray, honest: np.ndarray | None) -> np.ndarray:
    """The rows an attack estimates the honest distribution from: ``honest`` when omniscient, else ``benign``."""
    return honest if (omniscient and honest is not None) else benign


def coordinate_std(x: np.ndarray) -> np.ndarray:
    """Coordinate-wise sample standard deviation (``ddof=1``, as ``torch.std``); zero for one row."""
    return x.std(axis=0, ddof=1) if x.shape[0] > 1 else np.zeros(x.shape[1])


def positive_float(name: str, param: str, value: object, *, allow_zero: bool = False) -> float:
    """``value`` as a finite float > 0 (or >= 0), else :class:`AttackConfigError` naming the parameter."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AttackConfigError(f"{name}: {param} must be a number, got {value!r}") from None
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        bound = ">= 0" if allow_zero else "> 0"
        raise AttackConfigError(f"{name}: {param} must be finite and {bound}, got {value!r}")
    return v


def finite_float(name: str, param: str, value: object) -> float:
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise AttackConfigError(f"{name}: {param} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise AttackConfigError(f"{name}: {param} must be finite, got {value!r}")
    return v


def flag(name: str, param: str, value: object) -> bool:
    """``value`` as a bool; anything but a bool (the string ``"False"`` above all) is refused."""
    if not isinstance(value, (bool, np.bool_)):
        raise AttackConfigError(f"{name}: {param} must be True or False, got {value!r}")
    return bool(value)


def optional_count(name: str, param: str, value: object, *, minimum: int = 1) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise AttackConfigError(f"{name}: {param} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def repeat_rows(v: np.ndarray, m: int) -> np.ndarray:
    """``m`` copies of ``v`` (all colluding clients send the same crafted update)."""
    return np.repeat(v[None, :], m, axis=0)
