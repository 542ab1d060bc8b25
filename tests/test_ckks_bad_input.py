"""Bad contributions are refused with the client named; the aggregate stays correct."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.ckks import CKKSError, ClientEncryptor, ContributionError, KeyHolder, StreamingAggregator
from fedsecure.ckks.wire import AggregateBlob, ContextBlob, ContributionBlob

LENGTH = 5000  # two ciphertexts


@pytest.fixture(scope="module")
def setup():
    holder = KeyHolder()
    enc = ClientEncryptor(holder.public_context())
    rng = np.random.default_rng(11)
    xs = {i: rng.uniform(-1, 1, LENGTH) for i in range(3)}
    blobs = {i: enc.encrypt(x, client_id=i) for i, x in xs.items()}
    return holder, enc, xs, blobs


def _refused(setup, blob, sender, match):
    """``blob`` from ``sender`` is refused naming the client; accepted work survives and the rest still sums."""
    holder, _, xs, blobs = setup
    agg = StreamingAggregator(holder.aggregator_context(), LENGTH)
    agg.add(blobs[0], sender=0)  # accepted before the bad one: it must not be lost
    with pytest.raises(ContributionError, match=match) as info:
        agg.add(blob, sender=sender)
    assert info.value.sender == sender and f"client {sender}" in str(info.value)
    assert agg.count == 1
    for i in (1, 2):
        agg.add(blobs[i], sender=i)
    assert agg.contributors == (0, 1, 2)
    out = holder.decrypt(agg.aggregate())
    expected = xs[0] + xs[1] + xs[2]
    assert np.max(np.abs(out - expected)) <= holder.error_bound(3, LENGTH)


def _fresh(holder):
    return StreamingAggregator(holder.aggregator_context(), LENGTH)


def test_contribution_under_another_context(setup):
    other = ClientEncryptor(KeyHolder().public_context())
    _refused(setup, other.encrypt(np.ones(LENGTH), client_id=7), 7, "another context")


def test_contribution_under_other_parameters(setup):
    from fedsecure.ckks import CKKSParams

    odd = KeyHolder(CKKSParams(8192, (60,), 40))
    blob = ClientEncryptor(odd.public_context()).encrypt(np.ones(LENGTH), client_id=7)
    _refused(setup, blob, 7, "another context")


@pytest.mark.parametrize("cut", [1, 40, 1000, 70_000])
def test_truncated_bytes(setup, cut):
    blob = setup[3][1]
    _refused(setup, blob[:-cut], 1, "truncated|digest")


def test_wrong_number_of_chunks(setup):
    holder, enc, _, blobs = setup
    parsed = ContributionBlob.from_bytes(blobs[1], sender=1)
    short = ContributionBlob(parsed.context_id, 9, parsed.length, parsed.chunks[:1]).to_bytes()
    _refused(setup, short, 9, "wrong number of chunks 1 \\(expected 2\\)")


def test_wrong_length(setup):
    _, enc, _, _ = setup
    _refused(setup, enc.encrypt(np.ones(LENGTH - 1), client_id=9), 9, "wrong length 4999 \\(expected 5000\\)")


def test_sender_mismatch_and_replay(setup):
    holder, _, _, blobs = setup
    _refused(setup, blobs[2], 9, "claims to come from client 2")
    _refused(setup, blobs[0], 0, "already contributed")


def test_chunk_that_is_not_a_ciphertext(setup):
    holder, _, _, blobs = setup
    parsed = ContributionBlob.from_bytes(blobs[1], sender=1)
    junk = (b"\x00" * 100, parsed.chunks[1])
    forged = ContributionBlob(parsed.context_id, 9, parsed.length, junk).to_bytes()
    _refused(setup, forged, 9, "chunk 0: not a ciphertext")


def test_chunk_from_another_ring_degree(setup):
    from fedsecure.ckks import CKKSParams

    holder, _, _, blobs = setup
    parsed = ContributionBlob.from_bytes(blobs[1], sender=1)
    odd = KeyHolder(CKKSParams(8192, (60,), 40))
    alien = ContributionBlob.from_bytes(ClientEncryptor(odd.public_context()).encrypt(np.ones(10), client_id=1), sender=1)
    forged = ContributionBlob(parsed.context_id, 9, parsed.length, (alien.chunks[0], parsed.chunks[1])).to_bytes()
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
    enc = setup[1]
    with pytest.raises(CKKSError, match="client 4: vector has non-finite"):
        enc.encrypt(np.array([1.0, np.inf]), client_id=4)
    with pytest.raises(CKKSError, match="client 4: weight"):
        enc.encrypt(np.ones(3), client_id=4, weight=-1)
    with pytest.raises(CKKSError, match="exceeds the range"):
        enc.encrypt(np.array([1e9]), client_id=4)
    with pytest.raises(CKKSError, match="non-empty 1-D"):
        enc.encrypt(np.zeros(0), client_id=4)


def test_context_with_tampered_public_key_is_refused(setup):
    holder = setup[0]
    blob = ContextBlob.from_bytes(holder.public_context(), public=True)
    other = ContextBlob.from_bytes(KeyHolder().public_context(), public=True)
    swapped = ContextBlob(blob.params, blob.context_id, blob.seal_parameters, other.public_key).to_bytes()
    with pytest.raises(CKKSError, match="context id does not match"):
        ClientEncryptor(swapped)
