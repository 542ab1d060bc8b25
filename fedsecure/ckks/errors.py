"""One exception family for the CKKS protocol (pyca/h11 style: say exactly what was wrong)."""

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


class TooFewContributionsError(AggregationError):
    """The decryptor refuses an aggregate of fewer contributions than its configured minimum."""
