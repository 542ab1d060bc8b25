"""Interaction inference: which items did one client interact with, from what the server sees of it in a round.

The attacker is the server (or whoever reads the server's inbox) in one
round. For each protection mode it gets exactly what that mode hands the
server for one client, produced by the real objects:

* ``plaintext`` -- the vector the client feeds the sum (``[w delta, w]``);
* ``central-dp`` -- user-level central DP: the update clipped to L2 norm
  ``clip`` (the noise is added to the *sum*, so each client's view is the
  clipped update);
* ``local-dp`` -- the clipped update plus Gaussian noise of std
  ``noise_multiplier * clip`` per coordinate from fedsecure's noise source
  (what a client running the Gaussian mechanism locally would send);
* ``secagg`` / ``secagg+`` / ``distributed-dp`` -- one real SecAgg / SecAgg+
  round (``distributed-dp``: SecAgg+ with the clients' discrete Gaussian
  noise inside the masks) over the round's clients: the masked input each
  client sends, read as the server would read an encoding;
* ``ckks`` -- the client's real CKKS contribution (masked ``c0``
  polynomials), read coefficient by coefficient as a vector.

From a view the attacker scores every item: for item-indexed tables (rows
of the shared parameters indexed by item) the score is the signed change of
the item's bias where the model has one (a positive's bias goes up, a
sampled negative's goes down, an untouched item's stays put), otherwise the
row's projection on the leading direction of all item rows, oriented so that
the smaller group of touched rows counts as positive (clients sample more
negatives than they have positives). Items the client interacted with are
the positives. Reported per mode: ROC AUC (mean over clients, with its 95%
bootstrap interval over clients), and precision and recall at 10 and at the
client's own number of items.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

MODES = ("plaintext", "central-dp", "local-dp", "secagg", "secagg+", "distributed-dp", "ckks")


# ---------------------------------------------------------------- scoring


def item_tables(layout: Sequence[tuple[str, tuple[int, ...], int]], n_items: int) -> list[tuple[str, int, int, int]]:
    """``(name, offset, width, first_row)`` of every shared table indexed by item (``n_items`` rows, or
    ``n_items + 1`` with a padding row 0)."""
    out = []
    for name, shape, offset in layout:
        if len(shape) == 2 and shape[0] in (n_items, n_items + 1) and name.startswith("item"):
            out.append((name, offset, shape[1], shape[0] - n_items))
    if not out:
        raise ValueError("the model has no item-indexed shared table: interaction inference needs one")
    return out


def _rows(view: np.ndarray, offset: int, width: int, first: int, n_items: int) -> np.ndarray:
    """The ``[n_items, width]`` block of ``view`` at ``offset`` (zeros where the view is shorter)."""
    block = np.zeros(n_items * width)
    lo, hi = offset + first * width, offset + (first + n_items) * width
    part = view[lo:min(hi, view.size)]
    block[: part.size] = part
    return block.reshape(n_items, width)


def item_scores(view: np.ndarray, tables: Sequence[tuple[str, int, int, int]], n_items: int) -> np.ndarray:
    """One score per item from one client's view (higher: more likely an item the client interacted with)."""
    view = np.asarray(view, dtype=np.float64)
    for name, offset, width, first in tables:
        if width == 1 and "bias" in name:
            return _rows(view, offset, width, first, n_items)[:, 0]
    rows = np.concatenate([_rows(view, o, w, f, n_items) for _, o, w, f in tables], axis=1)
    touched = np.linalg.norm(rows, axis=1) > 0
    if touched.sum() < 2:
        return np.linalg.norm(rows, axis=1)
    _, _, vt = np.linalg.svd(rows[touched], full_matrices=False)
    proj = rows @ vt[0]
    if (proj[touched] > 0).sum() > (proj[touched] < 0).sum():
        proj = -proj
    return proj


def _precision_recall(scores: np.ndarray, labels: np.ndarray, k: int) -> tuple[float, float]:
    # Ties broken at random (a constant score must not look informative through index order).
    order = np.lexsort((np.random.default_rng(0).random(scores.size), -scores))[:k]
    hits = int(labels[order].sum())
    return hits / k, hits / max(int(labels.sum()), 1)


