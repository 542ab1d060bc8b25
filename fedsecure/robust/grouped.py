"""Robust aggregation under secure aggregation: a robust rule over securely summed group means.

Each round the sampled clients are split at random into ``g`` groups of
(nearly) equal size. Each group is summed by the round's
:class:`~fedsecure.fl.aggregation.SumProtocol` (SecAgg, SecAgg+, CKKS or
plaintext) exactly as FedAvg sums a round, giving the group's weighted mean;
the server never sees an individual update, only the ``g`` group means, and a
:class:`~fedsecure.robust.base.RobustRule` combines those.

The trade-off, reported with every round:

* **Privacy cost**: each released sum covers one group, so what the server
  learns is a mean over as few as ``min_group_size`` clients (instead of the
  whole round): the smaller the groups, the closer to individual updates.
* **Robustness**: the rule tolerates ``f`` bad group means, so at least ``f``
  malicious clients are tolerated whatever groups they land in (each could
  poison a different group), and more when several share a group. With ``m``
  malicious clients placed uniformly at random, the expected number of
  distinct groups they touch is ``g (1 - (1 - 1/g)^m)``; the report gives it
  and the probability (exact, by inclusion-exclusion over the random
  assignment) that it stays at or below ``f``.

The grouping is drawn from a seeded generator per round (``seed``, round
index): it must be unpredictable to clients before they are sampled, but it is
not a secret against the server, which chooses it in any case.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedsecure.fl.aggregation import (
    AggregationError, AggregationResult, Aggregator, ClientUpdate, FedAvg, RoundSession, SumProtocol, check_updates,
)

from .base import RobustConfigError, RobustRule, byzantine_count


def prob_bad_groups_at_most(groups: int, malicious: int, f: int) -> float:
    """P[m malicious clients, each placed uniformly at random in one of g groups, touch at most f groups].

    Occupancy distribution: P[exactly j groups touched] = C(g, j) * S(m, j) * j! / g^m, with S the
    Stirling numbers of the second kind (computed by inclusion-exclusion in exact integers).
    """
    if malicious <= 0:
        return 1.0
    total = 0
    for j in range(1, min(f, groups, malicious) + 1):
        surj = sum((-1) ** i * math.comb(j, i) * (j - i) ** malicious for i in range(j + 1))  # j! S(m, j)
        total += math.comb(groups, j) * surj
    return total / groups**malicious


class GroupedRobustAggregator(Aggregator):
    """Split the round into ``groups`` groups, sum each securely, combine the group means robustly.

    ``rule`` tolerates ``f`` bad group means; ``byzantine`` sets ``f`` per
    round (an integer, or a fraction of ``g`` below 0.5; default: the rule's
    largest defensible ``f`` for ``g``).
    """

    needs_individual_updates = False

    def __init__(self, rule: RobustRule, protocol: SumProtocol, groups: int, *, byzantine: float | None = None,
                 malicious: int | None = None, seed: int = 0, max_weight: float = 1000.0) -> None:
        if not (isinstance(groups, int) and groups >= 1):
            raise RobustConfigError(f"groups must be an integer >= 1, got {groups!r}")
        self.rule, self.groups, self.seed = rule, groups, int(seed)
        self.byzantine = byzantine
        self.malicious = malicious  # known only to experiments: reported, never used to aggregate
        self.fedavg = FedAvg(protocol, max_weight=max_weight)
        self.name = f"grouped-{rule.name}"
        self.rule.f = byzantine_count(rule, byzantine, groups)
        self.rule.check(groups)

    @property
    def stages(self) -> tuple[str, ...]:
        return self.fedavg.stages

    def set_reference(self, reference: np.ndarray) -> None:
        if hasattr(self.rule, "set_reference"):
            self.rule.set_reference(reference)

    @property
    def streaming(self) -> bool:
        return self.fedavg.streaming

    def open_round(self, clients: Sequence[int], *, round_index: int,
                   dropouts: Mapping[int, str] | None = None) -> RoundSession:
        return _GroupedRound(self, list(clients), round_index, dict(dropouts or {}))

    def aggregate(
        self,
        updates: Sequence[ClientUpdate],
        *,
        round_index: int,
        dropouts: Mapping[int, str] | None = None,
    ) -> AggregationResult:
        check_updates(updates, round_index)
        session = self.open_round([u.client_id for u in updates], round_index=round_index, dropouts=dropouts)
        for u in updates:
            session.add(u)
        return session.result()

    def _combine(self, outcomes: list[Any], round_index: int, protocol_seconds: float) -> AggregationResult:
        means, weights, included, excluded, sizes, stats = [], [], [], {}, [], {}
        for j, (res, failed) in enumerate(outcomes):
            if failed is not None:
                excluded.update(failed)
                continue
            means.append(res.delta)
            weights.append(float(res.stats.get("total_weight", len(res.included))))
            included.extend(res.included)
            excluded.update(res.excluded)
            sizes.append(len(res.included))
            for key in ("upload_bytes", "download_bytes", "protocol_seconds"):
                if key in res.stats:
                    stats[key] = stats.get(key, 0) + res.stats[key]
        if not means:
            raise AggregationError(f"round {round_index}: every group failed")
        self.rule.f = byzantine_count(self.rule, self.byzantine, len(means))
        try:
            self.rule.check(len(means))
        except RobustConfigError as e:
            raise AggregationError(f"round {round_index}: {len(means)} group means: {e}") from None
        x = np.stack(means).astype(np.float32)
        res = self.rule.combine(x, np.asarray(weights))
        stats.update({
            "groups": len(means), "group_sizes": sizes, "min_group_size": min(sizes),
            "rule": self.rule.describe(), "tolerated_bad_groups": self.rule.f,
            "tolerated_malicious_worst_case": self.rule.f, "protocol_seconds_all_groups": protocol_seconds,
        })
        if self.malicious is not None:
            m, gg = self.malicious, len(means)
            stats["malicious_expected_groups_touched"] = gg * (1 - (1 - 1 / gg) ** m)
            stats["prob_malicious_within_tolerance"] = prob_bad_groups_at_most(gg, m, self.rule.f)
        if res.selected is not None:
            stats["selected_groups"] = res.selected
        stats.update(res.extra)
        return AggregationResult(np.asarray(res.aggregate, dtype=np.float64), tuple(sorted(included)), excluded, stats)

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "groups": self.groups, "rule": self.rule.describe(),
                "protocol": self.fedavg.protocol.describe(), "byzantine": self.byzantine,
                "mode": "robust rule over securely summed group means"}


class _GroupedRound(RoundSession):
    """One grouped round: each update streams into its group's FedAvg session as it arrives."""

    def __init__(self, agg: GroupedRobustAggregator, clients: list[int], round_index: int,
                 dropouts: dict[int, str]) -> None:
        self.agg, self.round_index = agg, round_index
        n = len(clients)
        g = min(agg.groups, n)
        rng = np.random.default_rng([agg.seed, round_index, 0x6A0])
        order = rng.permutation(n)
        members = [sorted(order[i::g].tolist()) for i in range(g)]
        self.group_of = {clients[i]: j for j, rows in enumerate(members) for i in rows}
        self.members = [[clients[i] for i in rows] for rows in members]
        self.failed: list[dict[int, str] | None] = [None] * g
        self.sessions: list[RoundSession | None] = []
        self.seconds = 0.0
        t0 = time.perf_counter()
        for j, group in enumerate(self.members):
            drop = {c: dropouts[c] for c in group if c in dropouts}
            try:
                self.sessions.append(agg.fedavg.open_round(group, round_index=round_index, dropouts=drop))
            except AggregationError as e:  # a failed group is left out, the round goes on with the others
                self._fail(j, e)
                self.sessions.append(None)
        self.seconds += time.perf_counter() - t0

    def _fail(self, j: int, e: Exception) -> None:
        self.failed[j] = {c: f"group {j} failed: {e}" for c in self.members[j]}

    def add(self, update: ClientUpdate) -> None:
        j = self.group_of[update.client_id]
        session = self.sessions[j]
        if session is None:
            return
        t0 = time.perf_counter()
        try:
            session.add(update)
        except AggregationError as e:
            self._fail(j, e)
            self.sessions[j] = None
        self.seconds += time.perf_counter() - t0

    def result(self) -> AggregationResult:
        outcomes = []
        t0 = time.perf_counter()
        for j, session in enumerate(self.sessions):
            if session is None:
                outcomes.append((None, self.failed[j]))
                continue
            try:
                outcomes.append((session.result(), None))
            except AggregationError as e:
                self._fail(j, e)
                outcomes.append((None, self.failed[j]))
        self.seconds += time.perf_counter() - t0
        return self.agg._combine(outcomes, self.round_index, self.seconds)
