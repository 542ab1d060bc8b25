"""Model-level membership inference: the metrics, the attacks, and end-to-end cases whose answer is known.

A model trained many local epochs on tiny data memorises it: the attacks must
find its members (AUC near 1), LiRA at least as well as the loss attack. A
model that never moved from its initialisation knows nothing of who was in
its training half: AUC 0.5 lies within the reported interval.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedsecure.attacks.inference.membership import (
    ATTACKS,
    attack_metrics,
    attack_scores,
    plot_roc,
    roc_auc,
    roc_curve,
    run_membership_audit,
    tpr_at_fpr,
    write_outputs,
)
from fedsecure.experiment import RunConfig
from fedsecure.recsys.synthetic import generate


@pytest.fixture(scope="module")
def data():
    return generate(n_users=30, n_items=40, mean_interactions=12, seed=1)


def config(**overrides):
    # cross-silo with 2 silos: few client calls per round, so a tiny run is fast; 5 local epochs at lr 2
    # over 30 users memorise the training half
    base = dict(setting="cross-silo", silos=2, rounds=10, local_epochs=5, eval_every=10, n_negatives=10,
                model_args={"dim": 16}, lr=2.0, batch_size=64, server_optimizer="avg", server_lr=1.0)
    base.update(overrides)
    return RunConfig(**base)


@pytest.fixture(scope="module")
def memorised(data):
    return run_membership_audit(config(), data=data, shadows=2, level="interaction", bootstrap_reps=100)


# -- metrics ------------------------------------------------------------------------------------------------------


def test_roc_and_auc_of_known_scores():
    labels = np.array([1, 1, 1, 0, 0, 0])
    assert roc_auc(np.array([6, 5, 4, 3, 2, 1.0]), labels) == 1.0
    assert roc_auc(np.array([1, 2, 3, 4, 5, 6.0]), labels) == 0.0
    assert roc_auc(np.ones(6), labels) == 0.5  # ties count one half
    assert roc_auc(np.array([6, 2, 4, 3, 5, 1.0]), labels) == pytest.approx(6 / 9)  # 6 of 9 pairs ordered
    fpr, tpr = roc_curve(np.array([6, 5, 4, 3, 2, 1.0]), labels)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1
    assert tpr_at_fpr(fpr, tpr, 0.0) == 1.0
    fpr, tpr = roc_curve(np.array([6, 2, 4, 3, 5, 1.0]), labels)
    assert tpr_at_fpr(fpr, tpr, 0.0) == pytest.approx(1 / 3) and tpr_at_fpr(fpr, tpr, 0.34) == pytest.approx(2 / 3)


def test_attack_metrics_report_intervals_low_fpr_tprs_and_an_epsilon_bound():
    rng = np.random.default_rng(0)
    labels = rng.random(4000) < 0.5
    m = attack_metrics(rng.normal(size=4000) + 3.0 * labels, labels, reps=50)
    assert 0.97 < m["auc"] < 1 and m["auc_ci95"][0] <= m["auc"] <= m["auc_ci95"][1]
    assert m["tpr@0.1%fpr"] <= m["tpr@1%fpr"] and len(m["tpr@1%fpr_ci95"]) == 2
    assert m["epsilon_lb"]["epsilon_lb"] > 1
    assert len(m["roc"]["fpr"]) == len(m["roc"]["tpr"]) and m["roc"]["tpr"][-1] == 1.0
    chance = attack_metrics(rng.normal(size=4000), labels, reps=50)
    assert chance["auc_ci95"][0] <= 0.5 <= chance["auc_ci95"][1]


def test_lira_and_calibration_see_through_per_example_difficulty():
    """Each example has its own difficulty (an item's popularity): the raw statistic hides membership in it.

    Shadows that include or exclude each example at random reveal the difficulty, which the calibrated
    attack subtracts and LiRA models per example.
    """
    rng = np.random.default_rng(1)
    n, k = 3000, 16
    difficulty = rng.normal(0, 3, n)
    def stat(member):
        return difficulty + 1.0 * member + rng.normal(0, 0.3, member.shape)
    target_in = rng.random(n) < 0.5
    shadow_in = rng.random((k, n)) < 0.5
    scores = attack_scores(stat(target_in), stat(shadow_in), shadow_in, ATTACKS)
    auc = {name: roc_auc(s, target_in) for name, s in scores.items()}
    assert auc["loss"] < 0.65
    assert auc["calibrated"] > 0.9 and auc["lira"] > 0.95 and auc["lira-offline"] > 0.9
    assert auc["lira"] >= auc["loss"]


# -- end to end -----------------------------------------------------------------------------------------------


def test_a_memorising_model_is_found_by_every_attack(memorised):
    attacks = memorised["attacks"]
    assert set(attacks) == {"loss", "calibrated", "lira", "lira-offline"}
    assert memorised["members"] > 100 and memorised["nonmembers"] > 100
    assert memorised["epsilon"]["accountant_epsilon"] == float("inf") and memorised["epsilon"]["attack_epsilon_lb"] > 1
    for name, m in attacks.items():
        assert m["auc"] > 0.9, (name, m["auc"])
        assert m["tpr@1%fpr"] > 0.05, (name, m["tpr@1%fpr"])


def test_lira_beats_or_equals_the_loss_attack_on_a_memorising_model(memorised):
    lira, loss = memorised["attacks"]["lira"], memorised["attacks"]["loss"]
    # "equals" up to the loss attack's own bootstrap interval
    assert lira["auc"] >= loss["auc_ci95"][0]


def test_an_untrained_model_is_at_chance_within_its_interval(data):
    # one round at a vanishing learning rate: the model is its initialisation, which saw nobody
    report = run_membership_audit(config(rounds=1, local_epochs=1, lr=1e-6), data=data, shadows=1,
                                  attacks=("loss",), level="interaction", bootstrap_reps=100)
    lo, hi = report["attacks"]["loss"]["auc_ci95"]
    assert lo <= 0.5 <= hi


def test_user_level_membership_against_the_shared_parameters(data):
    report = run_membership_audit(config(), data=data, shadows=2, level="user", bootstrap_reps=50,
                                  attacks=("loss", "lira"))
    assert report["level"] == "user" and report["members"] == report["nonmembers"] == 15
    assert report["attacks"]["lira"]["auc"] > 0.75
    assert report["attacks"]["lira"]["auc"] >= report["attacks"]["loss"]["auc_ci95"][0]


def test_outputs_json_csv_and_a_log_log_plot(memorised, tmp_path):
    paths = write_outputs(memorised, tmp_path, command="fedsecure audit mia")
    saved = json.loads(paths["json"].read_text())
    assert saved["command"] == "fedsecure audit mia" and saved["attacks"]["lira"]["auc"] > 0.9
    rows = paths["csv"].read_text().splitlines()
    assert rows[0].startswith("attack,level,auc") and len(rows) == 1 + len(memorised["attacks"])
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    assert plot_roc([memorised, memorised], tmp_path / "two.png").exists()


def test_bad_arguments_are_named(data):
    with pytest.raises(ValueError, match="unknown level"):
        run_membership_audit(config(), data=data, level="item")
    with pytest.raises(ValueError, match="unknown attack"):
        run_membership_audit(config(), data=data, attacks=("shadow",))
    with pytest.raises(ValueError, match="shadows >= 1"):
        run_membership_audit(config(), data=data, shadows=0, attacks=("lira",))


def test_a_dp_run_puts_every_lower_bound_beside_the_accountants_epsilon(data):
    cfg = RunConfig(setting="cross-device", rounds=3, eval_every=3, n_negatives=10, model_args={"dim": 8},
                    dp="user-central", noise_multiplier=1.0, clip=1.0, clients_per_round=0.5, delta=1e-3)
    report = run_membership_audit(cfg, data=data, shadows=1, level="user", bootstrap_reps=20)
    eps = report["epsilon"]
    assert 0 < eps["accountant_epsilon"] < float("inf") and eps["delta"] == 1e-3
    assert eps["claim_applies"] is True  # user-level DP, user-level attack on the released parameters
    assert 0 <= eps["attack_epsilon_lb"] <= eps["accountant_epsilon"]
    assert 0 <= eps["canary_epsilon_lb"] <= eps["accountant_epsilon"]
    assert report["target"]["privacy"]["audit"]["canaries"] == 16
