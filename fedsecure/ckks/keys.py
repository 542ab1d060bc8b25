"""Long-term client identities and the per-round masks they share with the key holder.

Each client holds two key pairs from ``cryptography``: X25519 (key agreement
with the key holder) and Ed25519 (signatures on its contributions). The key
holder pins every client's two public keys when the client registers; the
clients pin the key holder's X25519 public key, which travels inside the
public context and is covered by its context id.

Mask of client ``i`` in round ``r`` (specified in ``protocols/ckks.md``)::

    K      = X25519(client secret, key holder public) = X25519(key holder secret, client public)
    seed   = HKDF-SHA256(K, salt = context_id || round_id, info = "fedsecure/ckks/v2 mask" || i64(i), 32 bytes)
    M_i[c, j, t]  for chunk c, prime j, coefficient t: AES-256-CTR(seed, counter block u64(j) || u64(0))
                  read as little-endian u64 words, each masked to bitlen(q_j) bits, words >= q_j skipped,
                  the first chunks * N survivors in (chunk, coefficient) order.

Only client ``i`` and the key holder can compute ``M_i``; to everyone else it
is uniform modulo every prime.

Encryption randomness of client ``i`` in round ``r`` (wire v4), which the key
holder recomputes so that it builds every ``c1`` itself::

    seed'  = HKDF-SHA256(K, salt = context_id || round_id, info = "fedsecure/ckks/v4 encryption randomness" || i64(i))
    u[c, t]  ternary: bytes of AES-256-CTR(seed', counter block u64(0) || u64(0)), bytes 255 skipped, b mod 3 - 1
    e1[c, t] centred binomial: words w of AES-256-CTR(seed', u64(1) || u64(0)) (little-endian u64),
             popcount(w & (2^21 - 1)) - popcount((w >> 21) & (2^21 - 1))

both in (chunk, coefficient) order, the same integers modulo every prime.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from fedsecure.ckks.errors import CKKSError

MASK_LABEL = b"fedsecure/ckks/v2 mask"
RANDOMNESS_LABEL = b"fedsecure/ckks/v4 encryption randomness"
SIGN_LABEL = b"fedsecure/ckks/v4 contribution"
#: the error distribution: centred binomial with eta = 21 (variance 21/2, std 3.24; SEAL's Gaussian has std 3.2)
CBD_ETA = 21
KEY_SIZE = 32
SIGNATURE_SIZE = 64
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


def raw_private(key: X25519PrivateKey | Ed25519PrivateKey) -> bytes:
    """DANGEROUS: the raw 32 private-key bytes."""
    return key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())


@dataclass(frozen=True)
class ClientRegistration:
    """What the key holder and the aggregator pin for one client: its id and two public keys."""

    client_id: int
    exchange_public: bytes  # X25519, 32 bytes
    signing_public: bytes  # Ed25519, 32 bytes

    def __post_init__(self) -> None:
        if len(self.exchange_public) != KEY_SIZE or len(self.signing_public) != KEY_SIZE:
            raise CKKSError(f"client {self.client_id}: public keys must be {KEY_SIZE} bytes each")
        if not -(2**63) <= self.client_id < 2**63:
            raise CKKSError(f"client id {self.client_id} does not fit in an i64")


class ClientIdentity:
    """A client's long-term X25519 and Ed25519 key pairs (fresh from the OS unless given)."""

    def __init__(self, client_id: int, *, exchange_private: bytes | None = None, signing_private: bytes | None = None) -> None:
        self.client_id = int(client_id)
        try:
            self._exchange = (
                X25519PrivateKey.from_private_bytes(exchange_private) if exchange_private else X25519PrivateKey.generate()
            )
            self._signing = (
                Ed25519PrivateKey.from_private_bytes(signing_private) if signing_private else Ed25519PrivateKey.generate()
            )
        except ValueError as e:
            raise CKKSError(f"client {client_id}: bad private key bytes ({e})") from None
        self.registration = ClientRegistration(
            self.client_id,
            self._exchange.public_key().public_bytes(*_RAW),
            self._signing.public_key().public_bytes(*_RAW),
        )

    def export_private_keys(self) -> tuple[bytes, bytes]:
        """DANGEROUS: ``(X25519, Ed25519)`` private keys; whoever holds them can speak for this client."""
        return raw_private(self._exchange), raw_private(self._signing)

    def shared_secret(self, key_holder_public: bytes) -> bytes:
        return exchange(self._exchange, key_holder_public, self.client_id)

    def sign(self, message: bytes) -> bytes:
        return self._signing.sign(message)


