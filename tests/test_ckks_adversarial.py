"""A malicious aggregator plays against the real KeyHolder / ClientEncryptor / StreamingAggregator and fails.

The aggregator here holds everything an aggregator holds (the aggregator
context, every contribution's ``c0`` part, every aggregate it builds, every
release the key holder returns) and, where a test says so, what colluding
clients hand it (their identity keys, hence their masks and their
encryption randomness, hence their ``c1``). It builds aggregates by hand, so
nothing in ``StreamingAggregator`` protects the key holder: the key holder's
own checks must. In wire v4 nobody sends a ``c1``: the key holder computes
``C1`` itself from the randomness it shares with each listed client, so
neither the aggregator nor a client chooses what multiplies the secret key.
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
from fedsecure.ckks.keys import contribution_message, encryption_randomness, mask, mask_seed, randomness_seed
from fedsecure.ckks.packing import pack, unpack
from fedsecure.ckks.ring import FixedMultiplier, residues
from fedsecure.ckks.roles import _public_key_polys
from fedsecure.ckks.wire import AggregateBlob, ContextBlob, ContributionBlob, Evidence, chunks_digest

N = 4096
LENGTH = N  # one ciphertext: the key-recovery attack needs one chunk
IDS = [ClientIdentity(i) for i in range(1, 6)]


def _holder(**kw) -> KeyHolder:
    kw.setdefault("max_abs_input", 1.0)
    return KeyHolder(clients=[c.registration for c in IDS], **kw)


def _round(holder, xs, ids=IDS, round_id=None):
    """Honest clients contribute ``xs`` to one round; returns the round id and each client's contribution by id."""
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
        """One chunk's polynomial, ``[prime, coefficient]``."""
        return _sealraw.read_poly(chunk, N, self.moduli).copy()

    def chunk(self, residues: np.ndarray) -> bytes:
        return _sealraw.poly_bytes(residues)

    def add(self, blobs: list) -> tuple[bytes, ...]:
        """Sum of the ``c0`` chunks of ``blobs`` (repeats allowed), chunk by chunk."""
        parsed = [ContributionBlob.from_bytes(b, sender="adversary") for b in blobs]
        out = []
        for j in range(len(parsed[0].chunks)):
            acc = self.residues(parsed[0].chunks[j])
            for p in parsed[1:]:
                _sealraw.add_mod(acc, self.residues(p.chunks[j]), self.moduli, out=acc)
            out.append(self.chunk(acc))
        return tuple(out)

    def evidence(self, blob) -> Evidence:
        p = ContributionBlob.from_bytes(blob, sender="adversary")
        return Evidence(p.client_id, chunks_digest(p.chunks), p.signature)

    def aggregate(self, round_id, chunks, evidence, length=LENGTH) -> bytes:
        return AggregateBlob(self.holder.context_id, round_id, length, tuple(evidence), tuple(chunks)).to_bytes()


def _mask_of(holder, ident, round_id, chunks=1):
    """What a colluding client hands the aggregator: its own mask for the round."""
    blob = ContextBlob.from_bytes(holder.public_context(), public=True)
    seed = mask_seed(ident.shared_secret(blob.exchange_public), holder.context_id, round_id, ident.client_id)
    return mask(seed, chunks, N, SealRole(blob).moduli)


def _c1_of(holder, idents, round_id) -> bytes:
    """What colluding clients hand the aggregator: the sum of their ``c1 = p1 u + e1`` for the round (one
    chunk), computed from their own encryption randomness and the public key."""
    blob = ContextBlob.from_bytes(holder.public_context(), public=True)
    role = SealRole(blob)
    u = e1 = 0
    for ident in idents:
        seed = randomness_seed(ident.shared_secret(blob.exchange_public), holder.context_id, round_id, ident.client_id)
        ui, ei = encryption_randomness(seed, 1, N)
        u, e1 = u + ui, e1 + ei
    ntt = ClientEncryptor(holder.public_context(), idents[0])._ntt.to_ntt(residues(np.concatenate([u, e1]), role.moduli))
    times_p1 = FixedMultiplier(_public_key_polys(role, blob.public_key)[1], role.moduli)
    return _sealraw.poly_bytes(_sealraw.add_mod(times_p1(ntt[:1]), ntt[1:], role.moduli)[0])


