"""Roles hold separate keys: only the key holder decrypts, the aggregator only adds."""

from __future__ import annotations

import os

import numpy as np
import pytest

from fedsecure.ckks import (
    CKKSError,
    ClientEncryptor,
    ClientIdentity,
    KeyHolder,
    StreamingAggregator,
    TooFewContributionsError,
)
from fedsecure.ckks.wire import ContextBlob

IDS = [ClientIdentity(i) for i in range(4)]


@pytest.fixture(scope="module")
def holder():
    return KeyHolder(min_contributions=2, clients=[c.registration for c in IDS])


def _aggregate(holder, xs, length, round_id=None, feed=None):
    """One round: c0 parts to the aggregator, c1 parts (key shares) to ``holder`` or to each key holder in ``feed``."""
    round_id = round_id or os.urandom(16)
    agg = StreamingAggregator(holder.aggregator_context(), length, round_id=round_id, clients=holder.registrations)
    for ident, x in zip(IDS, xs):
        parts = ClientEncryptor(holder.public_context(), ident).encrypt(x, round_id=round_id)
        for kh in feed or (holder,):
            kh.receive(parts.key_holder, sender=ident.client_id)
        agg.add(parts.aggregator, sender=ident.client_id)
    return agg.aggregate()


def test_key_holder_decrypts_the_sum(holder):
    rng = np.random.default_rng(1)
    xs = rng.uniform(-1, 1, (3, 5000))
    out = holder.decrypt(_aggregate(holder, xs, 5000))
    assert np.max(np.abs(out - xs.sum(0))) <= holder.error_bound(3, 5000)


def test_public_context_carries_no_secret_key_and_aggregator_context_no_public_key(holder):
    pub = ContextBlob.from_bytes(holder.public_context(), public=True)
    agg = ContextBlob.from_bytes(holder.aggregator_context(), public=False)
    assert pub.public_key is not None and agg.public_key is None
    assert pub.exchange_public is not None and agg.exchange_public is None
    for secret in (holder.export_secret_key(), holder.export_exchange_key()):
        step = 64 if len(secret) > 64 else 16
        windows = {secret[i : i + step] for i in range(min(16, len(secret) - step), len(secret) - step + 1, step)}
        for blob in (holder.public_context(), holder.aggregator_context()):
            assert not any(w in blob for w in windows)
    # the aggregator context is parameters only: a client cannot be built from it
    with pytest.raises(CKKSError, match="expected a public context"):
        ClientEncryptor(holder.aggregator_context(), IDS[0])


def test_whoever_lacks_the_secret_key_decrypts_noise(holder):
    """A party with the public context and another CKKS secret key (same parameters, same masks) learns nothing."""
    xs = np.full((2, 4096), 0.5)
    impostor = KeyHolder()
    forged = KeyHolder.from_secret_key(
        holder.public_context(), impostor.export_secret_key(), holder.export_exchange_key(),
        clients=holder.registrations, max_abs_input=1.0,
    )
    honest = KeyHolder.from_secret_key(
        holder.public_context(), holder.export_secret_key(), holder.export_exchange_key(),
        min_contributions=2, clients=holder.registrations,
    )
    aggregate = _aggregate(holder, xs, 4096, feed=(forged, honest))
    with pytest.raises(CKKSError, match="did not cancel"):
        forged.decrypt(aggregate)
    assert np.max(np.abs(honest.decrypt(aggregate) - 1.0)) <= holder.error_bound(2, 4096)


def test_roles_expose_no_decryption():
    assert not hasattr(ClientEncryptor, "decrypt")
    assert not hasattr(StreamingAggregator, "decrypt")
    assert not hasattr(StreamingAggregator, "encrypt")


def test_each_party_gets_only_its_half_of_the_ciphertext(holder):
    """The aggregator's part holds c0 + mask only, the key holder's part c1 only; one signature covers both."""
    from fedsecure.ckks.keys import contribution_message, verify
    from fedsecure.ckks.wire import ContributionBlob, KeyShareBlob, chunks_digest

    r = os.urandom(16)
    parts = ClientEncryptor(holder.public_context(), IDS[0]).encrypt(np.ones(5000), round_id=r)
    c0 = ContributionBlob.from_bytes(parts.aggregator, sender=0)
    c1 = KeyShareBlob.from_bytes(parts.key_holder, sender=0)
    assert len(c0.chunks) == len(c1.chunks) == 2 and all(len(c) == 8 * 4096 for c in c0.chunks + c1.chunks)
    assert c0.peer_digest == chunks_digest(c1.chunks) and c1.peer_digest == chunks_digest(c0.chunks)
    assert not any(c in parts.aggregator for c in c1.chunks)
    msg = contribution_message(holder.context_id, r, 0, 5000, chunks_digest(c0.chunks), chunks_digest(c1.chunks))
    assert c0.signature == c1.signature and verify(IDS[0].registration.signing_public, c0.signature, msg)


