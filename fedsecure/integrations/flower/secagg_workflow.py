"""Server side: a Flower fit workflow running fedsecure's :class:`~fedsecure.secagg.SecAggServer` over a ``Grid``.

Use it where Flower's ``SecAggPlusWorkflow`` is used, with any averaging
strategy of ``flwr.server.strategy`` (FedAvg, FedProx, FedAdam, ...)::

    from flwr.server import LegacyContext, ServerConfig
    from flwr.server.workflow import DefaultWorkflow
    from fedsecure.integrations.flower import FedSecureSecAggWorkflow

    context = LegacyContext(context=context, config=ServerConfig(num_rounds=3), strategy=strategy)
    workflow = DefaultWorkflow(fit_workflow=FedSecureSecAggWorkflow(dropout_rate=0.1, timeout=60))
    workflow(grid, context)

and ``fedsecure_secagg_mod`` on the ``ClientApp``. Each Flower round:

1. ``strategy.configure_fit`` samples the nodes; they get protocol ids
   ``0 .. n-1`` (a random order) and, with ``groups > 1``, are split at
   random into disjoint groups, each its own protocol run;
2. ``k`` and ``t`` come from :func:`fedsecure.secagg.choose_params` for the
   run's ``n`` at the stated dropout rate (SecAgg+ over a random graph whose
   seed every client contributes to; ``graph="complete"`` for SecAgg), the
   ring from :meth:`FixedPointEncoding.for_sum`;
3. the first message of a run is the server's signed round configuration;
   the strategy's fit instructions travel with the forwarded shares (stage
   ``masked_input``), where the node trains and masks at once -- as with
   Flower's SecAgg+, no message before it carries the model, and the fit
   result (``num_examples``, metrics) comes back beside the masked input;
   each ``grid.send_and_receive`` is one protocol stage, and a node that does
   not answer in ``timeout`` seconds (or answers with an error) is a dropout
   from that stage on;
4. the decoded sum ``[sum w_i x_i, sum w_i]`` gives the weighted mean, which
   replaces every included ``FitRes``'s parameters before
   ``strategy.aggregate_fit`` -- so any strategy that averages its inputs
   returns it unchanged (the same hand-off as Flower's SecAgg+ workflow).

With ``groups=g`` and ``robust_rule=`` (a :class:`fedsecure.robust.RobustRule`)
the rule combines the ``g`` securely summed group means instead: the server
learns means over groups, never an individual update.

Nothing a node sends can crash the ServerApp: a reply that is malformed
(missing record, wrong types), from a node outside the run, duplicated, for
another session or stage, or refused by the protocol is logged with the
reason (``self.rejections``) and the node counts as silent; a run that falls
below its threshold is halted with a logged error, and the round's other
groups (if any) still finish.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass, field
from logging import ERROR, INFO, WARNING
from typing import Any, cast

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import ConfigRecord, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp.grid import Grid
from flwr.supercore import log

from fedsecure.secagg import FixedPointEncoding, SecAggError, SecAggServer, choose_params

from . import _records as R


@dataclass
class _Run:
    """One protocol run (one group of one Flower round)."""

    group: int
    nodes: list[int]  # protocol id -> node id
    server: SecAggServer
    encoding: FixedPointEncoding
    session: bytes
    outbox: dict[int, bytes] = field(default_factory=dict)
    halted: str | None = None
    fitres: dict[int, Any] = field(default_factory=dict)  # protocol id -> FitRes (no parameters)

    @property
    def index(self) -> dict[int, int]:
        return {nid: i for i, nid in enumerate(self.nodes)}


class FedSecureSecAggWorkflow:
    """fedsecure SecAgg / SecAgg+ as a Flower fit workflow (see the module docstring).

    Parameters mirror ``SecAggPlusWorkflow`` where they mean the same thing
    (``max_weight``, ``clipping_range``, ``timeout``); ``k``/``t`` are chosen
    from ``dropout_rate`` and ``corrupt_fraction`` unless given.
    ``signing_key`` is the server's long-term Ed25519 key (clients that pin its
    public half refuse any other); without one a fresh key signs each round.
    """

    def __init__(
        self,
        *,
        graph: str = "sparse",
        dropout_rate: float = 0.1,
        corrupt_fraction: float = 0.0,
        k: int | None = None,
        t: int | None = None,
        max_weight: float = 1000.0,
        clipping_range: float = 8.0,
        bits: int | None = None,
        timeout: float | None = None,
        signing_key: Ed25519PrivateKey | None = None,
        groups: int = 1,
        robust_rule: Any = None,
    ) -> None:
        if graph not in ("sparse", "complete"):
            raise ValueError(f"graph must be 'sparse' (SecAgg+) or 'complete' (SecAgg), got {graph!r}")
        if not (max_weight > 0 and clipping_range > 0):
            raise ValueError("max_weight and clipping_range must be > 0")
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        if robust_rule is not None and groups < 2:
            raise ValueError("a robust rule needs groups >= 2 (it combines group means)")
        self.graph, self.dropout_rate, self.corrupt_fraction, self.k, self.t = graph, dropout_rate, corrupt_fraction, k, t
        self.max_weight, self.clipping_range, self.bits, self.timeout = float(max_weight), float(clipping_range), bits, timeout
        self.signing_key = signing_key
        self.groups, self.robust_rule = int(groups), robust_rule
        #: (node id, reason) of every reply refused in the last round
        self.rejections: list[tuple[int, str]] = []
        #: what the last round did: per group n, k, t, included, excluded, bytes; halted runs with the reason
        self.last_round: dict[str, Any] = {}

    # ------------------------------------------------------------------ the round
    def __call__(self, grid: Grid, context: LegacyContext) -> None:
        if not isinstance(context, LegacyContext):
            raise TypeError(f"Expect a LegacyContext, but get {type(context).__name__}.")
        t0 = time.perf_counter()
        self.rejections = []
        self._timing: list[dict] = []
        cfg = context.state.config_records[MAIN_CONFIGS_RECORD]
        current_round = cast(int, cfg[WorkflowKey.CURRENT_ROUND])
        parameters = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        shapes = [a.shape for a in parameters_to_ndarrays(parameters)]
        dim = int(sum(int(np.prod(s)) for s in shapes)) + 1  # + the weight coordinate
        proxy_fitins = context.strategy.configure_fit(current_round, parameters, context.client_manager)
        if not proxy_fitins:
            log(INFO, "configure_fit: no clients selected, cancel")
            return
        fitins = {proxy.node_id: compat.fitins_to_recorddict(ins, True) for proxy, ins in proxy_fitins}
        proxies = {proxy.node_id: proxy for proxy, _ in proxy_fitins}
        log(INFO, "configure_fit: strategy sampled %s clients (out of %s)", len(fitins),
            context.client_manager.num_available())
        runs = self._start_runs(list(fitins), dim)
        if not runs:
            return
        while any(r.halted is None and r.server.stage != "done" for r in runs):
            self._stage(grid, runs, fitins, current_round)
        self._finish(context, current_round, runs, proxies, shapes, time.perf_counter() - t0)

    def _start_runs(self, node_ids: list[int], dim: int) -> list[_Run]:
        rng = random.SystemRandom()
        rng.shuffle(node_ids)
        g = self.groups
        parts = [node_ids[i::g] for i in range(g)]
        runs = []
        for gi, nodes in enumerate(parts):
            n = len(nodes)
            if n < 3:
                log(ERROR, "fedsecure secagg: group %s has %s clients; secure aggregation needs at least 3", gi, n)
                continue
            try:
                params = choose_params(n, graph=self.graph, dropout_rate=self.dropout_rate,
                                       corrupt_fraction=self.corrupt_fraction, k=self.k, t=self.t)
                enc = FixedPointEncoding.for_sum(n, max(self.clipping_range, 1.0) * (1 + 2.0**-20), bits=self.bits)
                key = self.signing_key or Ed25519PrivateKey.generate()
                server = SecAggServer(range(n), dim, params, enc, signing_key=key)
            except SecAggError as e:
                log(ERROR, "fedsecure secagg: group %s cannot start: %s", gi, e)
                continue
            run = _Run(gi, nodes, server, enc, os.urandom(R.SESSION_BYTES))
            run.outbox = {i: server.config_message for i in range(n)}
            log(INFO, "fedsecure secagg: group %s: n=%s, %s, k=%s, t=%s, %s-bit ring", gi, n,
                "SecAgg+" if params.graph == "sparse" else "SecAgg", params.k, params.t, enc.bits)
            runs.append(run)
        return runs

    def _stage(self, grid: Grid, runs: list[_Run], fitins: dict, current_round: int) -> None:
        """One round trip for every live run: send each outbox, feed the replies, advance."""
        messages, expect = [], {}
        for run in runs:
            if run.halted is not None or run.server.stage == "done":
                continue
            stage = run.server.stage
            for i, data in run.outbox.items():
                nid = run.nodes[i]
                rec = ConfigRecord({R.STAGE: stage, R.SESSION: run.session, R.CLIENT_ID: i, R.PAYLOAD: data})
                if stage == R.INPUT_STAGE:  # the node trains now (as with Flower's SecAgg+) and masks at once
                    rec[R.CLIP] = self.clipping_range
                    rec[R.MAX_WEIGHT] = self.max_weight
                    content = fitins[nid]
                else:
                    content = RecordDict()
                content[R.RECORD_KEY] = rec
                messages.append(Message(content=content, dst_node_id=nid, message_type=MessageType.TRAIN,
                                        group_id=str(current_round)))
                expect[nid] = (run, stage)
        t0 = time.perf_counter()
        replies = grid.send_and_receive(messages, timeout=self.timeout) if messages else []
        t1 = time.perf_counter()
        answered: set[int] = set()
        for reply in replies:
            try:
                self._take(reply, expect, answered)
            except Exception as e:  # noqa: BLE001 -- whatever a node sends, the ServerApp goes on
                self._reject(getattr(getattr(reply, "metadata", None), "src_node_id", -1),
                             f"unusable reply ({type(e).__name__}: {e})")
        for run in runs:
            if run.halted is not None or run.server.stage == "done":
                continue
            try:
                run.outbox = run.server.advance()  # silent nodes are dropouts from here on
            except SecAggError as e:
                run.halted = str(e)
                log(ERROR, "fedsecure secagg: group %s halted at stage %s: %s", run.group, run.server.stage, e)
        stage = next(iter(expect.values()))[1] if expect else "?"
        self._timing.append({"stage": stage, "messages": len(messages), "grid_seconds": t1 - t0,
                             "server_seconds": time.perf_counter() - t1})

    def _reject(self, nid: int, why: str) -> None:
        self.rejections.append((nid, why))
        log(WARNING, "fedsecure secagg: reply from node %s rejected: %s", nid, why)

    def _take(self, reply: Message, expect: dict, answered: set[int]) -> None:
        nid = reply.metadata.src_node_id
        if nid not in expect:
            return self._reject(nid, "the node was not sent a message in this stage")
        if nid in answered:
            return self._reject(nid, "duplicate reply in this stage")
        answered.add(nid)
        run, stage = expect[nid]
        if reply.has_error():
            return self._reject(nid, f"the node failed: {reply.error.reason}")
        rec = reply.content.get(R.RECORD_KEY)
        who = f"node {nid}"
        if not isinstance(rec, ConfigRecord):
            return self._reject(nid, f"reply has no {R.RECORD_KEY!r} record")
        try:
            session = R.field(rec, R.SESSION, bytes, who=who)
            rstage = R.field(rec, R.STAGE, str, who=who)
        except R.RecordError as e:
            return self._reject(nid, str(e))
        if session != run.session or rstage != stage:
            return self._reject(nid, f"reply is for stage {rstage!r} of another run or stage (expected {stage!r})")
        if R.ERROR in rec:
            return self._reject(nid, f"the client refused the server's message: {rec[R.ERROR]}")
        if R.PAYLOAD not in rec:
            return None  # nothing to send in this stage
        try:
            payload = R.field(rec, R.PAYLOAD, bytes, who=who)
        except R.RecordError as e:
            return self._reject(nid, str(e))
        i = run.index[nid]
        fitres = None
        if stage == R.INPUT_STAGE:  # the fit result (num_examples, metrics) travels beside the masked input
            try:
                fitres = compat.recorddict_to_fitres(reply.content, keep_input=True)
            except Exception as e:  # noqa: BLE001 -- whatever the node sent
                return self._reject(nid, f"reply carries no fit result ({type(e).__name__}: {e})")
        try:
            run.server.receive(i, payload)
        except SecAggError as e:
            return self._reject(nid, str(e))
        if fitres is not None:
            run.fitres[i] = fitres
        return None

    # ------------------------------------------------------------------ results
    def _finish(self, context: LegacyContext, current_round: int, runs: list[_Run], proxies: dict, shapes,
                seconds: float) -> None:
        means, weights, results, report = [], [], [], {"groups": []}
        for run in runs:
            server, info = run.server, {"group": run.group, "n": len(run.nodes), "k": run.server.params.k,
                                        "t": run.server.params.t}
            info["upload_bytes"], info["download_bytes"] = server.bytes_received, server.bytes_sent
            if run.halted is not None:
                info["halted"] = run.halted
                report["groups"].append(info)
                continue
            res = server.result
            total = run.encoding.decode(res.ring_sum)
            weight = float(total[-1])
            info.update(included=[run.nodes[i] for i in res.included],
                        excluded={str(run.nodes[i]): why for i, why in res.excluded.items()}, weight=weight,
                        quantization_error_bound=run.encoding.max_error(len(res.included)))
            report["groups"].append(info)
            if weight <= 0:
                log(ERROR, "fedsecure secagg: group %s has total weight %s; nothing to average", run.group, weight)
                continue
            means.append(total[:-1] / weight)
            weights.append(weight)
            results += [(proxies[run.nodes[i]], run.fitres[i]) for i in res.included if i in run.fitres]
        report["seconds"] = seconds
        report["stages"] = self._timing  # per round trip: time in grid.send_and_receive, then on the server
        report["rejections"] = [[nid, why] for nid, why in self.rejections]
        self.last_round = report
        if not means:
            log(ERROR, "fedsecure secagg: round %s produced no aggregate", current_round)
            return
        if len(means) == 1:
            mean = means[0]
        elif self.robust_rule is not None:
            mean = np.asarray(self.robust_rule.combine(np.stack(means), np.asarray(weights)).aggregate)
        else:
            mean = np.average(np.stack(means), axis=0, weights=np.asarray(weights))
        arrays, pos = [], 0
        for s in shapes:
            size = int(np.prod(s))
            arrays.append(mean[pos:pos + size].reshape(s).astype(np.float32))
            pos += size
        aggregated = ndarrays_to_parameters(arrays)
        for _, fitres in results:
            fitres.parameters = aggregated
        log(INFO, "aggregate_fit: received %s results and %s failures", len(results), len(self.rejections))
        params_agg, metrics = context.strategy.aggregate_fit(current_round, results, [])  # type: ignore[arg-type]
        if params_agg:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(params_agg, True)
            context.history.add_metrics_distributed_fit(server_round=current_round, metrics=metrics)