def _secret_ntt(holder) -> np.ndarray:
    """The real secret key in NTT form (the test's ground truth; the adversary never sees it)."""
    role = SealRole(ContextBlob.from_bytes(holder.public_context(), public=True))
    sk = _sealio.load(sa.SecretKey(), holder.export_secret_key(), role.seal)
    plain = sk.data()
    return np.array([plain[i] for i in range(N)], dtype=object)


def _li_micciancio(
    adv: Adversary, release: np.ndarray, c0_chunk: bytes, c1_chunk: bytes, known_masks: np.ndarray | None
):
    """Li-Micciancio key recovery from one released decryption of a ciphertext the attacker holds.

    Re-encode the release at the scale: ``m' = Encode(z) = c0 + c1 s`` (minus the
    masks the attacker can subtract), then ``s = (m' - c0) / c1`` coefficient by
    coefficient in the NTT domain (c1 is invertible at almost every point). In
    v3 the aggregator has ``C0`` only; ``C1`` must come from colluding clients.
    """
    q = adv.q
    c0, c1 = [int(v) for v in adv.residues(c0_chunk)[0]], [int(v) for v in adv.residues(c1_chunk)[0]]
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
    c1 = _c1_of(holder, IDS[:3], r)  # every client colludes: they hand over their c1
    guess = _li_micciancio(adv, release, chunks[0], c1, known)
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
    c1 = _c1_of(holder, IDS[:3], r)  # even handed the honest client's c1 as well
    guess = _li_micciancio(adv, release, chunks[0], c1, known)
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
    c1 = _c1_of(holder, IDS[:3], r)
    guess = _li_micciancio(adv, release, chunks[0], c1, known)
    assert np.sum(guess == _secret_ntt(holder)) <= 2


