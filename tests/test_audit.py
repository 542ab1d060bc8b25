"""The poisoning audit sweep: every cell beside its own clean run, and the three outputs a user reads."""

import csv
import json

from fedsecure.audit import sweep, write_outputs
from fedsecure.experiment import RunConfig
from fedsecure.recsys.synthetic import generate


def test_sweep_writes_json_csv_and_heatmap_with_clean_baselines(tmp_path):
    data = generate(n_users=80, n_items=60, mean_interactions=10, seed=0)
    base = RunConfig(rounds=2, eval_every=2, n_negatives=20)
    rows = sweep(base, attacks=["scaling"], aggregators=["fedavg", "median"], fractions=[0.1], groups=[0, 4],
                 data=data)
    cells = [(r["aggregator"], r["groups"], r["attack"]) for r in rows]
    # fedavg plain (clean, attacked), median plain (clean, attacked), median grouped (clean, attacked)
    assert cells == [("fedavg", 0, "none"), ("fedavg", 0, "scaling"), ("median", 0, "none"), ("median", 0, "scaling"),
                     ("median", 4, "none"), ("median", 4, "scaling")]
    for r in rows:
        assert 0 <= r["hr@10"] <= 1 and r["hr@10_ci95"][0] <= r["hr@10"] <= r["hr@10_ci95"][1]
        if r["attack"] == "none":
            assert r["hr@10_vs_own_clean"] == 1.0
    assert rows[4]["min_group_size"] is not None and rows[0]["min_group_size"] is None
    assert rows[1]["poisoning"]["malicious"] == 8 and rows[1]["poisoning"]["attack"]["name"] == "scaling"
    paths = write_outputs(rows, tmp_path / "out", command="test", base=base)
    saved = json.loads(paths["json"].read_text())
    assert saved["command"] == "test" and len(saved["rows"]) == 6
    with paths["csv"].open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and table[1]["attack"] == "scaling"
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_sweep_names_a_rule_variant_after_a_colon_and_refuses_an_unknown_one():
    import pytest

    from fedsecure.audit import aggregator_spec

    assert aggregator_spec("norm-bounding:weighted") == {"aggregator": "norm-bounding", "weighted": True}
    assert aggregator_spec("median:row-aware") == {"aggregator": "median", "row_aware": True}
    with pytest.raises(ValueError, match="unknown variant 'fast'"):
        aggregator_spec("krum:fast")
    data = generate(n_users=60, n_items=50, mean_interactions=8, seed=1)
    rows = sweep(RunConfig(rounds=1, eval_every=1, n_negatives=20), attacks=["sign-flip"],
                 aggregators=["norm-bounding:weighted"], fractions=[0.1], data=data)
    assert [(r["aggregator"], r["attack"]) for r in rows] == [("norm-bounding:weighted", "none"),
                                                              ("norm-bounding:weighted", "sign-flip")]
