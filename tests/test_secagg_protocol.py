"""End-to-end protocol properties: correct sums under any dropout pattern, aborts, double masking."""

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsecure.secagg import (
    ClientPolicy, FixedPointEncoding, PolicyViolation, SecAggClient, SecAggServer, StageError, TooFewSurvivors,
    choose_params, run_round,
)
from fedsecure.secagg import messages as m
from fedsecure.secagg.params import evaluate

SLOW = settings(deadline=None, max_examples=25, suppress_health_check=[HealthCheck.too_slow])
STAGES = ("advertise_keys", "seed_reveal", "share_keys", "masked_input", "unmasking")
#: a client that accepts any (k, t): for properties that must hold whatever the threshold
PERMISSIVE = dict(min_colluders=0, privacy_target=1.0)


def _params(n, graph, k=None, t=None, threat_model="semi-honest"):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if k is None:
            return choose_params(n, dropout_rate=0.1, graph=graph, threat_model=threat_model)
        return evaluate(n, k, t, graph=graph, dropout_rate=0.1, threat_model=threat_model)


def _vectors(data, n, d, clip):
    from hypothesis.extra import numpy as hnp

    return {
        u: data.draw(hnp.arrays(np.float64, d, elements=st.floats(-clip, clip, allow_nan=False)))
        for u in range(n)
    }


def _must_succeed(graph, t, n, dropouts):
    """The protocol's liveness rule, written from the spec (not from the server's code)."""
    def alive(u, stage):
        return dropouts.get(u) is None or STAGES.index(dropouts[u]) > STAGES.index(stage)

    u1 = {u for u in range(n) if alive(u, "advertise_keys")}
    if len(u1) - 1 < t or len(u1) < 3:  # each needs t neighbours; a client joins no view below 3
        return False
    view = {u for u in u1 if alive(u, "seed_reveal")}
    if len(view) - 1 < t or len(view) < 3:  # the second graph draw, over those who revealed
        return False
    n1 = {u: set(graph[u].tolist()) for u in view}  # the graph is drawn over the view
    got_nbrs = {u for u in view if len(n1[u]) >= t}
    u2 = {u for u in got_nbrs if alive(u, "share_keys")}
    if len(u2) < t:
        return False
    f = {v: n1[v] & u2 for v in u2}
    u3 = {v for v in u2 if alive(v, "masked_input") and len(f[v]) >= t}
    if len(u3) < t:
        return False
    # Unusable dealers (section 9 step 5; nobody complains here): needed by the unmasking (in U3, or dropped
    # with a neighbour in U3) but with fewer than t neighbours in U3 to hold their shares. They are excluded
    # through their neighbours' pairwise seeds; the sum released must still cover t inputs.
    x = {d for d in u2 if (d in u3 or f[d] & u3) and len(f[d] & u3) < t}
    if len(u3 - x) < t:
        return False
    s = {u: f[u] & u3 for u in u3}
    u5 = {u for u in u3 if alive(u, "unmasking") and len(s[u]) >= t}
    if any(len(s[u] & u5) < t for u in u3 - x):  # t self-mask shares of each input in the sum
        return False
    if not all(len(f[v] & u5) >= t for v in u2 - u3 - x if f[v] & u3):  # t masking-key shares of a dropout
        return False
    return all(f[d] & (u3 - x) <= u5 for d in x)  # each neighbour in the sum reveals its seed with d


def _drive(vecs, p, enc, dropouts):
    """A minimal transport (the simulator's loop) that keeps the server, whose graph the oracle needs."""
    n = len(vecs)
    server = SecAggServer(range(n), len(vecs[0]), p, enc, signing_key=Ed25519PrivateKey.generate())
    policy = ClientPolicy(server_key=server.public_key, **PERMISSIVE)
    clients = {u: SecAggClient(u, vecs[u], policy=policy) for u in range(n)}
    inbox = {u: server.config_message for u in range(n)}
    try:
        while server.stage != "done":
            i = server.stages.index(server.stage)
            for u, msg in inbox.items():
                if dropouts.get(u) is not None and server.stages.index(dropouts[u]) <= i:
                    continue
                try:
                    outs = clients[u].receive(msg)
                except (TooFewSurvivors, PolicyViolation):
                    continue  # an honest client refusing to go on is a dropout
                for out in outs:
                    server.receive(u, out)
            inbox = server.advance()
    except TooFewSurvivors as e:
        return server, e
    return server, None


