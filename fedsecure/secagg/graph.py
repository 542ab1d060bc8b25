"""Who shares keys with whom: the complete graph (SecAgg) or a random Harary graph (SecAgg+).

The sparse graph is Bell et al.'s random Harary graph H(n, k): the clients are
placed on a ring in a pseudorandom order and each is joined to the ``k/2``
nearest clients on either side, so every client has exactly ``k`` neighbours
(``k`` even, ``k < n``). The order is ``argsort(AES-256_seed(id))`` -- AES as
a PRP on the 16-byte block holding each id -- so anyone holding the seed and
the view recomputes the same graph, and nobody who does not know the seed in
advance can steer who neighbours whom. The seed is drawn by commit and reveal
among the clients of the view (:func:`fedsecure.secagg.keys.graph_seed`): it
contains every client's own fresh reveal, so no server and no coalition can
choose it.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

Neighbours = dict[int, np.ndarray]


def complete_graph(ids: Iterable[int]) -> Neighbours:
    """Every client neighbours every other (sorted id arrays)."""
    ids = np.array(sorted(set(int(i) for i in ids)), dtype=np.int64)
    return {int(u): np.delete(ids, i) for i, u in enumerate(ids)}


def ring_order(ids: Iterable[int], seed: bytes) -> np.ndarray:
    """The clients in the pseudorandom ring order keyed by ``seed`` (32 bytes)."""
    ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
    if ids.size > 1 and not np.all(ids[1:] > ids[:-1]):  # views arrive sorted and unique: skip the sort then
        ids = np.unique(ids)
    if len(seed) != 32:
        raise ValueError(f"graph seed must be 32 bytes, got {len(seed)}")
    blocks = np.zeros((ids.size, 16), dtype=np.uint8)
    blocks[:, :8] = ids.astype("<u8").view(np.uint8).reshape(-1, 8)
    # ECB is used deliberately, as a PRP applied to distinct blocks, never to encrypt data.
    enc = Cipher(algorithms.AES(seed), modes.ECB()).encryptor()
    keys = np.frombuffer(enc.update(blocks.tobytes()) + enc.finalize(), dtype="<u8").reshape(-1, 2)[:, 0]
    return ids[np.argsort(keys, kind="stable")]


def harary_graph(ids: Iterable[int], k: int, seed: bytes) -> Neighbours:
    """Random Harary graph: each client joined to the ``k/2`` ring neighbours on each side."""
    order = ring_order(ids, seed)
    n = order.size
    if k % 2 or k < 2 or k >= n:
        raise ValueError(f"sparse degree k must be even and in [2, n-1] = [2, {n - 1}], got {k}")
    half = k // 2
    offsets = np.concatenate([np.arange(-half, 0), np.arange(1, half + 1)])
    idx = (np.arange(n)[:, None] + offsets[None, :]) % n
    nbrs = np.sort(order[idx], axis=1)
    return {int(u): nbrs[i] for i, u in enumerate(order)}


def neighbours_of(kind: str, ids: np.ndarray, k: int, seed: bytes, u: int) -> np.ndarray:
    """The sorted neighbours of ``u`` alone in :func:`build_graph` (O(n) work, no n x k table)."""
    ids = np.asarray(ids, dtype=np.int64)
    n = ids.size
    if kind == "complete" or k >= n - 1:
        return ids[ids != u]
    if kind != "sparse":
        raise ValueError(f"unknown graph kind {kind!r} (expected 'complete' or 'sparse')")
    if k % 2 or k < 2:
        raise ValueError(f"sparse degree k must be even and in [2, n-1] = [2, {n - 1}], got {k}")
    order = ring_order(ids, seed)
    pos = int(np.flatnonzero(order == u)[0])
    half = k // 2
    offsets = np.concatenate([np.arange(-half, 0), np.arange(1, half + 1)])
    return np.sort(order[(pos + offsets) % n])


def build_graph(kind: str, ids: Iterable[int], k: int, seed: bytes) -> Neighbours:
    """``kind`` is ``"complete"`` or ``"sparse"``; a sparse degree of n-1 or more is the complete graph."""
    ids = list(ids)
    if kind == "complete" or k >= len(ids) - 1:
        return complete_graph(ids)
    if kind == "sparse":
        return harary_graph(ids, k, seed)
    raise ValueError(f"unknown graph kind {kind!r} (expected 'complete' or 'sparse')")
