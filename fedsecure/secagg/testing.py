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
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from .client import SecAggClient
from .encoding import FixedPointEncoding
from .errors import PolicyViolation, TooFewSurvivors
from .policy import ClientPolicy
from .params import evaluate
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
) -> dict[str, Any]:
    """Run one round with deterministic randomness; return every message (hex) and the sum."""
    vectors = {int(u): v for u, v in vectors.items()}
    ids = sorted(vectors)
    n, d = len(ids), len(next(iter(vectors.values())))
    dropouts = {int(u): s for u, s in (dropouts or {}).items()}
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
        "ring_sum": [int(v) for v in res.ring_sum],
        "sum": [float(v) for v in enc.decode(res.ring_sum)],
        "scale": enc.scale,
    }


VECTOR_CASES = [
    {"name": "secagg-complete-semi-honest-with-dropout", "seed": "fedsecure-secagg-v3-vector-1",
     "vectors": {"0": [0.5, -0.25, 1.0, 0.0], "1": [-1.0, 0.75, 0.125, 0.5], "2": [0.3, 0.3, -0.3, 0.9],
                 "3": [0.0, -1.0, 1.0, -0.5], "4": [0.2, 0.4, 0.6, 0.8]},
     "graph": "complete", "k": 4, "t": 3, "bits": 24, "clip": 1.0, "active": False, "dropouts": {"3": "masked_input"}},
    {"name": "secaggplus-sparse-active", "seed": "fedsecure-secagg-v3-vector-2",
     "vectors": {str(u): [u / 10, -u / 20, 0.5] for u in range(6)},
     "graph": "sparse", "k": 2, "t": 2, "bits": 32, "clip": 1.0, "active": True, "dropouts": {}},
]


def write_vectors(path: str) -> None:
    """Regenerate ``protocols/vectors/secagg_v3.json``: ``python -m fedsecure.secagg.testing PATH``."""
    import json

    out = {
        "description": "fedsecure SecAgg wire-protocol v3 test vectors; see protocols/secagg.md. Each party's "
        "randomness is the AES-256-CTR keystream under SHA-256(label) (labels '<seed>/server', '<seed>/client/<id>', "
        "'<seed>/identity/<id>'), consumed in the order given in the spec.",
        "vectors": [],
    }
    for c in VECTOR_CASES:
        args = {k: v for k, v in c.items() if k != "name"}
        out["vectors"].append({"name": c["name"], "input": c, "expected": transcript(**args)})
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    import sys

    write_vectors(sys.argv[1])