@SLOW
@given(
    n=st.integers(4, 10),
    graph=st.sampled_from(["complete", "sparse"]),
    d=st.integers(1, 12),
    data=st.data(),
)
def test_sum_is_exact_for_survivors_or_round_aborts(n, graph, d, data):
    """Whatever drops where: the exact survivors' sum when the spec says the round can finish, else an abort."""
    # Any threshold: correctness must not depend on the threat model's rule for t.
    if graph == "sparse" and n > 4:
        k = data.draw(st.sampled_from(list(range(2, n - 1, 2))))
        p = _params(n, graph, k, data.draw(st.integers(1, k)))
    else:
        p = _params(n, "complete", n - 1, data.draw(st.integers(1, n - 1)))
    clip = data.draw(st.sampled_from([0.5, 1.0, 4.0]))
    enc = FixedPointEncoding.for_sum(n, clip)
    vecs = _vectors(data, n, d, clip)
    dropouts = data.draw(st.dictionaries(st.integers(0, n - 1), st.sampled_from(STAGES), max_size=n))
    server, err = _drive(vecs, p, enc, dropouts)
    should = _must_succeed(server.graph, p.t, n, dropouts)
    if err is not None:
        assert not should, f"aborted although the spec allows finishing: {err}"
        assert "t=" in str(err)
        return
    assert should
    res = server.result
    sent = {u for u in range(n) if dropouts.get(u) not in ("advertise_keys", "share_keys", "masked_input")}
    assert set(res.included) <= sent
    true = sum((vecs[u] for u in res.included), np.zeros(d))
    assert np.all(np.abs(enc.decode(res.ring_sum) - true) <= enc.max_error(len(res.included)) + 1e-9)


def test_no_dropout_complete_and_sparse_at_moderate_n():
    for graph in ("complete", "sparse"):
        n, d = 40, 300
        p = _params(n, graph)
        enc = FixedPointEncoding.for_sum(n, 1.0)
        vecs = {u: np.sin(np.arange(d) * (u + 1)) for u in range(n)}
        r = run_round(vecs, p, enc)
        assert r.included == tuple(range(n))
        assert np.abs(r.total - sum(vecs.values())).max() <= enc.max_error(n)


def test_active_mode_with_dropouts_at_every_stage():
    n, d = 12, 40
    p = _params(n, "complete", threat_model="active")
    enc = FixedPointEncoding.for_sum(n, 1.0)
    vecs = {u: np.full(d, (u - 6) / 6) for u in range(n)}
    drops = {0: "share_keys", 1: "masked_input", 2: "consistency_check", 3: "unmasking"}
    r = run_round(vecs, p, enc, dropouts=drops, active=True)
    assert r.included == tuple(u for u in range(n) if u not in (0, 1))
    assert np.abs(r.total - sum(vecs[u] for u in r.included)).max() <= enc.max_error(n)


def test_too_few_survivors_aborts_with_a_clear_error():
    n = 8
    p = _params(n, "complete", threat_model="active")  # t = 5 (2t > k + 1)
    enc = FixedPointEncoding.for_sum(n, 1.0)
    vecs = {u: np.ones(5) * 0.1 for u in range(n)}
    with pytest.raises(TooFewSurvivors, match=r"threshold is t=5"):
        run_round(vecs, p, enc, dropouts={u: "masked_input" for u in range(5)})
    # Enough sent inputs, but too few stay to unmask: the shares needed are missing -> abort, no sum.
    with pytest.raises(TooFewSurvivors, match="shares of the"):
        run_round(vecs, p, enc, dropouts={u: "unmasking" for u in range(5)})


def test_workers_give_the_same_sum():
    n, d = 16, 64
    p = _params(n, "sparse", 6, 4)
    enc = FixedPointEncoding.for_sum(n, 1.0)
    vecs = {u: np.cos(np.arange(d) + u) for u in range(n)}
    drops = {3: "masked_input", 9: "unmasking"}
    a = run_round(vecs, p, enc, dropouts=drops, workers=2, policy=ClientPolicy(**PERMISSIVE))
    assert a.included == tuple(u for u in range(n) if u != 3)
    assert np.abs(a.total - sum(vecs[u] for u in a.included)).max() <= enc.max_error(n)


def _round_to_unmask(n=6, active=False):
    """Run the real protocol up to the unmask request; return (server, clients)."""
    p = _params(n, "complete")
    enc = FixedPointEncoding.for_sum(n, 1.0)
    server = SecAggServer(range(n), 3, p, enc, signing_key=Ed25519PrivateKey.generate())
    clients = {u: SecAggClient(u, np.zeros(3), policy=ClientPolicy(server_key=server.public_key)) for u in range(n)}
    inbox = {u: server.config_message for u in range(n)}
    for _ in range(4):
        for u, msg in inbox.items():
            for out in clients[u].receive(msg):
                server.receive(u, out)
        inbox = server.advance()
    return server, clients, p


