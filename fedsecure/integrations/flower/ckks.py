"""CKKS summation in Flower: a client mod, a key-holder mod, and a fit workflow (the ServerApp aggregates).

Three roles, as in :mod:`fedsecure.ckks`: the **ServerApp** is the aggregator
(it adds ciphertexts and can decrypt nothing); one **SuperNode is the key
holder** (the decryptor: its ClientApp runs :data:`fedsecure_ckks_key_holder_mod`
and trains nothing); every other SuperNode is a **client**
(:data:`fedsecure_ckks_mod` wraps its ClientApp, like ``secaggplus_mod``)::

    client_app = ClientApp(client_fn=client_fn, mods=[fedsecure_ckks_mod, fedsecure_ckks_key_holder_mod])
    DefaultWorkflow(fit_workflow=FedSecureCKKSWorkflow(key_holder_node_id=...))(grid, legacy_context)

(one ClientApp for both roles: the key-holder mod answers only key-holder
messages, which the workflow sends only to ``key_holder_node_id``; the node
that holds the key never trains.) Each Flower round:

1. first round: the key holder creates the keys and returns the public and
   aggregator contexts; clients never seen before get a protocol id, create
   their long-term identity (kept in their ``Context``) and send its public
   registration, which the workflow forwards to the key holder to pin;
2. the fit instructions go out with the public context and a fresh round id;
   each client trains, encrypts ``[w * clip(params), w]`` and sends only the
   masked ``c0`` half (its arrays are cleared); the workflow adds each
   contribution as it arrives (:class:`~fedsecure.ckks.StreamingAggregator`,
   a bad one is refused and the sum stays as it was);
3. the aggregate goes to the key holder, which decrypts it once (with
   flooding noise), only with verified evidence from at least
   ``min_contributions`` registered clients; the weighted mean replaces each
   included ``FitRes``'s parameters before ``strategy.aggregate_fit``.

A client that does not answer in ``timeout`` is simply not in the sum.
Registrations travel through the ServerApp: the key holder pins what it is
given, so against a server that substitutes keys, pin registrations out of
band (``KeyHolder.register``) instead. Key-holder state (its secret key, X25519
key, pinned clients and spent round ids) is kept in the key-holder node's own
``Context``.
"""

from __future__ import annotations

import os
import pickle
import struct
import time
from logging import ERROR, INFO, WARNING
from typing import Any, Callable, cast

import numpy as np
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import ndarrays_to_parameters, parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat
from flwr.server.compat.legacy_context import LegacyContext
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.serverapp.grid import Grid
from flwr.supercore import log

from fedsecure.ckks import CKKSError, ClientEncryptor, ClientIdentity, ClientRegistration, KeyHolder, StreamingAggregator

from .secagg_mod import weighted_vector

CLIENT_KEY = "fedsecure.ckks"
HOLDER_KEY = "fedsecure.ckks.key-holder"
STATE_KEY = "fedsecure.ckks.state"
_REG = struct.Struct(">q32s32s")


def _reg_bytes(r: ClientRegistration) -> bytes:
    return _REG.pack(r.client_id, r.exchange_public, r.signing_public)


def _regs_from(data: bytes) -> list[ClientRegistration]:
    if len(data) % _REG.size:
        raise CKKSError("registrations: length is not a multiple of the record size")
    return [ClientRegistration(*_REG.unpack_from(data, i)) for i in range(0, len(data), _REG.size)]


def _field(rec, name: str, kind: type, who: str):
    if name not in rec or type(rec[name]) is not kind:  # noqa: E721
        raise CKKSError(f"{who}: field {name!r} missing or not {kind.__name__}")
    return rec[name]


def _reply(msg: Message, content: RecordDict, key: str, fields: dict) -> Message:
    content.config_records[key] = ConfigRecord(fields)
    return Message(content, reply_to=msg)


