"""Byzantine-robust aggregation: one rule per module behind one interface (:class:`RobustRule`).

* :class:`RobustAggregator` -- runs a rule over the round's plaintext updates (the engine seam).
* :func:`make_rule` -- a rule by its command-line name (``RULES`` lists them).
* grouped mode (:mod:`fedsecure.robust.grouped`) -- the rule over securely summed group means.

Adding a rule touches one file: write ``fedsecure/robust/<rule>.py`` with a
:class:`RobustRule` subclass and register its name in ``RULES`` below.
"""

from __future__ import annotations

from typing import Any

from .base import RobustAggregator, RobustConfigError, RobustRule, RuleResult

#: command-line name -> "module:Class" (imported on first use)
RULES: dict[str, str] = {
    "median": "median:CoordinateMedian",
    "trimmed-mean": "trimmed_mean:TrimmedMean",
    "krum": "krum:Krum",
    "multi-krum": "multi_krum:MultiKrum",
    "bulyan": "bulyan:Bulyan",
    "geomed": "geomed:GeometricMedian",
    "centered-clipping": "centered_clipping:CenteredClipping",
    "norm-bounding": "norm_bounding:NormBounding",
    "fltrust": "fltrust:FLTrust",
}


def make_rule(name: str, f: int = 0, **options: Any) -> RobustRule:
    """The rule registered as ``name``, tolerating ``f`` Byzantine inputs."""
    import importlib

    if name not in RULES:
        raise RobustConfigError(f"unknown aggregator {name!r}; choose one of {', '.join(sorted(RULES))}")
    module, cls = RULES[name].split(":")
    return getattr(importlib.import_module(f"fedsecure.robust.{module}"), cls)(f=f, **options)


__all__ = ["RULES", "RobustAggregator", "RobustConfigError", "RobustRule", "RuleResult", "make_rule"]
