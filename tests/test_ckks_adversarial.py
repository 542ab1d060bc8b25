"""A malicious aggregator plays against the real KeyHolder / ClientEncryptor / StreamingAggregator and fails.

The aggregator here holds everything an aggregator holds (the aggregator
context, every contribution's bytes, every aggregate it builds, every
release the key holder returns) and, where a test says so, what colluding
clients hand it (their identity keys, hence their masks). It builds
aggregates by hand, so nothing in ``StreamingAggregator`` protects the key
holder: the key holder's own checks must.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import tenseal.sealapi as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fedsecure.ckks import (
    AggregateMismatchError,
    CKKSError,
    ClientEncryptor,
    ClientIdentity,
    ContributionError,
    EvidenceError,
    KeyHolder,
    RoundReusedError,
    StreamingAggregator,
    TooFewContributionsError,
)
from fedsecure.ckks import _sealio, _sealraw
from fedsecure.ckks.context import SealRole
from fedsecure.ckks.keys import contribution_message, mask, mask_seed
from fedsecure.ckks.packing import pack
from fedsecure.ckks.wire import AggregateBlob, ContextBlob, ContributionBlob, Evidence, chunks_digest

N = 4096
LENGTH = N  # one ciphertext: the key-recovery attack needs one chunk
IDS = [ClientIdentity(i) for i in range(1, 6)]


def _holder(**kw) -> KeyHolder:
    kw.setdefault("max_abs_input", 1.0)
    return KeyHolder(clients=[c.registration for c in IDS], **kw)


def _round(holder, xs, ids=IDS, round_id=None):
    """Honest clients contribute ``xs`` to one round; returns the round id and the contribution bytes by id."""
    round_id = round_id or os.urandom(16)
    blobs = {
        c.client_id: ClientEncryptor(holder.public_context(), c).encrypt(x, round_id=round_id) for c, x in zip(ids, xs)
    }
    return round_id, blobs


class Adversary:
    """The malicious aggregator's toolbox: it parses, adds and re-lists ciphertexts itself."""

    def __init__(self, holder: KeyHolder) -> None:
        self.holder = holder
        self.role = SealRole(ContextBlob.from_bytes(holder.aggregator_context(), public=False))
        self.moduli = self.role.moduli
        self.q = int(self.moduli[0])

    def residues(self, chunk: bytes) -> np.ndarray:
        return _sealraw.read_ciphertext(chunk, N, 1)[2].copy()

    def chunk(self, like: bytes, residues: np.ndarray) -> bytes:
        version, prefix, _ = _sealraw.read_ciphertext(like, N, 1)
        return _sealraw.write_ciphertext(version, prefix, residues)

    def add(self, blobs: list[bytes]) -> tuple[bytes, ...]:
        """Sum of the chunks of ``blobs`` (repeats allowed), chunk by chunk, with SEAL's evaluator."""
        parsed = [ContributionBlob.from_bytes(b, sender="adversary") for b in blobs]
        out = []
        for j in range(len(parsed[0].chunks)):
            acc = self.role.load_ciphertext(parsed[0].chunks[j])
            for p in parsed[1:]:
                self.role.evaluator.add_inplace(acc, self.role.load_ciphertext(p.chunks[j]))
            out.append(_sealio.save(acc))
        return tuple(out)

    def evidence(self, blob: bytes) -> Evidence:
        p = ContributionBlob.from_bytes(blob, sender="adversary")
        return Evidence(p.client_id, chunks_digest(p.chunks), p.signature)

    def aggregate(self, round_id, chunks, evidence, length=LENGTH) -> bytes:
        return AggregateBlob(self.holder.context_id, round_id, length, tuple(evidence), tuple(chunks)).to_bytes()


def _mask_of(holder, ident, round_id, chunks=1):
    """What a colluding client hands the aggregator: its own mask for the round."""
    blob = ContextBlob.from_bytes(holder.public_context(), public=True)
    seed = mask_seed(ident.shared_secret(blob.exchange_public), holder.context_id, round_id, ident.client_id)
    return mask(seed, chunks, N, SealRole(blob).moduli)


def _secret_ntt(holder) -> np.ndarray:
    """The real secret key in NTT form (the test's ground truth; the adversary never sees it)."""
    role = SealRole(ContextBlob.from_bytes(holder.public_context(), public=True))
    sk = _sealio.load(sa.SecretKey(), holder.export_secret_key(), role.seal)
    plain = sk.data()
    return np.array([plain[i] for i in range(N)], dtype=object)


