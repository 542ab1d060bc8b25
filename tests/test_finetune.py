"""Pretraining on public users, checkpoints, and federated LoRA fine-tuning (only the adapter travels)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("peft")

from fedsecure.experiment import Experiment, RunConfig  # noqa: E402
from fedsecure.fl.aggregation import ClientUpdate, FedAvg  # noqa: E402
from fedsecure.fl.engine import SharedParameters  # noqa: E402
from fedsecure.recsys.adapters import adapter_size, add_lora, is_adapted, merge_lora  # noqa: E402
from fedsecure.recsys.checkpoint import (  # noqa: E402
    CheckpointError, check_compatible, load_checkpoint, load_into, make_config, save_checkpoint,
)
from fedsecure.recsys.models import SASRec, build_model  # noqa: E402
from fedsecure.recsys.synthetic import generate  # noqa: E402

SIZES = {"dim": 16, "blocks": 1, "heads": 2, "max_len": 10}


@pytest.fixture(scope="module")
def data():
    return generate(n_users=60, n_items=80, mean_interactions=15, seed=3)


def _inputs(n_items: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(1, n_items + 1, (6, SIZES["max_len"]), generator=g)
    x[0, :4] = 0  # left padding
    return x


def _scores(model: SASRec, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model.encode(x) @ model.item_emb.weight[1:].T  # the output is tied to the item table


def _perturb_adapter(model: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_lora_leaves_outputs_unchanged_until_trained_and_merge_equals_adapted_model():
    torch.manual_seed(0)
    model = SASRec(5, 40, **SIZES)
    x = _inputs(40)
    before = _scores(model, x)
    n_base = sum(p.numel() for p in model.parameters())
    add_lora(model, rank=3)
    assert is_adapted(model)
    assert torch.equal(_scores(model, x), before)  # B = 0 at injection: the same function
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
    # rank r on qkv (16 -> 48), proj (16 -> 16), ff1 (16 -> 64), ff2 (64 -> 16): r * (in + out) each
    assert adapter_size(model) == 3 * ((16 + 48) + (16 + 16) + (16 + 64) + (64 + 16))
    assert [n for n, _ in model.shared_parameters()] == trainable
    _perturb_adapter(model, 1)
    adapted = _scores(model, x)
    assert not torch.allclose(adapted, before)
    merged = merge_lora(model)
    assert not is_adapted(merged)
    assert sum(p.numel() for p in merged.parameters()) == n_base
    assert set(merged.state_dict()) == set(SASRec(5, 40, **SIZES).state_dict())
    torch.testing.assert_close(_scores(merged, x), adapted, rtol=1e-5, atol=1e-5)


def test_lora_refused_for_models_without_linear_targets():
    with pytest.raises(ValueError, match="declares no layers for LoRA"):
        add_lora(build_model("mf-implicit", 5, 10), rank=2)
    with pytest.raises(ValueError, match="--adapter lora applies to"):
        RunConfig(model="mf-implicit", adapter="lora")


def test_checkpoint_round_trip_and_refusals_name_what_differs(tmp_path, data):
    torch.manual_seed(0)
    model = build_model("sasrec", data.n_users, data.n_items, **SIZES)
    config = make_config("sasrec", SIZES, data, public_users=np.array([0, 5]))
    path = save_checkpoint(tmp_path / "m.pt", model, config)
    loaded_config, state = load_checkpoint(path)
    assert loaded_config["sizes"]["dim"] == 16 and loaded_config["sizes"]["dropout"] == 0.2
    assert loaded_config["public_users"] == [data.raw_user_ids[0].item(), data.raw_user_ids[5].item()]
    check_compatible(loaded_config, "sasrec", SIZES, data)
    fresh = build_model("sasrec", data.n_users, data.n_items, **SIZES)
    load_into(fresh, state)
    x = _inputs(data.n_items)
    assert torch.equal(_scores(fresh, x), _scores(model, x))

    with pytest.raises(CheckpointError, match=r"dim 16 \(run: 32\); heads 2 \(run: 4\)"):
        check_compatible(loaded_config, "sasrec", {**SIZES, "dim": 32, "heads": 4}, data)
    with pytest.raises(CheckpointError, match=r"model 'sasrec' \(run: 'ncf'\)"):
        check_compatible(loaded_config, "ncf", {}, data)
    other = generate(n_users=60, n_items=90, mean_interactions=15, seed=3)
    with pytest.raises(CheckpointError, match=r"catalogue of 80 items \(data: 90\)"):
        check_compatible(loaded_config, "sasrec", SIZES, other)
    swapped = {**loaded_config, "item_ids": list(reversed(loaded_config["item_ids"]))}
    with pytest.raises(CheckpointError, match="item-id mapping .dense id 0"):
        check_compatible(swapped, "sasrec", SIZES, data)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")
    adapted = add_lora(build_model("sasrec", data.n_users, data.n_items, **SIZES), rank=2)
    with pytest.raises(CheckpointError, match="merge the LoRA adapter first"):
        save_checkpoint(tmp_path / "a.pt", adapted, config)


class Recorder:
    """Stands between the round loop and the real aggregator: keeps what clients hand over and what comes out."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.updates, self.results = inner, [], []

    def open_round(self, clients, *, round_index, dropouts=None):
        # the round loop streams updates into open_round's session: collect them and call aggregate below
        from fedsecure.fl.aggregation import CollectingRound

        return CollectingRound(self, round_index, dropouts)

    def aggregate(self, updates, **kwargs):
        self.updates.append([(u.client_id, u.delta.copy(), u.weight) for u in updates])
        result = self.inner.aggregate(updates, **kwargs)
        self.results.append(result.delta.copy())
        return result

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _config(**kw: Any) -> RunConfig:
    base = dict(model="sasrec", model_args=SIZES, rounds=3, lr=0.5, server_optimizer="avg", server_lr=1.0,
                clients_per_round=8, eval_every=100, n_negatives=0, pretrain_users=0.25, pretrain_epochs=2,
                adapter="lora", lora_rank=2, seed=1)
    return RunConfig(**{**base, **kw})


