"""Interaction inference against what the server sees of one client, under each protection mode."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.attacks.inference.interaction import MODES, item_scores, item_tables, run_interaction_audit
from fedsecure.attacks.inference.membership import roc_auc
from fedsecure.experiment import RunConfig
from fedsecure.recsys.synthetic import generate


def test_roc_auc_known_answers():
    labels = np.array([1, 1, 0, 0, 0], dtype=bool)
    assert roc_auc(np.array([5, 4, 3, 2, 1]), labels) == 1.0
    assert roc_auc(np.array([1, 2, 3, 4, 5]), labels) == 0.0
    assert roc_auc(np.zeros(5), labels) == 0.5  # ties count half
    assert np.isnan(roc_auc(np.arange(3), np.zeros(3, dtype=bool)))


@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=4, max_size=40), st.data())
@settings(max_examples=60, deadline=None)
def test_roc_auc_is_antisymmetric_under_negation(scores, data):
    labels = np.array(data.draw(st.lists(st.booleans(), min_size=len(scores), max_size=len(scores))))
    if labels.all() or not labels.any():
        return
    s = np.array(scores)
    assert roc_auc(s, labels) + roc_auc(-s, labels) == pytest.approx(1.0)


def test_item_scores_read_the_signed_bias_change_and_skip_a_padding_row():
    n_items, width = 6, 3
    layout = [("item_emb.weight", (n_items + 1, width), 0), ("item_bias.weight", (n_items, 1), (n_items + 1) * width)]
    tables = item_tables(layout, n_items)
    view = np.zeros((n_items + 1) * width + n_items)
    view[(n_items + 1) * width + 2] = 0.5  # item 2's bias went up: a positive
    view[(n_items + 1) * width + 4] = -0.5  # item 4's went down: a sampled negative
    s = item_scores(view, tables, n_items)
    assert s.argmax() == 2 and s.argmin() == 4
    # without a bias: the leading direction of the touched rows, the smaller group counted positive
    emb = [t for t in tables if t[0].startswith("item_emb")]
    view = np.zeros((n_items + 1) * width)
    u = np.array([1.0, 2.0, -1.0])
    view[(1 + 1) * width : (1 + 2) * width] = 0.3 * u  # item 1: positive, along +u
    for neg in (3, 4, 5):
        view[(1 + neg) * width : (2 + neg) * width] = -0.1 * u  # three sampled negatives, along -u
    s = item_scores(view, emb, n_items)
    assert s.argmax() == 1 and (s[[3, 4, 5]] < 0).all() and s[0] == 0


def test_item_tables_refuse_a_model_without_item_rows():
    with pytest.raises(ValueError, match="no item-indexed shared table"):
        item_tables([("mlp.0.weight", (4, 4), 0)], 10)


@pytest.fixture(scope="module")
def audit():
    data = generate(n_users=40, n_items=120, mean_interactions=20, seed=3)
    return run_interaction_audit(RunConfig(rounds=2, seed=3), modes=MODES, clients=12, data=data)


def test_plaintext_and_central_dp_updates_give_the_items_away(audit):
    """The server reading a client's plaintext (or clipped, central-DP) update ranks its items near-perfectly."""
    for mode in ("plaintext", "central-dp"):
        assert audit["modes"][mode]["auc_ci95"][0] > 0.9, (mode, audit["modes"][mode]["auc"])


@pytest.mark.parametrize("mode", ["secagg", "secagg+", "distributed-dp", "ckks", "local-dp"])
def test_protected_views_give_chance_level(audit, mode):
    """Masked inputs, CKKS contributions and locally noised updates: mean AUC 0.5 by a t test over the 12
    clients' AUCs at the 99.9% level (|t| <= 4.44 at 11 degrees of freedom), so that five modes per run do not
    fail by chance. (The percentile bootstrap interval over 12 clients is too narrow for this: simulated under
    the null, the mean fell outside 1.68 of its half-widths in 4 of 75 runs.)"""
    assert audit["modes"][mode]["clients"] == 12
    per = np.asarray(audit["modes"][mode]["per_client_auc"])
    t = (per.mean() - 0.5) / (per.std(ddof=1) / np.sqrt(per.size))
    assert abs(t) <= 4.44, (mode, per.mean(), t)
    lo, hi = audit["modes"][mode]["auc_ci95"]
    assert hi - lo < 0.2  # and the interval is narrow enough to mean something
