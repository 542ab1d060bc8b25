"""Targeted item promotion against a federated recommender, by crafted item-embedding updates.

The attack of PipAttack (Zhang, Chen, Wang, Nguyen and Yin, "PipAttack:
Poisoning Federated Recommender Systems for Manipulating Item Promotion",
WSDM 2022) and FedRecAttack (Rong, He and Chen, "FedRecAttack: Model
Poisoning Attack to Federated Recommendation", ICDE 2022), in its simplest
form: a few malicious clients send updates that push one or more *target*
items into the top-K lists of many honest users.

**Threat model.** A malicious client is an ordinary participant: it receives
the global shared model each round (every client does) and knows which items
are popular (public information: sales ranks, trending lists; or, when no
popularity is given, its estimate from the global model's item biases or
embedding norms). It does *not* see other users' private embeddings (the
``user_*`` tables never leave their clients) nor the honest clients' updates
(``omniscient = False``). Malicious clients collude: each sends the same
crafted rows.

**Crafted update** (PipAttack's popularity alignment). In a factor model
popular items' embeddings align with most users' embeddings: that is why they
rank high for most users. So the attack moves each target item's embedding
rows toward those of the ``n_popular`` most popular items ``P``, read from
the global model ``G`` it received. The goal is their consensus direction at
the norm of a typical popular item (the plain mean is shorter than any of
them, as averaging cancels what they do not share):

    c = mean_{i in P} G[i],   goal = c / |c| * mean_{i in P} |G[i]|,
    delta[t] = boost * (goal - G[t])

and it raises each item bias (a table of width 1) above the catalogue's
highest, by as much as the highest lies above the mean, never lowering it:

    delta[t] = boost * max(0, b_max + (b_max - b_mean) - b[t])

Everything else in the malicious client's update stays its own benign update,
which keeps the update close to honest ones outside the few target rows.
``boost`` compensates for averaging: under FedAvg the target row moves by
about ``(malicious weight share) * boost * (distance to the goal)`` per
round, times the server learning rate, so ``boost`` near ``1 / (share *
server_lr)`` reaches the goal in a round. Much larger values overshoot and
oscillate with growing amplitude: the target's embedding blows up and, through
the negatives every honest client samples, damages the users' embeddings (on
200 synthetic users, 10% malicious, server ``avg`` summing 50 clients:
``boost=0.2`` gave ER@10 1.00 at HR@10 0.180 against 0.185 clean, ``boost=10``
ER@10 0.58 at HR@10 0.06). Under an adaptive server optimiser (FedAdam, the
default of ``fedsecure run``) these rarely-updated rows move by about the
server learning rate per round in the crafted direction, whatever ``boost``
(there the default ``boost=10`` gave ER@10 0.94 at HR@10 0.150 against 0.165).

The premise holds for implicit-feedback models (``mf-implicit``, ``ncf``,
``sasrec``), where the top of every user's list *is* driven by popularity
(same setting, FedAdam, clean ER@10 0.00 for each: attacked ``ncf`` 0.59 at
HR@10 0.140 against 0.165, ``sasrec`` 1.00 at HR@10 0.120 against 0.120).
A rating-prediction model (``mf``) ranks by predicted rating, whose top is
held by rarely rated, well rated items with large embeddings; there the
alignment with popular items does not promote (same setting, FedAdam: the
target's ER@10 fell from 0.23 clean to 0.05), and a promotion
attack would need the users' embeddings (FedRecAttack estimates them from
public interactions), which this attacker does not have.

**Item tables** are found in the shared-parameter layout: every tensor whose
name contains ``"item"`` and whose first dimension is ``n_items`` (item ``i``
is row ``i``) or ``n_items + 1`` (a padding row 0, as SASRec's ``item_emb``:
item ``i`` is row ``i + 1``); and an output layer with one row per item (a
tensor named ``output.*`` of first dimension ``n_items``, for a model that
scores items with its own output layer). This covers ``mf`` and
``mf-implicit`` (``item_factors``, ``item_bias``), ``ncf`` (``item_gmf``,
``item_mlp``) and ``sasrec`` (``item_emb``, which also scores the items: its
output is tied to it). Without ``n_items``, a lone ``item_emb.weight`` is
read as padded (``n_items + 1`` rows).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from fedsecure.recsys.data import Interactions

from .poisoning import AttackConfigError, ModelPoisoning
from .reference import as_updates, positive_float

__all__ = ["ItemPromotion", "ItemTable", "choose_targets", "item_popularity", "item_tables", "promotion_goal"]


def item_popularity(train: Interactions) -> np.ndarray:
    """Training interactions per item (``n_items`` counts): the public popularity an attacker knows."""
    return np.bincount(train.items, minlength=train.n_items).astype(np.int64)


def choose_targets(train: Interactions | np.ndarray, n: int = 1, seed: int = 0) -> list[int]:
    """``n`` target items drawn uniformly from the less popular half of the items that have an interaction.

    ``train`` is the training set or its per-item counts. Promoting an
    unpopular item is the meaningful attack (a popular one is already
    exposed); requiring one interaction keeps the item a real one. Seeded.
    """
    counts = item_popularity(train) if isinstance(train, Interactions) else np.asarray(train, dtype=np.int64)
    if counts.ndim != 1:
        raise AttackConfigError(f"item popularity must be a 1-D array of counts, got shape {counts.shape}")
    if n < 1:
        raise AttackConfigError(f"need at least one target item, got n={n}")
    active = np.flatnonzero(counts > 0)
    # stable sort by count: the less popular half of the items with interactions
    pool = active[np.argsort(counts[active], kind="stable")][: max(n, active.size // 2)]
    if pool.size < n:
        raise AttackConfigError(f"only {pool.size} items have interactions; cannot choose {n} targets")
    rng = np.random.default_rng([seed, 0x7A6])
    return sorted(int(i) for i in rng.choice(pool, size=n, replace=False))


class ItemTable:
    """One shared tensor with a row per item: where it sits in the flat vector, and the row of item 0."""

    def __init__(self, name: str, shape: tuple[int, ...], offset: int, shift: int) -> None:
        self.name, self.shape, self.offset, self.shift = name, shape, offset, shift
        self.width = int(np.prod(shape[1:], dtype=np.int64)) if len(shape) > 1 else 1
        self.size = shape[0] * self.width

    def matrix(self, flat: np.ndarray) -> np.ndarray:
        """The table as ``[rows, width]`` (a view of ``flat``)."""
        return flat[..., self.offset : self.offset + self.size].reshape(*flat.shape[:-1], self.shape[0], self.width)

    def columns(self, items: np.ndarray) -> np.ndarray:
        """Flat-vector positions of the rows of ``items``, row by row (``len(items) * width`` of them)."""
        rows = np.asarray(items, dtype=np.int64) + self.shift
        return (self.offset + rows[:, None] * self.width + np.arange(self.width)[None, :]).reshape(-1)

    def __repr__(self) -> str:
        return f"ItemTable({self.name!r}, shape={self.shape}, offset={self.offset}, shift={self.shift})"


def _infer_n_items(layout: Sequence[tuple[str, tuple[int, ...], int]]) -> int:
    item_rows = [shape[0] for name, shape, _ in layout if "item" in name and len(shape) >= 1]
    out_rows = {shape[0] for name, shape, _ in layout if name.startswith("output.") and len(shape) >= 1}
    if not item_rows:
        raise AttackConfigError("item-promotion: the model has no shared tensor named '*item*' to attack")
    for rows in item_rows:  # a padded table (n_items + 1 rows) beside an output layer of n_items rows
        if rows - 1 in out_rows:
            return rows - 1
    padded = [shape[0] - 1 for name, shape, _ in layout if name == "item_emb.weight" and len(shape) >= 1]
    if padded and len(set(item_rows)) == 1:  # SASRec's tied table alone: row 0 is padding
        return padded[0]
    return min(item_rows)


def item_tables(layout: Sequence[tuple[str, tuple[int, ...], int]], n_items: int | None = None) -> list[ItemTable]:
    """The item tables of a shared-parameter layout (see the module docstring for the rule)."""
    n = _infer_n_items(layout) if n_items is None else int(n_items)
    tables = []
    for name, shape, offset in layout:
        shape = tuple(int(s) for s in shape)
        if not shape:
            continue
        if "item" in name and shape[0] in (n, n + 1):
            tables.append(ItemTable(name, shape, int(offset), shape[0] - n))
        elif name.startswith("output.") and shape[0] == n:
            tables.append(ItemTable(name, shape, int(offset), 0))
    if not tables:
        raise AttackConfigError(f"item-promotion: no shared tensor has a row per item (n_items={n})")
    return tables


def _is_bias(table: ItemTable) -> bool:
    return table.width == 1 or len(table.shape) == 1


def promotion_goal(rows: np.ndarray, popular: np.ndarray, bias: bool) -> np.ndarray:
    """Where the attack sends a target's row of an item table (``rows``: ``[n_items, width]``).

    Embedding rows: the popular items' mean direction at their mean norm. Bias
    (width 1): the catalogue's highest bias plus its distance above the mean.
    """
    if bias:
        top = rows.max(axis=0)
        return top + (top - rows.mean(axis=0))
    centre = rows[popular].mean(axis=0)
    norm = np.linalg.norm(rows[popular], axis=1).mean()
    return centre * (norm / max(float(np.linalg.norm(centre)), 1e-12))


class ItemPromotion(ModelPoisoning):
    """Promote ``target_items`` by moving their rows toward the popular items' centre (PipAttack-style).

    ``target_items``: the items to promote; when None they are chosen with
    :func:`choose_targets` from ``popularity`` (``n_targets`` of them), or,
    without popularity, uniformly from the catalogue at the first round.
    ``popularity``: per-item interaction counts (public); when None the
    popular items are estimated each round from the global model (the
    largest item biases, else the largest embedding norms). ``boost`` scales
    the crafted change; ``n_popular`` is how many popular items define the
    goal. ``n_items`` is read from the layout when not given.
    """

    name = "item-promotion"
    omniscient = False
    needs_global = True

    def __init__(
        self,
        target_items: Sequence[int] | None = None,
        n_targets: int = 1,
        boost: float = 10.0,
        *,
        popularity: Sequence[int] | np.ndarray | None = None,
        n_popular: int = 20,
        n_items: int | None = None,
        seed: int = 0,
    ) -> None:
        self.boost = positive_float(self.name, "boost", boost)
        if isinstance(n_popular, bool) or not isinstance(n_popular, (int, np.integer)) or n_popular < 1:
            raise AttackConfigError(f"{self.name}: n_popular must be an integer >= 1, got {n_popular!r}")
        self.n_popular = int(n_popular)
        self.popularity = None if popularity is None else np.asarray(popularity, dtype=np.float64)
        if self.popularity is not None and self.popularity.ndim != 1:
            raise AttackConfigError(f"{self.name}: popularity must be 1-D per-item counts, got {self.popularity.shape}")
        if n_items is None and self.popularity is not None:
            n_items = self.popularity.size
        self.n_items = None if n_items is None else int(n_items)
        self.seed = int(seed)
        self.n_targets = int(n_targets)
        if target_items is not None:
            targets = sorted({int(t) for t in target_items})
            if not targets or targets[0] < 0 or (self.n_items is not None and targets[-1] >= self.n_items):
                raise AttackConfigError(f"{self.name}: target items must be non-empty ids in [0, n_items), "
                                        f"got {list(target_items)}")
            self.target_items: list[int] | None = targets
        elif self.popularity is not None:
            self.target_items = choose_targets(self.popularity.astype(np.int64), self.n_targets, self.seed)
        else:
            if self.n_targets < 1:
                raise AttackConfigError(f"{self.name}: n_targets must be >= 1, got {n_targets}")
            self.target_items = None  # chosen at the first round, once n_items is known

    def _resolve(self) -> tuple[list[ItemTable], np.ndarray, int]:
        if self.layout is None or self.global_params is None:
            raise AttackConfigError(f"{self.name} reads the global model: it needs the shared-parameter layout "
                                    "and the round's global parameters (the engine sets both)")
        tables = item_tables(self.layout, self.n_items)
        n = tables[0].shape[0] - tables[0].shift
        if self.target_items is None:
            rng = np.random.default_rng([self.seed, 0x7A6])
            self.target_items = sorted(int(i) for i in rng.choice(n, size=min(self.n_targets, n), replace=False))
        targets = np.asarray(self.target_items, dtype=np.int64)
        if targets.max() >= n:
            raise AttackConfigError(f"{self.name}: target item {int(targets.max())} is outside the {n} items")
        return tables, targets, n

    def popular_items(self, tables: list[ItemTable], g: np.ndarray, n: int, targets: np.ndarray) -> np.ndarray:
        """The ``n_popular`` most popular non-target items: by public counts, else estimated from the model."""
        if self.popularity is not None:
            if self.popularity.size != n:
                raise AttackConfigError(f"{self.name}: popularity has {self.popularity.size} items, the model {n}")
            score = self.popularity.copy()
        else:
            biases = [t for t in tables if _is_bias(t)]
            table = biases[0] if biases else tables[0]
            rows = table.matrix(g)[table.shift :]
            score = rows[:, 0] if biases else np.linalg.norm(rows, axis=1)
        score = np.asarray(score, dtype=np.float64).copy()
        score[targets] = -np.inf
        k = min(self.n_popular, n - targets.size)
        return np.argsort(-score, kind="stable")[:k]

    def craft(self, benign: np.ndarray, honest: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        b, _ = as_updates(self.name, benign, honest)
        tables, targets, n = self._resolve()
        g = np.asarray(self.global_params, dtype=np.float64)
        if g.shape != (b.shape[1],):
            raise AttackConfigError(f"{self.name}: global parameters have shape {g.shape}, updates {b.shape[1]} values")
        popular = self.popular_items(tables, g, n, targets)
        out = b.copy()
        for table in tables:
            rows = table.matrix(g)
            current = rows[targets + table.shift]  # [T, width]
            change = self.boost * (promotion_goal(rows[table.shift :], popular, _is_bias(table))[None, :] - current)
            if _is_bias(table):
                change = np.maximum(change, 0.0)  # a bias is only ever raised
            out[:, table.columns(targets)] = change.reshape(-1)[None, :]
        return out

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "target_items": self.target_items, "boost": self.boost,
                "n_popular": self.n_popular, "popularity": "public counts" if self.popularity is not None
                else "estimated from the global model"}
