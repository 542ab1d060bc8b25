"""Result records as strict JSON: what every ``--json`` output of fedsecure goes through.

Python's ``json`` writes ``Infinity`` and ``NaN``, which strict parsers (and
most languages' standard ones) reject. :func:`strict` replaces them, ``inf``
by the string ``"inf"`` (``"-inf"``) and ``NaN`` by ``null``, and turns what
JSON cannot hold (numpy scalars and arrays, paths) into plain values, so
:func:`dumps_strict` never fails and always parses.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["SCHEMA_VERSION", "strict", "dumps_strict"]

#: version of the layout of result records (``fedsecure run --json``, the poisoning audit's JSON):
#: bumped when keys change meaning or go away
SCHEMA_VERSION = 2


def strict(value: Any) -> Any:
    """``value`` with every non-finite float replaced and non-JSON values converted (see the module)."""
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return value
    try:  # numpy scalars and arrays, without importing numpy for callers that never pass them
        import numpy as np

        if isinstance(value, np.ndarray):
            return strict(value.tolist())
        if isinstance(value, np.generic):
            return strict(value.item())
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def dumps_strict(record: Any, indent: int | None = 2) -> str:
    return json.dumps(strict(record), indent=indent, allow_nan=False)