# ---------------------------------------------------------------------------------------------- client mod
def fedsecure_ckks_mod(msg: Message, ctxt: Context, call_next: Callable) -> Message:
    """Client side: register once, then per round train, encrypt and send the masked ``c0`` half only."""
    if msg.metadata.message_type != MessageType.TRAIN or CLIENT_KEY not in msg.content.config_records:
        return call_next(msg, ctxt)
    rec = msg.content.config_records[CLIENT_KEY]
    who = f"node {msg.metadata.dst_node_id}"
    if STATE_KEY not in ctxt.state.config_records:
        ctxt.state.config_records[STATE_KEY] = ConfigRecord({})
    store = ctxt.state.config_records[STATE_KEY]
    try:
        stage = _field(rec, "stage", str, who)
        if stage == "register":
            cid = _field(rec, "client-id", int, who)
            known = store.get("client-id")
            if known is not None and known != cid:
                raise CKKSError(f"{who}: already registered as client {known}, not {cid}")
            if "identity" not in store:
                ident = ClientIdentity(cid)
                x, s = ident.export_private_keys()
                store["client-id"], store["identity"] = cid, x + s  # node-local: never leaves the node
            ident = _identity(store)
            return _reply(msg, RecordDict(), CLIENT_KEY, {"stage": stage, "registration": _reg_bytes(ident.registration)})
        if stage != "contribute":
            raise CKKSError(f"{who}: unknown stage {stage!r}")
        public_context = _field(rec, "public-context", bytes, who)
        round_id = _field(rec, "round-id", bytes, who)
        clip = _field(rec, "clipping-range", float, who)
        max_weight = _field(rec, "max-weight", float, who)
        if "identity" not in store:
            raise CKKSError(f"{who}: not registered")
        encryptor = ClientEncryptor(public_context, _identity(store))
    except CKKSError as e:
        return _reply(msg, RecordDict(), CLIENT_KEY, {"error": str(e)})
    out = call_next(msg, ctxt)
    if out.has_error():
        return out
    content = out.content
    try:
        fitres = compat.recorddict_to_fitres(content, keep_input=True)
        vector = weighted_vector(parameters_to_ndarrays(fitres.parameters), fitres.num_examples, clip, max_weight)
        blob = encryptor.encrypt(vector, round_id=round_id)
    except (CKKSError, KeyError, ValueError) as e:
        return _reply(msg, RecordDict(), CLIENT_KEY, {"error": f"{who}: {e}"})
    for arrays in content.array_records.values():
        arrays.clear()  # only the ciphertext leaves the node
    return _reply(msg, content, CLIENT_KEY, {"stage": "contribute", "contribution": blob})


def _identity(store) -> ClientIdentity:
    raw = store["identity"]
    return ClientIdentity(int(store["client-id"]), exchange_private=raw[:32], signing_private=raw[32:])


# ---------------------------------------------------------------------------------------------- key holder mod
class KeyHolderMod:
    """The key holder's mod: ``setup`` (create keys), ``register`` (pin clients), ``decrypt`` (one per round id).

    Its policy (``min_contributions``, ``max_abs_input``, the flooding noise) is its own: the ServerApp
    cannot change it. A callable object, so that it pickles by reference wherever Flower ships the ClientApp.
    """

    def __init__(self, min_contributions: int = 2, max_abs_input: float | None = None) -> None:
        self.min_contributions, self.max_abs_input = int(min_contributions), max_abs_input

    def __call__(self, msg: Message, ctxt: Context, call_next: Callable) -> Message:
        if HOLDER_KEY not in msg.content.config_records:
            return call_next(msg, ctxt)
        min_contributions, max_abs_input = self.min_contributions, self.max_abs_input
        rec = msg.content.config_records[HOLDER_KEY]
        who = f"key holder {msg.metadata.dst_node_id}"
        if STATE_KEY not in ctxt.state.config_records:
            ctxt.state.config_records[STATE_KEY] = ConfigRecord({})
        store = ctxt.state.config_records[STATE_KEY]
        try:
            stage = _field(rec, "stage", str, who)
            holder = _load_holder(store, min_contributions, max_abs_input)
            if stage == "setup":
                if holder is None:
                    holder = KeyHolder(min_contributions=min_contributions, max_abs_input=max_abs_input)
                _save_holder(store, holder)
                return _reply(msg, RecordDict(), HOLDER_KEY, {
                    "public-context": holder.public_context(), "aggregator-context": holder.aggregator_context()})
            if holder is None:
                raise CKKSError(f"{who}: no keys yet (setup first)")
            if stage == "register":
                for reg in _regs_from(_field(rec, "registrations", bytes, who)):
                    holder.register(reg)
                _save_holder(store, holder)
                return _reply(msg, RecordDict(), HOLDER_KEY, {
                    "registrations": b"".join(_reg_bytes(r) for r in holder.registrations)})
            if stage == "decrypt":
                try:
                    release = holder.decrypt_groups([_field(rec, "aggregate", bytes, who)])
                finally:
                    _save_holder(store, holder)  # the round id is spent whatever happened
                bound = holder.error_bound(len(release.contributors), release.total.size)
                return _reply(msg, RecordDict(), HOLDER_KEY, {
                    "total": release.total.astype("<f8").tobytes(), "contributors": list(release.contributors),
                    "error-bound": float(bound)})
            raise CKKSError(f"{who}: unknown stage {stage!r}")
        except CKKSError as e:
            return _reply(msg, RecordDict(), HOLDER_KEY, {"error": str(e)})


