"""Pairwise-mask secure aggregation: SecAgg (Bonawitz et al. 2017) and SecAgg+ (Bell et al. 2020).

Public surface:

* :class:`SecAggSum` -- the :class:`~fedsecure.fl.aggregation.SumProtocol` the engine uses.
* :class:`SecAggClient`, :class:`SecAggServer` -- sans-IO state machines for embedders.
* :class:`ClientPolicy` -- what a client requires of any round (it never takes the server's word).
* :func:`choose_params` / :class:`SecAggParams` -- k and t with their failure bounds.
* :class:`FixedPointEncoding` -- the fixed-point ring encoding (and the DP noise hook).
* :func:`run_round` -- the in-process simulator.
* errors: :class:`SecAggError` and subclasses.

The wire format and derivations are specified in ``protocols/secagg.md``.
"""

from .client import SecAggClient
from .policy import ClientPolicy
from .encoding import FixedPointEncoding, IntegerNoise
from .errors import (
    ConfigurationError,
    MessageRejected,
    PolicyViolation,
    ReconstructionError,
    SecAggError,
    StageError,
    TooFewSurvivors,
)
from .params import SecAggParams, choose_params
from .server import SecAggServer
from .simulator import RoundReport, run_round
from .sum import SecAggSum

__all__ = [
    "ClientPolicy", "ConfigurationError", "FixedPointEncoding", "PolicyViolation", "IntegerNoise", "MessageRejected", "ReconstructionError",
    "RoundReport", "SecAggClient", "SecAggError", "SecAggParams", "SecAggServer", "SecAggSum", "StageError",
    "TooFewSurvivors", "choose_params", "run_round",
]
