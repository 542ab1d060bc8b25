"""ClientApp: train on this silo's users, hand the item-side update to fedsecure's secure aggregation mod."""

from __future__ import annotations

import os

import numpy as np
from flwr.app import ArrayRecord, Context, Message
from flwr.client import NumPyClient
from flwr.clientapp import ClientApp

from fedsecure.integrations.flower import fedsecure_secagg_mod
from fedsecure.integrations.flower import _records as R

PRIVATE = "user-factors"  # the private part of the model, kept in the node's Context


class SiloClient(NumPyClient):
    def __init__(self, context: Context) -> None:
        self.context = context
        self.cfg = context.run_config
        self.pid = int(context.node_config.get("partition-id", 0))
        self.npart = int(context.node_config.get("num-partitions", 1))

    def fit(self, parameters, config):
        # Imported here: the protocol stages after the first run in fresh processes that need no torch.
        from .task import build_model, load_silo, private_arrays, set_private, set_shared, shared_arrays, train

        data, silo = load_silo(self.cfg, self.pid, self.npart)
        model = build_model(self.cfg)
        set_shared(model, parameters)
        if PRIVATE in self.context.state.array_records:
            set_private(model, self.context.state.array_records[PRIVATE].to_numpy_ndarrays())
        rnd = int(config.get("server-round", 0)) if isinstance(config.get("server-round", 0), int) else 0
        loss = train(model, data, silo.rows, self.cfg, seed=1000 * self.pid + rnd)
        self.context.state.array_records[PRIVATE] = ArrayRecord(private_arrays(model))
        update = shared_arrays(model)
        dump = str(self.cfg.get("dump-updates-dir", ""))
        if dump:  # TESTS ONLY: lets a test compute the plaintext aggregate
            np.savez(os.path.join(dump, f"node{self.context.node_id}.npz"), *update, n=len(silo.rows))
        return update, len(silo.rows), {"loss": loss}


def client_fn(context: Context):
    return SiloClient(context).to_client()


def crash_mod(msg: Message, context: Context, call_next):
    """TESTS ONLY: a node listed in ``drop-partitions`` crashes at ``drop-stage`` (Flower reports an error)."""
    drop = str(context.run_config.get("drop-partitions", ""))
    rec = msg.content.config_records.get(R.RECORD_KEY)
    if drop and rec is not None:
        pid = str(context.node_config.get("partition-id", ""))
        if pid in drop.split(",") and rec.get(R.STAGE) == context.run_config.get("drop-stage"):
            raise RuntimeError(f"partition {pid} crashes at stage {rec.get(R.STAGE)} (fault injection)")
    return call_next(msg, context)


# The secure-aggregation mod wraps the app exactly where Flower's secaggplus_mod would.
app = ClientApp(client_fn=client_fn, mods=[crash_mod, fedsecure_secagg_mod])
