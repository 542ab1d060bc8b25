"""Model checkpoints in torch's own format, with the configuration they were made under.

A checkpoint is ``torch.save({"config": ..., "state_dict": ...})``. The
configuration records the model's registry name, its full sizes (the
constructor's arguments with defaults filled in), the catalogue (item count
and the source's raw item ids in dense-id order: a row of the item table
means an item only under that mapping), the users whose data trained it
centrally (raw ids, so a fine-tuning run can keep them out of its federated
population and its evaluation), and the fedsecure version.

:func:`load_checkpoint` reads it with ``torch.load(weights_only=True)`` (no
pickled code runs) and :func:`check_compatible` refuses a checkpoint that does
not fit the run, naming every field that differs.
"""

from __future__ import annotations

import inspect
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fedsecure.recsys.data import Interactions
from fedsecure.recsys.models import MODELS, Recommender

FORMAT = "fedsecure-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, or that does not fit the data or model of the run."""


def model_sizes(name: str, model_args: dict[str, Any]) -> dict[str, Any]:
    """The constructor arguments of model ``name`` with its defaults filled in (users and items excluded)."""
    if name not in MODELS:
        raise CheckpointError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}")
    params = inspect.signature(MODELS[name].__init__).parameters
    sizes = {k: p.default for k, p in params.items() if k not in ("self", "n_users", "n_items")}
    unknown = set(model_args) - set(sizes)
    if unknown:
        raise CheckpointError(f"model {name} has no argument(s) {', '.join(sorted(unknown))}")
    sizes.update(model_args)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in sizes.items()}


def _raw_ids(ids: np.ndarray) -> list[Any]:
    return [x.item() if hasattr(x, "item") else x for x in np.asarray(ids).tolist()]


def make_config(name: str, model_args: dict[str, Any], data: Interactions, *,
                public_users: np.ndarray | None = None, note: str = "") -> dict[str, Any]:
    """The configuration recorded beside a model of ``name`` sized by ``model_args`` for ``data``'s catalogue."""
    try:
        version = metadata.version("fedsecure")
    except metadata.PackageNotFoundError:  # pragma: no cover - a source tree that was never installed
        version = "unknown"
    users = np.asarray(public_users if public_users is not None else [], dtype=np.int64)
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "fedsecure_version": version,
        "model": name, "sizes": model_sizes(name, model_args),
        "n_items": int(data.n_items), "item_ids": _raw_ids(data.raw_item_ids),
        "data_source": str(data.source),
        "public_users": _raw_ids(data.raw_user_ids[users]) if users.size else [],
        "note": note,
    }


def save_checkpoint(path: str | Path, model: Recommender, config: dict[str, Any]) -> Path:
    """Write ``model``'s state dict and ``config`` to ``path`` (torch format); refuses an adapted model."""
    if any(".lora_" in n for n in model.state_dict()):
        raise CheckpointError("merge the LoRA adapter first (fedsecure.recsys.adapters.merge_lora)")
    path = Path(path)
    state = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    torch.save({"config": config, "state_dict": state}, path)
    return path


def load_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(config, state_dict)`` of a checkpoint written by :func:`save_checkpoint`."""
    path = Path(path)
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - any unreadable file is one clear refusal
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(blob, dict) or not isinstance(blob.get("config"), dict) or "state_dict" not in blob:
        raise CheckpointError(f"{path}: not a fedsecure checkpoint (expected a dict with 'config' and 'state_dict')")
    config = blob["config"]
    if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: format {config.get('format')!r} version {config.get('format_version')!r}, "
                              f"expected {FORMAT!r} version {FORMAT_VERSION}")
    return config, blob["state_dict"]


def check_compatible(config: dict[str, Any], name: str, model_args: dict[str, Any], data: Interactions,
                     *, path: str | Path = "checkpoint") -> None:
    """Raise :class:`CheckpointError` naming every difference between ``config`` and the run's model and data."""
    diffs = []
    if config.get("model") != name:
        diffs.append(f"model {config.get('model')!r} (run: {name!r})")
    else:
        want = model_sizes(name, model_args)
        have = config.get("sizes", {})
        for key in sorted(set(want) | set(have)):
            if have.get(key) != want.get(key):
                diffs.append(f"{key} {have.get(key)!r} (run: {want.get(key)!r})")
    if config.get("n_items") != data.n_items:
        diffs.append(f"catalogue of {config.get('n_items')} items (data: {data.n_items})")
    else:
        ids = _raw_ids(data.raw_item_ids)
        if config.get("item_ids") != ids:
            at = next(i for i, (a, b) in enumerate(zip(config.get("item_ids", []), ids)) if a != b)
            diffs.append(f"item-id mapping (dense id {at}: raw item {config['item_ids'][at]!r} in the checkpoint, "
                         f"{ids[at]!r} in the data)")
    if diffs:
        raise CheckpointError(f"--init {path} does not fit this run: " + "; ".join(diffs))


def public_user_ids(config: dict[str, Any], data: Interactions) -> np.ndarray:
    """Dense ids in ``data`` of the users the checkpoint recorded as used for its central training."""
    raw = config.get("public_users") or []
    if not raw:
        return np.zeros(0, dtype=np.int64)
    index = {r: i for i, r in enumerate(_raw_ids(data.raw_user_ids))}
    return np.array(sorted(index[r] for r in raw if r in index), dtype=np.int64)


def load_into(model: Recommender, state_dict: dict[str, torch.Tensor], *, path: str | Path = "checkpoint") -> None:
    """Load ``state_dict`` into ``model`` (strict); a shape or name mismatch is a :class:`CheckpointError`."""
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"--init {path}: weights do not fit the model: {' '.join(str(exc).split())}") from None
