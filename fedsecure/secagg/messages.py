"""The wire format: typed messages with a versioned, strictly parsed byte encoding.

Every message is ``header || body || trailer`` (all integers little-endian)::

    header  = version:u8 (=4) | type:u8 | round_id:16 | sender:u32 | recipient:u32
    trailer = nonce:12 || tag:16         point to point: tag = ChaCha20-Poly1305(K_u).encrypt(nonce, "", header || body)
            | signature:64               broadcast (RoundConfig, SeedCommitments, SeedReveals): Ed25519 by the
                                         server's long-term key over L+"config" || header || body (the config) or
                                         L+"broadcast" || header || body (the others)

The point-to-point tag is the RFC 8439 AEAD with an empty plaintext, i.e. a
Poly1305 MAC of ``header || body`` under a one-time key that ChaCha20 derives
from ``(K_u, nonce)``. The nonce is random (not a counter) so that a key is
never reused for two messages even if a caller seals twice. ``sender`` and
``recipient`` are client ids, or ``SERVER`` (0xFFFFFFFF; a broadcast is from
``SERVER`` to ``SERVER``). ``K_u`` is the client-server key of client ``u``
(see :mod:`fedsecure.secagg.keys`); it binds every message to the round's
signed configuration and to its client, and the authenticated header names
the type, round, sender and recipient, so corrupted, forged, replayed or
reflected messages fail the tag. Id lists are strictly increasing (no
duplicates, canonical). A parser accepts a message only when its length is
exactly what its counts imply, and every field is range-checked here, so a
well-formed message is also a meaningful one. The body of each type is
documented on its class and in ``protocols/secagg.md``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import os

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from . import keys
from .encoding import MAX_BITS, MIN_BITS, packed_size
from .errors import ConfigurationError
from .shamir import SHARE_BYTES

VERSION = 4
SERVER = 0xFFFFFFFF
MAX_CLIENT_ID = 2**31 - 3  # Shamir points are id + 1 in GF(2^31 - 1)
HEADER = struct.Struct("<BB16sII")
NONCE_BYTES = 12
MAC_BYTES = 16
TAG_BYTES = NONCE_BYTES + MAC_BYTES  # the trailer: nonce || Poly1305 tag
KEY_BYTES = 32
SIG_BYTES = 64
NO_SIGNATURE = bytes(SIG_BYTES)
#: sender, recipient, share of masking key, share of self-mask seed, dealer's signature (zeros unless active)
SHARE_PLAINTEXT_BYTES = 8 + 2 * SHARE_BYTES + 64
DIGEST_BYTES = 32
#: what an active unmask response carries beside each share: digest of the other share || dealer signature
PROOF_BYTES = DIGEST_BYTES + 64
#: one entry of an exclusion proof: revealer:u32 share:36 other_digest:32 dealer_signature:64
PROOF_ENTRY_BYTES = 4 + SHARE_BYTES + PROOF_BYTES
SHARE_CIPHERTEXT_BYTES = SHARE_PLAINTEXT_BYTES + 16  # AES-GCM tag
KEY_RECORD_BYTES = 4 * KEY_BYTES + SIG_BYTES  # one AdvertiseKeys body
SEED_BYTES = 32
#: the ``kind`` of an exclusion request entry that carries no proof: the dealer's shares are unusable
UNUSABLE = 2


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


def sorted_contains(sorted_ids: np.ndarray, ids: np.ndarray) -> bool:
    """Whether every id is in the strictly increasing ``sorted_ids`` (O(len(ids) log n), no copy of it)."""
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size == 0:
        return True
    if sorted_ids.size == 0:
        return False
    pos = np.minimum(np.searchsorted(sorted_ids, ids), sorted_ids.size - 1)
    return bool(np.all(sorted_ids[pos] == ids))


def _ids_bytes(ids: np.ndarray) -> bytes:
    ids = np.asarray(ids, dtype=np.int64)
    if ids.size > 1 and not np.all(np.diff(ids) > 0):
        raise ConfigurationError("id lists must be strictly increasing (a message is being built wrongly)")
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


def sign_broadcast(header: Header, body: bytes, signing_key, *, config: bool = False) -> bytes:
    """``header || body || Ed25519 signature`` by the server's long-term key (RoundConfig and broadcasts)."""
    msg = header.pack() + body
    payload = keys.config_payload(msg) if config else keys.broadcast_payload(msg)
    return msg + signing_key.sign(payload)


