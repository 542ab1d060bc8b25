"""Assign the training rows to federated clients.

* :func:`cross_device` -- one client per user: the user's data, and hence the
  user's embedding, never leave that client.
* :func:`cross_silo` -- each client is an organisation holding many users, by
  contiguous user-id ranges or by a Dirichlet-skewed assignment.

In both, every user with training rows belongs to exactly one client and every
training row appears in exactly one client. A client's ``rows`` are grouped by
user and, within a user, ordered by ``(timestamp, row)``, so sequential models
can read them as they come.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fedsecure.recsys.data import Interactions

__all__ = ["ClientData", "cross_device", "cross_silo", "SCHEMES"]

SCHEMES = ("range", "dirichlet")


@dataclass(frozen=True, eq=False)
class ClientData:
    """One client's share: the users it holds and its rows (int64 indices into the train table)."""

    client_id: int
    users: np.ndarray
    rows: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)


def cross_device(train: Interactions) -> list[ClientData]:
    """One client per user who has training rows; ``client_id`` is the user id."""
    indptr, order = train.user_index()
    per_user = np.split(order, indptr[1:-1])
    active = np.flatnonzero(np.diff(indptr) > 0)
    return [ClientData(client_id=int(u), users=np.array([u], dtype=np.int64), rows=per_user[u]) for u in active]


def cross_silo(
    train: Interactions, n_silos: int, scheme: str = "range", alpha: float = 0.5, seed: int = 0
) -> list[ClientData]:
    """Partition the users with training rows into ``n_silos`` silos.

    ``"range"``: contiguous user-id ranges of near-equal user count (sizes
    differ by at most one). ``"dirichlet"``: silo shares ``s ~ Dirichlet(alpha
    * 1)`` and each user independently to silo ``k`` with probability ``s_k``;
    small ``alpha`` gives strongly unequal silos. Seeded. Silos left empty are
    dropped and the rest numbered ``0 .. len - 1`` in silo order.
    """
    if n_silos < 1:
        raise ValueError(f"n_silos must be >= 1, got {n_silos}")
    if scheme not in SCHEMES:
        raise ValueError(f"unknown cross-silo scheme {scheme!r}; valid choices: {', '.join(SCHEMES)}")
    indptr, order = train.user_index()
    active = np.flatnonzero(np.diff(indptr) > 0)
    if scheme == "range":
        # Silo k holds the active users at positions bounds[k] .. bounds[k + 1] - 1.
        bounds = np.linspace(0, len(active), n_silos + 1).round().astype(np.int64)
        silo_of = np.searchsorted(bounds, np.arange(len(active)), side="right") - 1
    else:
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        rng = np.random.default_rng(seed)
        shares = rng.dirichlet(np.full(n_silos, float(alpha)))
        silo_of = rng.choice(n_silos, size=len(active), p=shares)

    counts = np.diff(indptr)[active]
    by_silo = np.argsort(silo_of, kind="stable")  # users grouped by silo, id order within
    silo_sorted = silo_of[by_silo]
    clients: list[ClientData] = []
    for k in np.unique(silo_sorted):
        members = by_silo[silo_sorted == k]
        users, starts, lengths = active[members], indptr[active[members]], counts[members]
        # Gather the users' CSR segments without a loop over rows: offsets within each segment.
        seg = np.repeat(starts - np.r_[0, np.cumsum(lengths)[:-1]], lengths) + np.arange(lengths.sum())
        clients.append(ClientData(client_id=len(clients), users=users, rows=order[seg]))
    return clients
