"""The aggregator: adds encrypted contributions as they arrive.

Memory is the running sum (one ciphertext per chunk) plus the contribution
being checked, whatever the number of clients. A contribution enters only
after every check has passed, so a bad one leaves the sum as it was.
"""

from __future__ import annotations

from fedsecure.ckks import _sealio
from fedsecure.ckks.context import SealRole
from fedsecure.ckks.errors import CKKSError, ContributionError
from fedsecure.ckks.packing import chunk_count
from fedsecure.ckks.wire import AggregateBlob, ContextBlob, ContributionBlob


class StreamingAggregator:
    """Sums contributions of vectors of ``length`` values under the aggregator context."""

    def __init__(self, aggregator_context: bytes, length: int) -> None:
        self._role = SealRole(ContextBlob.from_bytes(aggregator_context, public=False))
        self.params = self._role.params
        self.context_id = self._role.context_id
        self.length = int(length)
        self.chunks = chunk_count(self.length, self.params.values_per_ciphertext)
        self._sum: list | None = None
        self._contributors: list[int] = []

    @property
    def count(self) -> int:
        """How many contributions are in the sum."""
        return len(self._contributors)

    @property
    def contributors(self) -> tuple[int, ...]:
        return tuple(self._contributors)

    def add(self, contribution: bytes, *, sender: int) -> None:
        """Add ``sender``'s contribution, or raise :class:`ContributionError` and change nothing."""
        blob = ContributionBlob.from_bytes(contribution, sender=sender)
        if blob.context_id != self.context_id:
            raise ContributionError(sender, "encrypted under another context (context id mismatch)")
        if blob.client_id != sender:
            raise ContributionError(sender, f"claims to come from client {blob.client_id}")
        if sender in self._contributors:
            raise ContributionError(sender, "already contributed to this aggregate")
        if blob.length != self.length:
            raise ContributionError(sender, f"wrong length {blob.length} (expected {self.length})")
        if len(blob.chunks) != self.chunks:
            raise ContributionError(sender, f"wrong number of chunks {len(blob.chunks)} (expected {self.chunks})")
        cts = []
        for i, data in enumerate(blob.chunks):
            try:
                cts.append(self._role.load_ciphertext(data))
            except CKKSError as e:
                raise ContributionError(sender, f"chunk {i}: {e}") from None
        if self._sum is None:
            self._sum = cts
        else:
            for acc, ct in zip(self._sum, cts):
                self._role.evaluator.add_inplace(acc, ct)
        self._contributors.append(int(sender))

    def aggregate(self) -> bytes:
        """The sum so far, for the decryptor."""
        if self._sum is None:
            raise CKKSError("aggregate: no contribution has been added")
        chunks = tuple(_sealio.save(ct) for ct in self._sum)
        return AggregateBlob(self.context_id, self.length, self.contributors, chunks).to_bytes()
