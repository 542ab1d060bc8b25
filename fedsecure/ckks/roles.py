"""The three roles and what each may hold.

* :class:`KeyHolder` -- the decryptor. Creates the keys, keeps the secret key,
  hands out two contexts, and decrypts aggregates of at least
  ``min_contributions`` clients. It must not be the aggregator.
* :class:`ClientEncryptor` -- built from the *public context* (parameters +
  public key): it can encrypt, it cannot decrypt (it has no secret key).
* :class:`fedsecure.ckks.aggregator.StreamingAggregator` -- built from the
  *aggregator context* (parameters only): it can add ciphertexts, nothing else.
"""

from __future__ import annotations

import numpy as np
import tenseal.sealapi as sa

from fedsecure.ckks import _sealio
from fedsecure.ckks.context import SealRole, build_seal_context, context_id
from fedsecure.ckks.errors import CKKSError, TooFewContributionsError
from fedsecure.ckks.packing import chunk_count, pack, unpack
from fedsecure.ckks.params import (
    DEFAULT_FAILURE_PROBABILITY,
    NOISE_STD,
    CKKSParams,
    check_security,
    error_bound,
    summation_params,
)
from fedsecure.ckks.wire import AggregateBlob, ContextBlob, ContributionBlob


class KeyHolder:
    """Owns the secret key; the only party that can decrypt (and only aggregates)."""

    def __init__(
        self,
        params: CKKSParams | None = None,
        *,
        security_bits: int = 128,
        force_insecure: bool = False,
        min_contributions: int = 1,
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
        blob = ContextBlob(params, context_id(seal_parameters, pk), seal_parameters, pk)
        self._init(blob, keygen.secret_key(), min_contributions)

    def _init(self, blob: ContextBlob, secret_key: sa.SecretKey, min_contributions: int) -> None:
        if min_contributions < 1:
            raise ValueError(f"min_contributions must be >= 1, got {min_contributions}")
        self._public = blob
        self._role = SealRole(blob)
        self.params = blob.params
        self.context_id = blob.context_id
        self.min_contributions = int(min_contributions)
        self._decryptor = sa.Decryptor(self._role.seal, secret_key)
        self._secret_key = secret_key
        self._encoder = sa.CKKSEncoder(self._role.seal)
        self.slot_noise_std = self._slot_noise_std()

    def _slot_noise_std(self) -> np.ndarray:
        """Per-slot error std of one fresh encryption under this key (see :mod:`fedsecure.ckks.params`).

        ``e_pk(zeta_k)``: decrypting the public key ``(-a s + e_pk, a)`` leaves
        ``e_pk`` (with a single prime the key level is the data level);
        ``s(zeta_k)``: decoding the secret key itself, both at scale 1.
        """
        pk = _sealio.load(sa.PublicKey(), self._public.public_key, self._role.seal)
        plain = sa.Plaintext()
        self._decryptor.decrypt(pk.data(), plain)
        e_pk = np.abs(np.asarray(self._encoder.decode_complex(plain))) ** 2
        s = np.abs(np.asarray(self._encoder.decode_complex(self._secret_key.data()))) ** 2
        n, sigma2 = self.params.poly_modulus_degree, NOISE_STD**2
        var = ((2.0 / 3.0) * n * e_pk + n * sigma2 * (1.0 + s)) / 2.0
        return np.sqrt(var) / self.params.scale

    def error_bound(
        self, n_contributions: int, length: int, *, failure_probability: float = DEFAULT_FAILURE_PROBABILITY
    ) -> float:
        """The stated bound on the error of a decrypted sum of ``n`` contributions of ``length`` values.

        Valid for inputs whose sum stays within ``n * input range``; the float64
        term assumes ``|sum| <= params.max_abs_sum``.
        """
        return error_bound(
            self.slot_noise_std,
            n_contributions,
            length,
            max_abs=self.params.max_abs_sum,
            failure_probability=failure_probability,
        )

    @classmethod
    def from_secret_key(
        cls, public_context: bytes, secret_key: bytes, *, min_contributions: int = 1
    ) -> KeyHolder:
        """Rebuild a key holder from its public context and :meth:`export_secret_key` bytes."""
        blob = ContextBlob.from_bytes(public_context, public=True)
        self = cls.__new__(cls)
        role = SealRole(blob)
        try:
            sk = _sealio.load(sa.SecretKey(), secret_key, role.seal)
        except Exception as e:
            raise CKKSError(f"secret key does not load for these parameters ({e})") from None
        self._init(blob, sk, min_contributions)
        return self

    def export_secret_key(self) -> bytes:
        """DANGEROUS: the secret key in SEAL's format. Whoever holds it decrypts every contribution."""
        return _sealio.save(self._secret_key)

    def public_context(self) -> bytes:
        """For clients: parameters and public key (encrypt only)."""
        return self._public.to_bytes()

    def aggregator_context(self) -> bytes:
        """For the aggregator: parameters only (add only; it cannot even encrypt)."""
        b = self._public
        return ContextBlob(b.params, b.context_id, b.seal_parameters, None).to_bytes()

    def decrypt(self, aggregate: bytes) -> np.ndarray:
        """The float64 sum inside ``aggregate``, if it holds at least ``min_contributions`` clients."""
        blob = AggregateBlob.from_bytes(aggregate)
        if blob.context_id != self.context_id:
            raise CKKSError("aggregate: encrypted under another context (context id mismatch)")
        if len(blob.contributors) < self.min_contributions:
            raise TooFewContributionsError(
                f"aggregate holds {len(blob.contributors)} contributions, "
                f"the decryptor's minimum is {self.min_contributions}"
            )
        want = chunk_count(blob.length, self.params.values_per_ciphertext)
        if len(blob.chunks) != want:
            raise CKKSError(f"aggregate: {len(blob.chunks)} chunks for length {blob.length} (expected {want})")
        slots = np.empty((want, self.params.poly_modulus_degree // 2), dtype=np.complex128)
        plain = sa.Plaintext()
        for i, data in enumerate(blob.chunks):
            try:
                ct = self._role.load_ciphertext(data)
            except CKKSError as e:
                raise CKKSError(f"aggregate chunk {i}: {e}") from None
            self._decryptor.decrypt(ct, plain)
            slots[i] = self._encoder.decode_complex(plain)
        return unpack(slots, blob.length)


class ClientEncryptor:
    """Encrypts a client's vector under the key holder's public key."""

    def __init__(self, public_context: bytes) -> None:
        blob = ContextBlob.from_bytes(public_context, public=True)
        if context_id(blob.seal_parameters, blob.public_key) != blob.context_id:
            raise CKKSError("public context: context id does not match its parameters and public key")
        self._role = SealRole(blob)
        self.params = blob.params
        self.context_id = blob.context_id
        try:
            pk = _sealio.load(sa.PublicKey(), blob.public_key, self._role.seal)
        except Exception as e:
            raise CKKSError(f"public context: public key does not load ({e})") from None
        self._encryptor = sa.Encryptor(self._role.seal, pk)
        self._encoder = sa.CKKSEncoder(self._role.seal)

    def encrypt(self, x: np.ndarray, *, client_id: int, weight: float = 1.0) -> bytes:
        """Contribution bytes for ``weight * x`` (the weight is applied in float64 before encryption)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 1 or x.size == 0:
            raise CKKSError(f"client {client_id}: expected a non-empty 1-D vector, got shape {x.shape}")
        if not np.isfinite(weight) or weight < 0:
            raise CKKSError(f"client {client_id}: weight must be finite and >= 0, got {weight}")
        if weight != 1.0:
            x = x * weight
        if not np.all(np.isfinite(x)):
            raise CKKSError(f"client {client_id}: vector has non-finite values")
        top = float(np.max(np.abs(x)))
        if top > self.params.max_abs_sum:
            raise CKKSError(f"client {client_id}: |value| {top:g} exceeds the range {self.params.max_abs_sum:g}")
        chunks = []
        plain = sa.Plaintext()
        ct = sa.Ciphertext(self._role.seal)
        for row in pack(x, self.params.values_per_ciphertext):
            self._encoder.encode(row, self.params.scale, plain)
            self._encryptor.encrypt(plain, ct)
            chunks.append(_sealio.save(ct))
        return ContributionBlob(self.context_id, int(client_id), x.size, tuple(chunks)).to_bytes()
