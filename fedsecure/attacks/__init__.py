"""The attack suite: poisoning (model and data) and, later, inference attacks.

* :mod:`fedsecure.attacks.poisoning` -- :class:`ModelPoisoning` attacks and the :class:`PoisoningPlan`
  that applies one to a round's updates. ``ATTACKS`` maps command-line names to them.
"""

from __future__ import annotations

from typing import Any

from .poisoning import AttackConfigError, ModelPoisoning, PoisoningPlan

#: command-line name -> "module:Class" (imported on first use)
ATTACKS: dict[str, str] = {}


def make_attack(name: str, **options: Any) -> ModelPoisoning:
    """The attack registered as ``name``."""
    import importlib

    if name not in ATTACKS:
        raise AttackConfigError(f"unknown attack {name!r}; choose one of {', '.join(sorted(ATTACKS))}")
    module, cls = ATTACKS[name].split(":")
    return getattr(importlib.import_module(f"fedsecure.attacks.{module}"), cls)(**options)


__all__ = ["ATTACKS", "AttackConfigError", "ModelPoisoning", "PoisoningPlan", "make_attack"]
