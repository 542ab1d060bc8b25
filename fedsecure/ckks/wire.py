"""Versioned wire format of the CKKS protocol (specified in ``protocols/ckks.md``).

Every blob is ``header || body || SHA-256(header || body)``. The header is
``b"FSCK" || version:u8 || kind:u8``; integers are big-endian. The digest
catches corruption and truncation (SEAL itself loads many bit flips without
complaint); it is not authentication: contributions carry the client's
Ed25519 signature, and aggregates carry every contributor's signature.

Kinds:

* ``1`` public context (clients: parameters + public key + key holder's X25519 key),
* ``2`` aggregator context (parameters only: it can add, not encrypt or decrypt),
* ``3`` contribution (for the aggregator: one client's masked ``c0`` polynomials for one round, signed),
* ``4`` aggregate (the aggregator's sum of ``c0`` parts for one round and each contributor's evidence).

Kind 5 (v3's key share, a client's ``c1`` for the key holder) is gone: in v4
the key holder computes every ``c1`` itself from randomness it shares with
the client, so a client has nothing to send it. SEAL parameters and keys
travel as SEAL's own serialization (its header and zstd payload), each
prefixed by its length; polynomials travel raw (``k * N`` little-endian u64
residues in NTT form), each prefixed by its length.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass

from fedsecure.ckks.errors import CKKSError, ContributionError
from fedsecure.ckks.keys import KEY_SIZE, SIGNATURE_SIZE
from fedsecure.ckks.params import CKKSParams

MAGIC = b"FSCK"
VERSION = 4
KIND_PUBLIC_CONTEXT = 1
KIND_AGGREGATOR_CONTEXT = 2
KIND_CONTRIBUTION = 3
KIND_AGGREGATE = 4
_KIND_NAMES = {1: "public context", 2: "aggregator context", 3: "contribution", 4: "aggregate"}
DIGEST_SIZE = 32
CONTEXT_ID_SIZE = 16
ROUND_ID_SIZE = 16
#: refuse absurd sizes before allocating anything
MAX_SEAL_OBJECT = 1 << 28
MAX_CHUNKS = 1 << 24
MAX_CONTRIBUTORS = 1 << 24


class _Reader:
    def __init__(self, data: memoryview, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int, field: str) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            raise CKKSError(
                f"{self.what} truncated: {field} needs {n} bytes at offset {self.pos}, "
                f"only {len(self.data) - self.pos} left"
            )
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def unpack(self, fmt: str, field: str) -> tuple:
        return struct.unpack(">" + fmt, self.take(struct.calcsize(">" + fmt), field))

    def seal_object(self, field: str) -> bytes:
        (n,) = self.unpack("I", f"{field} length")
        if n > MAX_SEAL_OBJECT:
            raise CKKSError(f"{self.what}: {field} claims {n} bytes, more than the limit {MAX_SEAL_OBJECT}")
        return self.take(n, field)

    def done(self) -> None:
        if self.pos != len(self.data):
            raise CKKSError(f"{self.what}: {len(self.data) - self.pos} trailing bytes")


def _seal(kind: int, *parts: bytes) -> bytes:
    """``header || parts || SHA-256``, hashing incrementally and joining once (contributions are large)."""
    pieces = [MAGIC + struct.pack(">BB", VERSION, kind), *parts]
    h = hashlib.sha256()
    for piece in pieces:
        h.update(piece)
    pieces.append(h.digest())
    return b"".join(pieces)


def _open(data: bytes, kind: int) -> _Reader:
    """Check magic, version, kind and digest; return a reader over the body."""
    what = _KIND_NAMES[kind]
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CKKSError(f"{what}: expected bytes, got {type(data).__name__}")
    data = memoryview(data).cast("B")  # no copy of a contribution that may be tens of MB
    if len(data) < 6 + DIGEST_SIZE:
        raise CKKSError(f"{what} truncated: {len(data)} bytes is shorter than header and digest")
    if data[:4] != MAGIC:
        raise CKKSError(f"{what}: bad magic {bytes(data[:4])!r} (not a fedsecure CKKS blob)")
    version, got_kind = data[4], data[5]
    if version != VERSION:
        raise CKKSError(f"{what}: unsupported wire version {version} (this reader speaks {VERSION})")
    if got_kind != kind:
        raise CKKSError(f"expected a {what}, got kind {got_kind} ({_KIND_NAMES.get(got_kind, 'unknown')})")
    body, digest = data[:-DIGEST_SIZE], data[-DIGEST_SIZE:]
    if hashlib.sha256(body).digest() != bytes(digest):
        raise CKKSError(f"{what}: digest mismatch (corrupted or truncated bytes)")
    r = _Reader(body, what)
    r.pos = 6
    return r


def _chunks_out(chunks: tuple[bytes, ...]) -> list[bytes]:
    out = [struct.pack(">I", len(chunks))]
    for c in chunks:
        out += (struct.pack(">I", len(c)), c)
    return out


def chunks_digest(chunks: tuple[bytes, ...]) -> bytes:
    """SHA-256 of the chunks as encoded on the wire (count, then each length and bytes): what a client signs."""
    h = hashlib.sha256()
    for piece in _chunks_out(chunks):
        h.update(piece)
    return h.digest()


def _chunks_in(r: _Reader) -> tuple[bytes, ...]:
    (n,) = r.unpack("I", "chunk count")
    if n > MAX_CHUNKS:
        raise CKKSError(f"{r.what}: {n} chunks exceeds the limit {MAX_CHUNKS}")
    return tuple(r.seal_object(f"chunk {i}") for i in range(n))


@dataclass(frozen=True)
class ContextBlob:
    """Parameters (and for clients the public key) of one key holder's deployment."""

    params: CKKSParams
    context_id: bytes
    seal_parameters: bytes
    public_key: bytes | None
    exchange_public: bytes | None = None  # the key holder's X25519 key (public context only)

    def to_bytes(self) -> bytes:
        p = self.params
        body = struct.pack(">HIBB", p.security_bits, p.poly_modulus_degree, p.scale_bits, len(p.coeff_bits))
        body += bytes(p.coeff_bits) + self.context_id
        body += struct.pack(">I", len(self.seal_parameters)) + self.seal_parameters
        kind = KIND_AGGREGATOR_CONTEXT
        if self.public_key is not None:
            kind = KIND_PUBLIC_CONTEXT
            body += struct.pack(">I", len(self.public_key)) + self.public_key
            body += self.exchange_public or b""
        return _seal(kind, body)

    @classmethod
    def from_bytes(cls, data: bytes, *, public: bool) -> ContextBlob:
        r = _open(data, KIND_PUBLIC_CONTEXT if public else KIND_AGGREGATOR_CONTEXT)
        sec, n, scale_bits, nprimes = r.unpack("HIBB", "parameters")
        bits = tuple(r.take(nprimes, "coefficient prime sizes"))
        try:
            params = CKKSParams(n, bits, scale_bits)
        except ValueError as e:
            raise CKKSError(f"{r.what}: invalid parameters: {e}") from None
        if params.security_bits != sec:
            raise CKKSError(f"{r.what}: states {sec}-bit security, parameters give {params.security_bits}")
        context_id = r.take(CONTEXT_ID_SIZE, "context id")
        seal_parameters = r.seal_object("SEAL parameters")
        public_key = r.seal_object("public key") if public else None
        exchange_public = r.take(KEY_SIZE, "key holder X25519 key") if public else None
        r.done()
        return cls(params, context_id, seal_parameters, public_key, exchange_public)


