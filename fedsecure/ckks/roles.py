"""The roles and what each may hold.

* :class:`KeyHolder` -- the decryptor. Creates the CKKS keys and an X25519
  key pair, pins the registered clients' public keys, hands out two
  contexts, and decrypts at most one aggregate per round id, only with
  verified evidence from at least ``min_contributions`` registered clients.
  It computes the ``c1`` half of the aggregate itself, from the encryption
  randomness it shares with exactly those clients, removes their masks, and
  releases the sum with flooding noise. It must not be the aggregator.
* :class:`ClientEncryptor` -- built from the *public context* (parameters +
  public key + the key holder's X25519 key) and the client's
  :class:`~fedsecure.ckks.keys.ClientIdentity`: it encrypts, masks and signs
  one contribution per round id: the masked ``c0`` half, for the aggregator.
  It cannot decrypt, and it has no ``c1`` to send: nobody but the key holder
  chooses what multiplies the secret key.
* :class:`fedsecure.ckks.aggregator.StreamingAggregator` -- built from the
  *aggregator context* (parameters only) and the clients' signing keys: it
  checks and adds ``c0`` parts, nothing else.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import tenseal.sealapi as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from fedsecure.ckks import _sealio, _sealraw
from fedsecure.ckks.context import SealRole, build_seal_context, context_id
from fedsecure.ckks.errors import (
    AggregateMismatchError,
    CKKSError,
    EvidenceError,
    RoundReusedError,
    TooFewContributionsError,
)
from fedsecure.ckks.flooding import gaussian
from fedsecure.ckks.keys import (
    CBD_ETA,
    ClientIdentity,
    ClientRegistration,
    centred_binomial,
    raw_private,
    contribution_message,
    encryption_randomness,
    exchange,
    mask,
    mask_seed,
    private_words,
    randomness_seed,
    verify,
)
from fedsecure.ckks.packing import chunk_count, pack, unpack
from fedsecure.ckks.params import (
    DEFAULT_FAILURE_PROBABILITY,
    DEFAULT_FLOOD_STD,
    CKKSParams,
    check_security,
    error_bound,
    summation_params,
)
from fedsecure.ckks.ring import FixedMultiplier, Transform, encode_coefficients, residues
from fedsecure.ckks.wire import ROUND_ID_SIZE, AggregateBlob, ContextBlob, ContributionBlob, chunks_digest


_RAWPUB = (serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _check_round_id(round_id: object) -> bytes:
    if not isinstance(round_id, (bytes, bytearray)) or len(round_id) != ROUND_ID_SIZE:
        raise CKKSError(f"round id must be {ROUND_ID_SIZE} bytes")
    return bytes(round_id)


def _public_key_polys(role: SealRole, public_key: bytes) -> np.ndarray:
    """The two halves ``(p0, p1)`` of the public key, ``[2, k, N]`` in NTT form."""
    pk = _sealio.load(sa.PublicKey(), public_key, role.seal)
    return _sealraw.read_ciphertext(_sealio.save(pk.data()), role.params.poly_modulus_degree, role.moduli.size)[2]


def _ciphertext_template(role: SealRole, encryptor: sa.Encryptor) -> tuple[tuple[int, int], bytes]:
    """SEAL's version and the metadata prefix of a fresh ciphertext (to write ciphertexts of our own residues)."""
    plain, ct = sa.Plaintext(), sa.Ciphertext(role.seal)
    sa.CKKSEncoder(role.seal).encode(0.0, role.params.scale, plain)
    encryptor.encrypt(plain, ct)
    return _sealraw.read_ciphertext(_sealio.save(ct), role.params.poly_modulus_degree, role.moduli.size)[:2]


