"""Robust rules and poisoning in the round loop: who sees what, and what each run reports."""

import numpy as np
import pytest

from fedsecure.attacks.poisoning import ModelPoisoning, PoisoningPlan
from fedsecure.fl.aggregation import ClientUpdate, PlainSum, SumResult
from fedsecure.robust.base import RobustAggregator, RobustConfigError, RobustRule, RuleResult, byzantine_count
from fedsecure.robust.grouped import GroupedRobustAggregator, prob_bad_groups_at_most


class Mean(RobustRule):
    name = "test-mean"

    def combine(self, x, weights=None):
        return RuleResult(x.mean(axis=0), selected=list(range(len(x))))


class Median(RobustRule):
    name = "test-median"

    def combine(self, x, weights=None):
        return RuleResult(np.median(x, axis=0))


class Reference(Mean):
    name = "test-reference"
    seen: list = []

    def set_reference(self, g0):
        self.seen.append(np.array(g0))


class Boost(ModelPoisoning):
    name = "test-boost"

    def craft(self, benign, honest, rng):
        return benign * 100.0


class RecordingSum(PlainSum):
    """A plaintext sum that records every set of vectors it was asked to sum."""

    def __init__(self):
        self.calls = []

    def sum(self, vectors, *, dropouts=None) -> SumResult:
        self.calls.append(sorted(vectors))
        return super().sum(vectors, dropouts=dropouts)


def _updates(n=40, d=6):
    return [ClientUpdate(i, np.full(d, 0.01 * (1 + i % 3), dtype=np.float32), 10.0) for i in range(n)]


def test_plan_replaces_exactly_the_malicious_updates_and_keeps_their_weights():
    ups = _updates()
    plan = PoisoningPlan.choose(Boost(), range(40), 0.1, seed=3)
    assert len(plan.malicious) == 4 and plan.malicious == PoisoningPlan.choose(Boost(), range(40), 0.1, seed=3).malicious
    out = plan.apply(ups, round_index=1)
    for a, b in zip(ups, out):
        assert a.weight == b.weight and a.client_id == b.client_id
        assert np.allclose(b.delta, a.delta * (100.0 if a.client_id in plan.malicious else 1.0))


def test_median_survives_the_attack_that_moves_the_mean():
    ups = PoisoningPlan.choose(Boost(), range(40), 0.1, seed=3).apply(_updates(), 1)
    honest = np.median([u.delta for u in _updates()], axis=0)
    mean = RobustAggregator(Mean()).aggregate(ups, round_index=1).delta
    med = RobustAggregator(Median(), byzantine=0.1).aggregate(ups, round_index=1)
    assert np.abs(mean - honest).max() > 0.05  # the mean is dragged far away
    assert np.allclose(med.delta, honest) and med.stats["rule"]["f"] == 4


def test_byzantine_count_and_refusal():
    assert byzantine_count(Median(), 0.1, 40) == 4 and byzantine_count(Median(), 3, 40) == 3
    assert byzantine_count(Median(), None, 9) == 4  # 2f + 1 <= 9
    from fedsecure.fl.aggregation import AggregationError

    with pytest.raises(AggregationError, match="needs at least 9 updates"):
        RobustAggregator(Median(), byzantine=4).aggregate(_updates(8), round_index=1)
    with pytest.raises(RobustConfigError, match="f"):
        Median(f=-1)


def test_grouped_mode_sums_groups_never_individuals_and_combines_group_means():
    proto = RecordingSum()
    agg = GroupedRobustAggregator(Median(), proto, 8, malicious=4, seed=1)
    ups = PoisoningPlan.choose(Boost(), range(40), 0.1, seed=3).apply(_updates(), 1)
    res = agg.aggregate(ups, round_index=1)
    assert len(proto.calls) == 8 and all(len(c) == 5 for c in proto.calls)  # only group sums
    assert sorted(c for call in proto.calls for c in call) == list(range(40))  # a partition of the round
    assert res.stats["min_group_size"] == 5 and res.stats["tolerated_bad_groups"] == 3
    assert 0 <= res.stats["prob_malicious_within_tolerance"] <= 1
    # grouping is random per round but reproducible from the seed
    again = RecordingSum()
    GroupedRobustAggregator(Median(), again, 8, seed=1).aggregate(ups, round_index=1)
    assert again.calls == proto.calls