def make_ckks_key_holder_mod(*, min_contributions: int = 2, max_abs_input: float | None = None) -> KeyHolderMod:
    """The key holder's mod with its own policy (see :class:`KeyHolderMod`)."""
    return KeyHolderMod(min_contributions, max_abs_input)


def _save_holder(store, holder: KeyHolder) -> None:
    store["holder"] = pickle.dumps({
        "public": holder.public_context(), "secret": holder.export_secret_key(),
        "exchange": holder.export_exchange_key(), "clients": [_reg_bytes(r) for r in holder.registrations],
        "used": sorted(holder.used_rounds)})


def _load_holder(store, min_contributions: int, max_abs_input: float | None) -> KeyHolder | None:
    if "holder" not in store:
        return None
    s = pickle.loads(store["holder"])  # written by this node into its own Context
    return KeyHolder.from_secret_key(s["public"], s["secret"], s["exchange"], min_contributions=min_contributions,
                                     clients=[r for b in s["clients"] for r in _regs_from(b)],
                                     max_abs_input=max_abs_input, used_rounds=s["used"])


_DEFAULT_HOLDER = KeyHolderMod()


def fedsecure_ckks_key_holder_mod(msg: Message, ctxt: Context, call_next: Callable) -> Message:
    """The key-holder mod with its default policy (at least 2 verified contributors per decryption)."""
    return _DEFAULT_HOLDER(msg, ctxt, call_next)