class KeyHolder:
    """Owns the secret key; the only party that can decrypt, and it decides what it decrypts.

    Policy, enforced here whatever the aggregator or any client says:

    * the ``c1`` half of the ciphertext is computed here, ``C1 = p1 sum u_i +
      sum e1_i`` over the listed clients, from the encryption randomness each
      shares with the key holder (:func:`~fedsecure.ckks.keys.encryption_randomness`);
      the aggregator supplies only the ``c0`` sum and a client only its own
      ``c0``, so nobody else chooses what multiplies the secret key in a release;
    * one decryption per round id (a second request raises :class:`RoundReusedError`);
    * every listed contributor is registered and its evidence (the ``c0``
      digest and its Ed25519 signature on ``(context, round, id, length, c0
      digest)``) verifies, else :class:`EvidenceError`;
    * at least ``min_contributions`` such contributors, else :class:`TooFewContributionsError`;
    * the masks of exactly the listed clients are removed: anything but each
      listed client's own round contribution, once, leaves a uniform residue
      that fails the range check (:class:`AggregateMismatchError`);
    * the released sum carries Gaussian flooding noise of ``flood_std`` per value.
    """

    def __init__(
        self,
        params: CKKSParams | None = None,
        *,
        security_bits: int = 128,
        force_insecure: bool = False,
        min_contributions: int = 1,
        clients: Iterable[ClientRegistration] = (),
        max_abs_input: float | None = None,
        flood_std: float = DEFAULT_FLOOD_STD,
    ) -> None:
        params = params or summation_params(security_bits)
        check_security(params, security_bits, force_insecure=force_insecure)
        seal = build_seal_context(params)
        keygen = sa.KeyGenerator(seal)
        public_key = sa.PublicKey()
        keygen.create_public_key(public_key)
        parms = seal.key_context_data().parms()
        seal_parameters = _sealio.save(parms)
        pk = _sealio.save(public_key)
        xkey = X25519PrivateKey.generate()
        xpub = xkey.public_key().public_bytes(*_RAWPUB)
        blob = ContextBlob(params, context_id(seal_parameters, pk, xpub), seal_parameters, pk, xpub)
        self._init(blob, keygen.secret_key(), xkey, min_contributions, clients, max_abs_input, flood_std)

    def _init(
        self,
        blob: ContextBlob,
        secret_key: sa.SecretKey,
        exchange_key: X25519PrivateKey,
        min_contributions: int,
        clients: Iterable[ClientRegistration],
        max_abs_input: float | None,
        flood_std: float,
    ) -> None:
        if min_contributions < 1:
            raise CKKSError(f"min_contributions must be >= 1, got {min_contributions}")
        if not (np.isfinite(flood_std) and flood_std >= 0):
            raise CKKSError(f"flood_std must be finite and >= 0, got {flood_std}")
        if max_abs_input is not None and not (np.isfinite(max_abs_input) and max_abs_input > 0):
            raise CKKSError(f"max_abs_input must be finite and > 0, got {max_abs_input}")
        self._public = blob
        self._role = SealRole(blob)
        self.params = blob.params
        self.context_id = blob.context_id
        self.min_contributions = int(min_contributions)
        self.max_abs_input = None if max_abs_input is None else float(max_abs_input)
        self.flood_std = float(flood_std)
        self._decryptor = sa.Decryptor(self._role.seal, secret_key)
        self._secret_key = secret_key
        self._exchange = exchange_key
        self._encoder = sa.CKKSEncoder(self._role.seal)
        self._clients: dict[int, ClientRegistration] = {}
        self._secrets: dict[int, bytes] = {}
        self._used_rounds: set[bytes] = set()
        encryptor = sa.Encryptor(self._role.seal, _sealio.load(sa.PublicKey(), blob.public_key, self._role.seal))
        self._ct_template = _ciphertext_template(self._role, encryptor)
        self._times_p1 = FixedMultiplier(_public_key_polys(self._role, blob.public_key)[1], self._role.moduli)
        self._ntt = Transform(self._role.seal, self._role.evaluator, self._ct_template)
        for reg in clients:
            self.register(reg)
        self.slot_noise_std = self._slot_noise_std()

    # ------------------------------------------------------------------ keys and clients

    def register(self, registration: ClientRegistration) -> None:
        """Pin a client's public keys; a different key for an already registered id is refused."""
        if not isinstance(registration, ClientRegistration):
            raise CKKSError(f"expected a ClientRegistration, got {type(registration).__name__}")
        cid = registration.client_id
        known = self._clients.get(cid)
        if known is not None:
            if known != registration:
                raise CKKSError(f"client {cid} is already registered with other keys")
            return
        self._secrets[cid] = exchange(self._exchange, registration.exchange_public, cid)
        self._clients[cid] = registration

    @property
    def registrations(self) -> tuple[ClientRegistration, ...]:
        """The pinned clients (for the aggregator, which checks signatures against them)."""
        return tuple(self._clients.values())

    @property
    def used_rounds(self) -> frozenset[bytes]:
        return frozenset(self._used_rounds)

    def _slot_noise_std(self) -> np.ndarray:
        """Per-slot error std of one fresh encryption under this key (see :mod:`fedsecure.ckks.params`).

        ``e = e_pk u + e0 + e1 s``: ``e_pk(zeta_k)``: decrypting the public key ``(-a s + e_pk, a)`` leaves
        ``e_pk`` (with a single prime the key level is the data level);
        ``s(zeta_k)``: decoding the secret key itself, both at scale 1.
        """
        pk = _sealio.load(sa.PublicKey(), self._public.public_key, self._role.seal)
        plain = sa.Plaintext()
        self._decryptor.decrypt(pk.data(), plain)
        e_pk = np.abs(np.asarray(self._encoder.decode_complex(plain))) ** 2
        s = np.abs(np.asarray(self._encoder.decode_complex(self._secret_key.data()))) ** 2
        n, sigma2 = self.params.poly_modulus_degree, CBD_ETA / 2.0  # variance of e0 and e1 (centred binomial)
        var = ((2.0 / 3.0) * n * e_pk + n * sigma2 * (1.0 + s)) / 2.0
        return np.sqrt(var) / self.params.scale

    def error_bound(
        self, n_contributions: int, length: int, *, failure_probability: float = DEFAULT_FAILURE_PROBABILITY
    ) -> float:
        """The stated bound on the error of a released sum of ``n`` contributions of ``length`` values.

        CKKS error plus this key holder's flooding noise; valid except with
        probability ``failure_probability``; the float64 term assumes
        ``|sum| <= params.max_abs_sum``.
        """
        return error_bound(
            self.slot_noise_std,
            n_contributions,
            length,
            max_abs=self.params.max_abs_sum,
            failure_probability=failure_probability,
            flood_std=self.flood_std,
        )

    @classmethod
    def from_secret_key(
        cls,
        public_context: bytes,
        secret_key: bytes,
        exchange_key: bytes,
        *,
        min_contributions: int = 1,
        clients: Iterable[ClientRegistration] = (),
        max_abs_input: float | None = None,
        flood_std: float = DEFAULT_FLOOD_STD,
        used_rounds: Iterable[bytes] = (),
    ) -> KeyHolder:
        """Rebuild a key holder from its public context, its exported secrets and its spent round ids.

        The round history is the caller's to persist (:attr:`used_rounds`);
        a key holder restored without it would decrypt a spent round again.
        """
        blob = ContextBlob.from_bytes(public_context, public=True)
        self = cls.__new__(cls)
        role = SealRole(blob)
        try:
            sk = _sealio.load(sa.SecretKey(), secret_key, role.seal)
        except Exception as e:
            raise CKKSError(f"secret key does not load for these parameters ({e})") from None
        try:
            xkey = X25519PrivateKey.from_private_bytes(exchange_key)
        except ValueError as e:
            raise CKKSError(f"exchange key: {e}") from None
        if xkey.public_key().public_bytes(*_RAWPUB) != blob.exchange_public:
            raise CKKSError("exchange key does not match the public context's X25519 key")
        self._init(blob, sk, xkey, min_contributions, clients, max_abs_input, flood_std)
        self._used_rounds.update(_check_round_id(r) for r in used_rounds)
        return self

    def export_secret_key(self) -> bytes:
        """DANGEROUS: the CKKS secret key in SEAL's format."""
        return _sealio.save(self._secret_key)

    def export_exchange_key(self) -> bytes:
        """DANGEROUS: the X25519 private key; with it anyone can compute every client's masks."""
        return raw_private(self._exchange)

    def public_context(self) -> bytes:
        """For clients: parameters, public key, the key holder's X25519 key (encrypt only)."""
        return self._public.to_bytes()

    def aggregator_context(self) -> bytes:
        """For the aggregator: parameters only (add only; it cannot even encrypt)."""
        b = self._public
        return ContextBlob(b.params, b.context_id, b.seal_parameters, None).to_bytes()

    def abandon(self, round_id: bytes) -> None:
        """Spend a round id without decrypting: nothing of that round will be decrypted."""
        self._used_rounds.add(_check_round_id(round_id))

    # ------------------------------------------------------------------ decryption

    def decrypt(self, aggregate: bytes) -> np.ndarray:
        """The flooded float64 sum inside ``aggregate``, if every policy check passes (see the class)."""
        return self.decrypt_groups([aggregate]).total

    def decrypt_groups(self, aggregates: Sequence[bytes]) -> Release:
        """One release for a round summed in groups: the flooded sum of every group that decrypts within range.

        Each aggregate is one group of the same round (same length, disjoint
        contributors), checked as :meth:`decrypt` checks one, with at least
        ``min_contributions`` verified contributors *per group*. The key
        holder first decrypts the groups' total; only if it fails the range
        check (some contribution was malformed: a client can sign any ``c0``)
        does it decrypt each group and release the sum of those in range,
        naming the others in :attr:`Release.failed`. A bad contribution thus
        costs its own group, not the round. What this reveals beyond the
        release, only in a round with a failure, is one pass/fail bit per
        group: a range predicate on a sum the policy would have let the
        aggregator have released on its own (at least ``min_contributions``
        contributors). The round id is spent whatever happens.
        """
        if isinstance(aggregates, (bytes, bytearray, memoryview)) or not aggregates:
            raise CKKSError("decrypt_groups: expected a non-empty sequence of aggregates")
        groups = [self._check_aggregate(data, i, len(aggregates)) for i, data in enumerate(aggregates)]
        round_id, length = groups[0][0].round_id, groups[0][0].length
        seen: set[int] = set()
        for blob, _ in groups:
            if blob.round_id != round_id or blob.length != length:
                raise CKKSError("decrypt_groups: the groups are not of one round and one length")
            if seen & set(blob.contributors):
                raise EvidenceError(f"decrypt_groups: clients {sorted(seen & set(blob.contributors))} listed in two groups")
            seen |= set(blob.contributors)
        # From here on the round is spent, whatever happens: nothing below may be retried.
        self._used_rounds.add(round_id)
        moduli = self._role.moduli
        total_c0 = groups[0][1]
        for _, c0 in groups[1:]:
            total_c0 = _sealraw.add_mod(total_c0, c0, moduli)
        everyone = [ev.client_id for blob, _ in groups for ev in blob.evidence]
        out, problem = self._open(round_id, length, total_c0, everyone)
        failed: dict[int, str] = {}
        if problem is not None:
            if len(groups) == 1:
                raise AggregateMismatchError(f"aggregate of round {round_id.hex()}: {problem}; round consumed, nothing released")
            out = np.zeros(length)
            for i, (blob, c0) in enumerate(groups):
                part, why = self._open(round_id, length, c0, list(blob.contributors))
                if why is None:
                    out += part
                else:
                    failed[i] = why
            if len(failed) == len(groups):
                raise AggregateMismatchError(
                    f"round {round_id.hex()}: every group fails the range check; round consumed, nothing released"
                )
        contributors = tuple(c for i, (blob, _) in enumerate(groups) if i not in failed for c in blob.contributors)
        return Release(out + gaussian(out.size, self.flood_std), contributors, failed)

    def _check_aggregate(self, aggregate: bytes, index: int, count: int) -> tuple[AggregateBlob, np.ndarray]:
        """Every check that reveals nothing and spends nothing (protocols/ckks.md, key holder steps 1-6)."""
        what = "aggregate" if count == 1 else f"aggregate {index} of {count}"
        blob = AggregateBlob.from_bytes(aggregate)
        if blob.context_id != self.context_id:
            raise CKKSError(f"{what}: encrypted under another context (context id mismatch)")
        if blob.round_id in self._used_rounds:
            raise RoundReusedError(f"{what}: round {blob.round_id.hex()} was already decrypted (one per round)")
        if blob.length < 1:
            raise CKKSError(f"{what}: length must be >= 1")
        want = chunk_count(blob.length, self.params.values_per_ciphertext)
        if len(blob.chunks) != want:
            raise CKKSError(f"{what}: {len(blob.chunks)} chunks for length {blob.length} (expected {want})")
        for ev in blob.evidence:
            reg = self._clients.get(ev.client_id)
            if reg is None:
                raise EvidenceError(f"{what}: client {ev.client_id} is not registered with the key holder")
            msg = contribution_message(self.context_id, blob.round_id, ev.client_id, blob.length, ev.chunks_digest)
            if not verify(reg.signing_public, ev.signature, msg):
                raise EvidenceError(f"{what}: client {ev.client_id}'s signature does not verify for this round")
        n = len(blob.evidence)
        if n < self.min_contributions:
            raise TooFewContributionsError(
                f"{what} holds {n} verified contributions, the key holder's minimum is {self.min_contributions}"
            )
        N, moduli = self.params.poly_modulus_degree, self._role.moduli
        c0 = np.empty((want, moduli.size, N), dtype=np.uint64)
        for i, data in enumerate(blob.chunks):
            try:
                c0[i] = _sealraw.read_poly(data, N, moduli)
            except CKKSError as e:
                raise CKKSError(f"{what} chunk {i}: {e}") from None
        return blob, c0

    def _open(self, round_id: bytes, length: int, c0: np.ndarray, members: list[int]) -> tuple[np.ndarray, str | None]:
        """Unflooded decryption of ``c0`` as the sum of ``members``' contributions, and the range problem if any.

        Removes their masks and decrypts with ``C1 = p1 sum u_i + sum e1_i``
        computed here from their seeds.
        """
        want, N, moduli = c0.shape[0], self.params.poly_modulus_degree, self._role.moduli
        masks = np.zeros((want, moduli.size, N), dtype=np.uint64)
        u_sum = np.zeros((want, N), dtype=np.int64)
        e_sum = np.zeros((want, N), dtype=np.int64)
        for cid in members:
            secret = self._secrets[cid]
            _sealraw.add_mod(masks, mask(mask_seed(secret, self.context_id, round_id, cid), want, N, moduli), moduli, out=masks)
            u, e1 = encryption_randomness(randomness_seed(secret, self.context_id, round_id, cid), want, N)
            u_sum += u
            e_sum += e1
        ntt = self._ntt.to_ntt(residues(np.concatenate([u_sum, e_sum]), moduli))
        c1 = _sealraw.add_mod(self._times_p1(ntt[:want]), ntt[want:], moduli)
        slots = np.empty((want, N // 2), dtype=np.complex128)
        plain = sa.Plaintext()
        version, prefix = self._ct_template
        for i in range(want):
            unmasked = _sealraw.sub_mod(c0[i], masks[i], moduli)
            ct = self._role.load_ciphertext(_sealraw.write_ciphertext(version, prefix, unmasked, c1[i]))
            self._decryptor.decrypt(ct, plain)
            slots[i] = self._encoder.decode_complex(plain)
        out = unpack(slots, length)
        n = len(members)
        limit = self.params.max_abs_sum
        if self.max_abs_input is not None:
            limit = min(limit, n * self.max_abs_input + self.error_bound(n, length))
        top = float(np.max(np.abs(out))) if out.size else 0.0
        if not np.isfinite(top) or top > limit:
            return out, (
                f"decrypts to |value| {top:.3g} > {limit:.3g}; the masks did not cancel or a contribution is "
                "malformed (a listed contribution missing, duplicated, from another round or tampered with)"
            )
        return out, None


@dataclass(frozen=True)
class Release:
    """What :meth:`KeyHolder.decrypt_groups` releases: the flooded sum, whose contributions it covers, and the
    groups left out (index -> why)."""

    total: np.ndarray
    contributors: tuple[int, ...]
    failed: dict[int, str]


class ClientEncryptor:
    """Encrypts, masks and signs one client's vector per round under the key holder's public key.

    The encryption is CKKS public-key encryption ``c0 = p0 u + e0 + Delta m``
    with ``u`` (and the ``e1`` of ``c1 = p1 u + e1``) drawn from randomness
    shared with the key holder, which computes ``c1`` itself; ``e0`` is the
    client's own (from the OS). Only ``c0``, masked, leaves the client.
    """

    def __init__(self, public_context: bytes, identity: ClientIdentity) -> None:
        blob = ContextBlob.from_bytes(public_context, public=True)
        if context_id(blob.seal_parameters, blob.public_key, blob.exchange_public) != blob.context_id:
            raise CKKSError("public context: context id does not match its parameters and keys")
        if not isinstance(identity, ClientIdentity):
            raise CKKSError(f"expected a ClientIdentity, got {type(identity).__name__}")
        self._role = SealRole(blob)
        self.params = blob.params
        self.context_id = blob.context_id
        self.identity = identity
        self.client_id = identity.client_id
        try:
            pk = _sealio.load(sa.PublicKey(), blob.public_key, self._role.seal)
        except Exception as e:
            raise CKKSError(f"public context: public key does not load ({e})") from None
        self._secret = identity.shared_secret(blob.exchange_public)
        self._template = _ciphertext_template(self._role, sa.Encryptor(self._role.seal, pk))
        self._times_p0 = FixedMultiplier(_public_key_polys(self._role, blob.public_key)[0], self._role.moduli)
        self._ntt = Transform(self._role.seal, self._role.evaluator, self._template)
        self._used_rounds: set[bytes] = set()

    def encrypt(self, x: np.ndarray, *, round_id: bytes, weight: float = 1.0) -> bytes:
        """The contribution for ``weight * x`` in round ``round_id`` (one per round: the mask is a one-time pad).

        A :class:`~fedsecure.ckks.wire.ContributionBlob`: the masked ``c0``
        polynomials and the client's signature, for the aggregator.
        """
        cid = self.client_id
        round_id = _check_round_id(round_id)
        if round_id in self._used_rounds:
            raise RoundReusedError(f"client {cid}: already contributed to round {round_id.hex()}")
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1 or x.size == 0:
            raise CKKSError(f"client {cid}: expected a non-empty 1-D vector, got shape {x.shape}")
        if not np.isfinite(weight) or weight < 0:
            raise CKKSError(f"client {cid}: weight must be finite and >= 0, got {weight}")
        if weight != 1.0:
            x = x * weight
        if not np.all(np.isfinite(x)):
            raise CKKSError(f"client {cid}: vector has non-finite values")
        top = float(np.max(np.abs(x)))
        if top > self.params.max_abs_sum:
            raise CKKSError(f"client {cid}: |value| {top:g} exceeds the range {self.params.max_abs_sum:g}")
        self._used_rounds.add(round_id)
        N, moduli = self.params.poly_modulus_degree, self._role.moduli
        rows = pack(x, self.params.values_per_ciphertext)
        chunks = rows.shape[0]
        u, _ = encryption_randomness(randomness_seed(self._secret, self.context_id, round_id, cid), chunks, N)
        e0 = centred_binomial(private_words(chunks * N)).reshape(chunks, N)
        # c0 = p0 u + e0 + Delta m in NTT form: one transform of u and of (e0 + the encoded message)
        ntt = self._ntt.to_ntt(residues(np.concatenate([u, e0 + encode_coefficients(rows, self.params.scale)]), moduli))
        c0 = _sealraw.add_mod(self._times_p0(ntt[:chunks]), ntt[chunks:], moduli)
        _sealraw.add_mod(c0, mask(mask_seed(self._secret, self.context_id, round_id, cid), chunks, N, moduli), moduli, out=c0)
        out = [_sealraw.poly_bytes(poly) for poly in c0]
        chunks_out = tuple(out)
        sig = self.identity.sign(contribution_message(self.context_id, round_id, cid, x.size, chunks_digest(chunks_out)))
        return ContributionBlob(self.context_id, round_id, cid, x.size, chunks_out, sig).to_bytes()
