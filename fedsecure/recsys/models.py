"""Recommender models, each declaring which parameters stay on the client.

Every model is a :class:`Recommender`: a ``torch.nn.Module`` whose parameters
split into *private* ones (user-indexed tables: a user's embedding never
leaves the client that holds the user) and *shared* ones (item tables and
network weights: what clients send and the server aggregates).

Models are built only from ``nn.Embedding``, ``nn.Linear`` and ``nn.LayerNorm``
(attention is written out with ``nn.Linear``) and never hold a bare
``nn.Parameter`` on a module, so that per-sample gradient machinery (Opacus
and :mod:`fedsecure.dp`) supports every parameter without a dense fallback.

Training data is produced by the model itself (:meth:`Recommender.examples`):
each model knows its loss and what one epoch of examples looks like (explicit
ratings, positives with sampled negatives, or user sequences).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from fedsecure.recsys.data import Interactions
from fedsecure.recsys.losses import sampled_bce, sampled_softmax

Batch = dict[str, torch.Tensor]
ScoreFn = Callable[[np.ndarray], torch.Tensor]


class Recommender(nn.Module, ABC):
    """A recommender whose user-indexed parameters are private to the client."""

    #: "rating" (explicit, evaluated by RMSE/MAE) or "ranking" (HR@K / NDCG@K)
    task: ClassVar[str] = "ranking"
    #: parameter-name prefixes that are private to the client holding the user
    private_prefixes: ClassVar[tuple[str, ...]] = ("user_",)
    #: True when every embedding table is used by lookup alone in the loss,
    #: so local SGD may use sparse gradients (see fedsecure.fl.local)
    sparse_gradients: ClassVar[bool] = True
    #: names of the ``nn.Linear`` modules a LoRA adapter may target (fedsecure.recsys.adapters); () for none
    lora_targets: ClassVar[tuple[str, ...]] = ()
    #: names of the item embedding tables (those ``--adapter-items train`` keeps trainable beside an adapter)
    item_tables: ClassVar[tuple[str, ...]] = ()

    def __init__(self, n_users: int, n_items: int) -> None:
        super().__init__()
        if n_users <= 0 or n_items <= 0:
            raise ValueError(f"need n_users > 0 and n_items > 0, got {n_users} and {n_items}")
        self.n_users = n_users
        self.n_items = n_items

    def is_private(self, name: str) -> bool:
        return name.startswith(self.private_prefixes)

    def shared_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The parameters a client sends and the server aggregates, in a fixed order.

        Frozen parameters (``requires_grad`` False, such as a pretrained base
        under an adapter) are neither trained nor sent: every client holds the
        same copy, distributed once before training.
        """
        return [(n, p) for n, p in self.named_parameters() if not self.is_private(n) and p.requires_grad]

    def private_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if self.is_private(n)]

    @abstractmethod
    def examples(self, data: Interactions, rows: np.ndarray, rng: np.random.Generator) -> Batch:
        """One epoch of training examples drawn from ``data`` rows ``rows`` (first dimension = example)."""

    @abstractmethod
    def loss(self, batch: Batch) -> torch.Tensor:
        """Mean loss over a batch of examples (regularisation included)."""

    @abstractmethod
    def score_fn(self, train: Interactions) -> ScoreFn:
        """``f(users) -> scores [len(users), n_items]`` for ranking evaluation."""

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Predicted ratings (rating models only)."""
        raise NotImplementedError(f"{type(self).__name__} does not predict ratings")


def _sample_negatives(
    data: Interactions, rows: np.ndarray, n_per_row: int, rng: np.random.Generator
) -> np.ndarray:
    """``n_per_row`` uniform negative items for each row's user, avoiding the items of ``rows``.

    Only the client's own rows are consulted: a client knows its own
    interactions and nobody else's. A draw that hits one of the user's
    positives is redrawn once, leaving a small chance (about the user's
    density squared) of a positive serving as a negative -- the usual trade
    for vectorised sampling.
    """
    users = np.repeat(data.users[rows], n_per_row)
    neg = rng.integers(0, data.n_items, size=users.size)
    keys = np.unique(data.users[rows] * data.n_items + data.items[rows])  # sorted
    drawn = users * data.n_items + neg
    # membership by binary search in the sorted keys: what np.isin answers, without its per-call sort
    hit = keys[np.minimum(np.searchsorted(keys, drawn), keys.size - 1)] == drawn if keys.size else np.zeros(
        drawn.size, dtype=bool)
    if hit.any():
        neg[hit] = rng.integers(0, data.n_items, size=int(hit.sum()))
    return neg


def fit_private(
    model: Recommender,
    data: Interactions,
    users: np.ndarray,
    *,
    steps: int = 30,
    lr: float = 0.05,
    seed: int = 0,
    reinit: bool = True,
) -> Recommender:
    """A copy of ``model`` whose private (user-indexed) parameters are fitted to ``users``' rows of ``data``.

    The shared parameters are frozen: this is what a cross-device user can do
    on its own device with the released model and its own data (it costs no
    privacy beyond the release). ``reinit``: the private parameters start
    from ``N(0, 0.1^2)`` drawn from ``torch.Generator().manual_seed(seed)``
    (the same start for every model compared); otherwise from where training
    left them. ``steps`` full-batch Adam steps on the model's own loss over
    the users' examples (negatives from ``default_rng([seed, 0xF17])``).
    Adam's per-coordinate steps make the joint fit the same as fitting each
    user alone. Models without private parameters are returned as copies.
    """
    import copy

    users = np.asarray(users, dtype=np.int64)
    fitted = copy.deepcopy(model)
    private = [p for n, p in fitted.named_parameters() if fitted.is_private(n)]
    for n, p in fitted.named_parameters():
        p.requires_grad_(fitted.is_private(n))
    if reinit:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in private:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    rows = np.flatnonzero(np.isin(data.users, users))
    fitted.train()
    if private and steps and rows.size:
        batch = fitted.examples(data, rows, np.random.default_rng([seed, 0xF17]))
        opt = torch.optim.Adam(private, lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            fitted.loss(batch).backward()
            opt.step()
    fitted.eval()
    return fitted


def _as_long(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


class _ImplicitMixin:
    """Positives with ``n_negatives`` uniform negatives each, trained with binary cross-entropy."""

    n_negatives: int

    def examples(self, data: Interactions, rows: np.ndarray, rng: np.random.Generator) -> Batch:
        users = data.users[rows]
        items = data.items[rows]
        neg = _sample_negatives(data, rows, self.n_negatives, rng)
        all_users = np.concatenate([users, np.repeat(users, self.n_negatives)])
        all_items = np.concatenate([items, neg])
        labels = np.concatenate([np.ones(users.size), np.zeros(neg.size)]).astype(np.float32)
        return {"users": _as_long(all_users), "items": _as_long(all_items), "labels": torch.from_numpy(labels)}

    def loss(self, batch: Batch) -> torch.Tensor:
        logits, reg = self.logits(batch["users"], batch["items"])  # type: ignore[attr-defined]
        return F.binary_cross_entropy_with_logits(logits, batch["labels"]) + reg

    def score_fn(self, train: Interactions) -> ScoreFn:
        all_items = torch.arange(self.n_items)  # type: ignore[attr-defined]

        def score(users: np.ndarray) -> torch.Tensor:
            u = _as_long(users)
            with torch.no_grad():
                return self.score_matrix(u, all_items)  # type: ignore[attr-defined]

        return score


class MatrixFactorization(Recommender):
    """Biased matrix factorisation for explicit ratings.

    ``r_hat(u, i) = mu + b_u + b_i + p_u . q_i``, trained with mean squared error
    plus ``l2 * (|p_u|^2 + |q_i|^2 + b_u^2 + b_i^2)`` over the batch's rows only
    (regularising rows not in the batch would move every user's private row).
    ``mu`` is a 1x1 embedding rather than a bare parameter, for per-sample
    gradient support. Private: ``user_factors``, ``user_bias``.
    """

    task = "rating"

    def __init__(self, n_users: int, n_items: int, dim: int = 32, l2: float = 1e-4, init_mean: float = 3.5) -> None:
        super().__init__(n_users, n_items)
        self.l2 = l2
        self.user_factors = nn.Embedding(n_users, dim)
        self.user_bias = nn.Embedding(n_users, 1)
        self.item_factors = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        self.global_bias = nn.Embedding(1, 1)
        for emb in (self.user_factors, self.item_factors):
            nn.init.normal_(emb.weight, std=0.1)
        for emb in (self.user_bias, self.item_bias):
            nn.init.zeros_(emb.weight)
        nn.init.constant_(self.global_bias.weight, init_mean)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p, q = self.user_factors(users), self.item_factors(items)
        bu, bi = self.user_bias(users).squeeze(-1), self.item_bias(items).squeeze(-1)
        mu = self.global_bias(torch.zeros_like(users)).squeeze(-1)
        pred = mu + bu + bi + (p * q).sum(-1)
        reg = self.l2 * ((p * p).sum(-1) + (q * q).sum(-1) + bu * bu + bi * bi).mean()
        return pred, reg

    def examples(self, data: Interactions, rows: np.ndarray, rng: np.random.Generator) -> Batch:
        return {
            "users": _as_long(data.users[rows]),
            "items": _as_long(data.items[rows]),
            "ratings": torch.from_numpy(np.ascontiguousarray(data.ratings[rows], dtype=np.float32)),
        }

    def loss(self, batch: Batch) -> torch.Tensor:
        pred, reg = self(batch["users"], batch["items"])
        return F.mse_loss(pred, batch["ratings"]) + reg

    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            pred, _ = self(_as_long(users), _as_long(items))
        return pred.numpy()

    def score_fn(self, train: Interactions) -> ScoreFn:
        def score(users: np.ndarray) -> torch.Tensor:
            u = _as_long(users)
            with torch.no_grad():
                return (
                    self.user_factors(u) @ self.item_factors.weight.T
                    + self.item_bias.weight.T
                    + self.user_bias(u)
                    + self.global_bias.weight
                )

        return score


class ImplicitMatrixFactorization(_ImplicitMixin, Recommender):
    """Matrix factorisation for implicit feedback: ``logit(u, i) = b_i + p_u . q_i``.

    Binary cross-entropy over each positive and ``n_negatives`` uniformly
    sampled negatives, plus ``l2 * (|p_u|^2 + |q_i|^2)`` over the batch's rows.
    Private: ``user_factors``.
    """

    def __init__(self, n_users: int, n_items: int, dim: int = 32, l2: float = 1e-5, n_negatives: int = 4) -> None:
        super().__init__(n_users, n_items)
        self.l2, self.n_negatives = l2, n_negatives
        self.user_factors = nn.Embedding(n_users, dim)
        self.item_factors = nn.Embedding(n_items, dim)
        self.item_bias = nn.Embedding(n_items, 1)
        nn.init.normal_(self.user_factors.weight, std=0.1)
        nn.init.normal_(self.item_factors.weight, std=0.1)
        nn.init.zeros_(self.item_bias.weight)

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p, q = self.user_factors(users), self.item_factors(items)
        logit = (p * q).sum(-1) + self.item_bias(items).squeeze(-1)
        return logit, self.l2 * ((p * p).sum(-1) + (q * q).sum(-1)).mean()

    def score_matrix(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.user_factors(users) @ self.item_factors(items).T + self.item_bias(items).T


class NeuralCF(_ImplicitMixin, Recommender):
    """Neural collaborative filtering (NeuMF, He et al. 2017): GMF and MLP branches fused by a linear layer.

    ``logit = h . [p^G_u * q^G_i ; MLP([p^M_u ; q^M_i])]``. Binary cross-entropy
    with ``n_negatives`` sampled negatives. Private: ``user_gmf``, ``user_mlp``.
    """

    def __init__(
        self, n_users: int, n_items: int, dim: int = 32, layers: tuple[int, ...] = (64, 32, 16),
        l2: float = 1e-5, n_negatives: int = 4,
    ) -> None:
        super().__init__(n_users, n_items)
        self.l2, self.n_negatives = l2, n_negatives
        self.user_gmf = nn.Embedding(n_users, dim)
        self.item_gmf = nn.Embedding(n_items, dim)
        self.user_mlp = nn.Embedding(n_users, layers[0] // 2)
        self.item_mlp = nn.Embedding(n_items, layers[0] // 2)
        self.mlp = nn.ModuleList(nn.Linear(a, b) for a, b in zip(layers[:-1], layers[1:]))
        self.output = nn.Linear(dim + layers[-1], 1)
        for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
            nn.init.normal_(emb.weight, std=0.1)

    def _fuse(self, pg: torch.Tensor, qg: torch.Tensor, pm: torch.Tensor, qm: torch.Tensor) -> torch.Tensor:
        h = torch.cat([pm, qm], dim=-1)
        for layer in self.mlp:
            h = F.relu(layer(h))
        return self.output(torch.cat([pg * qg, h], dim=-1)).squeeze(-1)

    def logits(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pg, qg = self.user_gmf(users), self.item_gmf(items)
        pm, qm = self.user_mlp(users), self.item_mlp(items)
        reg = self.l2 * sum((e * e).sum(-1) for e in (pg, qg, pm, qm)).mean()
        return self._fuse(pg, qg, pm, qm), reg

    #: user x item pairs scored at once: the MLP's activations for a whole batch of users against a whole
    #: catalogue (256 x 9,724 on ml-latest-small) took over a GiB; in chunks they take tens of MB
    score_chunk_pairs: ClassVar[int] = 1 << 16

    def score_matrix(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        b, n = users.numel(), items.numel()
        step = max(1, self.score_chunk_pairs // max(n, 1))
        if b > step:
            return torch.cat([self.score_matrix(users[i : i + step], items) for i in range(0, b, step)])
        pg = self.user_gmf(users)[:, None, :].expand(b, n, -1)
        pm = self.user_mlp(users)[:, None, :].expand(b, n, -1)
        qg = self.item_gmf(items)[None].expand(b, n, -1)
        qm = self.item_mlp(items)[None].expand(b, n, -1)
        return self._fuse(pg, qg, pm, qm)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention from plain linear layers (per-sample-gradient friendly)."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        causal = torch.ones(n, n, dtype=torch.bool, device=x.device).tril()
        mask = causal[None, None] & ~pad[:, None, None, :]
        # A fully padded query row would be all -inf; let it attend to itself instead.
        mask = mask | torch.eye(n, dtype=torch.bool, device=x.device)[None, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Linear(dim, 4 * dim)
        self.ff2 = nn.Linear(4 * dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, pad: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), pad))
        return x + self.drop(self.ff2(F.gelu(self.ff1(self.norm2(x)))))


#: SASRec's training losses (see :class:`SASRec` and :mod:`fedsecure.recsys.losses`)
SASREC_LOSSES = ("sampled-softmax", "bce", "full")
#: negatives drawn per training sequence (sampled-softmax) or per position (bce) when not given
DEFAULT_SAMPLED = {"sampled-softmax": 100, "bce": 1}


class SASRec(Recommender):
    """Self-attentive sequential recommender (Kang & McAuley 2018), pre-norm variant.

    A user is represented by their last ``max_len`` interactions in time
    order; the model predicts the next item at every position. The output
    layer is **tied** to the item embeddings (item ``i`` is scored by
    ``h . e_i``, Kang & McAuley's choice), so there is one item table and a
    training step touches its rows only where ``loss`` looks them up:

    * ``"sampled-softmax"`` (default): softmax over the positive and
      ``n_sampled`` negatives per sequence (shared by its positions) drawn
      from a proposal ``Q`` with replacement, each corrected by
      ``log(S Q_j)`` (:func:`~fedsecure.recsys.losses.sampled_softmax`). ``Q``
      is uniform until :meth:`set_item_counts` gives the items' training
      frequency (add-one smoothed): popular items are then sampled more and
      the correction keeps the estimate of the partition function unbiased.
    * ``"bce"``: binary cross-entropy of the positive against ``n_sampled``
      uniform negatives per position, as in the SASRec paper.
    * ``"full"``: softmax over the whole catalogue (cost per step grows with
      it; its tied output is a direct use of ``item_emb.weight``, which
      per-sample clipping refuses: use a sampled loss with DP-SGD).

    Every table is reached by lookup in the sampled losses (the negatives are
    looked up per example, ``[B, S]``), so per-sample gradients (Opacus and
    :mod:`fedsecure.dp`) see every use and local SGD may use sparse
    gradients. The loss is the mean over a sequence's positions, then over
    sequences, so each example's gradient depends on that example alone.
    It has no user-indexed parameters: a user's history stays on the client
    as data, and every parameter is shared. Size is set by ``dim``,
    ``blocks``, ``heads`` and ``max_len``. Item id 0 is padding; item ``i`` is
    row ``i + 1``.
    """

    private_prefixes = ()
    lora_targets = ("qkv", "proj", "ff1", "ff2")  # attention and feed-forward projections
    item_tables = ("item_emb",)

    def __init__(
        self, n_users: int, n_items: int, dim: int = 64, blocks: int = 2, heads: int = 2,
        max_len: int = 50, dropout: float = 0.2, loss: str = "sampled-softmax", n_sampled: int | None = None,
    ) -> None:
        super().__init__(n_users, n_items)
        if loss not in SASREC_LOSSES:
            raise ValueError(f"unknown SASRec loss {loss!r}; choose one of: {', '.join(SASREC_LOSSES)}")
        if n_sampled is not None and (loss == "full" or n_sampled < 1):
            raise ValueError(f"n_sampled (--train-negatives) must be >= 1 and goes with a sampled loss, "
                             f"got {n_sampled} with loss {loss!r}")
        self.max_len = max_len
        self.loss_name = loss
        self.n_sampled = n_sampled if n_sampled is not None else DEFAULT_SAMPLED.get(loss, 0)
        # the full softmax reads item_emb.weight as a whole: its gradient is dense
        self.sparse_gradients = loss != "full"
        self._proposal_cdf: np.ndarray | None = None
        self._log_q: np.ndarray | None = None
        self.item_emb = nn.Embedding(n_items + 1, dim, padding_idx=0)
        self.pos_emb = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, dropout) for _ in range(blocks))
        self.norm = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)
        nn.init.normal_(self.item_emb.weight, std=dim**-0.5)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        nn.init.normal_(self.pos_emb.weight, std=0.02)

    def set_item_counts(self, counts: np.ndarray) -> None:
        """Sample sampled-softmax negatives by item frequency: ``Q_i = (c_i + 1) / sum_j (c_j + 1)``.

        ``counts`` (one per item) are the training interactions per item. In a
        federated deployment this is one secure sum of the clients' item
        histograms before training; the simulation takes it from the training data.
        """
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape != (self.n_items,) or not np.all(counts >= 0):
            raise ValueError(f"item counts must be {self.n_items} non-negative numbers, got shape {counts.shape}")
        q = (counts + 1.0) / (counts.sum() + self.n_items)
        self._log_q = np.log(q)
        self._proposal_cdf = np.cumsum(q)

    def proposal(self) -> str:
        return "uniform" if self._log_q is None else "item frequency (add-one)"

    def encode(self, seqs: torch.Tensor) -> torch.Tensor:
        """Hidden states [B, L, dim] for left-padded item sequences [B, L] (0 = padding)."""
        b, n = seqs.shape
        pad = seqs == 0
        # Positions are counted back from the most recent item, expanded per
        # example (a broadcast position index breaks per-sample gradients).
        pos = torch.arange(self.max_len - n, self.max_len, device=seqs.device).expand(b, n)
        x = self.drop(self.item_emb(seqs) * math.sqrt(self.item_emb.embedding_dim) + self.pos_emb(pos))
        x = x * (~pad)[..., None]
        for block in self.blocks:
            x = block(x, pad)
        return self.norm(x)

    def _sequences(self, data: Interactions, rows: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
        """Left-padded per-user item sequences (ids shifted by one) of the ``length`` latest rows."""
        sub = data.select(rows)
        indptr, order = sub.user_index()
        counts = np.diff(indptr)
        users = np.flatnonzero(counts)
        counts = counts[users]
        take = np.minimum(counts, length)
        seqs = np.zeros((users.size, length), dtype=np.int64)
        # row r of the output gets the last take[r] items of user users[r], right-aligned
        starts = indptr[users] + counts - take
        offs = np.arange(take.sum()) - np.repeat(np.cumsum(take) - take, take)
        src = order[np.repeat(starts, take) + offs]
        dst_row = np.repeat(np.arange(users.size), take)
        dst_col = length - np.repeat(take, take) + offs
        seqs[dst_row, dst_col] = sub.items[src] + 1
        return users, seqs

    def examples(self, data: Interactions, rows: np.ndarray, rng: np.random.Generator) -> Batch:
        _, seqs = self._sequences(data, rows, self.max_len + 1)
        batch = {"inputs": torch.from_numpy(seqs[:, :-1].copy()), "targets": torch.from_numpy(seqs[:, 1:].copy())}
        n, s = len(seqs), self.n_sampled
        if self.loss_name == "bce":
            batch["negatives"] = _as_long(rng.integers(1, self.n_items + 1, size=(n, self.max_len, s)))
        elif self.loss_name == "sampled-softmax":
            if self._proposal_cdf is None:
                neg = rng.integers(0, self.n_items, size=(n, s))
                log_expected = np.full((n, s), math.log(s / self.n_items), dtype=np.float32)
            else:
                u = rng.random((n, s)) * self._proposal_cdf[-1]
                neg = np.minimum(np.searchsorted(self._proposal_cdf, u, side="right"), self.n_items - 1)
                log_expected = (math.log(s) + self._log_q[neg]).astype(np.float32)
            batch["negatives"] = _as_long(neg + 1)
            batch["log_expected"] = torch.from_numpy(log_expected)
        return batch

    def minibatches(self, examples: Batch, batch_size: int, rng: np.random.Generator) -> list[Batch]:
        """Shuffled minibatches of sequences of similar length, cut to their longest sequence.

        Sequences are ordered by length (ties broken at random), cut into
        batches of ``batch_size``, and the batches shuffled; each batch drops
        the leading columns that are padding in all its rows. Positions count
        back from the latest item and padding is masked, so the cut changes no
        valid position's output: the step's cost follows the batch's real
        length rather than ``max_len`` (on short-history data, several times less).
        """
        targets = examples["targets"]  # a target can sit on a padding input (the first item): count targets
        n = targets.shape[0]
        lengths = (targets != 0).sum(1).numpy()
        order = np.lexsort((rng.random(n), lengths))
        chunks = [order[i:i + batch_size] for i in range(0, n, batch_size)]
        batches = []
        for k in rng.permutation(len(chunks)):
            idx = torch.from_numpy(chunks[k])
            width = max(int(lengths[chunks[k]].max()), 1)
            batches.append({key: (v[idx, -width:] if key in ("inputs", "targets", "negatives") and
                                  (key != "negatives" or v.dim() == 3) else v[idx])
                            for key, v in examples.items()})
        return batches

    def loss(self, batch: Batch) -> torch.Tensor:
        h = self.encode(batch["inputs"])
        targets = batch["targets"]
        valid = targets > 0
        if self.loss_name == "full":
            logits = h @ self.item_emb.weight[1:].T
            per_token = F.cross_entropy(logits.transpose(1, 2), targets - 1, ignore_index=-1, reduction="none")
        else:
            pos = (h * self.item_emb(targets)).sum(-1)  # [B, L]
            neg_ids = batch["negatives"]
            if self.loss_name == "bce":  # [B, L, S]: per position
                neg = (h.unsqueeze(2) * self.item_emb(neg_ids)).sum(-1)
                per_token = sampled_bce(pos, neg, accidental=neg_ids == targets.unsqueeze(-1))
            else:  # [B, S]: per sequence, shared by its positions
                neg = torch.einsum("bld,bsd->bls", h, self.item_emb(neg_ids))
                per_token = sampled_softmax(pos, neg, batch["log_expected"].unsqueeze(1),
                                            accidental=neg_ids.unsqueeze(1) == targets.unsqueeze(-1))
            per_token = per_token.masked_fill(~valid, 0.0)
        return (per_token.sum(1) / valid.sum(1).clamp(min=1)).mean()

    def score_fn(self, train: Interactions) -> ScoreFn:
        users_with_history, seqs = self._sequences(train, np.arange(len(train)), self.max_len)
        position = np.full(train.n_users, -1, dtype=np.int64)
        position[users_with_history] = np.arange(users_with_history.size)

        def score(users: np.ndarray) -> torch.Tensor:
            idx = position[users]
            batch = np.zeros((users.size, self.max_len), dtype=np.int64)
            batch[idx >= 0] = seqs[idx[idx >= 0]]
            with torch.no_grad():
                return self.encode(torch.from_numpy(batch))[:, -1] @ self.item_emb.weight[1:].T

        return score


MODELS: dict[str, type[Recommender]] = {
    "mf": MatrixFactorization,
    "mf-implicit": ImplicitMatrixFactorization,
    "ncf": NeuralCF,
    "sasrec": SASRec,
}


def build_model(name: str, n_users: int, n_items: int, **kwargs: object) -> Recommender:
    """Construct a model by its registry name; unknown names list the valid ones."""
    try:
        cls = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None
    return cls(n_users, n_items, **kwargs)  # type: ignore[arg-type]
