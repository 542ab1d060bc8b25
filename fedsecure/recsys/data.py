"""The interaction table every recommender component reads: one row per (user, item) event.

An :class:`Interactions` is a column store of parallel numpy arrays. Users and
items carry *dense* ids (``0 <= u < n_users``, ``0 <= i < n_items``) so they
index embedding tables directly; ``raw_user_ids[u]`` / ``raw_item_ids[i]`` map
them back to the ids of the source. Subsets (train / test, a client's rows)
keep the same id space, so a model sized on the full data fits every subset.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Interactions"]


@dataclass(frozen=True, eq=False)
class Interactions:
    """Parallel arrays of interactions over a dense id space.

    ``ratings`` holds the explicit rating, or ``1.0`` where the source is
    implicit only; ``timestamps`` are Unix seconds. Construction checks that
    the arrays are 1-D, of one length, and that every id lies in its range;
    dtypes are normalised (int64 ids and timestamps, float32 ratings).
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray
    timestamps: np.ndarray
    n_users: int
    n_items: int
    raw_user_ids: np.ndarray
    raw_item_ids: np.ndarray
    source: str

    def __post_init__(self) -> None:
        coerce = {
            "users": np.int64,
            "items": np.int64,
            "ratings": np.float32,
            "timestamps": np.int64,
        }
        for name, dtype in coerce.items():
            arr = np.asarray(getattr(self, name))
            if arr.ndim != 1:
                raise ValueError(f"Interactions.{name} must be 1-D, got shape {arr.shape}")
            if arr.dtype != dtype:
                if dtype is np.int64 and arr.size and not np.issubdtype(arr.dtype, np.integer):
                    raise ValueError(f"Interactions.{name} must hold integers, got dtype {arr.dtype}")
                arr = arr.astype(dtype)
            object.__setattr__(self, name, arr)
        n = len(self.users)
        for name in ("items", "ratings", "timestamps"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"Interactions columns differ in length: users has {n}, {name} has {len(getattr(self, name))}"
                )
        object.__setattr__(self, "n_users", int(self.n_users))
        object.__setattr__(self, "n_items", int(self.n_items))
        for ids, count, name in ((self.users, self.n_users, "user"), (self.items, self.n_items, "item")):
            if count < 0:
                raise ValueError(f"n_{name}s must be >= 0, got {count}")
            if n and (ids.min() < 0 or ids.max() >= count):
                raise ValueError(
                    f"{name} ids must lie in [0, {count}), got range [{ids.min()}, {ids.max()}]"
                )
        for name, count in (("raw_user_ids", self.n_users), ("raw_item_ids", self.n_items)):
            raw = np.asarray(getattr(self, name))
            if raw.shape != (count,):
                raise ValueError(f"Interactions.{name} must have shape ({count},), got {raw.shape}")
            object.__setattr__(self, name, raw)
        if n and not np.all(np.isfinite(self.ratings)):
            raise ValueError("Interactions.ratings must be finite")

    def __len__(self) -> int:
        return len(self.users)

    def __repr__(self) -> str:
        return (
            f"Interactions({len(self)} rows, n_users={self.n_users}, n_items={self.n_items}, "
            f"source={self.source!r})"
        )

    def select(self, rows: np.ndarray) -> Interactions:
        """The subset at ``rows`` (a boolean mask of length ``len(self)`` or int indices), same id space."""
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (len(self),):
                raise ValueError(f"boolean row mask must have shape ({len(self)},), got {rows.shape}")
        elif rows.size == 0:
            rows = rows.astype(np.int64)
        elif not np.issubdtype(rows.dtype, np.integer):
            raise ValueError(f"rows must be a boolean mask or integer indices, got dtype {rows.dtype}")
        elif rows.ndim != 1:
            raise ValueError(f"row indices must be 1-D, got shape {rows.shape}")
        elif rows.min() < -len(self) or rows.max() >= len(self):
            raise IndexError(f"row indices out of range for {len(self)} rows")
        return Interactions(
            users=self.users[rows],
            items=self.items[rows],
            ratings=self.ratings[rows],
            timestamps=self.timestamps[rows],
            n_users=self.n_users,
            n_items=self.n_items,
            raw_user_ids=self.raw_user_ids,
            raw_item_ids=self.raw_item_ids,
            source=self.source,
        )

    def user_index(self) -> tuple[np.ndarray, np.ndarray]:
        """CSR index by user: ``(indptr, order)``.

        ``indptr`` has ``n_users + 1`` entries; the rows of user ``u`` are
        ``order[indptr[u]:indptr[u + 1]]``, sorted by ``(timestamp, row)``, so
        the last of them is the user's latest interaction (ties in timestamp go
        to the later row of the table). Every row appears exactly once.
        """
        # lexsort is stable and sorts by the last key first: user, then timestamp, then row.
        order = np.lexsort((self.timestamps, self.users)).astype(np.int64)
        counts = np.bincount(self.users, minlength=self.n_users)
        indptr = np.zeros(self.n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return indptr, order
