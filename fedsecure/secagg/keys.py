"""Key derivations, commitments and signed payloads (all labels are versioned).

With ``L = b"fedsecure/secagg/v4/"`` and ``H`` = SHA-256:

* ``config_hash = H(RoundConfig message bytes, signature included)`` binds everything to one round.
* the server's long-term Ed25519 key signs ``L+"config" || config message`` and
  ``L+"broadcast" || header || body`` of every broadcast (SeedCommitments, SeedReveals).
* graph-seed chain of a client: ``r[G-1]`` random, ``r[j] = H(L+"seed-chain" || r[j+1])``,
  commitment ``H(L+"seed-chain" || r[0])``; attempt ``j`` reveals ``r[j]`` (``G = GRAPH_DRAWS``).
* graph seed of attempt ``j`` over the view ``V`` (sorted ids, reveals in id order):
  ``H(L+"graph-seed" || config_hash || u8(j) || u32(|V|) || u32 ids || reveals)``.
* client-server key of ``u``: ``HKDF-SHA256(X25519(enc_sk_u, server_pk), salt=config_hash,
  info=L+"client-server"+u32(u))`` -> 32 bytes (ChaCha20-Poly1305 key authenticating every message).
* pairwise keys of ``u, v`` (``a = min, b = max``): ``HKDF-SHA256(X25519(..), salt=round_id,
  info=L+purpose+u32(a)+u32(b))`` with purpose ``"share-encryption"`` (AES-256-GCM key,
  from the encryption key pairs) or ``"pairwise-mask"`` (PRG seed, from the masking key pairs).
* self-mask commitment: ``H(L+"self-mask-commitment" || round_id || u32(u) || b_u)``.
* share encryption: AES-256-GCM, nonce ``u32(sender) || 8 zero bytes`` (each key encrypts
  once per direction), associated data ``L+"share" || round_id || u32(sender) || u32(recipient)``.
* dealt-share signature (active mode): dealer ``D`` signs, with its Ed25519 identity key, for each
  recipient ``j``: ``L+"dealt-share" || config_hash || u32(D) || u32(j) || commitment_D || mask_pk_D ||
  H(L+"self-mask-share" || b-share) || H(L+"mask-key-share" || s-share)``. Each share enters through its
  own digest, so a revealer can show one share with the other's digest and the signature; the advertised
  commitment and masking key bind the signature to this round's public values.
"""

from __future__ import annotations

import hashlib
import struct

import numpy as np
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

LABEL = b"fedsecure/secagg/v4/"

#: X25519 public keys of small order (libsodium's list, high bit ignored as RFC 7748 does): a
#: key agreement with any of them yields a value the peer knows (all zero), so they are refused.
_SMALL_ORDER = frozenset(bytes.fromhex(h) for h in (
    "0000000000000000000000000000000000000000000000000000000000000000",
    "0100000000000000000000000000000000000000000000000000000000000000",
    "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
    "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
    "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
))


def weak_public_key(raw: bytes) -> bool:
    """Whether ``raw`` is not a usable X25519 public key (wrong length or of small order)."""
    if len(raw) != 32:
        return True
    return bytes(raw[:31]) + bytes([raw[31] & 0x7F]) in _SMALL_ORDER


