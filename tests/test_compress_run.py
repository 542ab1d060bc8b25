"""--compress through the experiment and the CLI: bytes per client recorded per round and in the summary, and the
combinations that would break secure aggregation or the DP claim refused with the option named."""

from __future__ import annotations

import json
import math

import pytest

from fedsecure.experiment import Experiment, RunConfig
from fedsecure.recsys.synthetic import generate


@pytest.fixture(scope="module")
def data():
    return generate(n_users=40, n_items=60, mean_interactions=12, seed=2)


def run(data, **overrides):
    base = dict(model="mf-implicit", rounds=2, eval_every=1, batch_size=32, lr=0.5, server_optimizer="avg",
                server_lr=1.0, n_negatives=20, model_args={"dim": 8}, clients_per_round=10)
    base.update(overrides)
    exp = Experiment(RunConfig(**base), data=data)
    return exp, exp.run()


def _dim(exp):
    return sum(p.numel() for _, p in exp.model.shared_parameters())


@pytest.mark.parametrize("compress, per_client", [
    ("none", lambda d: 4 * (d + 1)),                       # float32 update and weight
    ("q8", lambda d: 4 + d + 4),                            # range, d bytes of codes, float32 weight
    ("q2", lambda d: 4 + math.ceil(2 * d / 8) + 4),
    ("q4/16", lambda d: 4 * math.ceil(d / 16) + math.ceil(4 * d / 8) + 4),  # a float32 range per 16 coordinates
])
def test_plaintext_upload_bytes_are_what_the_payload_weighs(data, compress, per_client):
    # dense updates: plaintext clients otherwise send only the rows they touched (next test)
    exp, result = run(data, compress=compress, sparse_updates=False)
    d = _dim(exp)
    for r in result["rounds"]:
        assert r["bytes_up_per_client"] == per_client(d)
        assert r["bytes_down_per_client"] == 4 * d  # the float32 global shared parameters
    com = result["communication"]
    assert com["bytes_up_per_client"] == per_client(d) and com["float32_update_bytes"] == 4 * (d + 1)
    assert com["upload_ratio_vs_float32"] == pytest.approx(4 * (d + 1) / per_client(d))
    assert result["final"]["hr@10"] >= 0


@pytest.mark.parametrize("bits", [8, 2])
def test_quantized_row_sparse_updates_send_the_touched_rows_values_at_b_bits_and_their_ids(bits):
    # a catalogue large enough that a client's items and negatives leave most rows untouched
    exp, result = run(generate(n_users=40, n_items=600, mean_interactions=12, seed=2), compress=f"q{bits}",
                      n_negatives=2)
    d = _dim(exp)
    dense = 4 + math.ceil(bits * d / 8) + 4
    com = result["communication"]
    assert com["sparse_updates"] and all(r["error"] is None for r in result["rounds"])
    # each client's item rows (ids as int32, values at b bits) and nothing of the rows it never touched
    assert 8 < com["bytes_up_per_client"] < dense
    assert result["final"]["hr@10"] >= 0


def test_topk_and_rotation_report_their_bytes(data):
    exp, result = run(data, compress="topk:0.1")
    d = _dim(exp)
    assert all(r["bytes_up_per_client"] <= 4 + 8 * math.ceil(0.1 * d) + 4 for r in result["rounds"])
    exp, result = run(data, compress="rotate-q8")
    padded = result["rounds"][0]["stats"]["rotation_padded_length"]
    assert padded >= d and result["rounds"][0]["bytes_up_per_client"] == 4 + padded + 4


@pytest.mark.parametrize("compress, bits", [("q8", 8), ("rotate-q4", 4)])
def test_quantized_secagg_plus_sends_exactly_b_bits_per_coordinate_plus_protocol_messages(data, compress, bits):
    # four rounds: at 4 bits a round whose decoded total weight is not positive is lost, never misapplied;
    # the first round, scaled for the worst case (no earlier sum), is lost most of the time
    exp, result = run(data, compress=compress, secure="secagg+", compress_clip=0.5, rounds=4, eval_every=4)
    d = _dim(exp)
    r = next(x for x in result["rounds"] if not x.get("error"))
    n = r["sampled"]
    padded = r["stats"]["rotation_padded_length"]  # the update and its weight, rotated, padded to whole blocks
    assert r["stats"]["bits"] == bits and r["stats"]["modular_ring"] and d + 1 <= padded < d + 1 + 4096
    masked = r["stats"]["upload_bytes_by_stage"]["masked_input"]
    assert masked == n * (58 + math.ceil(padded * bits / 8))  # b bits per coordinate, whatever n is
    assert r["bytes_up_per_client"] == r["stats"]["upload_bytes"] / n > masked / n  # key agreement counted too
    assert r["bytes_down_per_client"] > 4 * d
    assert all(x["stats"]["ring_coordinates"] == padded for x in result["rounds"] if not x.get("error"))


@pytest.mark.parametrize("overrides, needle", [
    (dict(compress="topk:0.1", secure="secagg+"), "needs --secure none"),
    (dict(compress="q8", secure="ckks"), "ckks"),
    (dict(compress="q8", dp="user-central", noise_multiplier=1.0), "sensitivity"),
    (dict(compress="q8", secure="secagg", dp="user-distributed", noise_multiplier=1.0), "sensitivity"),
    (dict(compress="q8", aggregator="median"), "--aggregator median"),
    (dict(compress="q9x"), "--compress"),
    (dict(compress="q4/64", secure="secagg+"), "bucket's range"),
])
def test_combinations_that_break_a_claim_are_refused(overrides, needle):
    with pytest.raises(ValueError, match=needle):
        RunConfig(**overrides)


def test_cli_prints_and_records_the_bytes(tmp_path, capsys):
    from fedsecure.cli import main

    out = tmp_path / "r.json"
    rc = main(["run", "--users", "80", "--items", "100", "--rounds", "1", "--dim", "8", "--clients-per-round", "20",
               "--compress", "q4",
               "--json", str(out)])
    stdout = capsys.readouterr().out
    assert rc == 0
    result = json.loads(out.read_text())
    line = next(x for x in stdout.splitlines() if x.startswith("communication: "))
    assert "compress q4: up " in line and "per client and round" in line
    assert f"{result['communication']['upload_ratio_vs_float32']:.2f}x the upload" in line
    with pytest.raises(SystemExit):
        main(["run", "--compress", "q1"])
    assert "'q1'" in capsys.readouterr().err