def _li_micciancio(adv: Adversary, release: np.ndarray, aggregate_chunk: bytes, known_masks: np.ndarray | None):
    """Li-Micciancio key recovery from one released decryption of a ciphertext the attacker holds.

    Re-encode the release at the scale: ``m' = Encode(z) = c0 + c1 s`` (minus the
    masks the attacker can subtract), then ``s = (m' - c0) / c1`` coefficient by
    coefficient in the NTT domain (c1 is invertible at almost every point).
    """
    q = adv.q
    res = adv.residues(aggregate_chunk)
    c0, c1 = [int(v) for v in res[0, 0]], [int(v) for v in res[1, 0]]
    if known_masks is not None:
        c0 = [(a - int(m)) % q for a, m in zip(c0, known_masks[0, 0])]
    enc = sa.CKKSEncoder(adv.role.seal)
    plain = sa.Plaintext()
    enc.encode(pack(release, N)[0], adv.role.params.scale, plain)
    m = [plain[i] for i in range(N)]
    return np.array([((mi - a) * pow(b, -1, q)) % q if b else 0 for mi, a, b in zip(m, c0, c1)], dtype=object)


# ---------------------------------------------------------------- (a) key recovery from a release


def test_li_micciancio_attack_works_when_the_release_is_exact():
    """Control: with no flooding and every mask known (aggregator colludes with all contributors),
    one release gives every coefficient of the secret key. This is the attack of issue 11 item 7."""
    holder = _holder(flood_std=0.0)
    xs = np.random.default_rng(1).uniform(-1, 1, (3, LENGTH))
    r, blobs = _round(holder, xs, IDS[:3])
    adv = Adversary(holder)
    chunks = adv.add(list(blobs.values()))
    release = holder.decrypt(adv.aggregate(r, chunks, [adv.evidence(b) for b in blobs.values()]))
    known = sum(_mask_of(holder, c, r).astype(object) for c in IDS[:3]) % adv.q
    guess = _li_micciancio(adv, release, chunks[0], known)
    assert np.sum(guess == _secret_ntt(holder)) == N  # 4096 / 4096


def test_li_micciancio_attack_fails_with_one_honest_contributor():
    """With the default key holder, an aggregator that knows every mask but one recovers no coefficient:
    the honest client's mask, uniform mod q, sits inside c0 + c1 s."""
    holder = _holder()
    xs = np.random.default_rng(2).uniform(-1, 1, (3, LENGTH))
    r, blobs = _round(holder, xs, IDS[:3])
    adv = Adversary(holder)
    chunks = adv.add(list(blobs.values()))
    release = holder.decrypt(adv.aggregate(r, chunks, [adv.evidence(b) for b in blobs.values()]))
    assert np.max(np.abs(release - xs.sum(0))) <= holder.error_bound(3, LENGTH)  # the honest sum is released
    known = sum(_mask_of(holder, c, r).astype(object) for c in IDS[:2]) % adv.q  # client 3 stays honest
    guess = _li_micciancio(adv, release, chunks[0], known)
    assert np.sum(guess == _secret_ntt(holder)) <= 2


def test_li_micciancio_attack_fails_under_full_collusion_with_flooding():
    """Even knowing every mask, the flooding noise (std 2^-24 per value, ~2^10.5 per coefficient) breaks
    the exact solve: m' - c0 = c1 s + f is an RLWE sample, and no coefficient of s comes out."""
    holder = _holder()
    xs = np.random.default_rng(3).uniform(-1, 1, (3, LENGTH))
    r, blobs = _round(holder, xs, IDS[:3])
    adv = Adversary(holder)
    chunks = adv.add(list(blobs.values()))
    release = holder.decrypt(adv.aggregate(r, chunks, [adv.evidence(b) for b in blobs.values()]))
    known = sum(_mask_of(holder, c, r).astype(object) for c in IDS[:3]) % adv.q
    guess = _li_micciancio(adv, release, chunks[0], known)
    assert np.sum(guess == _secret_ntt(holder)) <= 2


