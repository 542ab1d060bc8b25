"""CKKS summation behind the engine's :class:`~fedsecure.fl.aggregation.SumProtocol`.

One call of :meth:`CKKSSum.sum` is one round, playing every role in process
over the real serialized bytes: the key holder (created once, reused across
rounds) hands out the public and aggregator contexts and pins each client's
identity keys (created on the client's first round); each client encrypts,
masks and signs its vector under a fresh round id and sends the masked
``c0`` half to the aggregator, which checks and adds each as it arrives;
the key holder verifies the evidence, computes the ``c1`` half and the masks
of exactly the listed clients, decrypts once and releases the flooded sum. The engine sends ``[w * delta, w]`` with ``w`` in ``[0, 1]``; the
weight is applied before encryption, so the sum is the weighted sum.
"""

from __future__ import annotations

import os
import secrets
import struct
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from fedsecure.ckks.aggregator import StreamingAggregator
from fedsecure.ckks.errors import CKKSError, ContributionError
from fedsecure.ckks.keys import ClientIdentity
from fedsecure.ckks.params import CKKSParams, check_security, summation_params
from fedsecure.ckks.roles import ClientEncryptor, KeyHolder
from fedsecure.fl.aggregation import AggregationError, SumProtocol, SumResult, SumSession


class CKKSSum(SumProtocol):
    """Sum of the clients' vectors under CKKS: the aggregator adds, only the key holder decrypts.

    ``input_bound`` is ``params.max_abs_sum / max_clients``: with every
    coordinate inside it, no sum of up to ``max_clients`` contributions
    leaves the range CKKS decrypts correctly; the key holder is told the same
    bound and refuses to release a sum outside ``n * input_bound``. The error
    of the result (CKKS error plus flooding noise) is at most
    ``stats['error_bound']`` except with probability 2^-40. More than
    ``max_clients`` vectors in one call raise :class:`AggregationError`
    before anything is encrypted.

    Fault groups: a client can sign any ``c0``, and a malformed one makes a
    sum fail the key holder's range check. The clients of a round are
    split at random into up to ``fault_groups`` groups of at least
    ``min_group`` (one aggregator per group, one round id); the key holder
    decrypts the groups' total and, only if that fails, each group
    (:meth:`KeyHolder.decrypt_groups`), so a malformed contribution costs
    its group, not the round. Rounds of fewer than ``2 min_group`` clients
    are one group. The key holder enforces its ``min_contributions`` on every
    group as on a whole aggregate.
    """

    name = "ckks"
    stages = ("encrypt", "upload")
    streaming = True

    def __init__(
        self,
        *,
        security_bits: int = 128,
        min_contributions: int = 1,
        max_clients: int = 1024,
        params: CKKSParams | None = None,
        force_insecure: bool = False,
        fault_groups: int = 4,
        min_group: int = 5,
    ) -> None:
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        if fault_groups < 1 or min_group < 1:
            raise ValueError(f"fault_groups and min_group must be >= 1, got {fault_groups} and {min_group}")
        self.fault_groups, self.min_group = int(fault_groups), int(min_group)
        self.params = params or summation_params(security_bits)
        check_security(self.params, security_bits, force_insecure=force_insecure)
        self.security_bits = security_bits
        self.force_insecure = force_insecure
        self.min_contributions = int(min_contributions)
        self.max_clients = int(max_clients)
        self.input_bound: float | None = self.params.max_abs_sum / self.max_clients
        self._key_holder: KeyHolder | None = None
        self._clients: dict[int, ClientEncryptor] = {}
        self._session = os.urandom(8)
        self._round = 0

    def _keys(self) -> KeyHolder:
        if self._key_holder is None:
            self._key_holder = KeyHolder(
                self.params,
                security_bits=self.security_bits,
                force_insecure=self.force_insecure,
                min_contributions=self.min_contributions,
                max_abs_input=self.input_bound,
            )
        return self._key_holder

    def _client(self, cid: int) -> ClientEncryptor:
        """The client's encryptor; on first sight its identity keys are created and pinned by the key holder."""
        enc = self._clients.get(cid)
        if enc is None:
            keys = self._keys()
            identity = ClientIdentity(cid)
            keys.register(identity.registration)
            enc = self._clients[cid] = ClientEncryptor(keys.public_context(), identity)
        return enc

    def _next_round_id(self) -> bytes:
        self._round += 1
        return self._session + struct.pack(">Q", self._round)

    def sum(
        self, vectors: Mapping[int, np.ndarray], *, dropouts: Mapping[int, str] | None = None
    ) -> SumResult:
        if not vectors:
            raise AggregationError("ckks sum: no client vectors")
        sizes = Counter(np.asarray(v).size for v in vectors.values())
        session = self.open(sorted(vectors), dropouts=dropouts, length=sizes.most_common(1)[0][0])
        for cid in sorted(vectors):
            session.add(cid, vectors[cid])
        return session.result()

    def open(
        self, clients: Sequence[int], *, dropouts: Mapping[int, str] | None = None, length: int | None = None
    ) -> _CKKSSession:
        """One round over ``clients``: each vector is encrypted and added to its group's aggregate as it
        arrives (memory: one ciphertext sum per fault group, whatever the number of clients)."""
        dropouts = dict(dropouts or {})
        for cid, stage in dropouts.items():
            if stage not in self.stages:
                raise ValueError(f"client {cid}: unknown dropout stage {stage!r} (stages are {self.stages})")
        if not clients:
            raise AggregationError("ckks sum: no client vectors")
        if len(clients) > self.max_clients:
            raise AggregationError(f"ckks sum: {len(clients)} clients exceed max_clients={self.max_clients}")
        for cid in clients:
            if not isinstance(cid, (int, np.integer)):
                raise AggregationError(f"ckks sum: client id {cid!r} is not an integer")
        return _CKKSSession(self, sorted(int(c) for c in clients), dropouts, length)

    def _groups(self, ids: list[int]) -> dict[int, int]:
        """Client id -> fault group, at random (OS randomness), groups of at least ``min_group``."""
        g = max(1, min(self.fault_groups, len(ids) // self.min_group))
        order = list(ids)
        secrets.SystemRandom().shuffle(order)
        return {cid: i % g for i, cid in enumerate(order)}

    def _check_input(self, x: np.ndarray, length: int) -> str | None:
        if x.ndim != 1:
            return f"vector must be 1-D, got shape {x.shape}"
        if x.size != length:
            return f"wrong length {x.size} (expected {length})"
        if not np.all(np.isfinite(x)):
            return "vector has non-finite values"
        top = float(np.max(np.abs(x)))
        if self.input_bound is not None and top > self.input_bound:
            return f"|value| {top:g} exceeds the input bound {self.input_bound:g}"
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "security_bits": self.security_bits,
            "min_contributions": self.min_contributions,
            "fault_groups": self.fault_groups,
            "min_group": self.min_group,
            "max_clients": self.max_clients,
            "input_bound": self.input_bound,
            "flood_std": self._keys().flood_std if self._key_holder else None,
            "params": self.params.describe(),
        }


class _CKKSSession(SumSession):
    """One CKKS round fed a vector at a time (see :meth:`CKKSSum.open`)."""

    def __init__(self, owner: CKKSSum, clients: list[int], dropouts: dict[int, str], length: int | None) -> None:
        self.owner, self.clients, self.dropouts = owner, clients, dropouts
        self.keys = owner._keys()
        self.round_id = owner._next_round_id()
        for cid in clients:
            owner._client(cid)
        self.groups = owner._groups(clients)
        self.length = length
        self.aggregators: list[StreamingAggregator] | None = None
        self.excluded: dict[int, str] = {}
        self.enc_s = self.agg_s = 0.0
        self.wire_bytes = 0

    def add(self, client_id: int, vector: np.ndarray) -> None:
        cid, owner = int(client_id), self.owner
        if self.length is None:
            self.length = int(np.asarray(vector).size)
        if self.aggregators is None:
            self.aggregators = [
                StreamingAggregator(self.keys.aggregator_context(), self.length, round_id=self.round_id,
                                    clients=self.keys.registrations)
                for _ in range(max(self.groups.values()) + 1)
            ]
        if self.dropouts.get(cid) == "encrypt":
            self.excluded[cid] = "dropped at encrypt"
            return
        x = np.asarray(vector, dtype=np.float64)
        problem = owner._check_input(x, self.length)
        if problem:
            self.excluded[cid] = f"client {cid}: {problem}"
            return
        t0 = time.perf_counter()
        try:
            contribution = owner._client(cid).encrypt(x, round_id=self.round_id)
        except CKKSError as e:
            self.excluded[cid] = str(e)
            return
        self.enc_s += time.perf_counter() - t0
        if self.dropouts.get(cid) == "upload":
            self.excluded[cid] = "dropped at upload"
            return
        self.wire_bytes += len(contribution)
        t0 = time.perf_counter()
        try:
            self.aggregators[self.groups[cid]].add(contribution, sender=cid)
        except ContributionError as e:
            self.excluded[cid] = str(e)
        self.agg_s += time.perf_counter() - t0

    def result(self) -> SumResult:
        keys, round_id, excluded, length = self.keys, self.round_id, self.excluded, self.length
        aggregators = [a for a in (self.aggregators or []) if a.count]
        if not aggregators:
            keys.abandon(round_id)
            raise AggregationError(f"ckks sum: no contribution survived ({excluded})")
        t0 = time.perf_counter()
        aggregates = [a.aggregate() for a in aggregators]
        self.agg_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            release = keys.decrypt_groups(aggregates)
        except CKKSError as e:
            keys.abandon(round_id)
            raise AggregationError(f"ckks sum: {e}") from None
        dec_s = time.perf_counter() - t0
        for i, why in release.failed.items():
            for cid in aggregators[i].contributors:
                excluded[cid] = f"in fault group {i}, whose sum failed the key holder's range check ({why})"
        n = len(release.contributors)
        wire_bytes = self.wire_bytes
        stats: dict[str, Any] = {
            "upload_bytes": wire_bytes,
            "bytes_per_value": wire_bytes / (n * length),
            "float32_ratio": wire_bytes / (n * length * 4),
            "encrypt_seconds": self.enc_s,
            "aggregate_seconds": self.agg_s,
            "decrypt_seconds": dec_s,  # including the key holder's c1 and masks
            "aggregate_bytes": sum(map(len, aggregates)),
            "aggregator_download_bytes": wire_bytes,
            "key_holder_download_bytes": sum(map(len, aggregates)),
            "fault_groups": len(aggregates),
            "failed_groups": len(release.failed),
            "contributions": n,
            "error_bound": keys.error_bound(n, length),
            "flood_std": keys.flood_std,
            "round_id": round_id.hex(),
            "params": self.owner.params.describe(),
        }
        return SumResult(total=release.total, included=release.contributors, excluded=excluded, stats=stats)
