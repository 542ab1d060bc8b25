"""CKKS homomorphic summation with TenSEAL (SEAL): clients encrypt and mask, the aggregator adds, one key holder decrypts.

Public surface::

    ClientIdentity(client_id)                          # a client's X25519 + Ed25519 keys; .registration is public
    KeyHolder(params=None, *, clients=(), min_contributions=1, max_abs_input=None, flood_std=2**-24)
    KeyHolder.register(registration); .public_context(); .aggregator_context()
    KeyHolder.decrypt(aggregate); .abandon(round_id)   # one decryption per round id
    ClientEncryptor(public_context, identity).encrypt(x, round_id=..., weight=1.0) -> bytes
        # the contribution: masked c0 half, signed, to the aggregator (the key holder computes c1 itself)
    StreamingAggregator(aggregator_context, length, round_id=..., clients=registrations).add(blob, sender=...)
    CKKSSum(...)                                       # engine adapter
    CKKSParams, summation_params(security_bits)        # parameter sets

Specification: ``protocols/ckks.md`` (wire format v4).
"""

from fedsecure.ckks.aggregator import StreamingAggregator
from fedsecure.ckks.errors import (
    AggregateMismatchError,
    CKKSError,
    ContributionError,
    EvidenceError,
    InsecureParametersError,
    RoundReusedError,
    TooFewContributionsError,
)
from fedsecure.ckks.keys import ClientIdentity, ClientRegistration
from fedsecure.ckks.params import CKKSParams, summation_params
from fedsecure.ckks.roles import ClientEncryptor, KeyHolder
from fedsecure.ckks.sum import CKKSSum

__all__ = [
    "AggregateMismatchError",
    "CKKSError",
    "CKKSParams",
    "CKKSSum",
    "ClientEncryptor",
    "ClientIdentity",
    "ClientRegistration",
    "ContributionError",
    "EvidenceError",
    "InsecureParametersError",
    "KeyHolder",
    "RoundReusedError",
    "StreamingAggregator",
    "TooFewContributionsError",
    "summation_params",
]