def _embedding_to_coefficients(slots: np.ndarray) -> np.ndarray:
    """Inverse canonical embedding in SEAL's slot order (slot j is the value at the root zeta^(3^j mod 2N)):
    the N real coefficients of the polynomial whose N/2 slot values are ``slots``."""
    k = np.empty(N // 2, dtype=np.int64)
    pos = 1
    for j in range(N // 2):
        k[j], pos = pos, pos * 3 % (2 * N)
    a = np.zeros(2 * N, dtype=np.complex128)
    a[k] = slots
    return (2 / N) * np.real(np.fft.fft(a))[:N]


def _secret_coefficients(holder) -> np.ndarray:
    """The real secret key's coefficients (ground truth), from decoding the key itself at scale 1."""
    s = np.round(_embedding_to_coefficients(np.asarray(holder._encoder.decode_complex(holder._secret_key.data()))))
    assert set(np.unique(s)) <= {-1.0, 0.0, 1.0}
    return s


def _decrypt_as_given(holder, round_id, c0: bytes, c1: np.ndarray, ids) -> np.ndarray:
    """Positive control built from KeyHolder internals: what the v2 key holder did with an aggregate whose
    ``c1`` came from the aggregator -- remove the listed masks from c0 and decrypt ``(c0, c1)`` as given."""
    role, moduli = holder._role, holder._role.moduli
    m = sum(_mask_of(holder, c, round_id).astype(object) for c in IDS if c.client_id in ids) % int(moduli[0])
    c0 = _sealraw.sub_mod(_sealraw.read_poly(c0, N, moduli), m[0].astype(np.uint64), moduli)
    version, prefix = holder._ct_template
    ct = role.load_ciphertext(_sealraw.write_ciphertext(version, prefix, c0, c1))
    plain = sa.Plaintext()
    holder._decryptor.decrypt(ct, plain)
    return unpack(np.asarray(holder._encoder.decode_complex(plain))[None], LENGTH)


def test_v2_c1_tamper_recovered_the_secret_key_from_one_release():
    """Positive control for the old design (wire v2: the aggregate carried (C0, C1), so the aggregator could
    change C1). Adding the constant K to C1 adds K s to the decryption. With K = 2^33 (K / Delta = 1/128)
    K s stays inside the range check, so v2 released it, and with no colluding client one release gives
    every coefficient of s: the release times Delta / K is s's canonical embedding plus the (small) honest
    sum times 128; inverting the embedding and rounding returns s exactly."""
    holder = _holder()  # max_abs_input 1.0, default flooding
    xs = np.random.default_rng(4).uniform(-0.01, 0.01, (3, LENGTH))  # updates far below the stated bound
    r, blobs = _round(holder, xs, IDS[:3])
    adv = Adversary(holder)
    c0 = adv.add(list(blobs.values()))[0]
    c1 = adv.residues(_c1_of(holder, IDS[:3], r))  # in v2 this sat in the aggregate
    K = 2**33
    tampered = _sealraw.add_mod(c1, np.full_like(c1, K), adv.moduli)  # NTT form: the constant K is K everywhere
    release = _decrypt_as_given(holder, r, c0, tampered, (1, 2, 3)) + np.random.default_rng(0).normal(0, holder.flood_std, LENGTH)
    limit = 3 * holder.max_abs_input + holder.error_bound(3, LENGTH)
    assert np.max(np.abs(release)) <= limit  # v2's range check passed it: released
    guess = _embedding_to_coefficients(pack(release, N)[0] * holder.params.scale / K)
    assert np.max(np.abs(guess - np.round(guess))) < 0.3
    assert np.array_equal(np.round(guess), _secret_coefficients(holder))  # 4096 / 4096 coefficients of s


def test_aggregator_has_no_c1_to_tamper_with():
    """The aggregate is the C0 sum only; the key holder computes C1 itself. An aggregate chunk that smuggles in
    a ciphertext (c0 || c1, or a SEAL ciphertext) is refused."""
    holder = _holder()
    xs = np.random.default_rng(6).uniform(-0.5, 0.5, (3, LENGTH))
    r, blobs = _round(holder, xs, IDS[:3])
    adv = Adversary(holder)
    c0 = adv.add(list(blobs.values()))
    c1 = _c1_of(holder, IDS[:3], r)
    evidence = [adv.evidence(b) for b in blobs.values()]
    for smuggled in (c0[0] + c1, _sealraw.write_ciphertext(*holder._ct_template, adv.residues(c0[0]), adv.residues(c1))):
        with pytest.raises(CKKSError, match="chunk 0: polynomial has"):
            holder.decrypt(adv.aggregate(r, (smuggled,), evidence))
    assert r not in holder.used_rounds  # refused before decrypting anything; the honest C0 still decrypts
    assert np.max(np.abs(holder.decrypt(adv.aggregate(r, c0, evidence)) - xs.sum(0))) <= holder.error_bound(3, LENGTH)


def test_tampered_c0_moves_the_release_by_the_tampers_own_decoding():
    """Whatever the aggregator adds to C0 enters the decryption alone: (C0 + delta - M) + C1 s gives
    sum + e + delta, so the release moves by Decode(delta), which the aggregator could compute itself and which
    has no term in s (a malicious aggregator could as well lie about the result). The same constant K = 2^33
    that gave s in v2 now moves every real slot by K / Delta and the imaginary ones by nothing."""
    holder = _holder()
    xs = np.random.default_rng(7).uniform(-0.5, 0.5, (3, LENGTH))
    adv = Adversary(holder)
    # (1) a chosen vector v, encoded by the aggregator from its context alone
    r, blobs = _round(holder, xs, IDS[:3])
    v = np.random.default_rng(8).uniform(-0.5, 0.5, LENGTH)
    plain = sa.Plaintext()
    sa.CKKSEncoder(adv.role.seal).encode(pack(v, N)[0], adv.role.params.scale, plain)
    delta = np.array([[plain[i] for i in range(N)]], dtype=np.uint64)
    c0 = adv.residues(adv.add(list(blobs.values()))[0])
    tampered = adv.chunk(_sealraw.add_mod(c0, delta, adv.moduli))
    release = holder.decrypt(adv.aggregate(r, (tampered,), [adv.evidence(b) for b in blobs.values()]))
    assert np.max(np.abs(release - xs.sum(0) - v)) <= holder.error_bound(3, LENGTH)
    # (2) the constant K: the shift is the decoding of the trivial ciphertext (K, 0), i.e. no s at all
    r, blobs = _round(holder, xs, IDS[:3])
    K = 2**33
    c0 = adv.residues(adv.add(list(blobs.values()))[0])
    const = np.full_like(c0, K)
    release = holder.decrypt(
        adv.aggregate(r, (adv.chunk(_sealraw.add_mod(c0, const, adv.moduli)),), [adv.evidence(b) for b in blobs.values()])
    )
    trivial = _sealraw.write_ciphertext(*holder._ct_template, const, np.zeros_like(const))
    plain = sa.Plaintext()
    holder._decryptor.decrypt(holder._role.load_ciphertext(trivial), plain)  # = K: c1 = 0 leaves no s
    expected = unpack(np.asarray(holder._encoder.decode_complex(plain))[None], LENGTH)
    assert np.max(np.abs(release - xs.sum(0) - expected)) <= holder.error_bound(3, LENGTH)
    guess = np.round(_embedding_to_coefficients(pack(release - xs.sum(0), N)[0] * holder.params.scale / K))
    assert guess[0] == 1 and not guess[1:].any()  # the constant polynomial 1: K / K, nothing of s


def test_a_malicious_client_cannot_put_k_s_in_the_release():
    """Closed in v4 (v3's known limit). In v3 a client signed its own key share c1 + K and one release carried
    K s; now no c1 leaves a client: the key holder builds C1 from the client's seeded u, e1. A client controls
    its c0 alone, and decryption is linear in C0, so whatever delta it adds moves the release by Decode(delta),
    which it computes itself. The v3 attack's nearest analogue, delta = -a p0 with a p1 = K (so delta = K s -
    a e_pk, a uniform), is refused by the range check, and even the unchecked, unflooded decryption (built
    here from the key holder's internals) agrees with s at chance level only."""
    holder = _holder()
    xs = np.random.default_rng(10).uniform(-0.01, 0.01, (3, LENGTH))
    r, blobs = _round(holder, xs, IDS[:3])
    adv = Adversary(holder)
    q = adv.q
    public = ContextBlob.from_bytes(holder.public_context(), public=True)
    p0, p1 = _public_key_polys(SealRole(public), public.public_key)[:, 0]
    K = 2**33
    a = np.array([K * pow(int(v), -1, q) % q for v in p1], dtype=np.uint64)  # a p1 = K at every NTT point
    a_p0 = np.array([(int(x) * int(y)) % q for x, y in zip(a, p0)], dtype=np.uint64)
    c0p = ContributionBlob.from_bytes(blobs[1], sender=1)
    bad_c0 = (adv.chunk(_sealraw.sub_mod(adv.residues(c0p.chunks[0]), a_p0[None], adv.moduli)),)
    sig = IDS[0].sign(contribution_message(holder.context_id, r, 1, LENGTH, chunks_digest(bad_c0)))
    agg = StreamingAggregator(holder.aggregator_context(), LENGTH, round_id=r, clients=holder.registrations)
    agg.add(ContributionBlob(c0p.context_id, r, 1, LENGTH, bad_c0, sig).to_bytes(), sender=1)  # well formed, signed
    for cid in (2, 3):
        agg.add(blobs[cid], sender=cid)
    aggregate = agg.aggregate()
    with pytest.raises(AggregateMismatchError):
        holder.decrypt(aggregate)
    # what the release would have been with no range check and no flooding: nothing of s in it
    c0_sum = AggregateBlob.from_bytes(aggregate).chunks[0]
    slots = _decrypt_as_given(holder, r, c0_sum, adv.residues(_c1_of(holder, IDS[:3], r)), (1, 2, 3))
    guess = _embedding_to_coefficients(pack(slots, N)[0] * holder.params.scale / K)
    assert np.sum(np.round(guess) == _secret_coefficients(holder)) < 0.5 * N  # chance level: s is ternary
    assert np.max(np.abs(slots)) > 1e6  # buried under a e_pk, uniform mod q


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
    with pytest.raises(EvidenceError, match="client 3's signature does not verify"):
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
    r2 = os.urandom(16)
    chunks = adv.add([blobs[i] for i in (2, 3, 4)])
    with pytest.raises(EvidenceError, match="signature does not verify for this round"):
        _fresh_holder(holder).decrypt(adv.aggregate(r2, chunks, [adv.evidence(blobs[i]) for i in (2, 3, 4)]))
    # the clients really do take part in r2 (new inputs); the aggregator swaps in their round-r ciphertexts
    _, blobs2 = _round(holder, np.zeros((4, LENGTH)), IDS[:4], round_id=r2)
    kh = _fresh_holder(holder)
    with pytest.raises(EvidenceError, match="signature does not verify"):
        kh.decrypt(adv.aggregate(r2, chunks, [adv.evidence(blobs[i]) for i in (2, 3, 4)]))
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
    # listed with its own round-r evidence: the digest is not the one client 1 signed for r2 (nothing spent)
    with pytest.raises(EvidenceError, match="client 1's signature does not verify"):
        kh.decrypt(adv.aggregate(r2, adv.add([blobs[1], blobs2[2]]), [adv.evidence(blobs[1]), adv.evidence(blobs2[2])]))
    # listed with its round-r2 evidence: the evidence verifies, but the round-r mask does not cancel
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
    """What the aggregator holds of a client, its masked c0 (all that carries the input), is
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
        u = res[0].astype(np.float64) / q
        assert abs(u.mean() - 0.5) < 0.03 and abs(u.var() - 1 / 12) < 0.01
    assert abs(np.corrcoef(a[0].astype(np.float64), b[0].astype(np.float64))[0, 1]) < 0.1


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
    target = draw(st.sampled_from(["contribution", "aggregate", "public", "aggregator", "poly"]))
    chunks = adv.add(list(blobs.values()))
    source = {
        "contribution": blobs[1],
        "aggregate": adv.aggregate(r, chunks, [adv.evidence(b) for b in blobs.values()], length=LENGTH + 5),
        "public": holder.public_context(),
        "aggregator": holder.aggregator_context(),
        "poly": chunks[0],
    }[target]
    bad = _mutate(source, draw)
    try:
        if target == "contribution":
            ContributionBlob.from_bytes(bad, sender=1)
        elif target == "aggregate":
            AggregateBlob.from_bytes(bad)
        elif target == "poly":
            _sealraw.read_poly(bad, N, adv.moduli)
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


# ---------------------------------------------------------------- (d) one malformed contribution costs its group only


def _grouped_round(holder, xs, idents, groups, round_id, bad=None):
    """Each group summed by its own aggregator (one round id); client ``bad`` signs uniform residues as its c0."""
    aggs = [StreamingAggregator(holder.aggregator_context(), LENGTH, round_id=round_id, clients=holder.registrations)
            for _ in groups]
    for g, members in enumerate(groups):
        for cid in members:
            ident = idents[cid]
            blob = ClientEncryptor(holder.public_context(), ident).encrypt(xs[cid], round_id=round_id)
            if cid == bad:
                p = ContributionBlob.from_bytes(blob, sender=cid)
                q = int(holder._role.moduli[0])
                junk = tuple(np.frombuffer(os.urandom(len(c)), "<u8").__mod__(q).astype("<u8").tobytes() for c in p.chunks)
                sig = ident.sign(contribution_message(holder.context_id, round_id, cid, LENGTH, chunks_digest(junk)))
                blob = ContributionBlob(p.context_id, round_id, cid, LENGTH, junk, sig).to_bytes()
            aggs[g].add(blob, sender=cid)
    return [a.aggregate() for a in aggs]


def test_a_malformed_contribution_costs_its_group_not_the_round():
    """A registered client signs uniform residues as its c0 (well formed, undetectable alone): summed as one
    aggregate the round fails its range check and nothing is released; summed in fault groups, the key holder
    releases the exact sum of the other groups and names the failed one."""
    idents = {i: ClientIdentity(i) for i in range(12)}
    holder = KeyHolder(clients=[c.registration for c in idents.values()], max_abs_input=1.0, min_contributions=3)
    xs = {i: x for i, x in enumerate(np.random.default_rng(12).uniform(-1, 1, (12, LENGTH)))}
    groups = [(0, 1, 2, 3), (4, 5, 6, 7), (8, 9, 10, 11)]
    whole = _grouped_round(holder, xs, idents, [tuple(range(12))], os.urandom(16), bad=5)
    with pytest.raises(AggregateMismatchError):
        holder.decrypt(whole[0])
    r = os.urandom(16)
    release = holder.decrypt_groups(_grouped_round(holder, xs, idents, groups, r, bad=5))
    assert set(release.failed) == {1} and "decrypts to" in release.failed[1]
    assert release.contributors == (0, 1, 2, 3, 8, 9, 10, 11)
    expected = sum(xs[i] for i in release.contributors)
    assert np.max(np.abs(release.total - expected)) <= holder.error_bound(8, LENGTH)
    assert r in holder.used_rounds
    with pytest.raises(RoundReusedError):
        holder.decrypt_groups(_grouped_round(holder, xs, idents, groups, r))
    # no failure: one decryption of the total, every contributor released, no group named
    ok = holder.decrypt_groups(_grouped_round(holder, xs, idents, groups, os.urandom(16)))
    assert ok.failed == {} and len(ok.contributors) == 12
    assert np.max(np.abs(ok.total - sum(xs.values()))) <= holder.error_bound(12, LENGTH)


def test_grouped_decryption_checks_its_groups():
    """Groups of one round and length, disjoint, each with the key holder's minimum of verified contributors;
    a malformed call spends nothing; every group failing releases nothing."""
    idents = {i: ClientIdentity(i) for i in range(8)}
    holder = KeyHolder(clients=[c.registration for c in idents.values()], max_abs_input=1.0, min_contributions=2)
    xs = {i: x for i, x in enumerate(np.random.default_rng(13).uniform(-1, 1, (8, LENGTH)))}
    r = os.urandom(16)
    a, b = _grouped_round(holder, xs, idents, [(0, 1, 2), (3, 4, 5)], r)
    (c,) = _grouped_round(holder, xs, idents, [(2, 6)], r)
    (other,) = _grouped_round(holder, xs, idents, [(6, 7)], os.urandom(16))
    (alone,) = _grouped_round(holder, xs, idents, [(7,)], r)
    with pytest.raises(CKKSError, match="non-empty sequence"):
        holder.decrypt_groups(a)
    with pytest.raises(EvidenceError, match=r"clients \[2\] listed in two groups"):
        holder.decrypt_groups([a, c])
    with pytest.raises(CKKSError, match="not of one round"):
        holder.decrypt_groups([a, other])
    with pytest.raises(TooFewContributionsError, match="aggregate 1 of 2 holds 1 verified"):
        holder.decrypt_groups([a, alone])
    assert r not in holder.used_rounds
    r2 = os.urandom(16)
    bad = _grouped_round(holder, xs, idents, [(0, 1), (2, 3)], r2, bad=0)[:1] + \
        _grouped_round(holder, xs, idents, [(2, 3)], r2, bad=2)
    with pytest.raises(AggregateMismatchError, match="every group"):
        holder.decrypt_groups(bad)
    assert r2 in holder.used_rounds
