"""One exception family for the secure-aggregation protocol.

Every error names who caused it (``sender``: a client id, ``"server"``, or
``None`` when not attributable) and why, so a transport can log it and drop
the offending client without guessing.
"""

from __future__ import annotations

from fedsecure.fl.aggregation import AggregationError


class SecAggError(AggregationError):
    """Base class of every error raised by :mod:`fedsecure.secagg`."""

    def __init__(self, reason: str, *, sender: int | str | None = None) -> None:
        self.sender = sender
        self.reason = reason
        who = "" if sender is None else (f"client {sender}: " if isinstance(sender, int) else f"{sender}: ")
        super().__init__(who + reason)


class ConfigurationError(SecAggError, ValueError):
    """Parameters that would be unsafe (privacy), unreliable or could make the ring wrap."""


class MessageRejected(SecAggError):
    """A message was malformed, forged, replayed, duplicated, of the wrong length or out of stage.

    Nothing already accepted is changed by a rejected message.
    """


class PolicyViolation(MessageRejected):
    """The round breaks the receiving client's own policy (threat model, k, t, sizes, identities, ring).

    The client refuses the message that showed it and stays where it was.
    """


class StageError(MessageRejected):
    """A message or call arrived in a stage that does not accept it."""


class TooFewSurvivors(SecAggError):
    """Too few clients remain to finish the round correctly; the round aborts instead of lying."""


class ReconstructionError(SecAggError):
    """A secret could not be rebuilt from its shares consistently with its public commitment."""