def open_broadcast(data: bytes, verify_key, *, config: bool = False) -> tuple[Header, memoryview]:
    """Check version and the server's signature; return the header and a zero-copy view of the body."""
    header = parse_header(data)
    if len(data) < HEADER.size + SIG_BYTES:
        raise ParseError("broadcast too short to carry the server's signature")
    view = memoryview(data)
    msg = view[:-SIG_BYTES]
    payload = keys.config_payload(bytes(msg)) if config else keys.broadcast_payload(bytes(msg))
    try:
        verify_key.verify(bytes(view[-SIG_BYTES:]), payload)
    except InvalidSignature:
        raise ParseError("the server's signature does not verify (forged, altered, or signed by another key)") from None
    return header, msg[HEADER.size :]


def seal(header: Header, body: bytes, mac_key: bytes | None, nonce: bytes | None = None) -> bytes:
    """``header || body || nonce || tag`` (no trailer when ``mac_key`` is None).

    ``nonce`` defaults to 12 bytes from ``os.urandom``; the state machines pass
    their own randomness source so that test vectors are reproducible.
    """
    msg = header.pack() + body
    if mac_key is None:
        return msg
    nonce = os.urandom(NONCE_BYTES) if nonce is None else bytes(nonce)
    if len(nonce) != NONCE_BYTES:
        raise ConfigurationError(f"nonce must be {NONCE_BYTES} bytes, got {len(nonce)}")
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
    """Server -> all, signed. ``vector_length:u32 bits:u8 flags:u8 scale:f64 clip:f64 graph:u8 k:u32 t:u32
    active:u8 server_pk:32 server_sign_pk:32 n:u32 roster:u32[n]``.

    ``flags`` bit 0 (``stochastic``): clients round ``x * scale`` up or down at random (unbiased), not to
    nearest. Bit 1 (``modular``): the compressed ring of :meth:`FixedPointEncoding.for_ring` -- ``clip`` bounds
    a client's L2 norm and the sum may wrap. Other bits must be 0.
    ``server_pk`` is the server's X25519 key for this round, ``server_sign_pk`` its long-term Ed25519
    key (clients that pin a key require it to be this one). ``graph`` 0 = complete (``k = n - 1``),
    1 = sparse (``k`` even, ``2 <= k < n - 1``).
    """

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
    server_pk: bytes
    server_sign_pk: bytes
    roster: np.ndarray
    modular: bool = False

    def body(self) -> bytes:
        flags = int(self.stochastic) | (int(self.modular) << 1)
        return (
            struct.pack("<IBBddBIIB", self.vector_length, self.bits, flags, self.scale, self.clip,
                        0 if self.graph == "complete" else 1, self.k, self.t, int(self.active))
            + self.server_pk + self.server_sign_pk + _ids_bytes(self.roster)
        )

    @classmethod
    def parse(cls, body: bytes) -> RoundConfig:
        r = _Reader(body)
        d, bits, sto = r.u32(), r.u8(), r.u8()
        scale, clip = r.f64(), r.f64()
        g, k, t, active = r.u8(), r.u32(), r.u32(), r.u8()
        spk, sign_pk = r.take(KEY_BYTES), r.take(KEY_BYTES)
        roster = r.ids(r.count(4), view=True)
        r.end()
        if d < 1 or not (MIN_BITS <= bits <= MAX_BITS) or sto > 3 or active > 1 or g > 1:
            raise ParseError("config field out of range (vector length, bits or a flag)")
        if not (np.isfinite(scale) and scale > 0 and np.isfinite(clip) and clip > 0):
            raise ParseError("config scale and clip must be finite and positive")
        n = roster.size
        if n < 2 or not (1 <= t <= k <= n - 1):
            raise ParseError(f"config needs 2 <= n and 1 <= t <= k <= n-1, got n={n}, k={k}, t={t}")
        if g == 0 and k != n - 1:
            raise ParseError(f"complete graph needs k = n - 1 = {n - 1}, got {k}")
        if g == 1 and (k % 2 or k < 2 or k >= n - 1):
            raise ParseError(f"sparse graph needs an even k in [2, n-2] = [2, {n - 2}], got {k}")
        if keys.weak_public_key(spk):
            raise ParseError("the server's round key is not a valid X25519 public key (small order)")
        return cls(d, bits, bool(sto & 1), scale, clip, "complete" if g == 0 else "sparse", k, t, bool(active), spk,
                   sign_pk, roster, bool(sto & 2))


