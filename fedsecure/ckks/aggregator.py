"""The aggregator: checks and adds the ``c0`` parts of one round's contributions as they arrive.

It never sees a ``c1`` polynomial: the key holder computes the ``c1`` half
itself (wire v4). Memory is the running sum (one
polynomial per chunk) plus the contribution being checked, whatever the
number of clients. A contribution enters only after every check has passed
(including its sender's Ed25519 signature over its digest),
so a bad one leaves the sum as it was and the round goes on without it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from fedsecure.ckks import _sealraw
from fedsecure.ckks.context import SealRole
from fedsecure.ckks.errors import CKKSError, ContributionError
from fedsecure.ckks.keys import ClientRegistration, contribution_message, verify
from fedsecure.ckks.packing import chunk_count
from fedsecure.ckks.wire import ROUND_ID_SIZE, AggregateBlob, ContextBlob, ContributionBlob, Evidence, chunks_digest


class StreamingAggregator:
    """Sums one round's contributions of vectors of ``length`` values under the aggregator context."""

    def __init__(
        self,
        aggregator_context: bytes,
        length: int,
        *,
        round_id: bytes,
        clients: Iterable[ClientRegistration],
    ) -> None:
        self._role = SealRole(ContextBlob.from_bytes(aggregator_context, public=False))
        self.params = self._role.params
        self.context_id = self._role.context_id
        if not isinstance(round_id, (bytes, bytearray)) or len(round_id) != ROUND_ID_SIZE:
            raise CKKSError(f"round id must be {ROUND_ID_SIZE} bytes")
        self.round_id = bytes(round_id)
        self.length = int(length)
        self.chunks = chunk_count(self.length, self.params.values_per_ciphertext) if self.length >= 1 else 0
        if self.chunks == 0:
            raise CKKSError(f"vector length must be >= 1, got {length}")
        self._keys = {r.client_id: r.signing_public for r in clients}
        self._sum: np.ndarray | None = None
        self._evidence: list[Evidence] = []

    @property
    def count(self) -> int:
        """How many contributions are in the sum."""
        return len(self._evidence)

    @property
    def contributors(self) -> tuple[int, ...]:
        return tuple(e.client_id for e in self._evidence)

    def add(self, contribution: bytes, *, sender: int) -> None:
        """Add ``sender``'s contribution, or raise :class:`ContributionError` and change nothing."""
        if isinstance(sender, bool) or not isinstance(sender, int):
            raise ContributionError(sender, f"sender must be an integer client id, got {type(sender).__name__}")
        blob = ContributionBlob.from_bytes(contribution, sender=sender)
        if blob.context_id != self.context_id:
            raise ContributionError(sender, "encrypted under another context (context id mismatch)")
        if blob.round_id != self.round_id:
            raise ContributionError(sender, f"for another round ({blob.round_id.hex()}, this is {self.round_id.hex()})")
        if blob.client_id != sender:
            raise ContributionError(sender, f"claims to come from client {blob.client_id}")
        key = self._keys.get(sender)
        if key is None:
            raise ContributionError(sender, "unknown client (not registered)")
        if sender in self.contributors:
            raise ContributionError(sender, "already contributed to this aggregate")
        if blob.length != self.length:
            raise ContributionError(sender, f"wrong length {blob.length} (expected {self.length})")
        if len(blob.chunks) != self.chunks:
            raise ContributionError(sender, f"wrong number of chunks {len(blob.chunks)} (expected {self.chunks})")
        digest = chunks_digest(blob.chunks)
        msg = contribution_message(self.context_id, self.round_id, sender, self.length, digest)
        if not verify(key, blob.signature, msg):
            raise ContributionError(sender, "signature does not verify (forged or altered contribution)")
        N, moduli = self.params.poly_modulus_degree, self._role.moduli
        polys = np.empty((self.chunks, moduli.size, N), dtype=np.uint64)
        for i, data in enumerate(blob.chunks):
            try:
                polys[i] = _sealraw.read_poly(data, N, moduli)
            except CKKSError as e:
                raise ContributionError(sender, f"chunk {i}: {e}") from None
        if self._sum is None:
            self._sum = polys
        else:
            _sealraw.add_mod(self._sum, polys, moduli, out=self._sum)
        self._evidence.append(Evidence(int(sender), digest, blob.signature))

    def aggregate(self) -> bytes:
        """The ``c0`` sum so far and each contributor's evidence, for the key holder."""
        if self._sum is None:
            raise CKKSError("aggregate: no contribution has been added")
        chunks = tuple(_sealraw.poly_bytes(p) for p in self._sum)
        return AggregateBlob(self.context_id, self.round_id, self.length, tuple(self._evidence), chunks).to_bytes()