def _hkdf(ikm: bytes, salt: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(ikm)


def sha256(data: bytes) -> bytes:
    # hashlib's SHA-256 is OpenSSL's, like cryptography's, at a third of the per-call cost:
    # clients hash one graph-seed reveal per client of the view.
    return hashlib.sha256(data).digest()


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


def advertise_payload(cfg_hash: bytes, client_id: int, enc_pk: bytes, mask_pk: bytes, commit: bytes,
                      seed_commit: bytes) -> bytes:
    return LABEL + b"advertise" + cfg_hash + struct.pack("<I", client_id) + enc_pk + mask_pk + commit + seed_commit


def config_payload(config_message: bytes) -> bytes:
    return LABEL + b"config" + config_message


def broadcast_payload(header_and_body: bytes) -> bytes:
    return LABEL + b"broadcast" + header_and_body


def _chain_step(x: bytes) -> bytes:
    return sha256(LABEL + b"seed-chain" + x)


def seed_chain(top: bytes, length: int) -> tuple[list[bytes], bytes]:
    """``([r[0], ..., r[length-1]], commitment)`` for the random ``top = r[length-1]``."""
    chain = [bytes(top)]
    for _ in range(length - 1):
        chain.append(_chain_step(chain[-1]))
    chain.reverse()
    return chain, _chain_step(chain[0])


_CHAIN_PREFIX = hashlib.sha256(LABEL + b"seed-chain")


def reveal_matches(reveal: bytes, attempt: int, seed_commit: bytes) -> bool:
    """Whether ``reveal`` is ``r[attempt]`` of the chain committed to by ``seed_commit``."""
    return len(reveal) == 32 and reveals_mismatch(reveal, attempt, bytes(seed_commit)) < 0


def reveals_mismatch(reveals: bytes | memoryview, attempt: int, commits: bytes) -> int:
    """Index of the first of ``m`` 32-byte reveals that does not open its commitment (``commits``, the
    ``m`` commitments concatenated in the same order), or -1 when all do. One hash state per step is
    copied from the label's prefix and the digests are compared in one go: this check is O(view) per
    client, so its constant matters at large n."""
    data = bytes(reveals)
    out = []
    for j in range(0, len(data), 32):
        x = data[j : j + 32]
        for _ in range(attempt + 1):
            h = _CHAIN_PREFIX.copy()
            h.update(x)
            x = h.digest()
        out.append(x)
    got = b"".join(out)
    if got == commits:
        return -1
    return next(j for j in range(len(out)) if out[j] != commits[32 * j : 32 * j + 32])


def graph_seed(cfg_hash: bytes, attempt: int, view: np.ndarray, reveals: bytes) -> bytes:
    """The graph seed of one attempt: every reveal of the view, so no party alone can choose it."""
    ids = np.asarray(view, dtype="<u4")
    return sha256(LABEL + b"graph-seed" + cfg_hash + struct.pack("<BI", attempt, ids.size) + ids.tobytes()
                  + bytes(reveals))


def consistency_payload(cfg_hash: bytes, survivors: np.ndarray) -> bytes:
    ids = np.asarray(survivors, dtype="<u4").tobytes()
    return LABEL + b"consistency" + cfg_hash + sha256(ids)


SELF_MASK_SHARE = b"self-mask-share"
MASK_KEY_SHARE = b"mask-key-share"
#: kind 0 = share of the self-mask seed, kind 1 = share of the masking key (wire values)
SHARE_KINDS = (SELF_MASK_SHARE, MASK_KEY_SHARE)


def share_digest(kind: int, share: bytes) -> bytes:
    """``H(L + "self-mask-share" || share)`` (kind 0) or ``H(L + "mask-key-share" || share)`` (kind 1)."""
    return sha256(LABEL + SHARE_KINDS[kind] + bytes(share))


def dealt_share_payload(cfg_hash: bytes, dealer: int, recipient: int, commit: bytes, mask_pk: bytes,
                        b_digest: bytes, s_digest: bytes) -> bytes:
    """What dealer ``dealer`` signs for the pair of shares it deals to ``recipient`` (active mode)."""
    return (LABEL + b"dealt-share" + cfg_hash + struct.pack("<II", dealer, recipient) + bytes(commit)
            + bytes(mask_pk) + b_digest + s_digest)


def revealed_share_payload(cfg_hash: bytes, dealer: int, recipient: int, commit: bytes, mask_pk: bytes, kind: int,
                           share: bytes, other_digest: bytes) -> bytes:
    """The dealt-share payload rebuilt from one revealed share of ``kind`` and the digest of the other."""
    d = share_digest(kind, share)
    b_digest, s_digest = (d, bytes(other_digest)) if kind == 0 else (bytes(other_digest), d)
    return dealt_share_payload(cfg_hash, dealer, recipient, commit, mask_pk, b_digest, s_digest)