@settings(deadline=None, max_examples=40)
@given(data=st.data())
def test_double_masking_whatever_the_server_asks(data):
    """An honest client answers one unmask request, and never reveals both shares of any peer."""
    server, clients, p = _round_to_unmask()
    u = data.draw(st.integers(0, 5))
    peers = [v for v in range(6) if v != u]
    c = clients[u]
    asked_any = False
    for _ in range(data.draw(st.integers(1, 4))):
        surv = np.array(sorted(data.draw(st.sets(st.sampled_from(peers)))), dtype=np.int64)
        req = server._out(u, m.UnmaskRequest(surv))
        try:
            out = c.receive(req)
        except TooFewSurvivors:
            assert surv.size < p.t
            continue
        except StageError:
            assert asked_any  # only a second request is out of stage
            continue
        asked_any = True
        resp = m.UnmaskResponse.parse(out[0][m.HEADER.size : -m.TAG_BYTES])
        assert set(resp.self_mask_ids.tolist()) == set(surv.tolist())
        assert set(resp.mask_key_ids.tolist()) == set(peers) - set(surv.tolist())
    values = list(c.revealed.values())
    assert len(values) == len(c.revealed)  # one kind per peer, by construction of the dict...
    # ...and the responses themselves never named a peer twice:
    assert not (set(k for k, v in c.revealed.items() if v == "self_mask") & set(k for k, v in c.revealed.items() if v == "mask_key"))


def test_input_given_after_the_keys_gives_the_same_sum_and_is_checked():
    """``SecAggClient(u, None)`` + ``set_input`` before the forwarded shares (how the Flower mod trains late): the
    sum is the one of the inputs; a wrong length, a second input, an input in the wrong stage, and forwarded
    shares before any input are refused by name and change nothing."""
    from fedsecure.secagg import ConfigurationError

    n, d = 7, 5
    rng = np.random.default_rng(11)
    vecs = {u: rng.uniform(-1, 1, d) for u in range(n)}
    p = _params(n, "sparse", k=4, t=2)
    enc = FixedPointEncoding.for_sum(n, 1.0)
    server = SecAggServer(range(n), d, p, enc, signing_key=Ed25519PrivateKey.generate())
    policy = ClientPolicy(server_key=server.public_key, **PERMISSIVE)
    clients = {u: SecAggClient(u, None, policy=policy) for u in range(n)}
    with pytest.raises(StageError, match="between the configuration and the forwarded shares"):
        clients[0].set_input(vecs[0])  # no configuration yet: the length is not known
    inbox = {u: server.config_message for u in range(n)}
    while server.stage != "done":
        if server.stage == "masked_input":
            u = 0
            with pytest.raises(StageError, match="no input yet"):
                clients[u].receive(inbox[u])
            assert clients[u].stage == "shares"
            with pytest.raises(ConfigurationError, match="length"):
                clients[u].set_input(np.zeros(d + 1))
            for v in range(n):
                clients[v].set_input(vecs[v])
            with pytest.raises(ConfigurationError, match="already holds"):
                clients[u].set_input(vecs[u])
        for u, msg in inbox.items():
            for out in clients[u].receive(msg):
                server.receive(u, out)
        inbox = server.advance()
    with pytest.raises(StageError):
        clients[1].set_input(vecs[1])  # after the masked input: never again this round
    total = enc.decode(server.result.ring_sum)
    assert np.all(np.abs(total - sum(vecs.values())) <= enc.max_error(n) + 1e-12)


def test_a_round_whose_inputs_cannot_be_unmasked_aborts_instead_of_releasing_a_smaller_sum():
    """Complete graph, t = 3, exactly t inputs arrive: each has only t - 1 neighbours in the sum to hold its
    shares, so every input is unusable. The round must abort by name, not 'finish' with an empty sum."""
    n, d = 6, 4
    p = _params(n, "complete", n - 1, 3)
    enc = FixedPointEncoding.for_sum(n, 1.0)
    vecs = {u: np.full(d, 0.25) for u in range(n)}
    drops = {u: "masked_input" for u in range(3)}
    server, err = _drive(vecs, p, enc, drops)
    assert isinstance(err, TooFewSurvivors) and "can be unmasked" in str(err) and "t=3" in str(err)
    assert server.result is None
    # One more input in the sum: each has t neighbours there, nobody is unusable, the sum is exact.
    server, err = _drive(vecs, p, enc, {u: "masked_input" for u in range(2)})
    assert err is None and server.result.included == (2, 3, 4, 5) and not server.unusable
    assert np.allclose(enc.decode(server.result.ring_sum), 4 * vecs[0], atol=enc.max_error(4))
