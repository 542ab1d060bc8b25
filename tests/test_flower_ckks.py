"""fedsecure CKKS over Flower: client mod, key-holder mod (its own node) and the aggregating fit workflow.

Real Flower Messages and ClientApps through the in-process Grid of
:mod:`fedsecure.integrations.flower.testing`; real TenSEAL/SEAL encryption.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("flwr")

from flwr.client import NumPyClient  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.server.strategy import FedAvg  # noqa: E402

from fedsecure.integrations.flower.ckks import (  # noqa: E402
    CLIENT_KEY,
    FedSecureCKKSWorkflow,
    fedsecure_ckks_key_holder_mod,
    fedsecure_ckks_mod,
)
from fedsecure.integrations.flower.testing import InProcessGrid, current_arrays, legacy_context  # noqa: E402

SHAPES = [(30, 4), (11,)]


def _setup(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    node_ids = [int(x) for x in rng.choice(2**62, size=n + 1, replace=False) + 1]
    holder, clients = node_ids[0], node_ids[1:]
    updates = {nid: [rng.uniform(-2, 2, s).astype(np.float32) for s in SHAPES] for nid in clients}
    examples = {nid: int(rng.integers(5, 60)) for nid in clients}

    class Client(NumPyClient):
        def __init__(self, nid):
            self.nid = nid

        def fit(self, parameters, config):
            assert self.nid != holder, "the key holder must never train"
            return updates[self.nid], examples[self.nid], {}

    app = ClientApp(client_fn=lambda ctx: Client(ctx.node_id).to_client(),
                    mods=[fedsecure_ckks_mod, fedsecure_ckks_key_holder_mod])
    return holder, clients, updates, examples, app


def _expected(included, updates, examples):
    w = {nid: min(examples[nid], 1000) / 1000 for nid in included}
    W = sum(w.values())
    return [sum(w[nid] * updates[nid][j].astype(np.float64) for nid in included) / W for j in range(len(SHAPES))], W


def test_ckks_rounds_equal_the_plaintext_weighted_mean_with_a_dropout_and_a_forged_contribution():
    holder, clients, updates, examples, app = _setup(6)
    dropped, forger = clients[0], clients[1]

    def drop(nid, msg):
        rec = msg.content.config_records.get(CLIENT_KEY)
        return nid == dropped and rec is not None and rec.get("stage") == "contribute"

    def tamper(nid, reply):
        rec = reply.content.config_records.get(CLIENT_KEY)
        if nid == forger and rec is not None and "contribution" in rec:
            blob = bytearray(rec["contribution"])
            blob[-1] ^= 1  # breaks its signature: refused, the sum stays as it was
            rec["contribution"] = bytes(blob)
        return [reply]

    grid = InProcessGrid(app, [holder, *clients], drop=drop, tamper=tamper)
    n = len(clients) + 1
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n, fraction_evaluate=0.0)
    ctx = legacy_context(strategy, grid, [np.zeros(s, np.float32) for s in SHAPES])
    wf = FedSecureCKKSWorkflow(holder, timeout=30)
    wf(grid, ctx)
    included = sorted(wf.last_round["included"])
    assert included == sorted(c for c in clients if c not in (dropped, forger))
    assert any(nid == forger and ("signature" in why or "corrupted" in why) for nid, why in wf.rejections)
    expected, W = _expected(included, updates, examples)
    bound = wf.last_round["error_bound"]
    for o, e in zip(current_arrays(ctx), expected):
        tol = bound * (1 + np.abs(e)) / (W - bound) + 2.0**-22 * np.abs(e)
        assert np.all(np.abs(o - e) <= tol + 1e-9)
    # A second round reuses the keys and registrations; a new round id, decrypted once.
    from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD
    from flwr.server.workflow.constant import Key as WorkflowKey

    ctx.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND] = 2
    grid.drop = grid.tamper = None
    grid.dead.clear()
    wf(grid, ctx)
    assert sorted(wf.last_round["included"]) == sorted(clients)


def test_the_key_holder_refuses_a_replayed_aggregate_and_too_few_contributors():
    from flwr.app import ConfigRecord, Context, Message, RecordDict
    from flwr.app.message_type import MessageType

    from fedsecure.integrations.flower.ckks import HOLDER_KEY

    holder, clients, _, _, app = _setup(3, seed=1)
    hctx = Context(run_id=1, node_id=holder, node_config={}, state=RecordDict(), run_config={})

    def ask(fields):
        msg = Message(RecordDict({HOLDER_KEY: ConfigRecord(fields)}), holder, MessageType.TRAIN, group_id="1")
        msg.metadata.__dict__["_message_id"] = os.urandom(8).hex()
        return app(msg, hctx).content.config_records[HOLDER_KEY]

    setup = ask({"stage": "setup"})
    assert isinstance(setup["public-context"], bytes)
    assert "no keys" not in str(setup)
    bad = ask({"stage": "decrypt", "aggregate": b"garbage"})
    assert "error" in bad
    assert "unknown stage" in ask({"stage": "nope"})["error"]
