"""Per-sample gradient clipping for models made of Embedding, Linear and LayerNorm layers.

DP-SGD (Abadi et al. 2016) replaces a batch gradient by

    g~ = sum_i c_i g_i + N(0, sigma^2 C^2 I),   c_i = min(1, C / (|g_i| + 1e-6)),

where ``g_i`` is the gradient of example ``i``'s loss over ALL trainable
parameters and ``|.|`` the L2 norm over all of them together. Opacus's
``hooks`` mode materialises every ``g_i``; for an embedding table that is a
dense ``B x vocab x dim`` tensor. This module never materialises a table's
per-sample gradient. From each layer's input ``a`` and output gradient ``b``
(one partial backward that stops at the layers' outputs) it computes:

* ``nn.Embedding`` (indices ``x_{i,t}``): ``g_i`` is nonzero only on the rows
  sample ``i`` looked up, ``|g_i|^2 = sum_v |sum_{t: x_{i,t}=v} b_{i,t}|^2``;
  rows a sample looks up more than once are summed first (sequences).
  Positions holding ``padding_idx`` get no gradient, as in ``F.embedding``.
* ``nn.Linear`` on ``[B, in]``: ``|g_i^W|^2 = |a_i|^2 |b_i|^2``. On
  ``[B, T, in]`` either the ghost-norm identity (Li et al. 2022)
  ``|g_i^W|^2 = <a_i a_i^T, b_i b_i^T>`` (cost ``T^2 (in + out)``) or the
  materialised ``b_i^T a_i`` (cost ``T in out``), whichever is cheaper.
  Bias: ``|sum_t b_{i,t}|^2``.
* ``nn.LayerNorm``: per-sample gradients ``sum_t xhat_{i,t} * b_{i,t}`` and
  ``sum_t b_{i,t}`` are only ``B x dim``; they are materialised.

The clipped sum is then assembled directly (no second backward): for an
embedding, ``index_add`` of the clip-weighted rows ``c_i b_{i,t}``; for a
linear layer ``(c * b)^T a``; for LayerNorm ``sum_i c_i g_i``. The model's
loss is a batch MEAN, so (as Opacus with ``loss_reduction="mean"``)
per-sample gradients are those of ``B * loss``.

Every parameter reached by the loss must be reached through one of these
layers: a parameter used directly (for example an output layer written as
``h @ emb.weight.T``, weights tied to an embedding) would escape the
per-sample norm and void the clipping bound. :class:`PerSampleClipper`
watches every torch call during the forward and refuses such a model with an
error that names the parameter, where Opacus silently drops that gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.nn import functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

SUPPORTED_LAYERS: tuple[type[nn.Module], ...] = (nn.Embedding, nn.Linear, nn.LayerNorm)

# Opacus's clipping factor, kept bit-for-bit so results compare exactly.
_CLIP_EPS = 1e-6


class UnsupportedModelError(ValueError):
    """The model has a trainable parameter the fast per-sample path cannot account for."""


def clip_factors(norms: torch.Tensor, max_grad_norm: float) -> torch.Tensor:
    """``c_i = min(1, C / (|g_i| + 1e-6))`` -- the factor Opacus uses."""
    return (max_grad_norm / (norms + _CLIP_EPS)).clamp(max=1.0)


@dataclass
class _Call:
    module: nn.Module
    inp: torch.Tensor
    out: torch.Tensor


@dataclass
class ClippedGradients:
    """The clipped sum ``sum_i c_i g_i`` per parameter, and the per-sample norms before clipping."""

    grads: dict[nn.Parameter, torch.Tensor]
    norms: torch.Tensor
    factors: torch.Tensor
    batch_size: int
    #: parameter names, in the order of ``grads``
    names: list[str] = field(default_factory=list)


class _DirectUseDetector(TorchFunctionMode):
    """Records trainable parameters that enter a torch op outside a supported layer's forward."""

    def __init__(self, params: Mapping[int, str]) -> None:
        super().__init__()
        self.params = params
        self.depth = 0
        self.violations: set[str] = set()

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        # Attribute getters (.shape, .dtype) read metadata, not values.
        if self.depth == 0 and getattr(func, "__name__", "") != "__get__":
            for leaf in tree_flatten((args, kwargs))[0]:
                name = self.params.get(id(leaf)) if isinstance(leaf, torch.Tensor) else None
                if name is not None:
                    self.violations.add(name)
        return func(*args, **kwargs)


