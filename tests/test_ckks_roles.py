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


def _aggregate(holder, xs, length, round_id=None):
    """One round: each client's contribution (its masked c0 half) to the aggregator; returns the aggregate."""
    round_id = round_id or os.urandom(16)
    agg = StreamingAggregator(holder.aggregator_context(), length, round_id=round_id, clients=holder.registrations)
    for ident, x in zip(IDS, xs):
        agg.add(ClientEncryptor(holder.public_context(), ident).encrypt(x, round_id=round_id), sender=ident.client_id)
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
    aggregate = _aggregate(holder, xs, 4096)
    with pytest.raises(CKKSError, match="did not cancel"):
        forged.decrypt(aggregate)
    assert np.max(np.abs(honest.decrypt(aggregate) - 1.0)) <= holder.error_bound(2, 4096)


def test_roles_expose_no_decryption():
    assert not hasattr(ClientEncryptor, "decrypt")
    assert not hasattr(StreamingAggregator, "decrypt")
    assert not hasattr(StreamingAggregator, "encrypt")


def test_only_the_masked_c0_half_leaves_the_client(holder):
    """A contribution is the masked c0 polynomials and a signature over their digest: no c1 leaves the client."""
    from fedsecure.ckks.keys import contribution_message, verify
    from fedsecure.ckks.wire import ContributionBlob, chunks_digest

    r = os.urandom(16)
    blob = ClientEncryptor(holder.public_context(), IDS[0]).encrypt(np.ones(5000), round_id=r)
    c0 = ContributionBlob.from_bytes(blob, sender=0)
    assert len(c0.chunks) == 2 and all(len(c) == 8 * 4096 for c in c0.chunks)
    assert len(blob) < 2 * 8 * 4096 + 300  # one polynomial per chunk, not two
    msg = contribution_message(holder.context_id, r, 0, 5000, chunks_digest(c0.chunks))
    assert verify(IDS[0].registration.signing_public, c0.signature, msg)


def test_key_holder_computes_c1_for_exactly_the_listed_clients(holder):
    """The key holder needs nothing from the clients but their signed c0: it rebuilds C1 for whoever is listed."""
    kh = KeyHolder.from_secret_key(
        holder.public_context(), holder.export_secret_key(), holder.export_exchange_key(), clients=holder.registrations
    )
    r = os.urandom(16)
    xs = np.random.default_rng(7).uniform(-1, 1, (3, 100))
    blobs = [ClientEncryptor(holder.public_context(), c).encrypt(x, round_id=r) for c, x in zip(IDS, xs)]
    agg = StreamingAggregator(holder.aggregator_context(), 100, round_id=r, clients=holder.registrations)
    for c, b in zip(IDS[:2], blobs):  # client 2 encrypted but its contribution never arrived
        agg.add(b, sender=c.client_id)
    out = kh.decrypt(agg.aggregate())
    assert np.max(np.abs(out - xs[:2].sum(0))) <= kh.error_bound(2, 100)
    with pytest.raises(CKKSError, match="already decrypted"):
        kh.decrypt(agg.aggregate())


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
