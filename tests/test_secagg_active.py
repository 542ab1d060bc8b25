"""Active-security mode: a server that substitutes keys or lies about survivors is caught by the clients."""

import warnings

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedsecure.secagg import (
    ClientPolicy, FixedPointEncoding, MessageRejected, SecAggClient, SecAggServer, TooFewSurvivors, choose_params,
)
from fedsecure.secagg import messages as m


def _active_round(n=6):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = choose_params(n, dropout_rate=0.1, graph="complete", threat_model="active")
    enc = FixedPointEncoding.for_sum(n, 1.0)
    ident = {u: Ed25519PrivateKey.generate() for u in range(n)}
    pub = {u: k.public_key() for u, k in ident.items()}
    server = SecAggServer(range(n), 4, p, enc, active=True, identity_keys=pub, signing_key=Ed25519PrivateKey.generate())
    policy = ClientPolicy(threat_model="active", server_key=server.public_key)
    clients = {u: SecAggClient(u, np.full(4, 0.5), policy=policy, identity_key=ident[u], identity_keys=pub)
               for u in range(n)}
    return server, clients, p


def _step(server, clients, inbox, skip=()):
    for u, msg in inbox.items():
        if u in skip:
            continue
        for out in clients[u].receive(msg):
            server.receive(u, out)
    return server.advance()


def test_substituted_public_key_is_rejected_by_the_client():
    """A server that swaps a neighbour's advertised key for its own (signing the broadcast itself) is caught."""
    server, clients, _ = _active_round()
    inbox = _step(server, clients, {u: server.config_message for u in clients})  # -> seed commitments
    commits = m.SeedCommitments.parse(m.open_broadcast(inbox[0], server.public_key)[1])
    records = bytearray(commits.records)
    attacker = bytes(31) + b"\x09"  # the server's own X25519 key in place of client 1's encryption key
    R = m.KEY_RECORD_BYTES
    records[R : R + 32] = attacker
    forged = server._broadcast(m.SeedCommitments(0, commits.ids, bytes(records)), [0])[0]
    # Client 0 only learns who its neighbours are once the seed is revealed: walk it there on the forged view.
    out = clients[0].receive(forged)
    server.receive(0, out[0])
    inbox2 = _step(server, clients, {u: v for u, v in inbox.items() if u != 0})  # -> seed reveals
    with pytest.raises(MessageRejected, match="no valid identity signature"):
        clients[0].receive(inbox2[0])
    assert clients[0].stage == "reveals" and not hasattr(clients[0], "_share_keys")


def test_unsigned_advertisement_is_rejected_by_the_server():
    server, clients, _ = _active_round()
    impostor = SecAggClient(1, np.zeros(4), identity_key=Ed25519PrivateKey.generate(),
                            identity_keys={u: k for u, k in server._identity_keys.items()})
    out = impostor.receive(server.config_message)[0]
    with pytest.raises(MessageRejected, match="client 1: advertised keys are not signed"):
        server.receive(1, out)


def test_lying_about_survivors_is_caught_before_any_share_is_revealed():
    server, clients, p = _active_round()
    inbox = {u: server.config_message for u in clients}
    for _ in range(4):
        inbox = _step(server, clients, inbox)
    inbox = _step(server, clients, inbox)  # consistency signatures; inbox now holds unmask requests
    # The server tells client 0 that peer 1 dropped although 1's input arrived (and 0 signed a list with 1).
    req = m.UnmaskRequest.parse(m.open_sealed(inbox[0], server._keys[0])[1])
    lie = m.UnmaskRequest(req.survivors[req.survivors != 1], req.signatures)
    with pytest.raises(MessageRejected, match="disagrees with the survivor list"):
        clients[0].receive(server._out(0, lie))
    # Too few endorsements: strip the signatures.
    with pytest.raises((TooFewSurvivors, MessageRejected)):
        clients[0].receive(server._out(0, m.UnmaskRequest(req.survivors, req.signatures[: p.t - 1])))
    assert clients[0].revealed == {}
    clients[0].receive(inbox[0])
    assert set(clients[0].revealed.values()) == {"self_mask"}