@dataclass(frozen=True)
class ContributionBlob:
    """For the aggregator: one client's masked ``c0`` polynomials for one round (``ceil(length / N)``), signed."""

    context_id: bytes
    round_id: bytes
    client_id: int
    length: int
    chunks: tuple[bytes, ...]
    signature: bytes

    def to_bytes(self) -> bytes:
        head = self.context_id + self.round_id + struct.pack(">qQ", self.client_id, self.length)
        return _seal(KIND_CONTRIBUTION, head, *_chunks_out(self.chunks), self.signature)

    @classmethod
    def from_bytes(cls, data: bytes, *, sender: object) -> ContributionBlob:
        """Parse; every problem becomes a :class:`ContributionError` naming ``sender``."""
        try:
            r = _open(data, KIND_CONTRIBUTION)
            context_id = r.take(CONTEXT_ID_SIZE, "context id")
            round_id = r.take(ROUND_ID_SIZE, "round id")
            client_id, length = r.unpack("qQ", "client id and length")
            chunks = _chunks_in(r)
            signature = r.take(SIGNATURE_SIZE, "signature")
            r.done()
        except CKKSError as e:
            raise ContributionError(sender, str(e)) from None
        return cls(context_id, round_id, client_id, length, chunks, signature)


@dataclass(frozen=True)
class Evidence:
    """Per contributor, what lets the key holder check the ``c0`` part in the sum is the one it signed."""

    client_id: int
    chunks_digest: bytes
    signature: bytes


_EVIDENCE = struct.Struct(f">q{DIGEST_SIZE}s{SIGNATURE_SIZE}s")


@dataclass(frozen=True)
class AggregateBlob:
    """The aggregator's sum for one round: each contributor's evidence, and the summed ``c0`` polynomials."""

    context_id: bytes
    round_id: bytes
    length: int
    evidence: tuple[Evidence, ...]
    chunks: tuple[bytes, ...]

    @property
    def contributors(self) -> tuple[int, ...]:
        return tuple(e.client_id for e in self.evidence)

    def to_bytes(self) -> bytes:
        body = self.context_id + self.round_id + struct.pack(">QI", self.length, len(self.evidence))
        body += b"".join(_EVIDENCE.pack(e.client_id, e.chunks_digest, e.signature) for e in self.evidence)
        return _seal(KIND_AGGREGATE, body, *_chunks_out(self.chunks))

    @classmethod
    def from_bytes(cls, data: bytes) -> AggregateBlob:
        r = _open(data, KIND_AGGREGATE)
        context_id = r.take(CONTEXT_ID_SIZE, "context id")
        round_id = r.take(ROUND_ID_SIZE, "round id")
        length, count = r.unpack("QI", "length and contributor count")
        if count > MAX_CONTRIBUTORS:
            raise CKKSError(f"aggregate: {count} contributors exceeds the limit {MAX_CONTRIBUTORS}")
        raw = r.take(count * _EVIDENCE.size, "contributor evidence")
        evidence = tuple(Evidence(*_EVIDENCE.unpack_from(raw, i * _EVIDENCE.size)) for i in range(count))
        ids = [e.client_id for e in evidence]
        if len(set(ids)) != len(ids):
            raise CKKSError("aggregate: a contributor is listed twice")
        chunks = _chunks_in(r)
        r.done()
        return cls(context_id, round_id, length, evidence, chunks)
