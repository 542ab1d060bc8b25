"""Client side: a Flower mod that runs fedsecure's :class:`~fedsecure.secagg.SecAggClient` over Flower messages.

Same shape and place as Flower's ``flwr.client.mod.secaggplus_mod``::

    from flwr.clientapp import ClientApp
    from fedsecure.integrations.flower import fedsecure_secagg_mod

    app = ClientApp(client_fn=client_fn, mods=[fedsecure_secagg_mod])

It wraps any (legacy, ``NumPyClient``-style) ``ClientApp``: the first
message of a round (stage ``advertise_keys``) starts a fresh
``SecAggClient`` on the server's signed round configuration; the app trains
when the forwarded shares arrive (stage ``masked_input``, which carries the
fit instructions, as Flower's SecAgg+ does), and the ``FitRes`` becomes the
vector ``[w * clip(params), w]`` with ``w = min(num_examples, max_weight) /
max_weight``, given to the client (``set_input``) and masked at once. Every
message of the round goes to the same client state machine; the parameters
never leave the node unmasked (the reply's arrays are cleared, only
``num_examples`` and the metrics travel in the clear, as with Flower's
SecAgg+).

The client enforces its own :class:`~fedsecure.secagg.ClientPolicy`: by
default semi-honest, 10% dropout assumed, privacy failure <= 2^-40. Pin the
server's long-term key with :func:`make_secagg_mod` (``server_key=``) or, on a
deployed SuperNode, with ``--node-config "fedsecure-server-key='<hex>'"``
(the raw Ed25519 public key in hex); a pinned client refuses any round not
signed by that key.

A message the client refuses (malformed, forged, out of stage, weaker than
its policy) is answered with an ``error`` field naming the reason and leaves
the client's state as it was. State between messages is node-local: by
default pickled into the node's own ``Context`` (bound to the node by an
HMAC; never sent to the SuperLink). It stays small -- keys, the view's key
records, the shares it holds; never the model, which arrives and leaves in
the one masked-input message -- so the copy of the ``Context`` that Flower's
simulation runtime makes with every message costs little.
``make_secagg_mod(state="disk")`` instead writes it, encrypted under a key
kept in the ``Context``, to a 0700 folder on the node (see
:mod:`fedsecure.integrations.flower._state`). A client that finished its
round deletes it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from flwr.app import ConfigRecord, Context, Message, RecordDict
from flwr.app.message_type import MessageType
from flwr.common import parameters_to_ndarrays
from flwr.compat.common import recorddict_compat as compat

from fedsecure.secagg import ClientPolicy, SecAggClient, SecAggError

from . import _records as R
from . import _state


def flatten(arrays) -> np.ndarray:
    """The model's arrays as one float64 vector (in order)."""
    if not arrays:
        return np.zeros(0)
    return np.concatenate([np.asarray(a, dtype=np.float64).ravel() for a in arrays])


def weighted_vector(arrays, num_examples: int, clipping_range: float, max_weight: float) -> np.ndarray:
    """``[w * clip(x, -c, c), w]`` with ``w = min(num_examples, max_weight) / max_weight`` in ``[0, 1]``."""
    w = min(max(float(num_examples), 0.0), max_weight) / max_weight
    flat = [np.asarray(a).ravel() for a in arrays]
    out = np.empty(sum(a.size for a in flat) + 1, dtype=np.float64)
    pos = 0
    for a in flat:  # clip straight into the float64 output, then weight in place: two passes, no temporaries
        seg = out[pos:pos + a.size]
        np.clip(a, -clipping_range, clipping_range, out=seg, casting="unsafe" if a.dtype.kind != "f" else "same_kind")
        seg *= w
        pos += a.size
    out[-1] = w
    return out


def _pinned(policy: ClientPolicy, ctxt: Context) -> ClientPolicy:
    hexkey = ctxt.node_config.get(R.SERVER_KEY_NODE_CONFIG) if ctxt.node_config else None
    if not hexkey or policy.server_key is not None:
        return policy
    import dataclasses

    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(str(hexkey)))
    except ValueError as e:
        raise SecAggError(f"node config {R.SERVER_KEY_NODE_CONFIG!r} is not a hex Ed25519 public key ({e})") from None
    return dataclasses.replace(policy, server_key=key)


def _reply(msg: Message, content: RecordDict, session: bytes, stage: str, *, payload: bytes | None = None,
           error: str | None = None) -> Message:
    rec = ConfigRecord({R.SESSION: session, R.STAGE: stage})
    if payload is not None:
        rec[R.PAYLOAD] = payload
    if error is not None:
        rec[R.ERROR] = error
    content.config_records[R.RECORD_KEY] = rec
    return Message(content, reply_to=msg)