class PerSampleClipper:
    """Clipped per-sample gradient sums for one model, without per-sample gradients of tables.

    Construct once per model (it checks the layers and keeps no hooks between
    calls); :meth:`clipped_sum` runs the forward through ``loss_fn`` and returns
    ``sum_i c_i g_i`` for every trainable parameter.
    """

    def __init__(self, model: nn.Module, max_grad_norm: float) -> None:
        if not (max_grad_norm > 0 and max_grad_norm < float("inf")):
            raise ValueError(f"max_grad_norm must be finite and > 0, got {max_grad_norm}")
        self.model = model
        self.max_grad_norm = float(max_grad_norm)
        self.layers = _supported_layers(model)
        self.param_names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
        self.params = [p for _, p in model.named_parameters() if p.requires_grad]
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]

    @contextmanager
    def _recording(self, check: bool) -> Iterator[tuple[list[_Call], _DirectUseDetector | None]]:
        calls: list[_Call] = []
        detector = _DirectUseDetector(self.param_names) if check else None
        handles = []

        def pre(module: nn.Module, args: tuple) -> None:
            if detector is not None:
                detector.depth += 1

        def post(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
            if detector is not None:
                detector.depth -= 1
            if torch.is_grad_enabled() and out.requires_grad:
                calls.append(_Call(module, args[0].detach(), out))

        for m in self.layers:
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post))
        try:
            if detector is not None:
                with detector:
                    yield calls, detector
            else:
                yield calls, None
        finally:
            for h in handles:
                h.remove()

    def clipped_sum(
        self,
        loss_fn: Callable[[], torch.Tensor],
        *,
        out: Mapping[nn.Parameter, torch.Tensor] | None = None,
        check: bool = True,
    ) -> ClippedGradients:
        """Run ``loss_fn()`` (a batch-mean loss) and return the clipped sum of per-sample gradients.

        ``out`` (optional) holds one tensor per trainable parameter into which
        the clipped sum is added in place (the trainer passes the noise there,
        so a table's sparse rows land in the dense noise without a zeros
        buffer). ``check`` watches the forward for parameters used outside a
        supported layer and raises :class:`UnsupportedModelError` if any is.
        """
        with self._recording(check) as (calls, detector):
            loss = loss_fn()
        if detector is not None and detector.violations:
            raise UnsupportedModelError(
                "parameters used outside nn.Embedding / nn.Linear / nn.LayerNorm forward "
                f"(e.g. tied output weights): {sorted(detector.violations)}; their per-sample "
                "gradients would escape clipping. Use a separate layer for them."
            )
        if loss.dim() != 0:
            raise ValueError(f"loss_fn must return a scalar (batch-mean) loss, got shape {tuple(loss.shape)}")
        if not calls:
            raise ValueError("the loss reached no trainable Embedding / Linear / LayerNorm layer")
        batch = calls[0].inp.shape[0]
        for c in calls:
            if c.inp.shape[0] != batch or c.out.shape[0] != batch:
                raise ValueError(
                    f"a {type(c.module).__name__} layer ran on input of leading size {c.inp.shape[0]}, "
                    f"not the batch size {batch}: every layer input must be indexed by example first"
                )
        # Gradients of B * mean-loss at the layer outputs: the per-sample backprops.
        backprops = torch.autograd.grad(loss * batch, [c.out for c in calls], allow_unused=True)

        by_module: dict[nn.Module, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        for c, b in zip(calls, backprops):
            if b is None:
                b = torch.zeros_like(c.out)
            by_module.setdefault(c.module, []).append((c.inp, b.detach()))

        sq = torch.zeros(batch, dtype=torch.float32, device=calls[0].out.device)
        terms = []
        for module, uses in by_module.items():
            term = _TERMS[type(module)](module, uses, batch)
            sq = sq + term.sq_norm.to(sq.dtype)
            terms.append(term)
        norms = sq.sqrt()
        factors = clip_factors(norms, self.max_grad_norm)

        grads: dict[nn.Parameter, torch.Tensor] = {}
        for p in self.params:
            grads[p] = out[p] if out is not None else torch.zeros_like(p)
        for term in terms:
            term.add_clipped(factors, grads)
        return ClippedGradients(grads=grads, norms=norms, factors=factors, batch_size=batch, names=self.names)


def _supported_layers(model: nn.Module) -> list[nn.Module]:
    """The layers that own trainable parameters; raise for any other owner or a tied parameter."""
    layers, seen = [], {}
    for name, module in model.named_modules(remove_duplicate=False):
        own = [(n, p) for n, p in module.named_parameters(recurse=False) if p.requires_grad]
        if not own:
            continue
        where = f"{name or '<root>'} ({type(module).__name__})"
        if type(module) not in SUPPORTED_LAYERS:
            raise UnsupportedModelError(
                f"{where} holds trainable parameters {[n for n, _ in own]}; the fast per-sample path supports "
                f"only {', '.join(t.__name__ for t in SUPPORTED_LAYERS)} (wrap bare parameters in one)"
            )
        for n, p in own:
            if id(p) in seen and seen[id(p)] != module:
                raise UnsupportedModelError(f"{where}.{n} is shared with another layer; tied parameters are not supported")
            seen[id(p)] = module
        if isinstance(module, nn.Embedding):
            if module.max_norm is not None or module.scale_grad_by_freq or module.sparse:
                raise UnsupportedModelError(f"{where}: max_norm, scale_grad_by_freq and sparse are not supported")
        if module not in layers:
            layers.append(module)
    return layers


@dataclass
class _Term:
    """One layer's share: squared per-sample norms and how to add its clipped sum."""

    sq_norm: torch.Tensor
    add_clipped: Callable[[torch.Tensor, dict[nn.Parameter, torch.Tensor]], None]


def _embedding_term(layer: nn.Embedding, uses: list[tuple[torch.Tensor, torch.Tensor]], batch: int) -> _Term:
    d = layer.embedding_dim
    idx = torch.cat([i.reshape(batch, -1) for i, _ in uses], dim=1)  # [B, T]
    g = torch.cat([b.reshape(batch, -1, d) for _, b in uses], dim=1)  # [B, T, d]
    if layer.padding_idx is not None:
        g = g * (idx != layer.padding_idx).unsqueeze(-1).to(g.dtype)
    t = idx.shape[1]
    if t == 1:
        sq = g.square().sum(dim=(1, 2))
    else:
        # Sum the rows a sample looked up more than once before squaring.
        vocab = layer.num_embeddings
        key = (torch.arange(batch, device=idx.device).unsqueeze(1) * vocab + idx).reshape(-1)
        uniq, inverse = torch.unique(key, return_inverse=True)
        rows = torch.zeros(uniq.numel(), d, dtype=g.dtype, device=g.device).index_add_(0, inverse, g.reshape(-1, d))
        sq = torch.zeros(batch, dtype=g.dtype, device=g.device).index_add_(0, uniq // vocab, rows.square().sum(1))

    def add(factors: torch.Tensor, grads: dict[nn.Parameter, torch.Tensor]) -> None:
        weighted = (g * factors.view(-1, 1, 1).to(g.dtype)).reshape(-1, d)
        grads[layer.weight].index_add_(0, idx.reshape(-1), weighted.to(grads[layer.weight].dtype))

    return _Term(sq, add)


def _linear_term(layer: nn.Linear, uses: list[tuple[torch.Tensor, torch.Tensor]], batch: int) -> _Term:
    a = torch.cat([i.reshape(batch, -1, layer.in_features) for i, _ in uses], dim=1).to(uses[0][1].dtype)
    g = torch.cat([b.reshape(batch, -1, layer.out_features) for _, b in uses], dim=1)  # [B, T, out]
    t, n_in, n_out = a.shape[1], layer.in_features, layer.out_features
    sq = torch.zeros(batch, dtype=g.dtype, device=g.device)
    if layer.weight.requires_grad:
        if t == 1:
            sq = sq + a.square().sum(dim=(1, 2)) * g.square().sum(dim=(1, 2))
        elif t * (n_in + n_out) <= n_in * n_out:
            gram_a = torch.bmm(a, a.transpose(1, 2))
            gram_g = torch.bmm(g, g.transpose(1, 2))
            sq = sq + (gram_a * gram_g).sum(dim=(1, 2)).clamp(min=0)
        else:
            sq = sq + torch.bmm(g.transpose(1, 2), a).square().sum(dim=(1, 2))
    gsum = g.sum(dim=1)  # [B, out]
    if layer.bias is not None and layer.bias.requires_grad:
        sq = sq + gsum.square().sum(dim=1)

    def add(factors: torch.Tensor, grads: dict[nn.Parameter, torch.Tensor]) -> None:
        f = factors.to(g.dtype)
        if layer.weight.requires_grad:
            weighted = (g * f.view(-1, 1, 1)).reshape(-1, n_out)
            grads[layer.weight].add_(weighted.T @ a.reshape(-1, n_in))
        if layer.bias is not None and layer.bias.requires_grad:
            grads[layer.bias].add_(f @ gsum)

    return _Term(sq, add)


def _layer_norm_term(layer: nn.LayerNorm, uses: list[tuple[torch.Tensor, torch.Tensor]], batch: int) -> _Term:
    shape = tuple(layer.normalized_shape)
    psg: dict[nn.Parameter, torch.Tensor] = {}
    for x, b in uses:
        xhat = F.layer_norm(x.to(b.dtype), shape, eps=layer.eps)
        reduce = tuple(range(1, b.dim() - len(shape)))
        parts = []
        if layer.weight is not None and layer.weight.requires_grad:
            parts.append((layer.weight, (xhat * b).sum(dim=reduce) if reduce else xhat * b))
        if layer.bias is not None and layer.bias.requires_grad:
            parts.append((layer.bias, b.sum(dim=reduce) if reduce else b))
        for p, gs in parts:
            psg[p] = psg[p] + gs if p in psg else gs
    sq = sum(gs.reshape(batch, -1).square().sum(1) for gs in psg.values())

    def add(factors: torch.Tensor, grads: dict[nn.Parameter, torch.Tensor]) -> None:
        for p, gs in psg.items():
            grads[p].add_(torch.tensordot(factors.to(gs.dtype), gs, dims=1))

    return _Term(sq if isinstance(sq, torch.Tensor) else torch.zeros(batch), add)


_TERMS: dict[type[nn.Module], Callable[[nn.Module, list, int], _Term]] = {
    nn.Embedding: _embedding_term,  # type: ignore[dict-item]
    nn.Linear: _linear_term,  # type: ignore[dict-item]
    nn.LayerNorm: _layer_norm_term,  # type: ignore[dict-item]
}
