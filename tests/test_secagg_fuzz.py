"""Thousands of corrupted, forged, replayed, duplicated, truncated and out-of-stage messages.

Server and clients must reject each one with an error naming the sender and
the reason, keep everything they had accepted, and still finish the round
with the exact sum.
"""

import warnings

import numpy as np
import pytest

from fedsecure.secagg import (
    FixedPointEncoding, MessageRejected, SecAggClient, SecAggError, SecAggServer, choose_params, run_round,
)
from fedsecure.secagg import messages as m


def _setup(n=8, d=16):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = choose_params(n, dropout_rate=0.1, graph="complete", threat_model="active")  # t > k/2
    enc = FixedPointEncoding.for_sum(n, 1.0)
    vecs = {u: np.linspace(-1, 1, d) * (u + 1) / n for u in range(n)}
    return p, enc, vecs


def _variants(data: bytes, stride: int = 1) -> list[bytes]:
    """Systematic corruptions of one message (no randomness needed to be thorough)."""
    out = []
    for i in range(0, len(data), stride):
        for bit in (0, 7):
            b = bytearray(data)
            b[i] ^= 1 << bit
            out.append(bytes(b))
    out += [data[:cut] for cut in range(0, len(data), max(1, len(data) // 25))]
    out += [data + b"\x00", data + data[-40:], b"", bytes(len(data))]
    for mtype in m.MESSAGE_TYPES:
        b = bytearray(data)
        b[1] = mtype
        if bytes(b) != data:
            out.append(bytes(b))
    for version in (1, m.VERSION + 1):  # the previous wire version (HMAC tags) and an unknown one
        b = bytearray(data)
        b[0] = version
        out.append(bytes(b))
    return out


def test_server_rejects_every_corrupted_client_message_and_still_sums_exactly():
    p, enc, vecs = _setup()
    other_round = {}  # messages of a different round (replay across rounds)
    history = {}  # (client) -> earlier messages (replay across stages)
    seen = {}  # stage -> {client: data} (cross-client replays)
    delivered = {"bad": 0}

    def tamper(stage, u, data):
        bad = _variants(data, stride=3 if len(data) > 400 else 1)
        bad += history.get(u, [])  # out-of-stage replays of this client's earlier messages
        bad += [v for w, v in seen.get(stage, {}).items() if w != u]  # another client's message
        bad += other_round.get((stage, u), [])
        history.setdefault(u, []).append(data)
        seen.setdefault(stage, {})[u] = data
        delivered["bad"] += len(bad) + 1
        return bad + [data, data]  # the original, then a duplicate of it

    # Collect messages of an unrelated round to replay into this one.
    def grab(stage, u, data):
        other_round.setdefault((stage, u), []).append(data)
        return [data]

    run_round(vecs, p, enc, tamper=grab)
    r = run_round(vecs, p, enc, tamper=tamper)
    assert r.included == tuple(range(len(vecs)))
    assert np.abs(r.total - sum(vecs.values())).max() <= enc.max_error(len(vecs))
    assert len(r.rejected) == delivered["bad"]  # every corrupted one and every duplicate
    assert delivered["bad"] > 3000
    for sender, msg in r.rejected:
        assert msg.startswith(f"client {sender}: "), msg
    reasons = " ".join(msg for _, msg in r.rejected)
    for expected in ("authentication tag", "duplicate", "not accepted in stage", "truncated", "another round",
                     "unsupported version", "transport says"):
        assert expected in reasons, expected


def test_rejections_exclude_a_client_that_never_sends_a_valid_message_and_the_round_goes_on():
    p, enc, vecs = _setup(n=8)

    def tamper(stage, u, data):
        if u == 5 and stage == "masked_input":
            b = bytearray(data)
            b[m.HEADER.size] ^= 0xFF
            return [bytes(b)]  # only a forged vector ever arrives from client 5
        return [data]

    r = run_round(vecs, p, enc, tamper=tamper)
    assert 5 not in r.included and "authentication tag" in r.excluded[5]
    assert np.abs(r.total - sum(vecs[u] for u in r.included)).max() <= enc.max_error(8)


def test_clients_reject_every_corrupted_server_message():
    p, enc, vecs = _setup(n=6, d=8)
    n = len(vecs)
    server = SecAggServer(range(n), 8, p, enc)
    clients = {u: SecAggClient(u, vecs[u]) for u in range(n)}
    inbox = {u: server.config_message for u in range(n)}
    rejected = 0
    previous = {}
    while server.stage != "done":  # the exclusion stage opens only when needed
        stage = server.stage
        for u, msg in inbox.items():
            before = clients[u].stage
            bad = _variants(msg, stride=2 if len(msg) > 400 else 1) + previous.get(u, [])
            bad += [v for w, v in inbox.items() if w != u and v != msg][:2]  # another client's message
            for variant in bad:
                if stage == "advertise_keys":
                    # The config has no tag: a corrupted one may parse, but then it binds a different
                    # config hash and the server refuses the resulting key advertisement.
                    probe = SecAggClient(u, vecs[u])
                    try:
                        outs = probe.receive(variant)
                    except SecAggError:
                        rejected += 1
                        continue
                    if variant != msg:
                        with pytest.raises(MessageRejected, match=f"client {u}"):
                            server.receive(u, outs[0])
                        rejected += 1
                    continue
                with pytest.raises(SecAggError, match="server"):
                    clients[u].receive(variant)
                rejected += 1
                assert clients[u].stage == before  # nothing accepted was lost
            for out in clients[u].receive(msg):
                server.receive(u, out)
            previous.setdefault(u, []).append(msg)
        inbox = server.advance()
    res = server.result
    assert res.included == tuple(range(n))
    assert np.abs(enc.decode(res.ring_sum) - sum(vecs.values())).max() <= enc.max_error(n)
    assert rejected > 3000


def test_a_client_revealing_wrong_shares_cannot_change_the_sum():
    """A malicious client's forged (correctly authenticated) shares are outvoted by the public checks."""
    p, enc, vecs = _setup(n=8)
    n = len(vecs)
    server = SecAggServer(range(n), 16, p, enc)
    clients = {u: SecAggClient(u, vecs[u]) for u in range(n)}
    inbox = {u: server.config_message for u in range(n)}
    while server.stage != "done":  # the exclusion stage opens only when needed
        stage = server.stage
        for u, msg in inbox.items():
            for out in clients[u].receive(msg):
                if stage == "unmasking" and u == 2:
                    resp = m.UnmaskResponse.parse(m.open_sealed(out, clients[u]._key)[1])
                    forged = bytes((b + 1) % 256 if i % 36 == 0 else b for i, b in enumerate(resp.self_mask_shares))
                    bad = m.UnmaskResponse(resp.self_mask_ids, forged, resp.mask_key_ids, resp.mask_key_shares)
                    out = m.seal(m.Header(bad.TYPE, server.round_id, u, m.SERVER), bad.body(), clients[u]._key)
                server.receive(u, out)
        inbox = server.advance()
    res = server.result
    assert res.included == tuple(range(n))
    assert np.abs(enc.decode(res.ring_sum) - sum(vecs.values())).max() <= enc.max_error(n)


def test_too_many_wrong_shares_abort_instead_of_a_wrong_sum():
    from fedsecure.secagg import ReconstructionError, TooFewSurvivors

    p, enc, vecs = _setup(n=6)  # t = 3 of 5 neighbours
    n = len(vecs)
    server = SecAggServer(range(n), 16, p, enc)
    clients = {u: SecAggClient(u, vecs[u]) for u in range(n)}
    inbox = {u: server.config_message for u in range(n)}
    liars = {1, 2, 3}
    while server.stage != "done":  # the exclusion stage opens only when needed
        stage = server.stage
        for u, msg in inbox.items():
            for out in clients[u].receive(msg):
                if stage == "unmasking" and u in liars:
                    resp = m.UnmaskResponse.parse(m.open_sealed(out, clients[u]._key)[1])
                    forged = bytes((b + 1) % 256 if i % 36 == 0 else b for i, b in enumerate(resp.self_mask_shares))
                    bad = m.UnmaskResponse(resp.self_mask_ids, forged, resp.mask_key_ids, resp.mask_key_shares)
                    out = m.seal(m.Header(bad.TYPE, server.round_id, u, m.SERVER), bad.body(), clients[u]._key)
                server.receive(u, out)
        if stage == "unmasking":
            with pytest.raises((ReconstructionError, TooFewSurvivors), match="self-mask seed"):
                server.advance()
            assert server.result is None
            return
        inbox = server.advance()