def test_public_users_are_removed_from_clients_and_evaluation(data):
    exp = Experiment(_config(adapter="none"), data=data)
    public = set(exp.public_users.tolist())
    assert len(public) == round(0.25 * 60)
    assert not public & {int(c.client_id) for c in exp.clients}
    assert not public & set(exp.split.test.users.tolist())
    assert not public & set(exp.split.train.users.tolist())
    assert set(exp.public_data.users.tolist()) == public
    assert "removed from training and evaluation" in exp.split.protocol
    ft = exp.finetune
    assert ft["pretrain"]["public_users"] == len(public) and "hr@10" in ft["before_federated"]
    assert ft["parameters"]["frozen"] == 0  # full fine-tuning: everything trains and travels


def test_frozen_parameters_never_leave_the_client_and_the_adapter_alone_rebuilds_the_model(tmp_path, data):
    exp = Experiment(_config(), data=data)
    pretrained = exp.save_pretrained(tmp_path / "pre.pt")
    model = exp.model
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    shared = SharedParameters(model)
    n_adapter = adapter_size(model)
    # what the engine sends is the adapter, named and sized as such, and nothing frozen
    assert shared.size == n_adapter == exp.finetune["parameters"]["sent_per_client"]
    assert all(".lora_" in name for name, _, _ in shared.layout())
    assert 0 < n_adapter < exp.finetune["parameters"]["frozen"]
    initial_adapter = shared.get()
    exp.aggregator = recorder = Recorder(exp.aggregator)
    result = exp.run()
    assert result["rounds_completed"] == 3 and all(r["error"] is None for r in result["rounds"])
    sent = [delta for round_updates in recorder.updates for _, delta, _ in round_updates]
    assert len(sent) == 3 * 8 and all(d.shape == (n_adapter,) for d in sent)
    assert any(np.abs(d).max() > 0 for d in sent)
    # no client changed a frozen parameter (each client starts from the global state the engine sets)
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[name]), name

    # The server side: the public base it distributed once, the adapter it initialised, and the aggregated
    # adapter updates it applied (server step "avg" at lr 1: x <- x + delta) rebuild the fine-tuned model.
    config, state = load_checkpoint(pretrained)
    server = build_model("sasrec", data.n_users, data.n_items, **SIZES)
    load_into(server, state)
    torch.manual_seed(exp.config.seed)  # the server initialises the adapter as the run did (A random, B = 0)
    add_lora(server, rank=2)
    server_shared = SharedParameters(server)
    np.testing.assert_array_equal(server_shared.get(), initial_adapter)
    adapter = initial_adapter
    for delta in recorder.results:  # the parameters are float32: each round's state is rounded to it
        adapter = (adapter + exp.fl_config.server_lr * delta).astype(np.float32)
    server_shared.set(adapter)
    np.testing.assert_array_equal(adapter, SharedParameters(model).get())
    assert not np.array_equal(adapter, initial_adapter)  # fine-tuning moved the adapter
    rebuilt = merge_lora(server)
    deployed = exp.final_model()
    for key, value in deployed.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key
    x = _inputs(data.n_items)
    torch.testing.assert_close(_scores(rebuilt, x), _scores(model, x), rtol=1e-5, atol=1e-5)


@pytest.mark.filterwarnings("ignore:n=5 at dropout")
def test_secure_aggregation_sums_the_adapter_update(data):
    exp = Experiment(_config(secure="secagg", rounds=1, clients_per_round=5), data=data)
    n_adapter = adapter_size(exp.model)
    exp.aggregator = recorder = Recorder(exp.aggregator)
    result = exp.run()
    assert result["rounds"][0]["error"] is None and result["rounds"][0]["included"] == 5
    (updates,) = recorder.updates
    assert all(d.shape == (n_adapter,) for _, d, _ in updates)
    plain = FedAvg().aggregate([ClientUpdate(c, d, w) for c, d, w in updates], round_index=1, dropouts={})
    mean = plain.delta
    (aggregated,) = recorder.results
    assert aggregated.shape == (n_adapter,)
    # the masked sum decodes to the plaintext weighted mean up to the fixed-point encoding's rounding
    np.testing.assert_allclose(aggregated, mean, atol=1e-5)
    assert np.abs(mean).max() > 1e-4


