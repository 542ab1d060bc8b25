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

``spill_dir``: the simulation runtime ships each node's ``Context`` to a
worker and back with every message, so a state the size of the model (the
encoded update, held from the first stage to the masked input) costs a copy
per message. With a ``spill_dir`` the pickled state is instead encrypted
(AES-256-GCM under a key that lives only in the node's ``Context``) and
written to a node-local file; the ``Context`` keeps the key and the file's
name. A file that is missing, swapped or altered fails to decrypt and reads as
"no state" (the client then refuses the message, which the server counts as
a dropout).
"""

from __future__ import annotations

import hashlib
import hmac
import io
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

_KEY_FIELD = "state-key"
_BLOB_FIELD = "state"
_FILE_FIELD = "state-file"


def default_spill_dir() -> Path:
    """``$FEDSECURE_FLOWER_STATE_DIR`` or a per-user folder (mode 0700) under the system temp dir."""
    path = Path(os.environ.get("FEDSECURE_FLOWER_STATE_DIR") or
                Path(tempfile.gettempdir()) / f"fedsecure-flower-{os.getuid() if hasattr(os, 'getuid') else 'user'}")
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    return path


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


def sweep(spill_dir: Path, max_age: float = 86400.0) -> None:
    """Delete spilled states older than ``max_age`` seconds (rounds a node dropped out of never cleaned up)."""
    import time

    cutoff = time.time() - max_age
    try:
        for entry in os.scandir(spill_dir):
            if entry.name.endswith((".state", ".tmp")) and entry.stat().st_mtime < cutoff:
                try:
                    os.unlink(entry.path)
                except OSError:
                    pass
    except OSError:
        pass


def _key(record) -> bytes:
    key = record.get(_KEY_FIELD)
    if not isinstance(key, bytes) or len(key) != 32:
        key = os.urandom(32)
        record[_KEY_FIELD] = key
    return key


def save(record, obj: Any, spill_dir: Path | None = None) -> None:
    """Store ``obj`` in ``record`` (a ConfigRecord of the node's context state), or spilled to ``spill_dir``."""
    key = _key(record)
    blob = dumps(obj)
    if spill_dir is None:
        _unlink(record)
        record[_BLOB_FIELD] = hmac.new(key, blob, hashlib.sha256).digest() + blob
        return
    name = record.get(_FILE_FIELD)
    if not isinstance(name, str):
        name = record[_FILE_FIELD] = os.urandom(16).hex() + ".state"
    nonce = os.urandom(12)
    data = nonce + AESGCM(key).encrypt(nonce, blob, name.encode())
    path = Path(spill_dir) / name
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.replace(tmp, path)
    record[_BLOB_FIELD] = b"spilled:" + str(Path(spill_dir)).encode()


def load(record) -> Any | None:
    """The object :func:`save` stored, or None (nothing stored, or not written by this node)."""
    key, data = record.get(_KEY_FIELD), record.get(_BLOB_FIELD)
    if not isinstance(key, bytes) or not isinstance(data, bytes):
        return None
    if data.startswith(b"spilled:"):
        name = record.get(_FILE_FIELD)
        if not isinstance(name, str):
            return None
        try:
            raw = (Path(data[len(b"spilled:"):].decode()) / name).read_bytes()
            blob = AESGCM(key).decrypt(raw[:12], raw[12:], name.encode())
        except (OSError, ValueError, InvalidTag):
            return None
        return pickle.loads(blob)
    if len(data) < 32:
        return None
    tag, blob = data[:32], data[32:]
    if not hmac.compare_digest(tag, hmac.new(key, blob, hashlib.sha256).digest()):
        return None
    return pickle.loads(blob)


def _unlink(record) -> None:
    data, name = record.get(_BLOB_FIELD), record.get(_FILE_FIELD)
    if isinstance(data, bytes) and data.startswith(b"spilled:") and isinstance(name, str):
        try:
            os.unlink(Path(data[len(b"spilled:"):].decode()) / name)
        except OSError:
            pass


def clear(record) -> None:
    """Forget the stored state (and delete its spilled file)."""
    _unlink(record)
    if _BLOB_FIELD in record:
        del record[_BLOB_FIELD]
