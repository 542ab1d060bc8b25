"""One exception family for the CKKS protocol (pyca/h11 style: say exactly what was wrong).

Every error any CKKS party raises for any input is a :class:`CKKSError`.
:class:`TooFewContributionsError` is also the engine's ``AggregationError``
so that the round loop treats it as a lost round.
"""

from __future__ import annotations

from fedsecure.fl.aggregation import AggregationError


class CKKSError(ValueError):
    """Bad input to the CKKS protocol: a malformed blob, a wrong length, a bad parameter."""


class ContributionError(CKKSError):
    """One client's contribution cannot enter the aggregate; the aggregate is left untouched."""

    def __init__(self, sender: object, problem: str) -> None:
        super().__init__(f"contribution from client {sender}: {problem}")
        self.sender = sender
        self.problem = problem


class InsecureParametersError(CKKSError):
    """A parameter set below the requested security level (or below 128 bits) without ``force_insecure``."""


class TooFewContributionsError(CKKSError, AggregationError):
    """The key holder refuses an aggregate with fewer verified contributors than its minimum."""


class EvidenceError(CKKSError):
    """The aggregate's evidence (contributor ids, digests, signatures) does not verify; nothing was decrypted."""


class RoundReusedError(CKKSError):
    """A round id was used before: a client encrypts once per round, the key holder decrypts once per round."""


class AggregateMismatchError(CKKSError):
    """The aggregate did not decrypt to a plausible sum of the listed contributions; nothing was released.

    The masks did not cancel: a listed client's contribution is missing,
    duplicated, from another round, or not the one it signed, or the
    ciphertext was tampered with. The round id is consumed all the same.
    """