def test_user_level_dp_clips_and_noises_the_adapter_update(data):
    exp = Experiment(_config(dp="user-central", noise_multiplier=1.0, clip=0.5, rounds=2, clients_per_round=10),
                     data=data)
    n_adapter = adapter_size(exp.model)
    exp.aggregator = recorder = Recorder(exp.aggregator)
    result = exp.run()
    assert result["privacy"]["epsilon"] < float("inf")
    assert all(d.shape == (n_adapter,) for u in recorder.updates for _, d, _ in u)
    assert all(r.shape == (n_adapter,) for r in recorder.results)


def test_robust_median_aggregates_the_adapter_update(data):
    exp = Experiment(_config(aggregator="median", rounds=1, clients_per_round=7), data=data)
    exp.aggregator = recorder = Recorder(exp.aggregator)
    assert exp.run()["rounds"][0]["error"] is None
    deltas = np.stack([d for _, d, _ in recorder.updates[0]])
    (aggregated,) = recorder.results
    assert deltas.shape == (7, adapter_size(exp.model)) and aggregated.shape == (deltas.shape[1],)
    # a coordinate-wise median lies inside the clients' range on every coordinate, and moves the adapter
    assert np.all(aggregated >= deltas.min(0) - 1e-7) and np.all(aggregated <= deltas.max(0) + 1e-7)
    assert np.abs(aggregated).max() > 0


def test_cli_pretrain_save_and_init_refusal(tmp_path, capsys):
    from fedsecure.cli import main

    common = ["run", "--model", "sasrec", "--dim", "16", "--blocks", "1", "--heads", "2", "--max-len", "10",
              "--rounds", "1", "--clients-per-round", "10", "--negatives", "0", "--quiet"]
    pre, out = tmp_path / "pre.pt", tmp_path / "out.pt"
    assert main([*common, "--pretrain-users", "0.2", "--pretrain-epochs", "1", "--pretrain-lr", "0.003",
                 "--pretrain-batch-size", "7", "--adapter", "lora", "--lora-rank", "2", "--save-pretrained", str(pre),
                 "--save", str(out)]) == 0
    text = capsys.readouterr().out
    assert "pretrained centrally on 200 public users (1 epochs of Adam, lr 0.003, batch 7)" in text
    assert "LoRA rank 2" in text
    assert pre.exists() and out.exists()
    config, state = load_checkpoint(out)
    assert not any(".lora_" in k for k in state) and len(config["public_users"]) == 200
    assert main([*common[:4], "32", *common[5:], "--init", str(pre)]) == 2
    err = capsys.readouterr().err
    assert f"--init {pre} does not fit this run: dim 16 (run: 32)" in err


def test_adapter_items_train_sends_the_adapter_and_only_the_item_rows_a_client_changed(data):
    exp = Experiment(_config(adapter_items="train", rounds=2), data=data)
    model = exp.model
    names = [name for name, _, _ in SharedParameters(model).layout()]
    assert "item_emb.weight" in names and all(".lora_" in n for n in names if n != "item_emb.weight")
    n_items_table = model.item_emb.weight.numel()
    assert exp.finetune["parameters"]["sent_per_client"] == adapter_size(model) + n_items_table
    assert exp.finetune["adapter"]["items"] == "train"
    frozen_before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    items_before = model.item_emb.weight.detach().clone()
    assert frozen_before and "item_emb.weight" not in frozen_before
    result = exp.run()
    assert all(r["error"] is None for r in result["rounds"])
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, frozen_before[name]), name  # the transformer's base weights stay put
    changed_rows = (model.item_emb.weight != items_before).any(1)
    assert 0 < int(changed_rows.sum()) < model.item_emb.num_embeddings  # rows the sampled clients touched
    com = result["communication"]
    # plaintext sends the adapter and each client's changed rows (ids and values), not the whole table
    assert com["sparse_updates"]
    assert com["bytes_up_per_client"] < 0.9 * com["float32_update_bytes"]
    # the deployed model keeps the fine-tuned item table with the adapter merged in
    deployed = exp.final_model()
    assert torch.equal(deployed.state_dict()["item_emb.weight"], model.item_emb.weight)


def test_adapter_items_train_needs_an_adapter():
    with pytest.raises(ValueError, match="--adapter-items train goes with --adapter lora"):
        _config(adapter="none", adapter_items="train")
    with pytest.raises(ValueError, match="--adapter-items must be one of"):
        _config(adapter_items="some")
