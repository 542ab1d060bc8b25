"""The wire format: typed messages with a versioned, strictly parsed byte encoding.

Every message is ``header || body || nonce || tag`` (all integers little-endian)::

    header = version:u8 (=2) | type:u8 | round_id:16 | sender:u32 | recipient:u32
    nonce  = 12 random bytes (fresh per message)
    tag    = ChaCha20-Poly1305(K_u).encrypt(nonce, plaintext="", aad=header || body)   (16 bytes)

(nonce and tag absent on RoundConfig). The tag is the RFC 8439 AEAD with an
empty plaintext, i.e. a Poly1305 MAC of ``header || body`` under a one-time
key that ChaCha20 derives from ``(K_u, nonce)``: a standard construction, and
about 4x faster than HMAC-SHA256 on the ~400 KB masked input. The nonce is
random (not a counter) so that a key is never reused for two messages even if
a caller seals twice; with at most a dozen messages per key a 96-bit collision
has probability below 2^-89. ``sender``/``recipient`` are client ids, or
``SERVER`` (0xFFFFFFFF). ``K_u`` is the client-server key of client ``u`` (see
:mod:`fedsecure.secagg.keys`); it binds every message to the round's
configuration and to its client, and the authenticated header names the
type, round, sender and recipient, so corrupted, forged, replayed or
reflected messages fail the tag. Id
lists are strictly increasing (no duplicates, canonical). A parser accepts a
message only when its length is exactly what its counts imply. The body of
each type is documented on its class and in ``protocols/secagg.md``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from .encoding import MAX_BITS, MIN_BITS, packed_size
from .shamir import SHARE_BYTES

VERSION = 2
SERVER = 0xFFFFFFFF
MAX_CLIENT_ID = 2**31 - 3  # Shamir points are id + 1 in GF(2^31 - 1)
HEADER = struct.Struct("<BB16sII")
NONCE_BYTES = 12
MAC_BYTES = 16
TAG_BYTES = NONCE_BYTES + MAC_BYTES  # the trailer: nonce || Poly1305 tag
KEY_BYTES = 32
SIG_BYTES = 64
NO_SIGNATURE = bytes(SIG_BYTES)
SHARE_PLAINTEXT_BYTES = 8 + 2 * SHARE_BYTES  # sender, recipient, share of masking key, share of self-mask seed
SHARE_CIPHERTEXT_BYTES = SHARE_PLAINTEXT_BYTES + 16  # AES-GCM tag
NEIGHBOUR_RECORD_BYTES = 4 + 3 * KEY_BYTES + SIG_BYTES


class ParseError(ValueError):
    """Raised by the decoders; the state machines turn it into MessageRejected naming the sender."""


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = memoryview(data), 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise ParseError(f"truncated: needed {n} more bytes at offset {self.pos}, have {len(self.data) - self.pos}")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def f64(self) -> float:
        return struct.unpack("<d", self.take(8))[0]

    def ids(self, count: int, *, view: bool = False) -> np.ndarray:
        """``count`` u32 ids; ``view=True`` returns a zero-copy uint32 view (for the O(n) roster, which
        every client would otherwise copy: n clients x n ids)."""
        if count < 0 or self.pos + 4 * count > len(self.data):
            raise ParseError(f"truncated: needed {4 * count} more bytes at offset {self.pos}")
        raw = np.frombuffer(self.data, dtype="<u4", count=count, offset=self.pos)
        self.pos += 4 * count
        if raw.size and (raw.max() > MAX_CLIENT_ID or (raw.size > 1 and not np.all(raw[1:] > raw[:-1]))):
            raise ParseError("id list must be strictly increasing client ids")
        return raw if view else raw.astype(np.int64)

    def count(self, record_bytes: int) -> int:
        c = self.u32()
        if c * record_bytes > len(self.data) - self.pos:
            raise ParseError(f"count {c} exceeds the message length")
        return c

    def end(self) -> None:
        if self.pos != len(self.data):
            raise ParseError(f"{len(self.data) - self.pos} unexpected trailing bytes")


def _ids_bytes(ids: np.ndarray) -> bytes:
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size > 1 and not np.all(np.diff(ids) > 0):
        raise ValueError("id lists must be strictly increasing")
    return struct.pack("<I", ids.size) + ids.astype("<u4").tobytes()


@dataclass(frozen=True)
class Header:
    type: int
    round_id: bytes
    sender: int
    recipient: int

    def pack(self) -> bytes:
        return HEADER.pack(VERSION, self.type, self.round_id, self.sender, self.recipient)


def parse_header(data: bytes) -> Header:
    """The header of ``data``; ParseError if it is too short or of another version."""
    if len(data) < HEADER.size:
        raise ParseError(f"message of {len(data)} bytes is shorter than the {HEADER.size}-byte header")
    version, mtype, round_id, sender, recipient = HEADER.unpack_from(data)
    if version != VERSION:
        raise ParseError(f"unsupported version {version} (this implementation speaks version {VERSION})")
    if mtype not in MESSAGE_TYPES:
        raise ParseError(f"unknown message type {mtype}")
    return Header(mtype, round_id, sender, recipient)


def seal(header: Header, body: bytes, mac_key: bytes | None, nonce: bytes | None = None) -> bytes:
    """``header || body || nonce || tag`` (no trailer when ``mac_key`` is None: RoundConfig only).

    ``nonce`` defaults to 12 bytes from ``os.urandom``; the state machines pass
    their own randomness source so that test vectors are reproducible.
    """
    msg = header.pack() + body
    if mac_key is None:
        return msg
    nonce = os.urandom(NONCE_BYTES) if nonce is None else bytes(nonce)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
    return b"".join((msg, nonce, ChaCha20Poly1305(mac_key).encrypt(nonce, b"", msg)))


def open_sealed(data: bytes, mac_key: bytes | None) -> tuple[Header, bytes | memoryview]:
    """Check version and tag; return the header and the body (a zero-copy view when tagged)."""
    header = parse_header(data)
    if mac_key is None:
        return header, data[HEADER.size :]
    if len(data) < HEADER.size + TAG_BYTES:
        raise ParseError("message too short to carry its authentication tag")
    view = memoryview(data)
    msg = view[:-TAG_BYTES]
    try:
        # The AEAD's own check: constant-time tag comparison inside the library.
        ChaCha20Poly1305(mac_key).decrypt(bytes(view[-TAG_BYTES:-MAC_BYTES]), bytes(view[-MAC_BYTES:]), msg)
    except InvalidTag:
        raise ParseError("authentication tag does not verify (corrupted, forged, or from another round)") from None
    return header, msg[HEADER.size :]


# --- bodies -------------------------------------------------------------------
@dataclass(frozen=True)
class RoundConfig:
    """Server -> all. ``vector_length:u32 bits:u8 stochastic:u8 scale:f64 clip:f64 graph:u8 k:u32 t:u32
    active:u8 graph_seed:32 server_pk:32 n:u32 roster:u32[n]``."""

    TYPE: ClassVar[int] = 1
    vector_length: int
    bits: int
    stochastic: bool
    scale: float
    clip: float
    graph: str
    k: int
    t: int
    active: bool
    graph_seed: bytes
    server_pk: bytes
    roster: np.ndarray

    def body(self) -> bytes:
        return (
            struct.pack("<IBBddBIIB", self.vector_length, self.bits, int(self.stochastic), self.scale, self.clip,
                        0 if self.graph == "complete" else 1, self.k, self.t, int(self.active))
            + self.graph_seed + self.server_pk + _ids_bytes(self.roster)
        )

    @classmethod
    def parse(cls, body: bytes) -> RoundConfig:
        r = _Reader(body)
        d, bits, sto = r.u32(), r.u8(), r.u8()
        scale, clip = r.f64(), r.f64()
        g, k, t, active = r.u8(), r.u32(), r.u32(), r.u8()
        seed, spk = r.take(32), r.take(KEY_BYTES)
        roster = r.ids(r.count(4), view=True)
        r.end()
        if d < 1 or not (MIN_BITS <= bits <= MAX_BITS) or sto > 1 or active > 1 or g > 1:
            raise ParseError("config field out of range (vector length, bits or a flag)")
        if not (np.isfinite(scale) and scale > 0 and np.isfinite(clip) and clip > 0):
            raise ParseError("config scale and clip must be finite and positive")
        if roster.size < 2 or not (1 <= t <= k <= roster.size - 1):
            raise ParseError(f"config needs 2 <= n and 1 <= t <= k <= n-1, got n={roster.size}, k={k}, t={t}")
        return cls(d, bits, bool(sto), scale, clip, "complete" if g == 0 else "sparse", k, t, bool(active), seed, spk, roster)


@dataclass(frozen=True)
class AdvertiseKeys:
    """Client -> server. ``enc_pk:32 mask_pk:32 commitment:32 signature:64`` (zeros unless active)."""

    TYPE: ClassVar[int] = 2
    enc_pk: bytes
    mask_pk: bytes
    commitment: bytes
    signature: bytes = NO_SIGNATURE

    def body(self) -> bytes:
        return self.enc_pk + self.mask_pk + self.commitment + self.signature

    @classmethod
    def parse(cls, body: bytes) -> AdvertiseKeys:
        r = _Reader(body)
        out = cls(r.take(KEY_BYTES), r.take(KEY_BYTES), r.take(32), r.take(SIG_BYTES))
        r.end()
        return out


@dataclass(frozen=True)
class Neighbours:
    """Server -> client. ``count:u32`` then ``count`` records ``id:u32 enc_pk mask_pk commitment signature``."""

    TYPE: ClassVar[int] = 3
    ids: np.ndarray
    keys: tuple[AdvertiseKeys, ...]

    def body(self) -> bytes:
        ids = np.asarray(self.ids, dtype=np.int64)
        if ids.size > 1 and not np.all(np.diff(ids) > 0):
            raise ValueError("neighbour ids must be strictly increasing")
        parts = [struct.pack("<I", ids.size)]
        parts += [struct.pack("<I", int(i)) + a.body() for i, a in zip(ids, self.keys)]
        return b"".join(parts)

    @classmethod
    def parse(cls, body: bytes) -> Neighbours:
        r = _Reader(body)
        c = r.count(NEIGHBOUR_RECORD_BYTES)
        raw = r.take(c * NEIGHBOUR_RECORD_BYTES)
        r.end()
        R, K = NEIGHBOUR_RECORD_BYTES, KEY_BYTES
        ids = np.frombuffer(raw, dtype=np.uint8).reshape(c, R)[:, :4].copy().view("<u4").ravel().astype(np.int64)
        keys = [
            AdvertiseKeys(raw[o + 4 : o + 4 + K], raw[o + 4 + K : o + 4 + 2 * K], raw[o + 4 + 2 * K : o + 4 + 3 * K],
                          raw[o + 4 + 3 * K : o + R])
            for o in range(0, c * R, R)
        ]
        if ids.size and (ids.max() > MAX_CLIENT_ID or (ids.size > 1 and not np.all(np.diff(ids) > 0))):
            raise ParseError("neighbour ids must be strictly increasing client ids")
        return cls(ids, tuple(keys))


@dataclass(frozen=True)
class _IdsAndCiphertexts:
    ids: np.ndarray
    ciphertexts: bytes  # len(ids) * SHARE_CIPHERTEXT_BYTES, in id order

    def body(self) -> bytes:
        return _ids_bytes(self.ids) + self.ciphertexts

    @classmethod
    def parse(cls, body: bytes):
        r = _Reader(body)
        c = r.count(4 + SHARE_CIPHERTEXT_BYTES)
        ids = r.ids(c)
        cts = r.take(c * SHARE_CIPHERTEXT_BYTES)
        r.end()
        return cls(ids, cts)

    def ciphertext(self, j: int) -> bytes:
        return self.ciphertexts[j * SHARE_CIPHERTEXT_BYTES : (j + 1) * SHARE_CIPHERTEXT_BYTES]


@dataclass(frozen=True)
class ShareKeys(_IdsAndCiphertexts):
    """Client -> server. ``count:u32 recipients:u32[count] ciphertexts:96[count]`` (one per neighbour)."""

    TYPE: ClassVar[int] = 4


@dataclass(frozen=True)
class ForwardedShares(_IdsAndCiphertexts):
    """Server -> client. ``count:u32 senders:u32[count] ciphertexts:96[count]``: the shares addressed to it."""

    TYPE: ClassVar[int] = 5


@dataclass(frozen=True)
class MaskedInput:
    """Client -> server. The masked vector, ``vector_length`` elements packed to ``bits`` bits each."""

    TYPE: ClassVar[int] = 6
    packed: bytes

    def body(self) -> bytes:
        return self.packed

    @classmethod
    def parse(cls, body: bytes, vector_length: int, bits: int) -> MaskedInput:
        if len(body) != packed_size(vector_length, bits):
            raise ParseError(f"masked input has {len(body)} bytes, expected {packed_size(vector_length, bits)}")
        return cls(body)


@dataclass(frozen=True)
class ConsistencyRequest:
    """Server -> client (active mode). ``count:u32 ids:u32[count]``: every client whose masked input arrived."""

    TYPE: ClassVar[int] = 7
    survivors: np.ndarray

    def body(self) -> bytes:
        return _ids_bytes(self.survivors)

    @classmethod
    def parse(cls, body: bytes) -> ConsistencyRequest:
        r = _Reader(body)
        ids = r.ids(r.count(4), view=True)  # O(n) per client: keep it a view of the shared message
        r.end()
        return cls(ids)


@dataclass(frozen=True)
class ConsistencySignature:
    """Client -> server (active mode). ``signature:64`` on the survivor list."""

    TYPE: ClassVar[int] = 8
    signature: bytes

    def body(self) -> bytes:
        return self.signature

    @classmethod
    def parse(cls, body: bytes) -> ConsistencySignature:
        r = _Reader(body)
        out = cls(r.take(SIG_BYTES))
        r.end()
        return out


@dataclass(frozen=True)
class UnmaskRequest:
    """Server -> client. ``count:u32 survivors:u32[count]`` (its neighbours whose input arrived), then
    ``nsig:u32`` records ``id:u32 signature:64`` (active mode: neighbours' signatures on the survivor list)."""

    TYPE: ClassVar[int] = 9
    survivors: np.ndarray
    signatures: tuple[tuple[int, bytes], ...] = ()

    def body(self) -> bytes:
        sigs = sorted(self.signatures)
        return (_ids_bytes(self.survivors) + struct.pack("<I", len(sigs))
                + b"".join(struct.pack("<I", i) + s for i, s in sigs))

    @classmethod
    def parse(cls, body: bytes) -> UnmaskRequest:
        r = _Reader(body)
        surv = r.ids(r.count(4))
        c = r.count(4 + SIG_BYTES)
        sigs = tuple((r.u32(), r.take(SIG_BYTES)) for _ in range(c))
        r.end()
        ids = [i for i, _ in sigs]
        if any(b <= a for a, b in zip(ids, ids[1:])):
            raise ParseError("signature records must have strictly increasing ids")
        return cls(surv, sigs)


@dataclass(frozen=True)
class UnmaskResponse:
    """Client -> server. ``nb:u32 ids:u32[nb] self_mask_shares:36[nb] ns:u32 ids:u32[ns] mask_key_shares:36[ns]``."""

    TYPE: ClassVar[int] = 10
    self_mask_ids: np.ndarray
    self_mask_shares: bytes
    mask_key_ids: np.ndarray
    mask_key_shares: bytes

    def body(self) -> bytes:
        return _ids_bytes(self.self_mask_ids) + self.self_mask_shares + _ids_bytes(self.mask_key_ids) + self.mask_key_shares

    @classmethod
    def parse(cls, body: bytes) -> UnmaskResponse:
        r = _Reader(body)
        c = r.count(4 + SHARE_BYTES)
        bid, bsh = r.ids(c), r.take(c * SHARE_BYTES)
        c = r.count(4 + SHARE_BYTES)
        sid, ssh = r.ids(c), r.take(c * SHARE_BYTES)
        r.end()
        if np.intersect1d(bid, sid).size:
            raise ParseError("a client revealed both shares of the same peer")
        return cls(bid, bsh, sid, ssh)


MESSAGE_TYPES = {
    cls.TYPE: cls
    for cls in (RoundConfig, AdvertiseKeys, Neighbours, ShareKeys, ForwardedShares, MaskedInput,
                ConsistencyRequest, ConsistencySignature, UnmaskRequest, UnmaskResponse)
}