def exchange(private: X25519PrivateKey, peer_public: bytes, client_id: int) -> bytes:
    """X25519; refuses low-order peer keys (all-zero shared secret) with a :class:`CKKSError`."""
    try:
        return private.exchange(X25519PublicKey.from_public_bytes(peer_public))
    except ValueError as e:
        raise CKKSError(f"client {client_id}: key agreement failed ({e})") from None


def _hkdf(label: bytes, shared_secret: bytes, context_id: bytes, round_id: bytes, client_id: int) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=context_id + round_id, info=label + struct.pack(">q", client_id)
    ).derive(shared_secret)


def mask_seed(shared_secret: bytes, context_id: bytes, round_id: bytes, client_id: int) -> bytes:
    return _hkdf(MASK_LABEL, shared_secret, context_id, round_id, client_id)


def randomness_seed(shared_secret: bytes, context_id: bytes, round_id: bytes, client_id: int) -> bytes:
    """The seed of a client's encryption randomness ``(u, e1)`` in one round, known to it and the key holder."""
    return _hkdf(RANDOMNESS_LABEL, shared_secret, context_id, round_id, client_id)


def _stream(seed: bytes, block: int):
    return Cipher(algorithms.AES(seed), modes.CTR(struct.pack(">QQ", block, 0))).encryptor()


def centred_binomial(words: np.ndarray) -> np.ndarray:
    """One error coefficient per uint64 word: ``popcount(low 21 bits) - popcount(next 21 bits)``."""
    low = np.uint64((1 << CBD_ETA) - 1)
    a = np.bitwise_count(words & low).astype(np.int64)
    return a - np.bitwise_count((words >> np.uint64(CBD_ETA)) & low)


def private_words(count: int) -> np.ndarray:
    """``count`` uint64 words no one else can compute: AES-256-CTR under a fresh key from ``os.urandom``."""
    return np.frombuffer(_stream(os.urandom(32), 0).update(bytes(8 * count)), dtype="<u8")


def encryption_randomness(seed: bytes, chunks: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(u, e1)``, each ``int64[chunks, n]``: the ternary ``u`` and the error ``e1`` of one client's round."""
    need = chunks * n
    enc = _stream(seed, 0)
    got, have = [], 0
    while have < need:  # about 1 byte in 256 is skipped: the stream continues, so the result depends on the seed only
        raw = np.frombuffer(enc.update(bytes(need - have + 64)), dtype=np.uint8)
        got.append(raw[raw < 255])
        have += got[-1].size
    u = (np.concatenate(got)[:need] % 3).astype(np.int64) - 1
    words = np.frombuffer(_stream(seed, 1).update(bytes(8 * need)), dtype="<u8")
    return u.reshape(chunks, n), centred_binomial(words).reshape(chunks, n)


def mask(seed: bytes, chunks: int, n: int, moduli: np.ndarray) -> np.ndarray:
    """``M[chunk, prime, coefficient]``, uniform below each prime (rejection sampling over AES-256-CTR)."""
    out = np.empty((chunks, moduli.size, n), dtype=np.uint64)
    need = chunks * n
    for j, q in enumerate(int(x) for x in moduli):
        enc = _stream(seed, j)
        keep = np.uint64((1 << q.bit_length()) - 1)
        qq = np.uint64(q)
        words = np.frombuffer(enc.update(bytes(8 * need)), dtype="<u8") & keep
        if not (words >= qq).any():  # the usual case for a prime just below a power of two
            if moduli.size == 1:
                return words.reshape(chunks, 1, n)
            out[:, j, :] = words.reshape(chunks, n)
            continue
        got = [words[words < qq]]
        have = got[0].size
        while have < need:  # continue the same stream: the result depends only on (seed, j)
            more = np.frombuffer(enc.update(bytes(8 * max(64, 2 * (need - have)))), dtype="<u8") & keep
            got.append(more[more < qq])
            have += got[-1].size
        out[:, j, :] = np.concatenate(got)[:need].reshape(chunks, n)
    return out


def contribution_message(context_id: bytes, round_id: bytes, client_id: int, length: int, c0_digest: bytes) -> bytes:
    """What a client signs: label, deployment, round, its id, the vector length, and the SHA-256 of its masked
    ``c0`` polynomials (the whole contribution: the key holder computes the ``c1`` half itself)."""
    return SIGN_LABEL + context_id + round_id + struct.pack(">qQ", client_id, length) + c0_digest


def verify(signing_public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(signing_public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
