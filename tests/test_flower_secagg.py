"""fedsecure SecAgg over Flower: the client mod and the server workflow, with real Flower Messages and ClientApps.

These tests drive :class:`FedSecureSecAggWorkflow` and ``fedsecure_secagg_mod``
through :class:`~fedsecure.integrations.flower.testing.InProcessGrid` (each
message delivered to the node's real ``ClientApp`` and mod stack, with its own
persistent ``Context``), which lets a test drop nodes at a chosen stage and
play a network that corrupts, duplicates, replays or misroutes replies.
``tests/test_flower_app.py`` runs the example app in Flower's simulation
runtime and on a real SuperLink + SuperNodes deployment.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

flwr = pytest.importorskip("flwr")

from flwr.app import ConfigRecord, Context, Message, RecordDict  # noqa: E402
from flwr.app.message_type import MessageType  # noqa: E402
from flwr.client import NumPyClient  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.server.strategy import FedAvg, FedMedian  # noqa: E402

from fedsecure.integrations.flower import FedSecureSecAggWorkflow, fedsecure_secagg_mod, make_secagg_mod  # noqa: E402
from fedsecure.integrations.flower import _records as R  # noqa: E402
from fedsecure.integrations.flower.testing import InProcessGrid, current_arrays, legacy_context  # noqa: E402
from fedsecure.robust.median import CoordinateMedian  # noqa: E402
from fedsecure.secagg import ClientPolicy  # noqa: E402

SHAPES = [(12, 4), (9,)]


def _setup(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    node_ids = [int(x) for x in rng.choice(2**62, size=n, replace=False) + 1]  # Flower-like 64-bit ids
    updates = {nid: [rng.uniform(-3, 3, s).astype(np.float32) for s in SHAPES] for nid in node_ids}
    examples = {nid: int(rng.integers(5, 60)) for nid in node_ids}

    class Client(NumPyClient):
        def __init__(self, nid):
            self.nid = nid

        def fit(self, parameters, config):
            return updates[self.nid], examples[self.nid], {"loss": float(self.nid % 7)}

    return node_ids, updates, examples, Client


def _app(Client, mod=fedsecure_secagg_mod):
    return ClientApp(client_fn=lambda ctx: Client(ctx.node_id).to_client(), mods=[mod])


def _expected(included, updates, examples, max_weight=1000.0):
    w = {nid: min(examples[nid], max_weight) / max_weight for nid in included}
    W = sum(w.values())
    return [sum(w[nid] * updates[nid][j].astype(np.float64) for nid in included) / W for j in range(len(SHAPES))], W


def _check_mean(out, expected, W, bound):
    for o, e in zip(out, expected):
        # |sum error| <= bound per coordinate, also on the weight: error of a quotient, plus float32 output
        tol = bound * (1 + np.abs(e)) / (W - bound) + 2.0**-22 * np.abs(e)
        assert np.all(np.abs(o - e) <= tol + 1e-12), float(np.max(np.abs(o - e) - tol))


def _stage_of(msg: Message) -> str | None:
    rec = msg.content.config_records.get(R.RECORD_KEY)
    return None if rec is None else rec.get(R.STAGE)


def _run(node_ids, app, workflow, **grid_kw):
    grid = InProcessGrid(app, node_ids, **grid_kw)
    n = len(node_ids)
    strategy = FedAvg(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n, fraction_evaluate=0.0)
    ctx = legacy_context(strategy, grid, [np.zeros(s, np.float32) for s in SHAPES])
    workflow(grid, ctx)
    return ctx, grid


@pytest.mark.parametrize("graph,state", [("sparse", "disk"), ("complete", "context")])
def test_round_equals_plaintext_weighted_mean_with_dropouts_at_every_stage(graph, state):
    n = 14
    node_ids, updates, examples, Client = _setup(n)
    drop_at = {node_ids[0]: "advertise_keys", node_ids[1]: "seed_reveal", node_ids[2]: "share_keys",
               node_ids[3]: "masked_input", node_ids[4]: "unmasking"}
    wf = FedSecureSecAggWorkflow(graph=graph, timeout=10)
    ctx, grid = _run(node_ids, _app(Client, make_secagg_mod(state=state)), wf,
                     drop=lambda nid, msg: drop_at.get(nid) == _stage_of(msg))
    for nid in node_ids[5:]:  # a client that finished the round keeps no secret of it
        store = grid.contexts[nid].state.config_records[R.STATE_KEY]
        assert "state" not in store
    group = wf.last_round["groups"][0]
    # dropped before their masked input: out; dropped at unmasking: its input arrived, it is in the sum
    included = [nid for nid in node_ids if drop_at.get(nid) in (None, "unmasking")]
    assert sorted(group["included"]) == sorted(included)
    assert set(group["excluded"]) == {str(nid) for nid in node_ids[:4]}
    expected, W = _expected(included, updates, examples)
    _check_mean(current_arrays(ctx), expected, W, group["quantization_error_bound"])
    assert wf.rejections == []


def test_too_many_dropouts_halt_the_round_without_touching_the_model():
    n = 6
    node_ids, _, _, Client = _setup(n, seed=1)
    wf = FedSecureSecAggWorkflow(graph="complete", timeout=10)
    ctx, _ = _run(node_ids, _app(Client), wf,
                  drop=lambda nid, msg: nid in node_ids[:5] and _stage_of(msg) == "masked_input")
    assert "halted" in wf.last_round["groups"][0]
    assert all(np.all(a == 0) for a in current_arrays(ctx))  # the global model is unchanged


def test_malformed_duplicated_out_of_order_and_misrouted_replies_are_rejected_and_the_round_goes_on():
    n = 14
    node_ids, updates, examples, Client = _setup(n, seed=2)
    garbage, no_record, wrong_type, dup, replay, misroute, stale_session, wrong_stage = node_ids[:8]
    seen: dict[int, dict[str, Message]] = {}

    def tamper(nid, reply):
        stage = reply.content.config_records[R.RECORD_KEY][R.STAGE] if R.RECORD_KEY in reply.content.config_records \
            else None
        seen.setdefault(nid, {})[stage] = reply
        rec = reply.content.config_records.get(R.RECORD_KEY)
        if nid == garbage and stage == "share_keys":
            rec[R.PAYLOAD] = os.urandom(len(rec[R.PAYLOAD]))
        elif nid == no_record and stage == "advertise_keys":
            del reply.content.config_records[R.RECORD_KEY]
        elif nid == wrong_type and stage == "seed_reveal":
            rec[R.PAYLOAD] = "not bytes"
        elif nid == dup and stage == "masked_input":
            return [reply, reply]  # the second copy is refused, the first stands
        elif nid == replay and stage == "unmasking":
            old = seen[nid]["seed_reveal"]  # an old reply delivered again, out of order
            old.content.config_records[R.RECORD_KEY][R.STAGE] = "unmasking"  # even relabelled
            return [old]
        elif nid == misroute and stage == "masked_input":
            reply.metadata.__dict__["_src_node_id"] = 999  # a node that is not in the run
        elif nid == stale_session and stage == "share_keys":
            rec[R.SESSION] = os.urandom(16)
        elif nid == wrong_stage and stage == "advertise_keys":
            rec[R.STAGE] = "unmasking"
        return [reply]

    wf = FedSecureSecAggWorkflow(graph="complete", timeout=10)
    ctx, _ = _run(node_ids, _app(Client), wf, tamper=tamper)
    group = wf.last_round["groups"][0]
    reasons = {nid: why for nid, why in wf.rejections}
    assert "not accepted in stage" in reasons[replay] or "is not accepted" in reasons[replay]
    assert "no 'fedsecure.secagg' record" in reasons[no_record]
    assert "must be bytes" in reasons[wrong_type]
    assert "duplicate" in reasons[dup]
    assert "was not sent a message" in reasons[999]
    assert "another run or stage" in reasons[stale_session] and "another run or stage" in reasons[wrong_stage]
    assert garbage in reasons  # the protocol refused the corrupted ciphertext
    # Everyone whose masked input was accepted is in the sum; the sum is exact over them.
    out_before_masked = {garbage, no_record, wrong_type, stale_session, wrong_stage, misroute}
    included = [nid for nid in node_ids if nid not in out_before_masked]
    assert sorted(group["included"]) == sorted(included)
    expected, W = _expected(included, updates, examples)
    _check_mean(current_arrays(ctx), expected, W, group["quantization_error_bound"])


def test_the_client_mod_refuses_bad_server_messages_with_a_clear_error_and_keeps_its_state():
    node_ids, _, _, Client = _setup(4, seed=3)
    app = _app(Client)
    ctx = Context(run_id=1, node_id=node_ids[0], node_config={}, state=RecordDict(), run_config={})

    def send(rec: dict) -> Message:
        from flwr.common import FitIns, ndarrays_to_parameters
        from flwr.compat.common import recorddict_compat as compat

        content = compat.fitins_to_recorddict(FitIns(ndarrays_to_parameters([np.zeros(s) for s in SHAPES]), {}), True)
        content.config_records[R.RECORD_KEY] = ConfigRecord(rec)
        msg = Message(content, node_ids[0], MessageType.TRAIN, group_id="1")
        msg.metadata.__dict__["_message_id"] = "m"
        return app(msg, ctx)

    reply = send({R.STAGE: "share_keys", R.SESSION: os.urandom(16), R.PAYLOAD: b"x"})
    assert "not in" in reply.content.config_records[R.RECORD_KEY][R.ERROR]
    reply = send({R.STAGE: "share_keys", R.SESSION: os.urandom(16)})
    assert "no 'payload' field" in reply.content.config_records[R.RECORD_KEY][R.ERROR]
    reply = send({R.STAGE: R.FIRST_STAGE, R.SESSION: os.urandom(16), R.PAYLOAD: os.urandom(300), R.CLIENT_ID: 0,
                  R.CLIP: 8.0, R.MAX_WEIGHT: 1000.0})
    err = reply.content.config_records[R.RECORD_KEY][R.ERROR]
    assert "rejects a message" in err or "refuses" in err
    assert not reply.content.array_records or all(len(a) == 0 for a in reply.content.array_records.values())


def test_a_client_pinned_to_another_server_key_refuses_the_round():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    n = 6
    node_ids, _, _, Client = _setup(n, seed=4)
    other = Ed25519PrivateKey.generate().public_key()
    wf = FedSecureSecAggWorkflow(graph="complete", timeout=10, signing_key=Ed25519PrivateKey.generate())
    _run(node_ids, _app(Client, make_secagg_mod(ClientPolicy(), server_key=other)), wf)
    assert "halted" in wf.last_round["groups"][0]
    assert all("pinned" in why for _, why in wf.rejections) and len(wf.rejections) == n


def test_node_config_pins_the_server_key():
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    n = 6
    node_ids, updates, examples, Client = _setup(n, seed=5)
    key = Ed25519PrivateKey.generate()
    wf = FedSecureSecAggWorkflow(graph="complete", timeout=10, signing_key=key)
    hexkey = key.public_key().public_bytes_raw().hex()
    ctx, _ = _run(node_ids, _app(Client), wf, node_config={R.SERVER_KEY_NODE_CONFIG: hexkey})
    assert sorted(wf.last_round["groups"][0]["included"]) == sorted(node_ids)
    wf2 = FedSecureSecAggWorkflow(graph="complete", timeout=10)  # an unpinned (fresh) key: refused
    _run(node_ids, _app(Client), wf2, node_config={R.SERVER_KEY_NODE_CONFIG: hexkey})
    assert "halted" in wf2.last_round["groups"][0]


def test_groups_hand_securely_summed_group_means_to_a_robust_rule(caplog):
    n = 18
    node_ids, updates, examples, Client = _setup(n, seed=6)
    wf = FedSecureSecAggWorkflow(graph="complete", timeout=10, groups=3, robust_rule=CoordinateMedian())
    ctx, _ = _run(node_ids, _app(Client), wf)
    groups = wf.last_round["groups"]
    assert len(groups) == 3 and sum(len(g["included"]) for g in groups) == n
    means = []
    for g in groups:
        m, _ = _expected(g["included"], updates, examples)
        means.append(np.concatenate([a.ravel() for a in m]))
    med = np.median(np.stack(means), axis=0)
    out = np.concatenate([a.ravel() for a in current_arrays(ctx)])
    assert np.max(np.abs(out - med)) < 1e-4


def test_workflow_works_with_another_averaging_strategy():
    n = 8
    node_ids, updates, examples, Client = _setup(n, seed=7)
    grid = InProcessGrid(_app(Client), node_ids)
    strategy = FedMedian(fraction_fit=1.0, min_fit_clients=n, min_available_clients=n, fraction_evaluate=0.0)
    ctx = legacy_context(strategy, grid, [np.zeros(s, np.float32) for s in SHAPES])
    wf = FedSecureSecAggWorkflow(graph="complete", timeout=10)
    wf(grid, ctx)
    expected, W = _expected(node_ids, updates, examples)
    _check_mean(current_arrays(ctx), expected, W, wf.last_round["groups"][0]["quantization_error_bound"])