def test_tampered_c1_that_would_expose_the_key_is_refused():
    """Adding K to the aggregate's c1 makes the decryption carry K s; at K = Delta the key would show in the
    clear. The key holder's range check (n * max_abs_input + bound) refuses it; nothing is released."""
    holder = _holder()
    xs = np.random.default_rng(4).uniform(-1, 1, (3, LENGTH))
    r, blobs = _round(holder, xs, IDS[:3])
    adv = Adversary(holder)
    chunks = list(adv.add(list(blobs.values())))
    res = adv.residues(chunks[0])
    res[1, 0] = (res[1, 0] + np.uint64(2**40)) % np.uint64(adv.q)
    chunks[0] = adv.chunk(chunks[0], res)
    with pytest.raises(AggregateMismatchError, match="nothing released"):
        holder.decrypt(adv.aggregate(r, chunks, [adv.evidence(b) for b in blobs.values()]))
    assert r in holder.used_rounds


# ---------------------------------------------------------------- (b) lying about who contributed


@pytest.fixture(scope="module")
def world():
    holder = _holder(min_contributions=2)
    xs = np.random.default_rng(5).uniform(-1, 1, (4, LENGTH))
    r, blobs = _round(holder, xs, IDS[:4])
    return holder, xs, r, blobs, Adversary(holder)


def _fresh_holder(holder, **kw):
    """The same deployment with an empty round history (a fresh process would be; see protocols/ckks.md)."""
    kw.setdefault("max_abs_input", 1.0)
    return KeyHolder.from_secret_key(
        holder.public_context(), holder.export_secret_key(), holder.export_exchange_key(),
        clients=holder.registrations, **kw,
    )


def test_one_contribution_under_fake_ids_is_refused(world):
    """Client 1's contribution listed with the (valid) evidence of clients 2 and 3 whose ciphertexts are left
    out: the masks of 2 and 3 stay in, the sum is uniform garbage, and the key holder refuses to release it."""
    holder, xs, r, blobs, adv = world
    kh = _fresh_holder(holder, min_contributions=3)
    agg = adv.aggregate(r, adv.add([blobs[1]]), [adv.evidence(blobs[i]) for i in (1, 2, 3)])
    with pytest.raises(AggregateMismatchError):
        kh.decrypt(agg)


def test_unregistered_or_unsigned_ids_are_refused(world):
    """Ids the key holder never pinned, or evidence whose signature does not verify, are refused before
    any decryption, and the round is not spent."""
    holder, xs, r, blobs, adv = world
    kh = _fresh_holder(holder, min_contributions=3)
    chunks = adv.add([blobs[1]])
    fake = Evidence(99, b"\0" * 32, b"\0" * 64)
    with pytest.raises(EvidenceError, match="client 99 is not registered"):
        kh.decrypt(adv.aggregate(r, chunks, [adv.evidence(blobs[1]), fake]))
    unsigned = Evidence(2, adv.evidence(blobs[2]).chunks_digest, b"\1" * 64)
    with pytest.raises(EvidenceError, match="client 2's signature does not verify"):
        kh.decrypt(adv.aggregate(r, chunks, [adv.evidence(blobs[1]), unsigned]))
    # relabelled: client 1's signature presented as client 3's
    relabelled = Evidence(3, adv.evidence(blobs[1]).chunks_digest, adv.evidence(blobs[1]).signature)
    with pytest.raises(EvidenceError, match="client 3's signature"):
        kh.decrypt(adv.aggregate(r, chunks, [adv.evidence(blobs[1]), relabelled]))
    assert r not in kh.used_rounds


def test_duplicated_contribution_is_refused(world):
    """Client 1's contribution added twice (with 2's) and listed as {1, 2}, or as {1, 2, 3}: 2 M_1 - M_1
    leaves a uniform mask; refused."""
    holder, xs, r, blobs, adv = world
    for listed in ((1, 2), (1, 2, 3)):
        kh = _fresh_holder(holder)
        agg = adv.aggregate(r, adv.add([blobs[1], blobs[1], blobs[2]]), [adv.evidence(blobs[i]) for i in listed])
        with pytest.raises(AggregateMismatchError):
            kh.decrypt(agg)
    with pytest.raises(CKKSError, match="listed twice"):
        _fresh_holder(holder).decrypt(
            adv.aggregate(r, adv.add([blobs[1], blobs[1]]), [adv.evidence(blobs[1])] * 2)
        )


