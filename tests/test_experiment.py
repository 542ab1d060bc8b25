"""End to end through the engine: each protection mode, DP reporting, and the CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fedsecure.cli import main
from fedsecure.experiment import Experiment, RunConfig
from fedsecure.fl.engine import SharedParameters
from fedsecure.recsys.synthetic import generate


@pytest.fixture(scope="module")
def data():
    return generate(n_users=40, n_items=60, mean_interactions=12, seed=2)


def run(data, **overrides):
    base = dict(model="mf-implicit", setting="cross-silo", silos=4, rounds=2, eval_every=1, batch_size=32,
                lr=0.5, server_optimizer="avg", server_lr=1.0, n_negatives=20, model_args={"dim": 8})
    base.update(overrides)
    exp = Experiment(RunConfig(**base), data=data)
    result = exp.run()
    return exp, result


@pytest.fixture(scope="module")
def plaintext(data):
    exp, result = run(data)
    return SharedParameters(exp.model).get(), result


@pytest.mark.parametrize("secure, tolerance", [("secagg", 1e-4), ("secagg+", 1e-4), ("ckks", 1e-4)])
def test_secure_sums_reproduce_plaintext_fedavg(data, plaintext, secure, tolerance):
    flat, plain = plaintext
    exp, result = run(data, secure=secure)
    assert all(r["included"] == 4 and not r["error"] for r in result["rounds"])
    assert all(r["stats"]["clipped_coordinates"] == 0 for r in result["rounds"])
    np.testing.assert_allclose(SharedParameters(exp.model).get(), flat, atol=tolerance)
    assert result["final"]["hr@10"] == pytest.approx(plain["final"]["hr@10"], abs=0.05)
    assert result["aggregator"]["protocol"]["name"] == secure


def test_secagg_survives_a_dropout_and_reports_it(data):
    # 40 % dropout over 4 silos leaves the round to the protocol: a correct sum of the survivors or an abort
    exp, result = run(data, secure="secagg", dropout=0.4, rounds=3, seed=1)
    rounds = result["rounds"]
    assert any(r["excluded"] for r in rounds)
    for r in rounds:
        assert r["error"] or r["included"] + len(r["excluded"]) == 4


def test_user_level_central_dp_states_what_it_spent(data):
    _, result = run(data, setting="cross-device", dp="user-central", noise_multiplier=1.0, clip=0.5,
                    clients_per_round=0.5, delta=1e-3)
    privacy = result["privacy"]
    assert 0 < privacy["epsilon"] < math.inf and privacy["delta"] == 1e-3
    assert privacy["rounds"] == 2 and privacy["accountant"]
    assert "os.urandom" in privacy["noise_source"] and not privacy["privacy_claim_void"]


def test_user_level_dp_samples_clients_by_poisson_from_the_secret_source(data):
    """The accountant assumes Poisson sampling at q = W / N with a secret sample: the run draws exactly that."""
    base = RunConfig(model="mf-implicit", setting="cross-device", dp="user-central", noise_multiplier=1.0,
                     clients_per_round=0.5, delta=1e-3, rounds=1, seed=3)
    ids = np.arange(40)
    a, b = Experiment(base, data=data), Experiment(base, data=data)
    # q = W / N over the clients, the one-run audit's included canary users among them
    assert a.sampler.describe()["sampling"] == "Poisson"
    assert a.sampler.rate == pytest.approx(a.clients_per_round / len(a.clients)) == pytest.approx(0.5, abs=0.05)
    # same --seed, different samples: the sample is not derivable from the seed
    assert not np.array_equal(a.sampler.sample(ids, 1), b.sampler.sample(ids, 1))
    plain = RunConfig(model="mf-implicit", setting="cross-device", clients_per_round=0.5, seed=3)
    np.testing.assert_array_equal(Experiment(plain, data=data).sampler.sample(ids, 1),
                                  Experiment(plain, data=data).sampler.sample(ids, 1))
    _, result = run(data, setting="cross-device", dp="user-central", noise_multiplier=1.0, clip=0.5,
                    clients_per_round=0.5, delta=1e-3, rounds=1)
    sampling = result["privacy"]["client_sampling"]
    assert sampling["sampling"] == "Poisson" and "os.urandom" in sampling["randomness"]


def test_user_level_distributed_dp_runs_inside_secagg(data):
    _, result = run(data, setting="cross-device", dp="user-distributed", secure="secagg", noise_multiplier=1.0,
                    clip=0.5, clients_per_round=10, delta=1e-3, rounds=1)
    assert result["rounds"][0]["error"] is None
    assert 0 < result["privacy"]["epsilon"] < math.inf
    assert "distributed" in result["privacy"]["mechanism"]


@pytest.mark.parametrize("dp, secure", [("user-central", "none"), ("user-distributed", "secagg")])
def test_calibrated_user_level_dp_spends_at_most_its_target(data, dp, secure):
    _, result = run(data, setting="cross-device", dp=dp, secure=secure, target_epsilon=4.0, clip=0.5,
                    clients_per_round=10, delta=1e-3, rounds=2, eval_every=2)
    assert all(r["error"] is None for r in result["rounds"])
    assert 3.0 < result["privacy"]["epsilon"] <= 4.0 * (1 + 1e-9)


def test_dpsgd_reports_every_silo_and_the_worst_case(data):
    _, result = run(data, dp="dpsgd", noise_multiplier=1.0, clip=1.0, delta=1e-4, rounds=1)
    privacy = result["privacy"]
    assert len(privacy["clients"]) == 4
    assert privacy["epsilon"] == max(c["epsilon"] for c in privacy["clients"].values()) > 0
    assert privacy["privacy_claim_void"] is False


def test_seeded_noise_voids_the_privacy_claim(data):
    _, result = run(data, setting="cross-device", dp="user-central", noise_multiplier=1.0, clients_per_round=0.5,
                    delta=1e-3, rounds=1, insecure_seeded_noise=True)
    assert result["privacy"]["privacy_claim_void"] is True


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": "bert"}, "unknown model 'bert'; choose one of: mf, mf-implicit, ncf, sasrec"),
        ({"secure": "tls"}, "choose one of: none, secagg, secagg\\+, ckks"),
        ({"dp": "dpsgd"}, "cross-silo"),
        ({"dp": "user-distributed", "setting": "cross-device"}, "secagg"),
        ({"dp": "user-central", "setting": "cross-device"}, "noise-multiplier or --target-epsilon"),
    ],
)
def test_bad_run_configurations_are_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        RunConfig(**overrides)


def test_cli_rejects_unknown_choices_listing_the_valid_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--model", "bert4rec"])
    assert exit_info.value.code == 2
    assert "choose from 'mf', 'mf-implicit', 'ncf', 'sasrec'" in capsys.readouterr().err


def test_cli_names_a_missing_data_path(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["run", "--data", str(missing), "--quiet"]) == 2
    assert str(missing) in capsys.readouterr().err


def test_cli_run_writes_the_full_result(tmp_path):
    path = tmp_path / "ratings.csv"
    rows = ["userId,movieId,rating,timestamp"]
    rows += [f"{u},{i},{1 + (u * i) % 5}.0,{1000 + u * 100 + i}" for u in range(1, 16) for i in range(1, 30) if (u + i) % 3]
    path.write_text("\n".join(rows) + "\n")
    out = tmp_path / "result.json"
    assert main(["run", "--data", str(path), "--rounds", "2", "--eval-every", "1", "--negatives", "9", "--quiet", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["command"].startswith("fedsecure run --data")
    assert [e["round"] for e in result["evaluations"]] == [1, 2]
    assert {"hr@10", "ndcg@10", "hr@10_sampled9"} <= set(result["final"]) and "hr@10" in result["popularity"]
    assert result["data"]["clients"] == 15 and result["versions"]["torch"]
    assert "leave-last-out" in result["protocol"] and result["privacy"]["mechanism"] == "none"
