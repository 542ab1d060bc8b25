"""Bad contributions are refused with the client named; the aggregate stays correct."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.ckks import CKKSError, ClientEncryptor, ClientIdentity, ContributionError, KeyHolder, StreamingAggregator
from fedsecure.ckks.wire import AggregateBlob, ContextBlob, ContributionBlob

LENGTH = 5000  # two ciphertexts
ROUND = b"bad-input round!"
IDS = {i: ClientIdentity(i) for i in (0, 1, 2, 7, 9)}


def _enc(holder, cid):
    return ClientEncryptor(holder.public_context(), IDS[cid])


@pytest.fixture(scope="module")
def setup():
    holder = KeyHolder(clients=[c.registration for c in IDS.values()])
    rng = np.random.default_rng(11)
    xs = {i: rng.uniform(-1, 1, LENGTH) for i in range(3)}
    blobs = {i: _enc(holder, i).encrypt(x, round_id=ROUND) for i, x in xs.items()}
    return holder, None, xs, blobs


def _fresh_holder(holder):
    """A key holder of the same deployment with an empty round history."""
    return KeyHolder.from_secret_key(
        holder.public_context(), holder.export_secret_key(), holder.export_exchange_key(), clients=holder.registrations
    )


def _fresh(holder):
    return StreamingAggregator(holder.aggregator_context(), LENGTH, round_id=ROUND, clients=holder.registrations)


def _refused(setup, blob, sender, match):
    """``blob`` from ``sender`` is refused naming the client; accepted work survives and the rest still sums."""
    holder, _, xs, blobs = setup
    agg = _fresh(holder)
    agg.add(blobs[0], sender=0)  # accepted before the bad one: it must not be lost
    with pytest.raises(ContributionError, match=match) as info:
        agg.add(blob, sender=sender)
    assert info.value.sender == sender and f"client {sender}" in str(info.value)
    assert agg.count == 1
    for i in (1, 2):
        agg.add(blobs[i], sender=i)
    assert agg.contributors == (0, 1, 2)
    # a fresh key holder per check: the real one decrypts each round id once
    fresh = _fresh_holder(holder)
    out = fresh.decrypt(agg.aggregate())
    expected = xs[0] + xs[1] + xs[2]
    assert np.max(np.abs(out - expected)) <= holder.error_bound(3, LENGTH)


def test_contribution_under_another_context(setup):
    other = ClientEncryptor(KeyHolder().public_context(), IDS[7])
    _refused(setup, other.encrypt(np.ones(LENGTH), round_id=ROUND), 7, "another context")


def test_contribution_under_other_parameters(setup):
    from fedsecure.ckks import CKKSParams

    odd = KeyHolder(CKKSParams(8192, (60,), 40))
    blob = ClientEncryptor(odd.public_context(), IDS[7]).encrypt(np.ones(LENGTH), round_id=ROUND)
    _refused(setup, blob, 7, "another context")


@pytest.mark.parametrize("cut", [1, 40, 1000, 70_000])
def test_truncated_bytes(setup, cut):
    blob = setup[3][1]
    _refused(setup, blob[:-cut], 1, "truncated|digest")


def test_wrong_number_of_chunks(setup):
    holder, enc, _, blobs = setup
    parsed = ContributionBlob.from_bytes(blobs[1], sender=1)
    short = ContributionBlob(
        parsed.context_id, ROUND, 9, parsed.length, parsed.chunks[:1], parsed.signature
    ).to_bytes()
    _refused(setup, short, 9, "wrong number of chunks 1 \\(expected 2\\)")


def test_wrong_length(setup):
    blob = _enc(setup[0], 9).encrypt(np.ones(LENGTH - 1), round_id=ROUND)
    _refused(setup, blob, 9, "wrong length 4999 \\(expected 5000\\)")


def test_sender_mismatch_and_replay(setup):
    holder, _, _, blobs = setup
    _refused(setup, blobs[2], 9, "claims to come from client 2")
    _refused(setup, blobs[0], 0, "already contributed")


def _resigned(holder, parsed, cid, chunks):
    """A registered client (``cid``) signing chunks of its choosing: only the ciphertext checks can refuse it."""
    from fedsecure.ckks.keys import contribution_message
    from fedsecure.ckks.wire import chunks_digest

    msg = contribution_message(holder.context_id, ROUND, cid, parsed.length, chunks_digest(tuple(chunks)))
    return ContributionBlob(holder.context_id, ROUND, cid, parsed.length, tuple(chunks), IDS[cid].sign(msg)).to_bytes()


def test_chunk_that_is_not_a_polynomial(setup):
    holder, _, _, blobs = setup
    parsed = ContributionBlob.from_bytes(blobs[1], sender=1)
    junk = (b"\x00" * 100, parsed.chunks[1])
    forged = _resigned(setup[0], parsed, 9, junk)
    _refused(setup, forged, 9, "chunk 0: polynomial has 100 bytes")
    q = int(holder._role.moduli[0])
    big = np.frombuffer(parsed.chunks[0], dtype="<u8").copy()
    big[17] = q  # a residue not below the prime
    _refused(setup, _resigned(setup[0], parsed, 9, (big.tobytes(), parsed.chunks[1])), 9, "chunk 0: .*not below")


def test_chunk_from_another_ring_degree(setup):
    from fedsecure.ckks import CKKSParams

    holder, _, _, blobs = setup
    parsed = ContributionBlob.from_bytes(blobs[1], sender=1)
    odd = KeyHolder(CKKSParams(8192, (60,), 40))
    alien_blob = ClientEncryptor(odd.public_context(), IDS[1]).encrypt(np.ones(10), round_id=ROUND)
    alien = ContributionBlob.from_bytes(alien_blob, sender=1)
    forged = _resigned(setup[0], parsed, 9, (alien.chunks[0], parsed.chunks[1]))
    _refused(setup, forged, 9, "chunk 0")


@given(pos=st.integers(0, 10**9), bit=st.integers(0, 7))
@settings(max_examples=60, deadline=None)
def test_any_bit_flip_is_refused(setup, pos, bit):
    holder, _, _, blobs = setup
    b = bytearray(blobs[1])
    b[pos % len(b)] ^= 1 << bit
    agg = _fresh(holder)
    with pytest.raises(ContributionError, match="client 1"):
        agg.add(bytes(b), sender=1)
    assert agg.count == 0


@given(data=st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_arbitrary_bytes_never_crash_the_parsers(data):
    with pytest.raises(ContributionError, match="client 5"):
        ContributionBlob.from_bytes(data, sender=5)
    with pytest.raises(CKKSError):
        AggregateBlob.from_bytes(data)
    for public in (True, False):
        with pytest.raises(CKKSError):
            ContextBlob.from_bytes(data, public=public)


def test_not_bytes_is_named():
    with pytest.raises(ContributionError, match="expected bytes, got str"):
        ContributionBlob.from_bytes("hello", sender=3)


def test_client_refuses_bad_vectors(setup):
    enc = ClientEncryptor(setup[0].public_context(), ClientIdentity(4))
    with pytest.raises(CKKSError, match="client 4: vector has non-finite"):
        enc.encrypt(np.array([1.0, np.inf]), round_id=b"r" * 16)
    with pytest.raises(CKKSError, match="client 4: weight"):
        enc.encrypt(np.ones(3), round_id=b"r" * 16, weight=-1)
    with pytest.raises(CKKSError, match="exceeds the range"):
        enc.encrypt(np.array([1e9]), round_id=b"r" * 16)
    with pytest.raises(CKKSError, match="non-empty 1-D"):
        enc.encrypt(np.zeros(0), round_id=b"r" * 16)
    with pytest.raises(CKKSError, match="round id must be 16 bytes"):
        enc.encrypt(np.ones(3), round_id=b"short")


def test_context_with_tampered_public_key_is_refused(setup):
    holder = setup[0]
    blob = ContextBlob.from_bytes(holder.public_context(), public=True)
    other = ContextBlob.from_bytes(KeyHolder().public_context(), public=True)
    swapped = ContextBlob(blob.params, blob.context_id, blob.seal_parameters, other.public_key, blob.exchange_public)
    with pytest.raises(CKKSError, match="context id does not match"):
        ClientEncryptor(swapped.to_bytes(), IDS[0])
    # the key holder's X25519 key is pinned by the context id as well: an aggregator cannot swap in its own
    swapped = ContextBlob(blob.params, blob.context_id, blob.seal_parameters, blob.public_key, other.exchange_public)
    with pytest.raises(CKKSError, match="context id does not match"):
        ClientEncryptor(swapped.to_bytes(), IDS[0])