def test_key_holder_decrypts_only_with_the_key_shares_of_exactly_the_listed_clients(holder):
    from fedsecure.ckks import EvidenceError

    kh = KeyHolder.from_secret_key(
        holder.public_context(), holder.export_secret_key(), holder.export_exchange_key(), clients=holder.registrations
    )
    r = os.urandom(16)
    xs = np.random.default_rng(7).uniform(-1, 1, (3, 100))
    parts = [ClientEncryptor(holder.public_context(), c).encrypt(x, round_id=r) for c, x in zip(IDS, xs)]
    agg = StreamingAggregator(holder.aggregator_context(), 100, round_id=r, clients=holder.registrations)
    for c, p in zip(IDS[:2], parts):
        agg.add(p.aggregator, sender=c.client_id)
    aggregate = agg.aggregate()
    with pytest.raises(EvidenceError, match="no key share"):
        kh.decrypt(aggregate)
    for c, p in zip(IDS, parts):
        kh.receive(p.key_holder, sender=c.client_id)
    with pytest.raises(CKKSError, match="already sent a key share"):
        kh.receive(parts[0].key_holder, sender=0)
    with pytest.raises(CKKSError, match="claims to come from client 1"):
        kh.receive(parts[1].key_holder, sender=0)
    with pytest.raises(EvidenceError, match=r"key shares of clients \[2\]"):
        kh.decrypt(aggregate)  # client 2's c1 is held but its c0 is not in the sum
    kh.withdraw(parts[2].key_holder, sender=2)
    assert kh.pending(r) == (0, 1)
    out = kh.decrypt(aggregate)
    assert np.max(np.abs(out - xs[:2].sum(0))) <= kh.error_bound(2, 100)
    with pytest.raises(CKKSError, match="already decrypted"):
        kh.receive(parts[2].key_holder, sender=2)


def test_decryptor_refuses_too_few_contributions(holder):
    x = np.ones((1, 10))
    with pytest.raises(TooFewContributionsError, match="1 verified contributions.*minimum is 2"):
        holder.decrypt(_aggregate(holder, x, 10))


def test_decryptor_refuses_an_aggregate_of_another_deployment(holder):
    other = KeyHolder(clients=[c.registration for c in IDS])
    with pytest.raises(CKKSError, match="another context"):
        holder.decrypt(_aggregate(other, np.ones((2, 10)), 10))


def test_error_model_matches_measured_noise():
    """Per-slot noise std computed from the key, plus the flooding std, predicts the measured error."""
    kh = KeyHolder(clients=[c.registration for c in IDS])
    d = 4096 * 24
    xs = np.random.default_rng(2).uniform(-1, 1, (2, d))
    err = kh.decrypt(_aggregate(kh, xs, d)) - xs.sum(0)
    z = err.reshape(-1, 2, 2048) / np.sqrt(2 * kh.slot_noise_std**2 + kh.flood_std**2)
    assert 0.9 < np.std(z) < 1.1
    kurtosis = np.mean(z**4) / np.mean(z**2) ** 2
    assert 2.7 < kurtosis < 3.3  # Gaussian given the key, as the bound assumes


def test_unflooded_error_model_still_holds():
    """With flooding off, the per-slot model alone predicts the error (the CKKS part of the budget)."""
    kh = KeyHolder(clients=[c.registration for c in IDS], flood_std=0.0)
    d = 4096 * 24
    xs = np.random.default_rng(3).uniform(-1, 1, (2, d))
    err = kh.decrypt(_aggregate(kh, xs, d)) - xs.sum(0)
    z = err.reshape(-1, 2, 2048) / (kh.slot_noise_std * np.sqrt(2))
    assert 0.9 < np.std(z) < 1.1
