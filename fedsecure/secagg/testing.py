"""TEST-VECTOR SUPPORT ONLY: reproducible transcripts of whole rounds.

Nothing here is used by the protocol. The state machines draw every secret
from ``os.urandom`` unless a caller passes the explicitly named
``_unsafe_randbytes_for_test_vectors`` argument; this module is the one
caller that does, to produce the deterministic JSON vectors in
``protocols/vectors/`` that another implementation can check itself against.
A deployment that used these streams would have no secrets at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from . import keys, messages as m
from .client import SecAggClient
from .encoding import FixedPointEncoding
from .errors import PolicyViolation, TooFewSurvivors
from .policy import ClientPolicy
from .params import evaluate
from .prg import expand
from .server import SecAggServer


def unsafe_deterministic_randbytes(label: bytes) -> Callable[[int], bytes]:
    """A reproducible byte stream: the AES-256-CTR keystream under key SHA-256(label). TESTS ONLY."""
    enc = Cipher(algorithms.AES(hashlib.sha256(label).digest()), modes.CTR(bytes(16))).encryptor()
    return lambda n: enc.update(bytes(n))


def transcript(
    *,
    seed: str,
    vectors: Mapping[int, list[float]],
    graph: str,
    k: int,
    t: int,
    bits: int,
    clip: float,
    active: bool = False,
    dropouts: Mapping[int, str] | None = None,
    cheaters: Mapping[int, str] | None = None,
    garbled: list[int] | None = None,
) -> dict[str, Any]:
    """Run one round with deterministic randomness; return every message (hex) and the sum.

    ``cheaters[u]`` (active rounds) makes client ``u`` deal shares inconsistent with what it advertised: right
    after its AdvertiseKeys it draws 32 more bytes from its stream and uses them as its self-mask seed
    (``"self_mask"``) or as its masking private key (``"mask_key"``) from then on. Each client in ``garbled`` sends
    share ciphertexts nobody can decrypt: the last byte of every ciphertext in its ShareKeys is XORed with 1 and
    the message is sealed again with the same nonce (its stream is consumed as an honest client's)."""
    vectors = {int(u): v for u, v in vectors.items()}
    ids = sorted(vectors)
    n, d = len(ids), len(next(iter(vectors.values())))
    dropouts = {int(u): s for u, s in (dropouts or {}).items()}
    cheaters = {int(u): s for u, s in (cheaters or {}).items()}
    garbled = {int(u) for u in (garbled or [])}
    params = evaluate(n, k, t, graph=graph, dropout_rate=0.0, threat_model="active" if active else "semi-honest")
    enc = FixedPointEncoding.for_sum(n, clip, bits=bits)
    identity = pub = None
    if active:
        identity = {u: Ed25519PrivateKey.from_private_bytes(
            unsafe_deterministic_randbytes(f"{seed}/identity/{u}".encode())(32)) for u in ids}
        pub = {u: key.public_key() for u, key in identity.items()}
    signing = Ed25519PrivateKey.from_private_bytes(unsafe_deterministic_randbytes(f"{seed}/server-signing".encode())(32))
    server = SecAggServer(ids, d, params, enc, active=active, identity_keys=pub, signing_key=signing,
                          _unsafe_randbytes_for_test_vectors=unsafe_deterministic_randbytes(f"{seed}/server".encode()))
    policy = ClientPolicy(threat_model="active" if active else "semi-honest", dropout_rate=0.0,
                          server_key=server.public_key)
    clients = {
        u: SecAggClient(u, np.array(vectors[u], dtype=np.float64), policy=policy,
                        identity_key=identity[u] if active else None,
                        identity_keys=pub,
                        _unsafe_randbytes_for_test_vectors=unsafe_deterministic_randbytes(f"{seed}/client/{u}".encode()))
        for u in ids
    }
    stages: list[dict[str, Any]] = []
    inbox = {u: server.config_message for u in ids}
    while server.stage != "done":
        stage = server.stage
        i = server.stages.index(stage)
        to_clients = {str(u): m.hex() for u, m in sorted(inbox.items())}
        to_server = {}
        for u, msg in sorted(inbox.items()):
            if u in dropouts and server.stages.index(dropouts[u]) <= i:
                continue
            try:
                outs = clients[u].receive(msg)
            except (TooFewSurvivors, PolicyViolation):
                continue
            if stage == "advertise_keys" and u in cheaters:
                c = clients[u]
                if cheaters[u] == "self_mask":
                    c._self_seed = c._rand(32)
                else:
                    c._mask_sk = X25519PrivateKey.from_private_bytes(c._rand(32))
            if stage == "share_keys" and u in garbled:
                outs = [_garble(out, clients[u]._key) for out in outs]
            for out in outs:
                to_server[str(u)] = out.hex()
                server.receive(u, out)
        stages.append({"stage": stage, "server_to_clients": to_clients, "clients_to_server": to_server})
        inbox = server.advance()
    res = server.result
    return {
        "config_message": server.config_message.hex(),
        "stages": stages,
        "included": list(res.included),
        "excluded": {str(u): why for u, why in sorted(res.excluded.items())},
        "ring_sum": [int(v) for v in res.ring_sum],
        "sum": [float(v) for v in enc.decode(res.ring_sum)],
        "scale": enc.scale,
        "derived": _derived(server, clients, enc, vectors, cheaters),
    }


def _garble(data: bytes, key: bytes) -> bytes:
    """A ShareKeys message whose every share ciphertext has its last byte XORed with 1, resealed with the same
    nonce (a dealer whose shares nobody can decrypt)."""
    header, body = m.open_sealed(data, key)
    msg = m.ShareKeys.parse(bytes(body))
    cts = bytearray(msg.ciphertexts)
    for j in range(msg.ids.size):
        cts[(j + 1) * m.SHARE_CIPHERTEXT_BYTES - 1] ^= 1
    nonce = data[-m.TAG_BYTES : -m.MAC_BYTES]
    return m.seal(header, m.ShareKeys(msg.ids, bytes(cts)).body(), key, nonce)


def _derived(server: SecAggServer, clients: Mapping[int, SecAggClient], enc: FixedPointEncoding,
             vectors: Mapping[int, list[float]], cheaters: Mapping[int, str]) -> dict[str, Any]:
    """Intermediate values of a transcript, for implementers to debug against (protocols/secagg.md, section 11).

    Read from the finished state machines (test support only: it touches their private state).
    """
    cfg_hash = keys.config_hash(server.config_message)
    view = [int(u) for u in server._view.tolist()]
    reveals = b"".join(server._reveals[u] for u in view)
    adv = server._adv
    edges = sorted((u, int(v)) for u, nb in server.graph.items() for v in nb.tolist() if u < int(v))
    seeds = {}
    for u, v in edges:  # from the side whose masking key is the advertised one
        a, b = (v, u) if cheaters.get(u) == "mask_key" else (u, v)
        shared = clients[a]._mask_sk.exchange(X25519PublicKey.from_public_bytes(adv[b].mask_pk))
        seeds[f"{u}-{v}"] = keys.pair_key(shared, server.round_id, u, v, keys.MASK).hex()
    head = min(4, server.config.vector_length)
    return {
        "config_hash": cfg_hash.hex(),
        "client_server_keys": {str(u): clients[u]._key.hex() for u in sorted(adv)},
        "graph_attempt": server.graph_attempt,
        "graph_view": view,
        "graph_seed": keys.graph_seed(cfg_hash, server.graph_attempt, server._view, reveals).hex(),
        "neighbours": {str(u): [int(v) for v in server.graph[u].tolist()] for u in view},
        "pairwise_mask_seeds": seeds,
        "pairwise_mask_words_head": {e: [int(w) for w in expand(bytes.fromhex(s), head, enc.bits)]
                                     for e, s in seeds.items()},
        "self_mask_seeds": {str(u): clients[u]._self_seed.hex() for u in sorted(adv)},
        "encoded": {str(u): [int(w) for w in enc.encode(np.array(vectors[u], dtype=np.float64))] for u in sorted(adv)},
        "excluded": sorted(int(u) for u in server.excluded),
    }


VECTOR_CASES = [
    {"name": "secagg-complete-semi-honest-with-dropout", "seed": "fedsecure-secagg-v4-vector-1",
     "vectors": {"0": [0.5, -0.25, 1.0, 0.0], "1": [-1.0, 0.75, 0.125, 0.5], "2": [0.3, 0.3, -0.3, 0.9],
                 "3": [0.0, -1.0, 1.0, -0.5], "4": [0.2, 0.4, 0.6, 0.8]},
     "graph": "complete", "k": 4, "t": 3, "bits": 24, "clip": 1.0, "active": False, "dropouts": {"3": "masked_input"}},
    {"name": "secaggplus-sparse-active", "seed": "fedsecure-secagg-v4-vector-2",
     "vectors": {str(u): [u / 10, -u / 20, 0.5] for u in range(6)},
     "graph": "sparse", "k": 2, "t": 2, "bits": 32, "clip": 1.0, "active": True, "dropouts": {}},
    # t >= 3 in a 64-bit ring (u64 mask words), on a non-complete Harary graph over non-contiguous ids, with a
    # dropout at masked_input (its masking key is rebuilt from 64-bit-ring shares).
    {"name": "secaggplus-sparse-64bit-t3-dropout", "seed": "fedsecure-secagg-v4-vector-3",
     "vectors": {str(u): [u / 32, -u / 64, 1.5 - u / 16] for u in (2, 5, 7, 11, 13, 17, 19, 23, 29, 31)},
     "graph": "sparse", "k": 4, "t": 3, "bits": 64, "clip": 2.0, "active": False, "dropouts": {"19": "masked_input"}},
    # bits = 13, d = 5: 65 bits packed into 9 bytes, 7 zero padding bits; a dropout at unmasking (still summed).
    {"name": "secagg-complete-13bit-padding", "seed": "fedsecure-secagg-v4-vector-4",
     "vectors": {"0": [-1.0, 0.5, -0.25, 0.75, -0.5], "1": [0.125, -0.875, 1.0, -1.0, 0.0],
                 "2": [0.3, -0.3, 0.6, -0.6, 0.9], "3": [-0.001, 0.001, -0.999, 0.999, -0.5]},
     "graph": "complete", "k": 3, "t": 2, "bits": 13, "clip": 1.0, "active": False, "dropouts": {"2": "unmasking"}},
    # Rounding at ties (scale = 8192 here, x * scale = m + 1/2 exactly rounds to the even m or m + 1) and
    # values at exactly +clip and -clip (accepted: the clip check is |x| <= clip).
    {"name": "encoding-ties-and-clip", "seed": "fedsecure-secagg-v4-vector-5",
     "vectors": {"0": [1.0, -1.0, 0.5 / 8192, 1.5 / 8192, 2.5 / 8192, -0.5 / 8192, -1.5 / 8192, -2.5 / 8192],
                 "1": [-1.0, 1.0, 3.5 / 8192, -3.5 / 8192, 4.5 / 8192, -4.5 / 8192, 8191.5 / 8192, -8191.5 / 8192],
                 "2": [0.0, 1.0, -1.0, 0.5, -0.5, 1.0 / 8192, -1.0 / 8192, 100.5 / 8192]},
     "graph": "complete", "k": 2, "t": 2, "bits": 16, "clip": 1.0, "active": False, "dropouts": {}},
    # Active SecAgg+ with dropouts at every stage after advertise_keys: 3 is silent at seed_reveal (a second
    # graph draw over the other 11), 6 at masked_input (masking key rebuilt), 8 at consistency_check (in the
    # sum, not asked to unmask), 10 at unmasking (in the sum).
    {"name": "secaggplus-sparse-active-dropouts", "seed": "fedsecure-secagg-v4-vector-6",
     "vectors": {str(u): [(u - 6) / 8, (u % 3) / 4, -u / 16] for u in range(12)},
     "graph": "sparse", "k": 8, "t": 5, "bits": 32, "clip": 1.0, "active": True,
     "dropouts": {"3": "seed_reveal", "6": "masked_input", "8": "consistency_check", "10": "unmasking"}},
    # Two cheating dealers in an active round, excluded by verified proofs at the exclusion stage: 2 deals shares
    # of a self-mask seed other than its commitment and survives (its masked input comes back out), 4 deals
    # shares of a masking key other than its advertised one and drops at masked_input.
    {"name": "secagg-complete-active-exclusion", "seed": "fedsecure-secagg-v4-vector-7",
     "vectors": {str(u): [(u + 1) / 8, -u / 16, 0.25] for u in range(6)},
     "graph": "complete", "k": 5, "t": 4, "bits": 32, "clip": 1.0, "active": True,
     "dropouts": {"4": "masked_input"}, "cheaters": {"2": "self_mask", "4": "mask_key"}},
    # Dealers whose shares nobody can use (every ciphertext garbled), excluded without proof through their
    # neighbours' pairwise seeds, in a semi-honest round: 1 survives (its masked input comes back out), 3 drops
    # at masked_input (its masking key is never requested); complaints, withheld lists, the exclusion stage.
    {"name": "secagg-complete-semi-honest-unusable-dealers", "seed": "fedsecure-secagg-v4-vector-8",
     "vectors": {str(u): [(u - 2) / 8, u / 16, -0.5] for u in range(6)},
     "graph": "complete", "k": 5, "t": 3, "bits": 32, "clip": 1.0, "active": False,
     "dropouts": {"3": "masked_input"}, "garbled": [1, 3]},
    # The same in an active SecAgg+ round: 5 garbles its ciphertexts and survives; it is excluded beside nothing
    # else, the others' sum is exact.
    {"name": "secaggplus-sparse-active-unusable-dealer", "seed": "fedsecure-secagg-v4-vector-9",
     "vectors": {str(u): [u / 10, -u / 20, 0.5] for u in range(8)},
     "graph": "sparse", "k": 4, "t": 3, "bits": 32, "clip": 1.0, "active": True, "dropouts": {}, "garbled": [5]},
]


#: Messages of the previous wire version that a v4 party must refuse, naming the reason (spec section 11.3).
REFUSAL_CASES = [
    {"name": "v3-round-config-refused-by-v4-client", "seed": "fedsecure-secagg-v4-refusal-1", "receiver": "client"},
    {"name": "v3-advertise-keys-refused-by-v4-server", "seed": "fedsecure-secagg-v4-refusal-2", "receiver": "server"},
]

_V3_LABEL = b"fedsecure/secagg/v3/"


def v3_messages(seed: str, roster: list[int], d: int) -> tuple[bytes, bytes]:
    """A wire-v3 RoundConfig and client ``roster[0]``'s AdvertiseKeys answer, built from the v3 spec alone.

    v3 (protocols/secagg.md before v4) has the same RoundConfig and AdvertiseKeys bodies as v4 but header
    version 3 and labels ``fedsecure/secagg/v3/`` (its shares carry no dealer signature, which is what v4 adds).
    """
    import struct

    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    srand = unsafe_deterministic_randbytes(f"{seed}/v3-server".encode())
    round_id, server_sk = srand(16), X25519PrivateKey.from_private_bytes(srand(32))
    signing = Ed25519PrivateKey.from_private_bytes(srand(32))
    n = len(roster)
    body = (struct.pack("<IBBddBIIB", d, 32, 0, 2.0**20, 1.0, 0, n - 1, 2, 0)
            + server_sk.public_key().public_bytes_raw() + signing.public_key().public_bytes_raw()
            + struct.pack("<I", n) + struct.pack(f"<{n}I", *roster))
    msg = struct.pack("<BB16sII", 3, 1, round_id, m.SERVER, m.SERVER) + body
    config = msg + signing.sign(_V3_LABEL + b"config" + msg)
    u = roster[0]
    crand = unsafe_deterministic_randbytes(f"{seed}/v3-client/{u}".encode())
    enc_sk, mask_sk, b_u, top = (X25519PrivateKey.from_private_bytes(crand(32)),
                                 X25519PrivateKey.from_private_bytes(crand(32)), crand(32), crand(32))
    chain = [top]
    for _ in range(2):
        chain.append(hashlib.sha256(_V3_LABEL + b"seed-chain" + chain[-1]).digest())
    seed_commit = hashlib.sha256(_V3_LABEL + b"seed-chain" + chain[-1]).digest()
    commit = hashlib.sha256(_V3_LABEL + b"self-mask-commitment" + round_id + struct.pack("<I", u) + b_u).digest()
    adv_body = (enc_sk.public_key().public_bytes_raw() + mask_sk.public_key().public_bytes_raw() + commit
                + seed_commit + bytes(64))
    k_u = HKDF(algorithm=hashes.SHA256(), length=32, salt=hashlib.sha256(config).digest(),
               info=_V3_LABEL + b"client-server" + struct.pack("<I", u)).derive(
        enc_sk.exchange(server_sk.public_key()))
    msg = struct.pack("<BB16sII", 3, 2, round_id, u, m.SERVER) + adv_body
    nonce = crand(12)
    return config, msg + nonce + ChaCha20Poly1305(k_u).encrypt(nonce, b"", msg)


def refusal(seed: str, receiver: str) -> dict[str, Any]:
    """Deliver a v3 message to a fresh v4 party (client 0 awaiting its configuration, or a server in
    advertise_keys with roster 0..3) and record what it refuses with."""
    from .errors import SecAggError
    from .params import choose_params

    roster, d = [0, 1, 2, 3], 4
    config, advertise = v3_messages(seed, roster, d)
    try:
        if receiver == "client":
            message = config
            SecAggClient(0, np.zeros(d)).receive(message)
        else:
            message = advertise
            params = choose_params(len(roster), dropout_rate=0.0, graph="complete")
            server = SecAggServer(roster, d, params, FixedPointEncoding.for_sum(len(roster), 1.0),
                                  _unsafe_randbytes_for_test_vectors=unsafe_deterministic_randbytes(
                                      f"{seed}/server".encode()))
            server.receive(0, message)
    except SecAggError as e:
        return {"message": message.hex(), "error": type(e).__name__, "reason": e.reason,
                "sender": e.sender}
    raise AssertionError(f"a v4 {receiver} accepted a v3 message")


def write_vectors(path: str) -> None:
    """Regenerate ``protocols/vectors/secagg_v4.json``: ``python -m fedsecure.secagg.testing PATH``."""
    import json

    out = {
        "description": "fedsecure SecAgg wire-protocol v4 test vectors; layout and meaning in protocols/secagg.md "
        "section 11. Each party's randomness is the AES-256-CTR keystream (zero initial counter block) under key "
        "SHA-256(label), labels '<seed>/server', '<seed>/server-signing', '<seed>/client/<id>', "
        "'<seed>/identity/<id>', consumed in the order given in the spec. 'refusals' are wire-v3 messages a v4 "
        "party must refuse. Integers may exceed 2^53: parse them exactly.",
        "vectors": [],
    }
    for c in VECTOR_CASES:
        args = {k: v for k, v in c.items() if k != "name"}
        out["vectors"].append({"name": c["name"], "input": c, "expected": transcript(**args)})
    out["refusals"] = [{"name": c["name"], "input": c, "expected": refusal(c["seed"], c["receiver"])}
                       for c in REFUSAL_CASES]
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    import sys

    write_vectors(sys.argv[1])