class SecAggMod:
    """A fedsecure SecAgg client mod (a callable object: it pickles by reference, cheaply, wherever Flower ships
    the ClientApp with each message, as its simulation runtime does)."""

    def __init__(self, policy: ClientPolicy, state: str) -> None:
        self.policy, self.state = policy, state

    def __call__(self, msg: Message, ctxt: Context, call_next: Callable) -> Message:
        # RecordDict.config_records builds a fresh view on every access: read the records directly.
        rec = msg.content.get(R.RECORD_KEY) if msg.metadata.message_type == MessageType.TRAIN else None
        if not isinstance(rec, ConfigRecord):
            return call_next(msg, ctxt)
        who = f"node {msg.metadata.dst_node_id}"
        store = ctxt.state.get(R.STATE_KEY)
        if not isinstance(store, ConfigRecord):
            store = ConfigRecord({})
            ctxt.state[R.STATE_KEY] = store
        try:
            stage = R.field(rec, R.STAGE, str, who=who)
            session = R.field(rec, R.SESSION, bytes, who=who)
            payload = R.field(rec, R.PAYLOAD, bytes, who=who)
        except R.RecordError as e:
            return _reply(msg, RecordDict(), b"", "", error=str(e))
        content = RecordDict()
        try:
            if stage == R.FIRST_STAGE:
                client = self._first(ctxt, rec, store, who)
            else:
                held = _state.load(store)
                if held is None or held[0] != session:
                    raise SecAggError(f"{who}: a {stage!r} message for a protocol run this node is not in")
                client = held[1]
            if stage == R.INPUT_STAGE:
                out = self._train(msg, ctxt, call_next, client, rec, who)
                if out.has_error():
                    return out
                content = out.content
            replies = client.receive(payload)
        except (SecAggError, R.RecordError) as e:
            return _reply(msg, RecordDict(), session, stage, error=str(e))
        for arrays in content.array_records.values():
            arrays.clear()  # the update leaves only masked
        if client.stage == "done":
            _state.clear(store)  # nothing more to do this round: forget the secrets
        else:
            _state.save(store, (session, client), self._spill())
        return _reply(msg, content, session, stage, payload=replies[0] if replies else None)

    def _spill(self):
        return _state.default_spill_dir() if self.state == "disk" else None

    def _first(self, ctxt, rec, store, who) -> SecAggClient:
        """A fresh client for a new run; its input comes at the masked-input stage (see :meth:`_train`)."""
        client_id = R.field(rec, R.CLIENT_ID, int, who=who)
        _state.clear(store)  # a new run: whatever was held is over
        if self.state == "disk":
            _state.sweep(_state.default_spill_dir())  # states of runs this or another node dropped out of
        return SecAggClient(client_id, None, policy=_pinned(self.policy, ctxt))

    def _train(self, msg, ctxt, call_next, client, rec, who) -> Message:
        """Let the wrapped ClientApp train (the message carries the fit instructions) and hand the weighted,
        clipped update to ``client`` as its input; the app's reply (or its error) is returned."""
        clip = R.field(rec, R.CLIP, float, who=who)
        max_weight = R.field(rec, R.MAX_WEIGHT, float, who=who)
        if not (np.isfinite(clip) and clip > 0 and np.isfinite(max_weight) and max_weight > 0):
            raise R.RecordError(f"{who}: clipping range and max weight must be finite and > 0")
        out = call_next(msg, ctxt)  # the wrapped ClientApp trains
        if out.has_error():
            return out
        try:
            fitres = compat.recorddict_to_fitres(out.content, keep_input=True)
        except Exception as e:  # noqa: BLE001 -- the app answered something that is not a FitRes
            raise R.RecordError(f"{who}: the ClientApp's reply is not a fit result ({type(e).__name__}: {e})") from None
        client.set_input(weighted_vector(parameters_to_ndarrays(fitres.parameters), fitres.num_examples, clip,
                                         max_weight))
        return out


def make_secagg_mod(policy: ClientPolicy | None = None, *, server_key: Ed25519PublicKey | None = None,
                    state: str = "context") -> SecAggMod:
    """A fedsecure SecAgg client mod enforcing ``policy`` (and pinning ``server_key`` if given).

    ``state``: where the client's round state lives between messages. ``"context"`` (default): pickled
    into the node's ``Context`` itself (a few KB to tens of KB: keys, the view's key records, held shares;
    never the model). ``"disk"``: encrypted under a key kept in the node's ``Context``, in a node-local
    file (``$FEDSECURE_FLOWER_STATE_DIR`` or a 0700 folder in the temp dir).
    """
    if state not in ("disk", "context"):
        raise ValueError(f"state must be 'disk' or 'context', got {state!r}")
    base = policy if policy is not None else ClientPolicy()
    if not isinstance(base, ClientPolicy):
        raise ValueError("policy must be a ClientPolicy")
    if server_key is not None:
        import dataclasses

        base = dataclasses.replace(base, server_key=server_key)
    return SecAggMod(base, state)


_DEFAULT = SecAggMod(ClientPolicy(), "context")


def fedsecure_secagg_mod(msg: Message, ctxt: Context, call_next: Callable) -> Message:
    """Run fedsecure's SecAgg client over Flower messages, wrapping the ClientApp's training result.

    The default :class:`ClientPolicy` (semi-honest, 10% dropout; nothing pinned unless the node config
    pins the server key). Use :func:`make_secagg_mod` for another policy.
    """
    return _DEFAULT(msg, ctxt, call_next)


