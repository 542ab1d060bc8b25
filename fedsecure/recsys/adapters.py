"""Parameter-efficient fine-tuning with LoRA adapters, through Hugging Face ``peft``.

:func:`add_lora` injects LoRA (Hu et al., ICLR 2022) into the linear layers a
model names in ``lora_targets`` (SASRec: the attention's ``qkv`` and ``proj``
and the feed-forward ``ff1`` and ``ff2`` of every block): each targeted
``y = W x + b`` becomes ``y = W x + b + (alpha / r) B A x`` with ``A`` (r x in)
and ``B`` (out x r) trainable and ``B`` initialised to zero, so the adapted
model computes exactly what the base computed until ``B`` moves. Every other
parameter, the item embeddings and the output layer included, is frozen
(``requires_grad`` False), so a federated client trains and sends the
adapter alone (:meth:`~fedsecure.recsys.models.Recommender.shared_parameters`
skips frozen parameters).

With ``items="train"`` the model's item embedding tables
(``model.item_tables``) stay trainable beside the adapter. A client's local
training changes only the rows of the items it saw (its sequence and its
sampled negatives), and in plaintext mode only those rows travel (the
engine's row-sparse update); a secure sum (SecAgg, SecAgg+, CKKS) needs the
whole table from every client, so there the upload is the table's size. The
adapter cannot reach an item whose row the pretraining never trained (on
ml-latest-small, 20 % of the users leave half of the catalogue untouched);
a trained row can.

:func:`merge_lora` folds the adapter into the base weights with peft's own
``merge`` and returns a plain model of the original class and parameter names:
what the server deploys or saves after fine-tuning.

``peft`` is an optional dependency (``pip install 'fedsecure[finetune]'``),
imported only when an adapter is asked for.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from fedsecure.recsys.models import Recommender

ADAPTERS = ("none", "lora")
ADAPTER_ITEMS = ("frozen", "train")


def _peft() -> Any:
    try:
        import peft
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("--adapter lora needs the peft package: pip install 'fedsecure[finetune]'") from exc
    return peft


def add_lora(model: Recommender, rank: int, *, alpha: float | None = None, dropout: float = 0.0,
             items: str = "frozen") -> Recommender:
    """Inject LoRA adapters of rank ``rank`` into ``model.lora_targets`` in place; freeze all else.

    ``alpha`` defaults to ``rank`` (scaling ``alpha / rank = 1``). Returns the
    same model object, whose trainable parameters are the adapter's alone, or
    the adapter's and the item tables' with ``items="train"``.
    """
    if rank < 1:
        raise ValueError(f"--lora-rank must be >= 1, got {rank}")
    if items not in ADAPTER_ITEMS:
        raise ValueError(f"--adapter-items must be one of {', '.join(ADAPTER_ITEMS)}, got {items!r}")
    if items == "train" and not model.item_tables:
        raise ValueError(f"--adapter-items train: model {type(model).__name__} declares no item tables")
    if not model.lora_targets:
        raise ValueError(f"--adapter lora: model {type(model).__name__} declares no layers for LoRA "
                         "(it applies to sasrec)")
    if is_adapted(model):
        raise ValueError("the model already carries a LoRA adapter")
    peft = _peft()
    config = peft.LoraConfig(
        r=rank, lora_alpha=float(alpha if alpha is not None else rank), lora_dropout=dropout,
        target_modules=list(model.lora_targets), bias="none",
    )
    peft.inject_adapter_in_model(config, model)
    trained = tuple(f"{t}." for t in model.item_tables) if items == "train" else ()
    for name, p in model.named_parameters():  # peft freezes the base; say so explicitly, whatever its default
        p.requires_grad_(".lora_" in name or name.startswith(trained))
    if not adapter_size(model):
        raise ValueError(f"LoRA found none of {model.lora_targets} in {type(model).__name__}")
    return model


def _lora_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    if not any(".lora_" in n for n, _ in model.named_parameters()):
        return []
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in model.named_modules() if isinstance(m, LoraLayer)]


def is_adapted(model: nn.Module) -> bool:
    return bool(_lora_layers(model))


def adapter_size(model: nn.Module) -> int:
    """Number of trainable LoRA values (item rows trained beside them, if any, not counted)."""
    return sum(p.numel() for n, p in model.named_parameters() if ".lora_" in n and p.requires_grad)


def merge_lora(model: Recommender) -> Recommender:
    """Fold every LoRA adapter into its base layer (peft's ``merge``) and drop the adapters, in place.

    The result has the original module tree and parameter names (loadable by
    a model built without adapters); all its parameters are made trainable again.
    """
    for name, layer in _lora_layers(model):
        layer.merge(safe_merge=True)  # raises on a non-finite merged weight
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, layer.get_base_layer())
    for p in model.parameters():
        p.requires_grad_(True)
    return model