def test_subset_difference_needs_two_decryptions_of_one_round(world):
    """The attack of issue 11 item 8: decrypt {1,2,3,4} and {2,3,4} of the same round and subtract. The
    first decrypts; the second is refused (one decryption per round id), whatever its contents."""
    holder, xs, r, blobs, adv = world
    kh = _fresh_holder(holder)
    full = kh.decrypt(adv.aggregate(r, adv.add([blobs[i] for i in (1, 2, 3, 4)]), [adv.evidence(blobs[i]) for i in (1, 2, 3, 4)]))
    assert np.max(np.abs(full - xs.sum(0))) <= kh.error_bound(4, LENGTH)
    subset = adv.aggregate(r, adv.add([blobs[i] for i in (2, 3, 4)]), [adv.evidence(blobs[i]) for i in (2, 3, 4)])
    with pytest.raises(RoundReusedError, match="already decrypted"):
        kh.decrypt(subset)
    with pytest.raises(RoundReusedError):
        kh.decrypt(adv.aggregate(r, adv.add([blobs[i] for i in (1, 2, 3, 4)]), [adv.evidence(blobs[i]) for i in (1, 2, 3, 4)]))


def test_subset_under_a_new_round_id_decrypts_to_garbage_and_is_refused(world):
    """Re-labelling round r's contributions as round r' (to get a second decryption) fails twice over: the
    signatures name round r, and even with r' evidence the round-r masks do not cancel."""
    holder, xs, r, blobs, adv = world
    kh = _fresh_holder(holder)
    r2 = os.urandom(16)
    chunks = adv.add([blobs[i] for i in (2, 3, 4)])
    with pytest.raises(EvidenceError, match="signature does not verify"):
        kh.decrypt(adv.aggregate(r2, chunks, [adv.evidence(blobs[i]) for i in (2, 3, 4)]))
    # the clients really do take part in r2 (new inputs); the aggregator swaps in their round-r ciphertexts
    _, blobs2 = _round(holder, np.zeros((4, LENGTH)), IDS[:4], round_id=r2)
    with pytest.raises(AggregateMismatchError):
        kh.decrypt(adv.aggregate(r2, chunks, [adv.evidence(blobs2[i]) for i in (2, 3, 4)]))


def test_contribution_replayed_from_another_round_is_refused_by_the_aggregator_and_the_key_holder(world):
    """An honest aggregator refuses a contribution of another round by its header; a malicious one that mixes
    client 1's round-r ciphertext with client 1's round-r2 evidence gets a refusal from the key holder."""
    holder, xs, r, blobs, adv = world
    r2 = os.urandom(16)
    _, blobs2 = _round(holder, xs[:2], IDS[:2], round_id=r2)
    agg = StreamingAggregator(holder.aggregator_context(), LENGTH, round_id=r2, clients=holder.registrations)
    with pytest.raises(ContributionError, match="another round"):
        agg.add(blobs[1], sender=1)
    kh = _fresh_holder(holder)
    with pytest.raises(AggregateMismatchError):
        kh.decrypt(adv.aggregate(r2, adv.add([blobs[1], blobs2[2]]), [adv.evidence(blobs2[1]), adv.evidence(blobs2[2])]))


def test_forged_and_impersonated_contributions_are_excluded_and_the_round_goes_on(world):
    """At the aggregator: a contribution signed by another client's key, an unsigned one and one altered
    after signing are each refused naming the sender; the honest ones still sum and decrypt."""
    holder, xs, r, blobs, adv = world
    agg = StreamingAggregator(holder.aggregator_context(), LENGTH, round_id=r, clients=holder.registrations)
    agg.add(blobs[1], sender=1)
    p = ContributionBlob.from_bytes(blobs[2], sender=2)
    impostor_sig = IDS[0].sign(contribution_message(holder.context_id, r, 2, LENGTH, chunks_digest(p.chunks)))
    for forged in (
        ContributionBlob(p.context_id, r, 2, LENGTH, p.chunks, impostor_sig),
        ContributionBlob(p.context_id, r, 2, LENGTH, p.chunks, b"\0" * 64),
        ContributionBlob(p.context_id, r, 2, LENGTH, adv.add([blobs[2], blobs[3]]), p.signature),
    ):
        with pytest.raises(ContributionError, match="client 2: signature does not verify"):
            agg.add(forged.to_bytes(), sender=2)
    with pytest.raises(ContributionError, match="unknown client"):
        agg.add(ClientEncryptor(holder.public_context(), ClientIdentity(42)).encrypt(xs[0], round_id=r), sender=42)
    for i in (2, 3):
        agg.add(blobs[i], sender=i)
    out = _fresh_holder(holder).decrypt(agg.aggregate())
    assert np.max(np.abs(out - xs[:3].sum(0))) <= holder.error_bound(3, LENGTH)