@dataclass(frozen=True)
class AdvertiseKeys:
    """Client -> server. ``enc_pk:32 mask_pk:32 commitment:32 seed_commitment:32 signature:64`` (zeros unless
    active). ``commitment`` commits to the self-mask seed, ``seed_commitment`` to the client's graph-seed chain."""

    TYPE: ClassVar[int] = 2
    enc_pk: bytes
    mask_pk: bytes
    commitment: bytes
    seed_commitment: bytes
    signature: bytes = NO_SIGNATURE

    def body(self) -> bytes:
        return self.enc_pk + self.mask_pk + self.commitment + self.seed_commitment + self.signature

    @classmethod
    def parse(cls, body: bytes) -> AdvertiseKeys:
        r = _Reader(body)
        out = cls(r.take(KEY_BYTES), r.take(KEY_BYTES), r.take(32), r.take(32), r.take(SIG_BYTES))
        r.end()
        if keys.weak_public_key(out.enc_pk) or keys.weak_public_key(out.mask_pk):
            raise ParseError("advertised public key is not a valid X25519 public key (small order)")
        return out


@dataclass(frozen=True)
class SeedCommitments:
    """Server -> all of the view, signed broadcast. ``attempt:u8 count:u32 ids:u32[count]``, then at attempt 0
    ``count`` AdvertiseKeys records (192 bytes each, in id order); later attempts carry no records (they
    shrink the view of attempt 0, whose records stand)."""

    TYPE: ClassVar[int] = 3
    attempt: int
    ids: np.ndarray
    records: bytes | memoryview  # count * KEY_RECORD_BYTES at attempt 0, else empty

    def body(self) -> bytes:
        return struct.pack("<B", self.attempt) + _ids_bytes(self.ids) + bytes(self.records)

    @classmethod
    def parse(cls, body: bytes) -> SeedCommitments:
        r = _Reader(body)
        attempt = r.u8()
        ids = r.ids(r.count(4), view=True)
        records = r.data[r.pos :]
        if len(records) != (ids.size * KEY_RECORD_BYTES if attempt == 0 else 0):
            raise ParseError(f"seed commitments of attempt {attempt} for {ids.size} clients have {len(records)} "
                             "bytes of key records")
        return cls(attempt, ids, records)

    def record(self, j: int) -> AdvertiseKeys:
        """The j-th key record (attempt 0 only); ParseError if its keys are unusable."""
        R = KEY_RECORD_BYTES
        return AdvertiseKeys.parse(bytes(self.records[j * R : (j + 1) * R]))


@dataclass(frozen=True)
class SeedReveal:
    """Client -> server. ``attempt:u8 reveal:32``: the client's graph-seed chain value of this attempt."""

    TYPE: ClassVar[int] = 11
    attempt: int
    reveal: bytes

    def body(self) -> bytes:
        return struct.pack("<B", self.attempt) + self.reveal

    @classmethod
    def parse(cls, body: bytes) -> SeedReveal:
        r = _Reader(body)
        out = cls(r.u8(), r.take(SEED_BYTES))
        r.end()
        return out