def score_views(views: dict[int, np.ndarray], positives: dict[int, np.ndarray], tables, n_items: int) -> dict[str, Any]:
    """Per-client AUC, precision and recall, and their means with 95% bootstrap intervals over clients."""
    from fedsecure.attacks.inference.membership import roc_auc  # one AUC for every attack (imports torch: lazily)
    from fedsecure.stats import bootstrap_users

    per: dict[str, list[float]] = {"auc": [], "precision@10": [], "recall@10": [], "precision@own": []}
    for cid, view in views.items():
        labels = np.zeros(n_items, dtype=bool)
        labels[positives[cid]] = True
        s = item_scores(view, tables, n_items)
        per["auc"].append(roc_auc(s, labels))
        p10, r10 = _precision_recall(s, labels, 10)
        per["precision@10"].append(p10)
        per["recall@10"].append(r10)
        per["precision@own"].append(_precision_recall(s, labels, max(int(labels.sum()), 1))[0])
    ids = np.arange(len(views))
    out: dict[str, Any] = {"clients": len(views)}
    for key, values in per.items():
        v = np.asarray(values)
        out[key] = float(v.mean())
        out[key + "_ci95"] = list(bootstrap_users(ids, v)) if v.size > 1 else [float(v[0])] * 2
    out["per_client_auc"] = [float(x) for x in per["auc"]]
    return out


# ---------------------------------------------------------------- what the server sees, per mode


def _secagg_views(vectors: dict[int, np.ndarray], *, graph: str, clip_range: float, noise: Any = None) -> dict[int, np.ndarray]:
    """One real SecAgg(+) round over ``vectors``; each client's masked input as the server reads it."""
    from fedsecure.secagg import messages as m
    from fedsecure.secagg.encoding import unpack
    from fedsecure.secagg.simulator import run_round
    from fedsecure.secagg.sum import SecAggSum

    proto = SecAggSum(clip_range=clip_range, graph=graph, client_noise=noise)
    n = len(vectors)
    params, enc = proto.params_for(n), proto.encoding_for(n)
    d = next(iter(vectors.values())).size
    seen: dict[int, bytes] = {}

    def record(stage: str, sender: int, data: bytes) -> list[bytes]:
        if stage == "masked_input":
            seen[sender] = bytes(data)
        return [data]

    run_round(vectors, params, enc, noise=noise, tamper=record)
    views = {}
    for cid, data in seen.items():
        header = m.parse_header(data)
        if header.type != m.MaskedInput.TYPE:
            continue
        body = data[m.HEADER.size : len(data) - m.TAG_BYTES]  # the server reads the body; the tag only authenticates
        views[cid] = enc.decode(unpack(m.MaskedInput.parse(body, d, enc.bits).packed, enc.bits, d))
    return views


