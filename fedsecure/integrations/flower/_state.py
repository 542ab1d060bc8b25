"""Keep a protocol party's state between Flower messages, in the node's own ``Context``.

A Flower SuperNode may run each message in a fresh ``ClientApp`` process
(``--isolation subprocess``) and the simulation runtime may hand one node's
messages to different workers, so a party cannot stay a live Python object
across a round. The mod therefore pickles it into
``context.state.config_records`` -- node-local storage the SuperNode keeps and
never sends to the SuperLink (Flower's own ``secaggplus_mod`` keeps its
private keys there too). ``cryptography`` key objects are not picklable; they
travel as their raw bytes and are rebuilt on load.

The blob is bound to the node by an HMAC under a key kept in the same node-local
record, so a state written by anything else is refused rather than unpickled.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import pickle
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

_KEY_FIELD = "state-key"
_BLOB_FIELD = "state"


def _rebuild(kind: str, raw: bytes):
    return _LOADERS[kind](raw)


_LOADERS = {
    "x25519-private": X25519PrivateKey.from_private_bytes, "x25519-public": X25519PublicKey.from_public_bytes,
    "ed25519-private": Ed25519PrivateKey.from_private_bytes, "ed25519-public": Ed25519PublicKey.from_public_bytes,
}
_KINDS = ((X25519PrivateKey, "x25519-private", "private_bytes_raw"), (X25519PublicKey, "x25519-public", "public_bytes_raw"),
          (Ed25519PrivateKey, "ed25519-private", "private_bytes_raw"),
          (Ed25519PublicKey, "ed25519-public", "public_bytes_raw"))
#: type -> (kind, raw-bytes method) or None; ABC isinstance checks are slow, so each type is classified once
_CLASSIFIED: dict[type, tuple[str, str] | None] = {}


def _classify(t: type) -> tuple[str, str] | None:
    for base, kind, method in _KINDS:
        if issubclass(t, base):
            return kind, method
    return None


class _KeyPickler(pickle.Pickler):
    def reducer_override(self, obj: Any):  # noqa: D102 -- pickle hook
        t = type(obj)
        try:
            found = _CLASSIFIED[t]
        except KeyError:
            found = _CLASSIFIED[t] = _classify(t)
        if found is not None:
            return _rebuild, (found[0], getattr(obj, found[1])())
        if t is memoryview:  # views of received messages: stored as the bytes they show
            return bytes, (obj.tobytes(),)
        return NotImplemented


def dumps(obj: Any) -> bytes:
    buf = io.BytesIO()
    _KeyPickler(buf, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return buf.getvalue()


def save(record, obj: Any) -> None:
    """Store ``obj`` in ``record`` (a ConfigRecord of the node's context state)."""
    key = record.get(_KEY_FIELD)
    if not isinstance(key, bytes) or len(key) != 32:
        key = os.urandom(32)
        record[_KEY_FIELD] = key
    blob = dumps(obj)
    record[_BLOB_FIELD] = hmac.new(key, blob, hashlib.sha256).digest() + blob


def load(record) -> Any | None:
    """The object :func:`save` stored in ``record``, or None (nothing stored, or not written by this node)."""
    key, data = record.get(_KEY_FIELD), record.get(_BLOB_FIELD)
    if not isinstance(key, bytes) or not isinstance(data, bytes) or len(data) < 32:
        return None
    tag, blob = data[:32], data[32:]
    if not hmac.compare_digest(tag, hmac.new(key, blob, hashlib.sha256).digest()):
        return None
    return pickle.loads(blob)


def clear(record) -> None:
    if _BLOB_FIELD in record:
        del record[_BLOB_FIELD]
