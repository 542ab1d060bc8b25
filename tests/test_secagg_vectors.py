"""The deterministic JSON test vectors of protocols/vectors/secagg_v3.json reproduce byte for byte."""

import json
from pathlib import Path

import pytest

from fedsecure.secagg.testing import transcript

VECTORS = Path(__file__).resolve().parents[1] / "protocols" / "vectors" / "secagg_v3.json"
CASES = json.loads(VECTORS.read_text())["vectors"]


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
    assert got["ring_sum"] == want["ring_sum"]
    assert got["sum"] == want["sum"]


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
    """v3 point-to-point trailer = nonce || ChaCha20-Poly1305(K_u).encrypt(nonce, "", header || body), and the
    broadcast trailer = Ed25519(server key, L || "broadcast" || header || body), both recomputed independently."""
    import numpy as np
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    from fedsecure.secagg import FixedPointEncoding, SecAggClient, SecAggServer, choose_params
    from fedsecure.secagg import messages as m

    p = choose_params(4, dropout_rate=0.0, graph="complete")
    server = SecAggServer(range(4), 3, p, FixedPointEncoding.for_sum(4, 1.0))
    client = SecAggClient(2, np.zeros(3))
    adv = client.receive(server.config_message)[0]
    assert adv[0] == m.VERSION == 3
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
    server.public_key.verify(r[-64:], b"fedsecure/secagg/v3/broadcast" + r[:-64])