def _ckks_views(vectors: dict[int, np.ndarray], round_id: bytes) -> dict[int, np.ndarray]:
    """Each client's real CKKS contribution (masked c0), its coefficients read as signed values."""
    from fedsecure.ckks import ClientEncryptor, ClientIdentity, KeyHolder
    from fedsecure.ckks.wire import ContributionBlob

    ids = {cid: ClientIdentity(cid) for cid in vectors}
    holder = KeyHolder(clients=[i.registration for i in ids.values()])
    q = None
    views = {}
    for cid, x in vectors.items():
        blob = ContributionBlob.from_bytes(ClientEncryptor(holder.public_context(), ids[cid]).encrypt(x, round_id=round_id),
                                           sender=cid)
        res = np.concatenate([np.frombuffer(c, dtype="<u8") for c in blob.chunks])
        q = q or int(holder._role.moduli[0])
        signed = np.where(res >= q // 2, res.astype(np.float64) - q, res.astype(np.float64))
        views[cid] = signed[: x.size]
    return views


def server_views(exp: Any, mode: str, client_ids: Sequence[int], *, noise_multiplier: float = 1.0,
                 round_index: int = 0) -> dict[int, np.ndarray]:
    """What the server receives from each of ``client_ids`` in round ``round_index`` under ``mode``."""
    from fedsecure.dp.noise import NoiseSource
    from fedsecure.dp.user_level import clip_l2
    from fedsecure.fl.aggregation import FedAvg
    from fedsecure.fl.engine import FederatedTrainer

    if mode not in MODES:
        raise ValueError(f"unknown protection mode {mode!r}; choose one of: {', '.join(MODES)}")
    trainer = FederatedTrainer(exp.model, exp.split.train, exp.clients, config=exp.fl_config, trainer=exp.trainer)
    start = trainer.shared.get()
    updates = {c: trainer.client_update(int(c), start, round_index) for c in client_ids}
    trainer.shared.set(start)
    clip = exp.config.clip
    if mode in ("central-dp", "local-dp"):
        views = {c: clip_l2(u.delta, clip)[0] for c, u in updates.items()}
        if mode == "local-dp":
            noise = NoiseSource()
            views = {c: v + noise.gaussian_np(v.shape, noise_multiplier * clip) for c, v in views.items()}
        return views
    vectors = {c: FedAvg().client_vector(u)[0] for c, u in updates.items()}
    if mode == "plaintext":
        return vectors
    bound = exp.config.clip_range  # what FedAvg clips each coordinate to before a bounded secure sum
    vectors = {c: np.clip(v, -bound, bound) for c, v in vectors.items()}
    if mode == "ckks":
        return _ckks_views({c: v.astype(np.float64) for c, v in vectors.items()}, os.urandom(16))
    if mode == "distributed-dp":
        from fedsecure.dp.distributed import DiscreteGaussianNoise

        clipped = {c: clip_l2(u.delta, clip)[0].astype(np.float32) for c, u in updates.items()}
        hook = DiscreteGaussianNoise(noise_multiplier=noise_multiplier, clip=clip, min_clients=max(2, len(vectors) // 2),
                                     dim=next(iter(clipped.values())).size, noise=NoiseSource())
        return _secagg_views(clipped, graph="sparse", clip_range=clip, noise=hook)
    return _secagg_views(vectors, graph="complete" if mode == "secagg" else "sparse", clip_range=exp.config.clip_range)


def run_interaction_audit(
    config: Any,
    *,
    modes: Sequence[str] = MODES,
    clients: int = 20,
    noise_multiplier: float = 1.0,
    data: Any = None,
    on_progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Interaction inference against every mode in ``modes``, over the same ``clients`` clients of one round.

    ``config`` is a :class:`~fedsecure.experiment.RunConfig` (its model is
    trained for ``config.rounds - 1`` plain rounds first when ``rounds > 1``,
    so the attacked round can be a late one); the attacked clients are the
    first ``clients`` by id with at least two training items.
    """
    from fedsecure.experiment import Experiment

    exp = Experiment(replace(config, secure="none", dp="none"), data)
    if config.rounds > 1:
        warm = Experiment(replace(config, secure="none", dp="none", rounds=config.rounds - 1, eval_every=10**6), exp.data)
        warm.run()
        exp.model.load_state_dict(warm.model.state_dict())
    from fedsecure.fl.engine import SharedParameters

    tables = item_tables(SharedParameters(exp.model).layout(), exp.split.train.n_items)
    chosen = [c.client_id for c in exp.clients if np.unique(exp.split.train.items[c.rows]).size >= 2][:clients]
    if len(chosen) < 3:
        raise ValueError(f"need at least 3 clients with two or more training items, found {len(chosen)}")
    positives = {c.client_id: np.unique(exp.split.train.items[c.rows]) for c in exp.clients if c.client_id in chosen}
    out: dict[str, Any] = {"clients": chosen, "noise_multiplier": noise_multiplier, "modes": {}}
    for mode in modes:
        if on_progress:
            on_progress(mode)
        views = server_views(exp, mode, chosen, noise_multiplier=noise_multiplier, round_index=max(config.rounds - 1, 0))
        out["modes"][mode] = score_views(views, positives, tables, exp.split.train.n_items)
    return out