def test_too_few_verified_contributors_is_refused(world):
    """min_contributions counts verified evidence, not what the aggregator claims."""
    holder, xs, r, blobs, adv = world
    kh = _fresh_holder(holder, min_contributions=2)
    with pytest.raises(TooFewContributionsError, match="1 verified"):
        kh.decrypt(adv.aggregate(r, adv.add([blobs[1]]), [adv.evidence(blobs[1])]))


def test_masked_contribution_is_independent_of_the_input():
    """What the aggregator holds of a client, its masked c0 (all that carries the input besides c1), is
    uniform mod q: two very different inputs give c0 residues with the same uniform statistics and no
    correlation with the input's encoding."""
    holder = _holder()
    adv = Adversary(holder)
    r1, r2 = os.urandom(16), os.urandom(16)
    enc = ClientEncryptor(holder.public_context(), IDS[0])
    a = adv.residues(ContributionBlob.from_bytes(enc.encrypt(np.zeros(LENGTH), round_id=r1), sender=1).chunks[0])
    b = adv.residues(ContributionBlob.from_bytes(enc.encrypt(np.full(LENGTH, 0.99), round_id=r2), sender=1).chunks[0])
    q = float(adv.q)
    for res in (a, b):
        u = res[0, 0].astype(np.float64) / q
        assert abs(u.mean() - 0.5) < 0.03 and abs(u.var() - 1 / 12) < 0.01
    assert abs(np.corrcoef(a[0, 0].astype(np.float64), b[0, 0].astype(np.float64))[0, 1]) < 0.1


def test_client_refuses_a_second_encryption_in_the_same_round():
    """Two inputs under one round's mask would cancel the mask in their difference: the client refuses."""
    holder = _holder()
    enc = ClientEncryptor(holder.public_context(), IDS[0])
    r = os.urandom(16)
    enc.encrypt(np.zeros(10), round_id=r)
    with pytest.raises(RoundReusedError, match="already contributed"):
        enc.encrypt(np.ones(10), round_id=r)


# ---------------------------------------------------------------- (c) well-formed but malicious bytes


@pytest.fixture(scope="module")
def fuzz_world():
    holder = _holder()
    xs = np.random.default_rng(9).uniform(-1, 1, (2, LENGTH + 5))
    r, blobs = _round(holder, xs, IDS[:2])
    return holder, r, blobs, Adversary(holder)


def _mutate(data: bytes, draw) -> bytes:
    b = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "grow", "set"]))
        pos = draw(st.integers(0, max(len(b) - 1, 0)))
        if kind == "flip" and b:
            b[pos] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del b[pos:]
        elif kind == "grow":
            b[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif b:
            b[pos] = draw(st.integers(0, 255))
    return bytes(b)


_HEALTH = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large]


@given(data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=_HEALTH)
def test_key_holder_raises_only_ckks_errors_on_malicious_aggregates(fuzz_world, data):
    """Re-sealed aggregates (valid framing and digest) with mutated chunks, evidence, lengths and ids:
    KeyHolder.decrypt either refuses with a CKKSError or returns a finite vector of the stated length."""
    holder, r, blobs, adv = fuzz_world
    kh = _fresh_holder(holder)
    draw = data.draw
    chunks = list(adv.add(list(blobs.values())))
    evidence = [adv.evidence(b) for b in blobs.values()]
    what = draw(st.sampled_from(["chunk", "evidence", "length", "chunks", "round"]))
    length = LENGTH + 5
    if what == "chunk":
        i = draw(st.integers(0, len(chunks) - 1))
        chunks[i] = _mutate(chunks[i], draw)
    elif what == "evidence":
        j = draw(st.integers(0, len(evidence) - 1))
        e = evidence[j]
        evidence[j] = Evidence(
            draw(st.sampled_from([e.client_id, 2, 3, 99, -1, 2**63 - 1])),
            draw(st.sampled_from([e.chunks_digest, os.urandom(32)])),
            draw(st.sampled_from([e.signature, os.urandom(64)])),
        )
    elif what == "length":
        length = draw(st.sampled_from([0, 1, N, 2 * N, 2 * N + 1, 2**40, 2**64 - 1]))
    elif what == "chunks":
        chunks = draw(st.sampled_from([[], chunks[:1], chunks + chunks[:1], [chunks[1], chunks[0]]]))
    else:
        r = os.urandom(16)
    try:
        out = kh.decrypt(adv.aggregate(r, chunks, evidence, length=length))
    except CKKSError:
        return
    assert out.shape == (length,) and np.all(np.isfinite(out))


