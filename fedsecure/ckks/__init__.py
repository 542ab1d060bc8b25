"""CKKS homomorphic summation with TenSEAL (SEAL): clients encrypt, the aggregator adds, one key holder decrypts.

Public surface::

    KeyHolder(params=None, *, security_bits=128, min_contributions=1)   # the decryptor
    ClientEncryptor(public_context_bytes).encrypt(x, client_id=..., weight=1.0) -> bytes
    StreamingAggregator(aggregator_context_bytes, length).add(blob, sender=...)
    CKKSSum(...)                                                        # engine adapter
    CKKSParams, summation_params(security_bits)                         # parameter sets

Specification: ``protocols/ckks.md``.
"""

from fedsecure.ckks.aggregator import StreamingAggregator
from fedsecure.ckks.errors import CKKSError, ContributionError, InsecureParametersError, TooFewContributionsError
from fedsecure.ckks.params import CKKSParams, summation_params
from fedsecure.ckks.roles import ClientEncryptor, KeyHolder
from fedsecure.ckks.sum import CKKSSum

__all__ = [
    "CKKSError",
    "CKKSParams",
    "CKKSSum",
    "ClientEncryptor",
    "ContributionError",
    "InsecureParametersError",
    "KeyHolder",
    "StreamingAggregator",
    "TooFewContributionsError",
    "summation_params",
]