# ---------------------------------------------------------------------------------------------- workflow
class FedSecureCKKSWorkflow:
    """CKKS summation as a Flower fit workflow (see the module docstring); the ServerApp is the aggregator."""

    def __init__(self, key_holder_node_id: int, *, max_weight: float = 1000.0, clipping_range: float = 8.0,
                 timeout: float | None = None) -> None:
        self.key_holder = int(key_holder_node_id)
        self.max_weight, self.clipping_range, self.timeout = float(max_weight), float(clipping_range), timeout
        self._public = self._aggregator = None
        self._ids: dict[int, int] = {}  # node id -> CKKS client id
        self._regs: dict[int, ClientRegistration] = {}  # client id -> pinned registration
        self.rejections: list[tuple[int, str]] = []
        self.last_round: dict[str, Any] = {}

    def _ask_holder(self, grid: Grid, rnd: int, fields: dict) -> ConfigRecord:
        msg = Message(RecordDict({HOLDER_KEY: ConfigRecord(fields)}), dst_node_id=self.key_holder,
                      message_type=MessageType.TRAIN, group_id=str(rnd))
        replies = list(grid.send_and_receive([msg], timeout=self.timeout))
        if not replies or replies[0].has_error() or HOLDER_KEY not in replies[0].content.config_records:
            raise CKKSError(f"the key holder (node {self.key_holder}) did not answer {fields.get('stage')!r}")
        rec = replies[0].content.config_records[HOLDER_KEY]
        if "error" in rec:
            raise CKKSError(f"the key holder refused: {rec['error']}")
        return rec

    def _reject(self, nid: int, why: str) -> None:
        self.rejections.append((nid, why))
        log(WARNING, "fedsecure ckks: reply from node %s rejected: %s", nid, why)

    def __call__(self, grid: Grid, context: LegacyContext) -> None:
        if not isinstance(context, LegacyContext):
            raise TypeError(f"Expect a LegacyContext, but get {type(context).__name__}.")
        t0 = time.perf_counter()
        self.rejections = []
        rnd = cast(int, context.state.config_records[MAIN_CONFIGS_RECORD][WorkflowKey.CURRENT_ROUND])
        parameters = compat.arrayrecord_to_parameters(context.state.array_records[MAIN_PARAMS_RECORD], keep_input=True)
        shapes = [a.shape for a in parameters_to_ndarrays(parameters)]
        dim = int(sum(int(np.prod(s)) for s in shapes)) + 1
        proxy_fitins = [(p, f) for p, f in context.strategy.configure_fit(rnd, parameters, context.client_manager)
                        if p.node_id != self.key_holder]  # the key holder never trains
        if not proxy_fitins:
            log(INFO, "configure_fit: no clients selected, cancel")
            return
        fitins = {p.node_id: compat.fitins_to_recorddict(f, True) for p, f in proxy_fitins}
        proxies = {p.node_id: p for p, _ in proxy_fitins}
        try:
            if self._public is None:
                rec = self._ask_holder(grid, rnd, {"stage": "setup"})
                self._public, self._aggregator = rec["public-context"], rec["aggregator-context"]
            self._register(grid, rnd, [nid for nid in fitins if nid not in self._ids])
        except CKKSError as e:
            log(ERROR, "fedsecure ckks: round %s halted: %s", rnd, e)
            self.last_round = {"halted": str(e)}
            return
        round_id = os.urandom(16)
        agg = StreamingAggregator(self._aggregator, dim, round_id=round_id, clients=self._regs.values())
        messages = []
        for nid, content in fitins.items():
            if nid not in self._ids or self._ids[nid] not in self._regs:
                continue
            content.config_records[CLIENT_KEY] = ConfigRecord({
                "stage": "contribute", "public-context": self._public, "round-id": round_id,
                "clipping-range": self.clipping_range, "max-weight": self.max_weight})
            messages.append(Message(content=content, dst_node_id=nid, message_type=MessageType.TRAIN,
                                    group_id=str(rnd)))
        results, fitres, seen = [], {}, set()
        for reply in grid.send_and_receive(messages, timeout=self.timeout):
            nid = reply.metadata.src_node_id
            try:
                if nid not in fitins or nid in seen:
                    self._reject(nid, "not sent a message in this stage, or a duplicate reply")
                    continue
                seen.add(nid)
                if reply.has_error():
                    self._reject(nid, f"the node failed: {reply.error.reason}")
                    continue
                rec = reply.content.config_records.get(CLIENT_KEY)
                if rec is None or "error" in rec or type(rec.get("contribution")) is not bytes:  # noqa: E721
                    self._reject(nid, f"no usable contribution ({None if rec is None else rec.get('error')})")
                    continue
                agg.add(rec["contribution"], sender=self._ids[nid])
                fitres[nid] = compat.recorddict_to_fitres(reply.content, keep_input=True)
            except CKKSError as e:
                self._reject(nid, str(e))
            except Exception as e:  # noqa: BLE001 -- whatever a node sends, the ServerApp goes on
                self._reject(nid, f"unusable reply ({type(e).__name__}: {e})")
        if agg.count == 0:
            log(ERROR, "fedsecure ckks: round %s: no contribution arrived", rnd)
            self.last_round = {"halted": "no contribution"}
            return
        try:
            rec = self._ask_holder(grid, rnd, {"stage": "decrypt", "aggregate": agg.aggregate()})
        except CKKSError as e:
            log(ERROR, "fedsecure ckks: round %s halted: %s", rnd, e)
            self.last_round = {"halted": str(e)}
            return
        total = np.frombuffer(rec["total"], dtype="<f8")
        inv = {cid: nid for nid, cid in self._ids.items()}
        included = [inv[c] for c in cast(list, rec["contributors"])]
        weight = float(total[-1])
        self.last_round = {"included": included, "weight": weight, "error_bound": float(rec["error-bound"]),
                           "rejections": [[n, w] for n, w in self.rejections], "seconds": time.perf_counter() - t0}
        if weight <= 0:
            log(ERROR, "fedsecure ckks: round %s: total weight %s, nothing to average", rnd, weight)
            return
        mean, arrays, pos = total[:-1] / weight, [], 0
        for s in shapes:
            size = int(np.prod(s))
            arrays.append(mean[pos:pos + size].reshape(s).astype(np.float32))
            pos += size
        aggregated = ndarrays_to_parameters(arrays)
        for nid in included:
            fitres[nid].parameters = aggregated
            results.append((proxies[nid], fitres[nid]))
        params_agg, metrics = context.strategy.aggregate_fit(rnd, results, [])  # type: ignore[arg-type]
        if params_agg:
            context.state.array_records[MAIN_PARAMS_RECORD] = compat.parameters_to_arrayrecord(params_agg, True)
            context.history.add_metrics_distributed_fit(server_round=rnd, metrics=metrics)

    def _register(self, grid: Grid, rnd: int, new_nodes: list[int]) -> None:
        if not new_nodes:
            return
        messages = []
        for nid in new_nodes:
            cid = self._ids.setdefault(nid, len(self._ids))
            messages.append(Message(RecordDict({CLIENT_KEY: ConfigRecord({"stage": "register", "client-id": cid})}),
                                    dst_node_id=nid, message_type=MessageType.TRAIN, group_id=str(rnd)))
        regs = []
        for reply in grid.send_and_receive(messages, timeout=self.timeout):
            nid = reply.metadata.src_node_id
            rec = None if reply.has_error() else reply.content.config_records.get(CLIENT_KEY)
            try:
                reg = _regs_from(rec["registration"])[0] if rec is not None and type(rec.get("registration")) is bytes \
                    else None  # noqa: E721
            except CKKSError:
                reg = None
            if reg is None or nid not in self._ids or reg.client_id != self._ids[nid]:
                self._reject(nid, "no usable registration")
                continue
            regs.append(reg)
        if regs:
            rec = self._ask_holder(grid, rnd, {"stage": "register",
                                               "registrations": b"".join(_reg_bytes(r) for r in regs)})
            self._regs = {r.client_id: r for r in _regs_from(rec["registrations"])}
