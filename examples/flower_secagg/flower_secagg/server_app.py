"""ServerApp: FedAvg over fedsecure secure aggregation (the fit workflow where SecAggPlusWorkflow would go)."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from flwr.app import Context
from flwr.common import ndarrays_to_parameters
from flwr.server import Grid, LegacyContext, ServerApp, ServerConfig
from flwr.server.strategy import FedAvg
from flwr.server.workflow import DefaultWorkflow

from fedsecure.integrations.flower import FedSecureSecAggWorkflow

from .task import build_model, shared_arrays

app = ServerApp()


def _weighted_loss(metrics):
    total = sum(n for n, _ in metrics)
    return {"loss": sum(n * m["loss"] for n, m in metrics) / total} if total else {}


@app.main()
def main(grid: Grid, context: Context) -> None:
    cfg = context.run_config
    strategy = FedAvg(
        fraction_fit=1.0, fraction_evaluate=0.0,
        min_fit_clients=int(cfg["min-nodes"]), min_available_clients=int(cfg["min-nodes"]),
        initial_parameters=ndarrays_to_parameters(shared_arrays(build_model(cfg))),
        fit_metrics_aggregation_fn=_weighted_loss,
    )
    legacy = LegacyContext(context=context, config=ServerConfig(num_rounds=int(cfg["num-server-rounds"])),
                           strategy=strategy)
    key_file = str(cfg.get("server-key-file", ""))
    signing_key = load_pem_private_key(Path(key_file).read_bytes(), password=None) if key_file else None
    fit_workflow = FedSecureSecAggWorkflow(
        graph=str(cfg["graph"]), dropout_rate=float(cfg["dropout-rate"]), clipping_range=float(cfg["clipping-range"]),
        max_weight=float(cfg["max-weight"]), timeout=float(cfg["timeout"]), signing_key=signing_key,
    )
    rounds = []
    _fit = fit_workflow.__call__

    def fit_and_record(grid, ctx):
        _fit(grid, ctx)
        rounds.append(fit_workflow.last_round)

    DefaultWorkflow(fit_workflow=fit_and_record)(grid, legacy)
    out = str(cfg.get("result-file", ""))
    if out:
        from flwr.common import parameters_to_ndarrays
        from flwr.compat.common import recorddict_compat as compat
        from flwr.server.workflow.constant import MAIN_PARAMS_RECORD

        final = parameters_to_ndarrays(compat.arrayrecord_to_parameters(
            legacy.state.array_records[MAIN_PARAMS_RECORD], keep_input=True))
        losses = legacy.history.metrics_distributed_fit.get("loss", [])
        Path(out).write_text(json.dumps({"rounds": rounds, "loss": losses,
                                         "final": [a.ravel().tolist() for a in final]}))
