"""The attack suite: poisoning (model and data) and, later, inference attacks.

* :mod:`fedsecure.attacks.poisoning` -- :class:`ModelPoisoning` attacks and the :class:`PoisoningPlan`
  that applies one to a round's updates. ``ATTACKS`` maps command-line names to them.
* one module per attack: :mod:`~fedsecure.attacks.sign_flip`, :mod:`~fedsecure.attacks.scaling`,
  :mod:`~fedsecure.attacks.gaussian` (non-omniscient); :mod:`~fedsecure.attacks.alie`,
  :mod:`~fedsecure.attacks.ipm`, :mod:`~fedsecure.attacks.min_max` (min-max and min-sum) and
  :mod:`~fedsecure.attacks.adaptive_grouped` (omniscient by default, ``omniscient=False`` estimates the
  honest distribution from the malicious clients' own benign updates).
* recommender-targeted: :mod:`~fedsecure.attacks.promotion` (``item-promotion``, PipAttack / FedRecAttack-style
  crafted item rows, reads the global model); :mod:`~fedsecure.attacks.data_poisoning` (``fake-users``,
  ``rating-flip``: poisoned training data, registered in its own ``DATA_ATTACKS``) and
  :mod:`~fedsecure.attacks.metrics` (the exposure ratio ER@K of promoted items).
"""

from __future__ import annotations

from typing import Any

from .poisoning import AttackConfigError, ModelPoisoning, PoisoningPlan

#: command-line name -> "module:Class" (imported on first use)
ATTACKS: dict[str, str] = {
    "sign-flip": "sign_flip:SignFlip",
    "scaling": "scaling:Scaling",
    "gaussian": "gaussian:Gaussian",
    "alie": "alie:ALittleIsEnough",
    "ipm": "ipm:InnerProductManipulation",
    "min-max": "min_max:MinMax",
    "min-sum": "min_max:MinSum",
    "adaptive-grouped": "adaptive_grouped:AdaptiveGrouped",
    "item-promotion": "promotion:ItemPromotion",
}


def make_attack(name: str, **options: Any) -> ModelPoisoning:
    """The attack registered as ``name``."""
    import importlib

    if name not in ATTACKS:
        raise AttackConfigError(f"unknown attack {name!r}; choose one of {', '.join(sorted(ATTACKS))}")
    module, cls = ATTACKS[name].split(":")
    return getattr(importlib.import_module(f"fedsecure.attacks.{module}"), cls)(**options)


__all__ = ["ATTACKS", "AttackConfigError", "ModelPoisoning", "PoisoningPlan", "make_attack"]
