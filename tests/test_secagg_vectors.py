"""The deterministic JSON test vectors of protocols/vectors/secagg_v4.json reproduce byte for byte."""

import json
from pathlib import Path

import pytest

from fedsecure.secagg.testing import refusal, transcript

VECTORS = Path(__file__).resolve().parents[1] / "protocols" / "vectors" / "secagg_v4.json"
DATA = json.loads(VECTORS.read_text())
CASES = DATA["vectors"]
REFUSALS = DATA["refusals"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector_reproduces_every_message_and_the_sum(case):
    args = {k: v for k, v in case["input"].items() if k != "name"}
    got = transcript(**args)
    want = case["expected"]
    assert got["config_message"] == want["config_message"]
    for g, w in zip(got["stages"], want["stages"], strict=True):
        assert g["stage"] == w["stage"]
        assert g["server_to_clients"] == w["server_to_clients"], g["stage"]
        assert g["clients_to_server"] == w["clients_to_server"], g["stage"]
    assert got["included"] == want["included"]
    assert got["excluded"] == want["excluded"]
    assert got["ring_sum"] == want["ring_sum"]
    assert got["sum"] == want["sum"]
    assert got["derived"] == want["derived"]


def test_vectors_cover_what_the_spec_promises():
    """Section 11 of protocols/secagg.md lists what the vector set pins; keep it true."""
    by_name = {c["name"]: c for c in CASES}
    inputs = [c["input"] for c in CASES]
    assert any(i["bits"] == 64 and i["t"] >= 3 for i in inputs)
    assert any(i["bits"] % 8 and (len(i["vectors"]["0"]) * i["bits"]) % 8 for i in inputs)
    active = by_name["secaggplus-sparse-active-dropouts"]
    assert set(active["input"]["dropouts"].values()) >= {"seed_reveal", "consistency_check", "unmasking"}
    assert [s["stage"] for s in active["expected"]["stages"]].count("seed_reveal") == 2
    assert active["expected"]["derived"]["graph_attempt"] == 1
    for c in CASES:
        d = c["expected"]["derived"]
        if c["input"]["graph"] == "sparse":  # a genuinely non-complete graph
            assert all(len(nb) == c["input"]["k"] < len(d["graph_view"]) - 1 for nb in d["neighbours"].values())
    for c in CASES:  # the only silent clients are the scheduled dropouts: no vector hides a refusal
        order = [s["stage"] for s in c["expected"]["stages"]]
        for i, s in enumerate(c["expected"]["stages"]):
            silent = set(s["server_to_clients"]) - set(s["clients_to_server"])
            dropped = {u for u, st in c["input"]["dropouts"].items() if order.index(st) <= i}
            assert silent == dropped & set(s["server_to_clients"]), (c["name"], s["stage"])
    excl = by_name["secagg-complete-active-exclusion"]  # the exclusion stage, both kinds of cheating
    assert [s["stage"] for s in excl["expected"]["stages"]][-1] == "exclusion"
    assert set(excl["input"]["cheaters"].values()) == {"self_mask", "mask_key"}
    assert set(excl["expected"]["excluded"]) == set(excl["input"]["cheaters"])
    assert all("verified proof" in excl["expected"]["excluded"][u] for u in excl["input"]["cheaters"])
    for name in ("secagg-complete-semi-honest-unusable-dealers", "secaggplus-sparse-active-unusable-dealer"):
        un = by_name[name]  # dealers whose shares nobody can use: excluded without proof, both modes
        assert [s["stage"] for s in un["expected"]["stages"]][-1] == "exclusion"
        assert set(un["expected"]["excluded"]) == {str(u) for u in un["input"]["garbled"]} and "cheaters" not in un["input"]
        assert all("complaints from clients" in un["expected"]["excluded"][str(u)] for u in un["input"]["garbled"])
    assert not by_name["secagg-complete-semi-honest-unusable-dealers"]["input"]["active"]
    assert set(by_name["secagg-complete-semi-honest-unusable-dealers"]["input"]["dropouts"]) & {"1", "3"} == {"3"}
    ties = by_name["encoding-ties-and-clip"]
    scale = ties["expected"]["scale"]
    xs = [x for v in ties["input"]["vectors"].values() for x in v]
    assert any((x * scale) % 1 == 0.5 for x in xs) and 1.0 in xs and -1.0 in xs


@pytest.mark.parametrize("case", REFUSALS, ids=[c["name"] for c in REFUSALS])
def test_v3_messages_are_refused_with_the_recorded_reason(case):
    got = refusal(case["input"]["seed"], case["input"]["receiver"])
    assert got == case["expected"]
    assert bytes.fromhex(case["expected"]["message"])[0] == 3
    assert "unsupported version 3 (this implementation speaks version 4)" in case["expected"]["reason"]


def test_vectors_sum_what_they_claim():
    for case in CASES:
        inp, exp = case["input"], case["expected"]
        for j, total in enumerate(exp["sum"]):
            true = sum(inp["vectors"][str(u)][j] for u in exp["included"])
            assert abs(total - true) <= len(exp["included"]) / (2 * exp["scale"])


def test_default_randomness_is_not_deterministic():
    """Without the explicit test-only injection, two runs share no key material."""
    import numpy as np

    from fedsecure.secagg import FixedPointEncoding, SecAggClient, SecAggServer, choose_params

    p = choose_params(4, dropout_rate=0.0, graph="complete")
    enc = FixedPointEncoding.for_sum(4, 1.0)
    a, b = SecAggServer(range(4), 2, p, enc), SecAggServer(range(4), 2, p, enc)
    assert a.config_message != b.config_message
    c1 = SecAggClient(0, np.zeros(2)).receive(a.config_message)[0]
    c2 = SecAggClient(0, np.zeros(2)).receive(a.config_message)[0]
    assert c1[26:90] != c2[26:90]  # public keys differ


def test_message_trailer_is_the_rfc8439_aead_tag_of_header_and_body_as_specified():
    """v4 point-to-point trailer = nonce || ChaCha20-Poly1305(K_u).encrypt(nonce, "", header || body), and the
    broadcast trailer = Ed25519(server key, L || "broadcast" || header || body), both recomputed independently."""
    import numpy as np
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from fedsecure.secagg import FixedPointEncoding, SecAggClient, SecAggServer, choose_params
    from fedsecure.secagg import messages as m

    p = choose_params(4, dropout_rate=0.0, graph="complete")
    server = SecAggServer(range(4), 3, p, FixedPointEncoding.for_sum(4, 1.0))
    client = SecAggClient(2, np.zeros(3))
    adv = client.receive(server.config_message)[0]
    assert adv[0] == m.VERSION == 4
    body_end = len(adv) - m.TAG_BYTES
    nonce, tag = adv[body_end : body_end + 12], adv[body_end + 12 :]
    assert len(tag) == 16
    assert ChaCha20Poly1305(client._key).encrypt(nonce, b"", adv[:body_end]) == tag
    server.receive(2, adv)  # and the server accepts exactly that
    for u in (0, 1, 3):
        server.receive(u, SecAggClient(u, np.zeros(3)).receive(server.config_message)[0])
    replies = server.advance()
    assert 2 in replies
    # the next server message is a broadcast: the same bytes for everyone, signed by the server's key
    r = replies[2]
    assert all(v is r for v in replies.values())
    server.public_key.verify(r[-64:], b"fedsecure/secagg/v4/broadcast" + r[:-64])