@given(data=st.data())
@settings(max_examples=60, deadline=None, suppress_health_check=_HEALTH)
def test_aggregator_raises_only_contribution_errors_on_signed_malicious_blobs(fuzz_world, data):
    """A registered client signs whatever it likes (mutated chunks, wrong lengths): StreamingAggregator.add
    raises ContributionError or accepts it, never anything else, and a refusal leaves the sum unchanged."""
    holder, r, blobs, adv = fuzz_world
    draw = data.draw
    p = ContributionBlob.from_bytes(blobs[1], sender=1)
    chunks = list(p.chunks)
    i = draw(st.integers(0, len(chunks) - 1))
    chunks[i] = _mutate(chunks[i], draw)
    length = draw(st.sampled_from([p.length, p.length + 1, 1, 0, 2**63]))
    sig = IDS[0].sign(contribution_message(holder.context_id, r, 1, length, chunks_digest(tuple(chunks))))
    blob = ContributionBlob(p.context_id, r, 1, length, tuple(chunks), sig).to_bytes()
    agg = StreamingAggregator(holder.aggregator_context(), LENGTH + 5, round_id=r, clients=holder.registrations)
    agg.add(blobs[2], sender=2)
    try:
        agg.add(blob, sender=draw(st.sampled_from([1, 2, 7])))
    except ContributionError:
        assert agg.count == 1


@given(data=st.data())
@settings(max_examples=150, deadline=None, suppress_health_check=_HEALTH)
def test_parsers_raise_only_ckks_errors(fuzz_world, data):
    """Mutated contribution, aggregate and context bytes, and mutated SEAL chunks: every parser raises a
    CKKSError (ContributionError for contributions) and nothing else."""
    holder, r, blobs, adv = fuzz_world
    draw = data.draw
    target = draw(st.sampled_from(["contribution", "aggregate", "public", "aggregator", "seal"]))
    chunks = adv.add(list(blobs.values()))
    source = {
        "contribution": blobs[1],
        "aggregate": adv.aggregate(r, chunks, [adv.evidence(b) for b in blobs.values()], length=LENGTH + 5),
        "public": holder.public_context(),
        "aggregator": holder.aggregator_context(),
        "seal": chunks[0],
    }[target]
    bad = _mutate(source, draw)
    try:
        if target == "contribution":
            ContributionBlob.from_bytes(bad, sender=1)
        elif target == "aggregate":
            AggregateBlob.from_bytes(bad)
        elif target == "seal":
            _sealraw.read_ciphertext(bad, N, 1)
        else:
            ContextBlob.from_bytes(bad, public=target == "public")
    except ContributionError as e:
        assert target == "contribution" and e.sender == 1
    except CKKSError:
        assert target != "contribution"


def test_restored_key_holder_keeps_refusing_spent_rounds(world):
    """A key holder restored with its persisted round history still decrypts each round once."""
    holder, xs, r, blobs, adv = world
    kh = _fresh_holder(holder)
    kh.decrypt(adv.aggregate(r, adv.add([blobs[1], blobs[2]]), [adv.evidence(blobs[i]) for i in (1, 2)]))
    restored = KeyHolder.from_secret_key(
        holder.public_context(), holder.export_secret_key(), holder.export_exchange_key(),
        clients=holder.registrations, used_rounds=kh.used_rounds,
    )
    with pytest.raises(RoundReusedError):
        restored.decrypt(adv.aggregate(r, adv.add([blobs[3], blobs[4]]), [adv.evidence(blobs[i]) for i in (3, 4)]))
