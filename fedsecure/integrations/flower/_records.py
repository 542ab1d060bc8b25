"""The Flower ``ConfigRecord`` that carries fedsecure protocol bytes, and its checks.

Server -> client (``message.content.config_records[RECORD_KEY]``):

* ``stage`` (str): the server stage the reply belongs to (``advertise_keys`` opens a round);
* ``session`` (bytes, 16): a random id of this protocol run (one per group per Flower round);
* ``client-id`` (int): the node's protocol id in this run (``0 .. n-1``);
* ``payload`` (bytes): the fedsecure message;
* the masked-input stage only (``masked_input``, the forwarded shares): ``clipping-range`` (float) and
  ``max-weight`` (float), beside the strategy's fit instructions -- the node trains then, as with Flower's
  SecAgg+, so nothing the size of the model is held between messages.

Client -> server (the reply's ``config_records[RECORD_KEY]``): ``session``
(bytes), ``stage`` (str), and ``payload`` (bytes) when the client has
something to send, or ``error`` (str) when it refused the server's message.
"""

from __future__ import annotations

from typing import Any

RECORD_KEY = "fedsecure.secagg"
STATE_KEY = "fedsecure.secagg.state"
FIRST_STAGE = "advertise_keys"
INPUT_STAGE = "masked_input"

STAGE, SESSION, CLIENT_ID, PAYLOAD, ERROR = "stage", "session", "client-id", "payload", "error"
CLIP, MAX_WEIGHT = "clipping-range", "max-weight"
SESSION_BYTES = 16

#: node_config key holding the hex of the server's Ed25519 public key, for clients to pin
SERVER_KEY_NODE_CONFIG = "fedsecure-server-key"


class RecordError(ValueError):
    """A Flower message whose fedsecure record is missing or malformed."""


def field(record: Any, name: str, kind: type, *, who: str) -> Any:
    """``record[name]``, checked to be exactly of type ``kind`` (bool is not an int here)."""
    if name not in record:
        raise RecordError(f"{who}: the {RECORD_KEY!r} record has no {name!r} field")
    value = record[name]
    if type(value) is not kind:  # noqa: E721 -- exact type: bool must not pass for int
        raise RecordError(f"{who}: field {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value
