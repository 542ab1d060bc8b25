"""Key derivations, commitments and signed payloads (all labels are versioned).

With ``L = b"fedsecure/secagg/v2/"`` and ``H`` = SHA-256:

* ``config_hash = H(RoundConfig message bytes)`` binds everything to one round.
* client-server key of ``u``: ``HKDF-SHA256(X25519(enc_sk_u, server_pk), salt=config_hash,
  info=L+"client-server"+u32(u))`` -> 32 bytes (ChaCha20-Poly1305 key authenticating every message).
* pairwise keys of ``u, v`` (``a = min, b = max``): ``HKDF-SHA256(X25519(..), salt=round_id,
  info=L+purpose+u32(a)+u32(b))`` with purpose ``"share-encryption"`` (AES-256-GCM key,
  from the encryption key pairs) or ``"pairwise-mask"`` (PRG seed, from the masking key pairs).
* self-mask commitment: ``H(L+"self-mask-commitment" || round_id || u32(u) || b_u)``.
* share encryption: AES-256-GCM, nonce ``u32(sender) || 8 zero bytes`` (each key encrypts
  once per direction), associated data ``L+"share" || round_id || u32(sender) || u32(recipient)``.
"""

from __future__ import annotations

import struct

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LABEL = b"fedsecure/secagg/v2/"


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def sha256(data: bytes) -> bytes:
    h = hashes.Hash(hashes.SHA256())
    h.update(data)
    return h.finalize()


def config_hash(config_message: bytes) -> bytes:
    return sha256(config_message)


def client_server_key(shared: bytes, cfg_hash: bytes, client_id: int) -> bytes:
    return _hkdf(shared, cfg_hash, LABEL + b"client-server" + struct.pack("<I", client_id))


def pair_key(shared: bytes, round_id: bytes, u: int, v: int, purpose: bytes) -> bytes:
    a, b = (u, v) if u < v else (v, u)
    return _hkdf(shared, round_id, LABEL + purpose + struct.pack("<II", a, b))


ENC = b"share-encryption"
MASK = b"pairwise-mask"


def commitment(round_id: bytes, client_id: int, seed: bytes) -> bytes:
    return sha256(LABEL + b"self-mask-commitment" + round_id + struct.pack("<I", client_id) + seed)


def share_nonce(sender: int) -> bytes:
    return struct.pack("<I", sender) + bytes(8)


def share_ad(round_id: bytes, sender: int, recipient: int) -> bytes:
    return LABEL + b"share" + round_id + struct.pack("<II", sender, recipient)


def advertise_payload(cfg_hash: bytes, client_id: int, enc_pk: bytes, mask_pk: bytes, commit: bytes) -> bytes:
    return LABEL + b"advertise" + cfg_hash + struct.pack("<I", client_id) + enc_pk + mask_pk + commit


def consistency_payload(cfg_hash: bytes, survivors: np.ndarray) -> bytes:
    ids = np.asarray(survivors, dtype="<u4").tobytes()
    return LABEL + b"consistency" + cfg_hash + sha256(ids)
