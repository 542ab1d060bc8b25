"""The interface every Byzantine-robust rule implements, and the aggregator that runs one.

A :class:`RobustRule` combines ``n`` update vectors (the rows of an ``n x d``
float array) into one, tolerating up to ``f`` arbitrary rows, and says what it
did (:class:`RuleResult`: which rows it selected, trimmed or clipped). Rules
are pure numpy, one rule per module, and know nothing of clients, rounds or
recommenders. :class:`RobustAggregator` is the engine seam: it stacks the
round's plaintext updates, runs the rule, and reports the diagnostics by
client id. Robust rules must see every update, so they run in plaintext mode
only; under secure aggregation use grouped mode
(:mod:`fedsecure.robust.grouped`), where the rule sees group means.

Memory: a rule holds the ``n x d`` float32 matrix of the round (4 n d bytes);
that is the price of seeing every update, and :class:`RobustAggregator`
states it in its stats.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsecure.fl.aggregation import AggregationError, AggregationResult, Aggregator, ClientUpdate, check_updates


class RobustConfigError(ValueError):
    """A rule configured for more Byzantine clients than it can defend against (or otherwise invalid)."""


@dataclass
class RuleResult:
    """What a rule returns: the aggregate, and per-row diagnostics (row indices into the input)."""

    aggregate: np.ndarray
    selected: list[int] | None = None  # rows that entered the aggregate (Krum, Multi-Krum, Bulyan)
    trimmed: int | None = None  # values removed per coordinate (trimmed mean, Bulyan)
    clipped: list[int] | None = None  # rows whose norm was clipped (centered clipping, norm bounding)
    weights: list[float] | None = None  # per-row weights used (FLTrust trust scores, geometric median)
    extra: dict[str, Any] = field(default_factory=dict)  # iterations, convergence, ...


class RobustRule(ABC):
    """Combine ``n`` vectors tolerating ``f`` Byzantine ones. Subclasses set ``name`` and implement :meth:`combine`.

    :meth:`check` refuses, with :class:`RobustConfigError`, an ``(n, f)`` the
    rule cannot defend (for example Krum when ``n <= 2f + 2``).
    """

    name: str = "abstract"

    def __init__(self, f: int = 0) -> None:
        if not (isinstance(f, (int, np.integer)) and f >= 0):
            raise RobustConfigError(f"{self.name}: f (Byzantine clients tolerated) must be an integer >= 0, got {f!r}")
        self.f = int(f)

    def min_clients(self) -> int:
        """The smallest ``n`` this rule defends with its ``f`` (default: a strict majority, ``2f + 1``)."""
        return 2 * self.f + 1

    def check(self, n: int) -> None:
        need = self.min_clients()
        if n < need:
            raise RobustConfigError(f"{self.name} with f={self.f} needs at least {need} updates, got {n}")

    @abstractmethod
    def combine(self, x: np.ndarray, weights: np.ndarray | None = None) -> RuleResult:
        """Aggregate the rows of ``x`` (``n x d``); ``weights`` (n,) are the clients' weights where the rule uses them."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "f": self.f}


def byzantine_count(rule: RobustRule, byzantine: float | None, n: int) -> int:
    """``f`` for ``n`` inputs: ``byzantine`` >= 1 is a count, in (0, 1) a fraction of ``n`` (rounded down),
    None the largest ``f`` the rule defends at ``n``."""
    if byzantine is not None:
        if byzantine < 0:
            raise RobustConfigError(f"byzantine must be >= 0 (a count, or a fraction below 1), got {byzantine}")
        return int(byzantine) if byzantine >= 1 else int(math.floor(byzantine * n))
    saved, f = rule.f, 0
    try:
        while f < n:  # fewer than n faults: a rule whose need does not grow with f still ends here
            rule.f = f + 1
            if rule.min_clients() > n:
                return f
            f += 1
        return f
    finally:
        rule.f = saved


class RobustAggregator(Aggregator):
    """Runs a :class:`RobustRule` over the round's plaintext updates (the engine's ``Aggregator`` seam).

    ``byzantine`` sets the rule's ``f`` each round (see :func:`byzantine_count`).
    """

    needs_individual_updates = True

    def __init__(self, rule: RobustRule, *, byzantine: float | None = None) -> None:
        self.rule = rule
        self.name = rule.name
        self.byzantine = byzantine

    def set_reference(self, reference: np.ndarray) -> None:
        """The server's own update on its root data, for rules that use one (FLTrust)."""
        if hasattr(self.rule, "set_reference"):
            self.rule.set_reference(reference)

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        *,
        round_index: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> AggregationResult:
        dropouts = dict(dropouts or {})
        check_updates(updates, round_index)
        kept = [u for u in updates if u.client_id not in dropouts]
        if not kept:
            raise AggregationError(f"round {round_index}: every client dropped out")
        self.rule.f = byzantine_count(self.rule, self.byzantine, len(kept))
        try:
            self.rule.check(len(kept))
        except RobustConfigError as e:
            raise AggregationError(f"round {round_index}: {e}") from None
        ids = [u.client_id for u in kept]
        x = np.empty((len(kept), kept[0].delta.size), dtype=np.float32)
        for i, u in enumerate(kept):
            x[i] = u.delta
        w = np.array([u.weight for u in kept], dtype=np.float64)
        t0 = time.perf_counter()
        res = self.rule.combine(x, w)
        stats: dict[str, Any] = {"rule": self.rule.describe(), "rule_seconds": time.perf_counter() - t0,
                                 "matrix_bytes": int(x.nbytes)}
        if res.selected is not None:
            stats["selected"] = [ids[i] for i in res.selected]
        if res.trimmed is not None:
            stats["trimmed_per_coordinate"] = res.trimmed
        if res.clipped is not None:
            stats["clipped"] = [ids[i] for i in res.clipped]
        if res.weights is not None:
            stats["weights"] = {ids[i]: float(v) for i, v in enumerate(res.weights)}
        for key, value in res.extra.items():
            if key == "non_finite_rows":  # row indices -> the clients they came from
                stats[key] = [ids[i] for i in value]
            elif key != "scores":  # per-row scores (n floats a round) stay out of the run's record
                stats[key] = value
        return AggregationResult(
            delta=np.asarray(res.aggregate, dtype=np.float64),
            included=tuple(ids),
            excluded={c: f"dropped at {s}" for c, s in dropouts.items()},
            stats=stats,
        )

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "rule": self.rule.describe(), "byzantine": self.byzantine,
                "mode": "plaintext (every update seen)"}