def test_prob_bad_groups_matches_simulation():
    rng = np.random.default_rng(0)
    for g, m, f in [(10, 4, 2), (50, 6, 3), (5, 7, 2)]:
        sims = np.mean([len(set(rng.integers(0, g, m).tolist())) <= f for _ in range(20000)])
        assert prob_bad_groups_at_most(g, m, f) == pytest.approx(sims, abs=0.015)
    assert prob_bad_groups_at_most(50, 0, 0) == 1.0


def test_engine_applies_the_plan_and_feeds_fltrust_style_rules_the_root_update():
    from fedsecure.fl.engine import FederatedConfig, FederatedTrainer
    from fedsecure.recsys.models import build_model
    from fedsecure.recsys.partition import cross_device
    from fedsecure.recsys.synthetic import generate

    data = generate(n_users=60, n_items=40, mean_interactions=8, seed=0)
    clients = cross_device(data)
    root, rest = clients[:2], clients[2:]
    Reference.seen = []
    rule = Reference()
    plan = PoisoningPlan.choose(Boost(), [c.client_id for c in rest], 0.1, seed=0)
    trainer = FederatedTrainer(build_model("mf-implicit", data.n_users, data.n_items), data, rest,
                               config=FederatedConfig(rounds=2, clients_per_round=1.0, seed=0),
                               aggregator=RobustAggregator(rule), poisoning=plan, reference_clients=root)
    history = trainer.run()
    assert len(Reference.seen) == 2 and all(np.isfinite(g).all() and np.abs(g).sum() > 0 for g in Reference.seen)
    included = history.rounds[0].stats["selected"]
    assert not set(c.client_id for c in root) & set(included)  # root data is the server's, never sampled
    with pytest.raises(ValueError, match="must not also be sampled"):
        FederatedTrainer(build_model("mf-implicit", data.n_users, data.n_items), data, clients,
                         reference_clients=root)


def test_run_config_refuses_incoherent_robustness_settings():
    from fedsecure.experiment import RunConfig

    with pytest.raises(ValueError, match="go together"):
        RunConfig(malicious=0.1)
    with pytest.raises(ValueError, match="name one with --aggregator"):
        RunConfig(groups=4)
    with pytest.raises(ValueError, match="unknown aggregator 'nope'"):
        RunConfig(aggregator="nope")
    with pytest.raises(ValueError, match="unknown attack 'nope'"):
        RunConfig(attack="nope", malicious=0.1)
    with pytest.raises(ValueError, match="--weighted applies to --aggregator norm-bounding"):
        RunConfig(aggregator="median", weighted=True)
    with pytest.raises(ValueError, match="--attack-scale applies to --attack scaling or sign-flip, not 'alie'"):
        RunConfig(attack="alie", malicious=0.1, attack_scale=5.0)
    with pytest.raises(ValueError, match="--attack-scale must be a finite number > 0"):
        RunConfig(attack="scaling", malicious=0.1, attack_scale=-1.0)


def test_attack_scale_and_weighted_reach_the_attack_and_the_rule():
    from fedsecure.experiment import Experiment, RunConfig

    exp = Experiment(RunConfig(rounds=1, aggregator="norm-bounding", weighted=True, attack="scaling", malicious=0.1,
                               attack_scale=100.0))
    assert exp.poisoning.attack.gamma == 100.0
    assert exp.aggregator.rule.weighted and exp.aggregator.describe()["rule"]["weighted"]
    exp = Experiment(RunConfig(rounds=1, attack="sign-flip", malicious=0.1, attack_scale=3.0))
    assert exp.poisoning.attack.scale == 3.0


def test_promotion_and_fake_users_report_the_targets_exposure_over_honest_users():
    from fedsecure.experiment import Experiment, RunConfig
    from fedsecure.recsys.synthetic import generate

    data = generate(n_users=120, n_items=80, mean_interactions=10, seed=0)
    for attack in ("item-promotion", "fake-users"):
        exp = Experiment(RunConfig(rounds=2, eval_every=2, n_negatives=20, attack=attack, malicious=0.1), data)
        result = exp.run()
        report = result["poisoning"]
        assert report["target_items"] and report["malicious"] >= 1
        final = result["final"]
        assert 0.0 <= final["er@10"] <= 1.0 and final["er@10_ci95"][0] <= final["er@10"] <= final["er@10_ci95"][1]
        if attack == "fake-users":  # the fake users are clients, with training rows only
            assert exp.split.train.n_users == data.n_users + report["malicious"] == exp.model.n_users
