"""SEAL contexts for the three roles, built from parameters or from the wire.

``tenseal.sealapi`` is TenSEAL's binding of Microsoft SEAL; we use it rather
than ``tenseal.CKKSVector`` because summation wants what the high-level API
hides: a single-prime modulus (no key-switching keys at all), complex slots
(two values per slot), and contexts that carry exactly the keys a role needs.
Keys come from SEAL's key generator, whose PRNG (Blake2xb) is seeded from the
operating system's ``std::random_device``.
"""

from __future__ import annotations

import hashlib

import numpy as np
import tenseal.sealapi as sa

from fedsecure.ckks import _sealio
from fedsecure.ckks.errors import CKKSError
from fedsecure.ckks.params import CKKSParams
from fedsecure.ckks.wire import ContextBlob

_ID_DOMAIN = b"fedsecure/ckks/v2 context id"


def build_seal_context(params: CKKSParams) -> sa.SEALContext:
    """A SEAL CKKS context for ``params``; SEAL re-checks the security level it is told."""
    parms = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(sa.CoeffModulus.Create(params.poly_modulus_degree, list(params.coeff_bits)))
    return _context_from_parms(parms, params)


def _context_from_parms(parms: sa.EncryptionParameters, params: CKKSParams) -> sa.SEALContext:
    level = {128: sa.SEC_LEVEL_TYPE.TC128, 192: sa.SEC_LEVEL_TYPE.TC192, 256: sa.SEC_LEVEL_TYPE.TC256}.get(
        params.security_bits, sa.SEC_LEVEL_TYPE.NONE
    )
    ctx = sa.SEALContext(parms, True, level)
    if not ctx.parameters_set():
        raise CKKSError(f"SEAL rejects the parameters: {ctx.parameters_error_message()}")
    return ctx


def context_id(seal_parameters: bytes, public_key: bytes, exchange_public: bytes) -> bytes:
    """16 bytes naming a deployment: ``SHA-256(domain || parameters || public key || key holder X25519 key)[:16]``."""
    return hashlib.sha256(_ID_DOMAIN + seal_parameters + public_key + exchange_public).digest()[:16]


class SealRole:
    """What every role shares: parameters, a SEAL context, and the deployment's id."""

    def __init__(self, blob: ContextBlob) -> None:
        self.params = blob.params
        self.context_id = blob.context_id
        parms = sa.EncryptionParameters(sa.SCHEME_TYPE.CKKS)
        try:
            _sealio.load(parms, blob.seal_parameters)
        except Exception as e:  # SEAL raises several types on bad input
            raise CKKSError(f"context: SEAL parameters do not load: {e}") from None
        if parms.scheme() != sa.SCHEME_TYPE.CKKS:
            raise CKKSError("context: SEAL parameters are not for the CKKS scheme")
        if parms.poly_modulus_degree() != blob.params.poly_modulus_degree or tuple(
            m.bit_count() for m in parms.coeff_modulus()
        ) != tuple(blob.params.coeff_bits):
            raise CKKSError("context: SEAL parameters disagree with the stated ring degree / prime sizes")
        self.seal = _context_from_parms(parms, blob.params)
        self.parms_id = self.seal.first_parms_id()
        self.moduli = np.array([m.value() for m in self.seal.first_context_data().parms().coeff_modulus()], dtype=np.uint64)
        self.evaluator = sa.Evaluator(self.seal)

    def load_ciphertext(self, data: bytes) -> sa.Ciphertext:
        """Load one ciphertext; SEAL checks it belongs to these parameters, we check its shape and scale."""
        try:
            ct = _sealio.load(sa.Ciphertext(), data, self.seal)
        except Exception as e:
            raise CKKSError(f"not a ciphertext for these parameters ({e})") from None
        if ct.parms_id() != self.parms_id:
            raise CKKSError("ciphertext is at another modulus level")
        if ct.size() != 2 or not ct.is_ntt_form():
            raise CKKSError(f"ciphertext has {ct.size()} polynomials (expected 2 in NTT form)")
        if ct.scale != self.params.scale:
            raise CKKSError(f"ciphertext scale 2^{_log2(ct.scale)} differs from 2^{self.params.scale_bits}")
        return ct


def _log2(x: float) -> str:
    import math

    return f"{math.log2(x):.2f}" if x > 0 else "-inf"