@dataclass(frozen=True)
class SeedReveals:
    """Server -> all of the view, signed broadcast. ``attempt:u8 count:u32 reveals:32[count]`` in view order."""

    TYPE: ClassVar[int] = 12
    attempt: int
    reveals: bytes | memoryview

    def body(self) -> bytes:
        return struct.pack("<BI", self.attempt, len(self.reveals) // SEED_BYTES) + bytes(self.reveals)

    @classmethod
    def parse(cls, body: bytes) -> SeedReveals:
        r = _Reader(body)
        attempt = r.u8()
        c = r.count(SEED_BYTES)
        reveals = r.data[r.pos : r.pos + c * SEED_BYTES]
        r.pos += c * SEED_BYTES
        r.end()
        return cls(attempt, reveals)


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
    """Client -> server. ``count:u32 recipients:u32[count] ciphertexts:160[count]`` (one per neighbour)."""

    TYPE: ClassVar[int] = 4


@dataclass(frozen=True)
class ForwardedShares(_IdsAndCiphertexts):
    """Server -> client. ``count:u32 senders:u32[count] ciphertexts:160[count]``: the shares addressed to it."""

    TYPE: ClassVar[int] = 5


@dataclass(frozen=True)
class MaskedInput:
    """Client -> server. ``complaints:u32 ids:u32[complaints] packed``: the dealers among the client's forwarded
    senders whose share ciphertext it could not use (did not decrypt or parse, or, in active rounds, carried no
    valid dealer signature), strictly increasing; then the masked vector, ``vector_length`` elements packed to
    ``bits`` bits each."""

    TYPE: ClassVar[int] = 6
    packed: bytes
    complaints: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def body(self) -> bytes:
        return _ids_bytes(self.complaints) + self.packed

    @classmethod
    def parse(cls, body: bytes, vector_length: int, bits: int) -> MaskedInput:
        r = _Reader(body)
        complaints = r.ids(r.count(4))
        body = r.data[r.pos :]
        size = packed_size(vector_length, bits)
        if len(body) != size:
            raise ParseError(f"masked input has {len(body)} bytes, expected {size}")
        pad = size * 8 - vector_length * bits  # the high bits of the last byte carry no element
        if pad and body[-1] >> (8 - pad):
            raise ParseError("masked input has non-zero padding bits")
        return cls(body, complaints)


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
    """Server -> client. ``count:u32 survivors:u32[count]`` (its neighbours whose input arrived), ``count:u32
    withheld:u32[count]`` (its forwarded senders whose shares the server classified unusable: the client reveals
    no share of them, and will be asked for its pairwise-mask seed with them at ``exclusion``), then ``nsig:u32``
    records ``id:u32 signature:64`` (active mode: neighbours' signatures on the survivor list)."""

    TYPE: ClassVar[int] = 9
    survivors: np.ndarray
    signatures: tuple[tuple[int, bytes], ...] = ()
    withheld: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def body(self) -> bytes:
        sigs = sorted(self.signatures)
        return (_ids_bytes(self.survivors) + _ids_bytes(self.withheld) + struct.pack("<I", len(sigs))
                + b"".join(struct.pack("<I", i) + s for i, s in sigs))

    @classmethod
    def parse(cls, body: bytes) -> UnmaskRequest:
        r = _Reader(body)
        surv = r.ids(r.count(4))
        withheld = r.ids(r.count(4))
        c = r.count(4 + SIG_BYTES)
        sigs = tuple((r.u32(), r.take(SIG_BYTES)) for _ in range(c))
        r.end()
        ids = [i for i, _ in sigs]
        if any(b <= a for a, b in zip(ids, ids[1:])):
            raise ParseError("signature records must have strictly increasing ids")
        return cls(surv, sigs, withheld)


@dataclass(frozen=True)
class UnmaskResponse:
    """Client -> server. ``nb:u32 ids:u32[nb] self_mask_shares:36[nb] [self_mask_proofs:96[nb]] ns:u32 ids:u32[ns]
    mask_key_shares:36[ns] [mask_key_proofs:96[ns]]``. The proofs (active rounds only, absent otherwise) are,
    per share, ``digest of the other share of the pair:32 || the dealer's signature:64`` (``keys.dealt_share_payload``)."""

    TYPE: ClassVar[int] = 10
    self_mask_ids: np.ndarray
    self_mask_shares: bytes
    mask_key_ids: np.ndarray
    mask_key_shares: bytes
    self_mask_proofs: bytes = b""
    mask_key_proofs: bytes = b""

    def body(self) -> bytes:
        return (_ids_bytes(self.self_mask_ids) + self.self_mask_shares + self.self_mask_proofs
                + _ids_bytes(self.mask_key_ids) + self.mask_key_shares + self.mask_key_proofs)

    @classmethod
    def parse(cls, body: bytes, active: bool = False) -> UnmaskResponse:
        r = _Reader(body)
        extra = PROOF_BYTES if active else 0
        c = r.count(4 + SHARE_BYTES + extra)
        bid, bsh, bpr = r.ids(c), r.take(c * SHARE_BYTES), r.take(c * extra)
        c = r.count(4 + SHARE_BYTES + extra)
        sid, ssh, spr = r.ids(c), r.take(c * SHARE_BYTES), r.take(c * extra)
        r.end()
        if np.intersect1d(bid, sid).size:
            raise ParseError("a client revealed both shares of the same peer")
        return cls(bid, bsh, sid, ssh, bpr, spr)


@dataclass(frozen=True)
class Accusation:
    """A proof that ``dealer`` dealt inconsistent shares: ``t`` entries ``(revealer, share, other_digest,
    signature)``, each a share of ``kind`` (0 = self-mask seed, 1 = masking key) the dealer signed for that
    revealer, which together interpolate to a value that does not match the dealer's public value.

    ``kind`` 2 (``UNUSABLE``, no entries) carries no proof: the server classified the dealer's shares unusable
    (fewer than ``t`` of its neighbours in the sum hold a usable share) and asks for the pairwise-mask seed
    under the client's own rule: it reveals it only if it has revealed no share of that dealer."""

    dealer: int
    kind: int
    entries: tuple[tuple[int, bytes, bytes, bytes], ...]

    def body(self) -> bytes:
        return (struct.pack("<IBI", self.dealer, self.kind, len(self.entries))
                + b"".join(struct.pack("<I", w) + sh + dg + sig for w, sh, dg, sig in self.entries))

    @classmethod
    def read(cls, r: _Reader) -> Accusation:
        dealer, kind = r.u32(), r.u8()
        if dealer > MAX_CLIENT_ID or kind > UNUSABLE:
            raise ParseError("accusation names no client or an unknown share kind")
        c = r.count(PROOF_ENTRY_BYTES)
        if kind == UNUSABLE and c:
            raise ParseError("an exclusion of an unusable dealer carries no proof entries")
        entries = tuple((r.u32(), r.take(SHARE_BYTES), r.take(DIGEST_BYTES), r.take(SIG_BYTES)) for _ in range(c))
        ws = [w for w, *_ in entries]
        if any(w > MAX_CLIENT_ID for w in ws) or any(b <= a for a, b in zip(ws, ws[1:])):
            raise ParseError("proof entries must name strictly increasing client ids")
        return cls(dealer, kind, entries)


@dataclass(frozen=True)
class ExclusionRequest:
    """Server -> client (after an accusation, active mode, or when a dealer's shares are unusable, both modes).
    ``count:u32`` entries, each ``dealer:u32 kind:u8 m:u32`` then ``m`` entries ``revealer:u32 share:36
    other_digest:32 signature:64`` (dealers and revealers strictly increasing): the client verifies each proof
    itself (``kind`` 0/1) or checks that it revealed no share of the dealer (``kind`` 2, ``m = 0``) and only
    then reveals the pairwise-mask seed it shares with each dealer."""

    TYPE: ClassVar[int] = 13
    accusations: tuple[Accusation, ...]

    def body(self) -> bytes:
        return struct.pack("<I", len(self.accusations)) + b"".join(a.body() for a in self.accusations)

    @classmethod
    def parse(cls, body: bytes) -> ExclusionRequest:
        r = _Reader(body)
        c = r.count(9)
        accs = tuple(Accusation.read(r) for _ in range(c))
        r.end()
        ds = [a.dealer for a in accs]
        if any(b <= a for a, b in zip(ds, ds[1:])):
            raise ParseError("accusations must name strictly increasing dealers")
        return cls(accs)


@dataclass(frozen=True)
class ExclusionResponse:
    """Client -> server. ``count:u32 dealers:u32[count] seeds:32[count]``: the pairwise-mask seed this client
    shares with each dealer of the request, in the request's order."""

    TYPE: ClassVar[int] = 14
    dealers: np.ndarray
    seeds: bytes

    def body(self) -> bytes:
        return _ids_bytes(self.dealers) + self.seeds

    @classmethod
    def parse(cls, body: bytes) -> ExclusionResponse:
        r = _Reader(body)
        c = r.count(4 + SEED_BYTES)
        ids, seeds = r.ids(c), r.take(c * SEED_BYTES)
        r.end()
        return cls(ids, seeds)


MESSAGE_TYPES = {
    cls.TYPE: cls
    for cls in (RoundConfig, AdvertiseKeys, SeedCommitments, ShareKeys, ForwardedShares, MaskedInput,
                ConsistencyRequest, ConsistencySignature, UnmaskRequest, UnmaskResponse, SeedReveal, SeedReveals,
                ExclusionRequest, ExclusionResponse)
}
