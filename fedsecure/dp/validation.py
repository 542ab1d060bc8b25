"""Checks on privacy settings, run before any training starts.

Every check raises :class:`PrivacyConfigError` (a ``ValueError``) with a
message naming the setting, its value and the rule it breaks. The rules:

* ``0 < delta < 1/n`` for a population of ``n`` records (examples for DP-SGD,
  users for user-level DP): a delta of ``1/n`` already allows releasing one
  record in the clear (the "name and shame" mechanism).
* ``epsilon > 0`` (a target; ``inf`` means no privacy and is not a target).
* ``noise multiplier >= 0`` and finite; ``clip > 0`` and finite.
* ``0 < sample rate <= 1``.
* a target epsilon must be reachable in the planned number of steps with a
  noise multiplier at most :data:`fedsecure.dp.accounting.MAX_NOISE_MULTIPLIER`
  (checked by :func:`resolve_noise_multiplier`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


class PrivacyConfigError(ValueError):
    """A privacy setting is invalid or cannot be met; raised before training."""


def _finite(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise PrivacyConfigError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(v):
        raise PrivacyConfigError(f"{name} must be a number, got NaN")
    return v


def check_delta(delta: float, population: int | None = None) -> float:
    """``0 < delta < 1``, and ``delta < 1/population`` when the population is known."""
    d = _finite("delta", delta)
    if not 0 < d < 1:
        raise PrivacyConfigError(f"delta must be in (0, 1), got {delta}")
    if population is not None:
        if int(population) < 1:
            raise PrivacyConfigError(f"population must be >= 1, got {population}")
        if d >= 1.0 / population:
            raise PrivacyConfigError(
                f"delta {delta:g} is >= 1/n = {1.0 / population:.3g} for n = {population} records; "
                "such a delta allows publishing a record in the clear: choose delta well below 1/n"
            )
    return d


def check_epsilon(epsilon: float, name: str = "target epsilon") -> float:
    e = _finite(name, epsilon)
    if not (e > 0 and math.isfinite(e)):
        raise PrivacyConfigError(f"{name} must be finite and > 0, got {epsilon}")
    return e


def check_noise_multiplier(z: float) -> float:
    v = _finite("noise multiplier", z)
    if v < 0 or not math.isfinite(v):
        raise PrivacyConfigError(f"noise multiplier must be finite and >= 0, got {z}")
    return v


def check_clip(clip: float, name: str = "clip norm") -> float:
    v = _finite(name, clip)
    if not (v > 0 and math.isfinite(v)):
        raise PrivacyConfigError(f"{name} must be finite and > 0, got {clip}")
    return v


def check_sample_rate(q: float) -> float:
    v = _finite("sample rate", q)
    if not 0 < v <= 1:
        raise PrivacyConfigError(f"sample rate must be in (0, 1], got {q}")
    return v


@dataclass(frozen=True)
class PrivacyPlan:
    """A validated plan: the noise multiplier to use and what it spends."""

    noise_multiplier: float
    epsilon: float
    delta: float
    sample_rate: float
    steps: int
    clip: float
    accountant: str
    calibrated: bool

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def resolve_noise_multiplier(
    *,
    delta: float,
    population: int,
    sample_rate: float,
    steps: int,
    clip: float,
    noise_multiplier: float | None = None,
    target_epsilon: float | None = None,
    accountant: str = "rdp",
) -> PrivacyPlan:
    """Validate a Gaussian-mechanism plan before training; calibrate ``z`` from a target if given.

    Exactly one of ``noise_multiplier`` and ``target_epsilon`` must be given.
    With a target, the returned ``epsilon`` is at or under it.
    """
    from fedsecure.dp import accounting  # local: accounting imports this module

    d = check_delta(delta, population)
    c = check_clip(clip)
    q = check_sample_rate(sample_rate)
    if (noise_multiplier is None) == (target_epsilon is None):
        raise PrivacyConfigError("give exactly one of noise_multiplier and target_epsilon")
    if target_epsilon is not None:
        t = check_epsilon(target_epsilon)
        z = accounting.noise_multiplier_for(t, d, q, steps, accountant)  # type: ignore[arg-type]
        calibrated = True
    else:
        z = check_noise_multiplier(noise_multiplier)  # type: ignore[arg-type]
        calibrated = False
    eps = accounting.epsilon(z, q, steps, d, accountant)  # type: ignore[arg-type]
    return PrivacyPlan(z, eps, d, q, int(steps), c, accountant, calibrated)
