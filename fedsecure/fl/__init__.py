"""The federated round loop and the two seams protection plugs into.

* :mod:`fedsecure.fl.aggregation` -- :class:`SumProtocol` (how a server learns a sum),
  :class:`Aggregator` (how updates become one update), :class:`FedAvg`, :class:`PlainSum`.
* :mod:`fedsecure.fl.local` -- :class:`LocalTrainer` (how a client trains), :class:`SGDTrainer`.
* :mod:`fedsecure.fl.engine` -- :class:`FederatedTrainer`, :class:`FederatedConfig`, :func:`train_central`.

The engine is imported lazily (it needs the recommender package); the two
interface modules import nothing else from fedsecure, so protocol packages
can implement them standalone.
"""

from .aggregation import (
    AggregationError,
    AggregationResult,
    Aggregator,
    ClientUpdate,
    FedAvg,
    PlainSum,
    SumProtocol,
    SumResult,
)
from .local import LocalTrainer, SGDTrainer

__all__ = [
    "AggregationError",
    "AggregationResult",
    "Aggregator",
    "ClientUpdate",
    "FedAvg",
    "LocalTrainer",
    "PlainSum",
    "SGDTrainer",
    "SumProtocol",
    "SumResult",
]
