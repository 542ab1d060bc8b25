"""The federated round loop and the two seams protection plugs into.

* :mod:`fedsecure.fl.aggregation` -- :class:`SumProtocol` (how a server learns a sum),
  :class:`Aggregator` (how updates become one update), :class:`FedAvg`, :class:`PlainSum`.
* :mod:`fedsecure.fl.local` -- :class:`LocalTrainer` (how a client trains), :class:`SGDTrainer`.
* :mod:`fedsecure.fl.engine` -- :class:`FederatedTrainer`, :class:`FederatedConfig`, :func:`train_central`.

The engine and the local trainers are imported lazily (they need torch and the
recommender package); the aggregation interfaces import only numpy, so protocol
packages implement them standalone without pulling in torch.
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

def __getattr__(name: str):
    # The local trainers need torch: import them on first use, so that protocol packages
    # implementing the interfaces above (``import fedsecure.secagg``) never pull in torch.
    if name in ("LocalTrainer", "SGDTrainer"):
        from . import local

        return getattr(local, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
