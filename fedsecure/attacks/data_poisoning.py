"""Data poisoning: the attacker changes training data, and honest training does the rest.

A :class:`DataPoisoning` attack takes a train / test :class:`~fedsecure.recsys.split.Split`
and returns a :class:`PoisonedData`: the poisoned split, the users the
attacker controls (who train on their poisoned data as ordinary clients and
are left out of every honest-user metric) and the items it promotes (empty
for an untargeted attack). Unlike :mod:`fedsecure.attacks.poisoning`, no
update is crafted: the malicious clients run the honest training code on
poisoned data, so no rule that inspects updates sees anything but ordinary
training.

* ``fake-users`` (:class:`FakeUsers`; shilling, Lam and Riedl WWW 2004,
  Burke et al. 2005; in federated form the fake clients of PipAttack and
  FedRecAttack): ``m = round(fraction * n_users)`` new users are appended
  with crafted training-only profiles that all contain the target items.
  Profile kinds: ``random`` (filler items uniform over the catalogue),
  ``average`` (filler drawn in proportion to item popularity) and
  ``bandwagon`` (the most popular items as filler: the targets ride on the
  items everyone has). On explicit-rating data the targets get the top
  rating; the filler gets a uniform random rating (random), the item's mean
  rating (average) or the top rating (bandwagon).
* ``rating-flip`` (:class:`RatingFlip`; label flipping for recommenders):
  ``m`` existing users become malicious; on explicit ratings each of their
  training ratings ``r`` becomes ``r_max + r_min - r`` (likes become
  dislikes). Implicit data has no rating to flip (every row is 1), so its
  counterpart replaces each malicious user's training items with the same
  number of the *least* popular items: the user endorses what nobody uses,
  the implicit analogue of inverting their preferences.

Data is *implicit* when every training rating is equal (the readers write
1.0 where the source has no rating); otherwise explicit, with ``r_min`` and
``r_max`` the smallest and largest training ratings. Everything random is
drawn from ``numpy.random.default_rng(seed)``: attacks are experiments to
reproduce.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fedsecure.recsys.data import Interactions
from fedsecure.recsys.split import Split

from .poisoning import AttackConfigError
from .promotion import choose_targets, item_popularity

__all__ = ["DATA_ATTACKS", "DataPoisoning", "FakeUsers", "PoisonedData", "RatingFlip", "make_data_attack"]

PROFILES = ("random", "average", "bandwagon")


@dataclass(frozen=True, eq=False)
class PoisonedData:
    """A poisoned split, the users the attacker controls, and the items it promotes."""

    split: Split
    malicious_users: list[int]
    target_items: list[int] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def honest_split(self) -> Split:
        """The poisoned training set with a test set of the honest users only (what utility is reported on)."""
        test = self.split.test
        keep = ~np.isin(test.users, np.asarray(self.malicious_users, dtype=np.int64))
        return Split(self.split.train, test.select(keep),
                     f"{self.split.protocol}; evaluated on the honest users' test rows only")


class DataPoisoning(ABC):
    """Poisons a split's training data. Subclasses set ``name`` (the CLI name)."""

    name: str = "abstract"

    @abstractmethod
    def poison(self, split: Split, fraction: float, seed: int = 0) -> PoisonedData:
        """The poisoned split, with ``fraction`` of the users (new or existing) malicious."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


def _check_fraction(name: str, fraction: float) -> float:
    f = float(fraction)
    if not (0.0 < f < 1.0):
        raise AttackConfigError(f"{name}: the malicious fraction must be in (0, 1), got {fraction!r}")
    return f


def _is_implicit(train: Interactions) -> bool:
    return len(train) == 0 or bool(np.all(train.ratings == train.ratings[0]))


def _with_users(data: Interactions, n_users: int, raw_user_ids: np.ndarray, rows: dict[str, np.ndarray] | None = None,
                source: str | None = None) -> Interactions:
    """``data`` over ``n_users`` users, with ``rows`` (users, items, ratings, timestamps) appended."""
    cols = {c: getattr(data, c) for c in ("users", "items", "ratings", "timestamps")}
    if rows is not None:
        cols = {c: np.concatenate([cols[c], np.asarray(rows[c]).astype(cols[c].dtype)]) for c in cols}
    return Interactions(**cols, n_users=n_users, n_items=data.n_items, raw_user_ids=raw_user_ids,
                        raw_item_ids=data.raw_item_ids, source=source or data.source)


def _fake_raw_ids(raw: np.ndarray, m: int) -> np.ndarray:
    """Raw ids for ``m`` appended users that cannot collide with the real ones."""
    if raw.size and np.issubdtype(raw.dtype, np.integer):
        return np.concatenate([raw, raw.max() + 1 + np.arange(m, dtype=raw.dtype)])
    if raw.size == 0:
        return np.arange(m, dtype=np.int64)
    return np.concatenate([raw.astype(object), np.array([f"fake-{j}" for j in range(m)], dtype=object)])


class FakeUsers(DataPoisoning):
    """Append fake users whose training profiles hold the target items (shilling attack profiles).

    ``profile``: ``"random"``, ``"average"`` or ``"bandwagon"`` (default).
    ``target_items``: the promoted items (default: ``n_targets`` from
    :func:`~fedsecure.attacks.promotion.choose_targets`, seeded). ``profile_size``:
    items per fake profile, targets included (default: the median training
    profile length of the real users, at least ``n_targets + 1``).
    """

    name = "fake-users"

    def __init__(self, profile: str = "bandwagon", target_items: list[int] | None = None, n_targets: int = 1,
                 profile_size: int | None = None) -> None:
        if profile not in PROFILES:
            raise AttackConfigError(f"{self.name}: unknown profile {profile!r}; choose one of: {', '.join(PROFILES)}")
        if profile_size is not None and profile_size < 1:
            raise AttackConfigError(f"{self.name}: profile_size must be >= 1, got {profile_size}")
        if n_targets < 1:
            raise AttackConfigError(f"{self.name}: n_targets must be >= 1, got {n_targets}")
        self.profile, self.n_targets, self.profile_size = profile, int(n_targets), profile_size
        self.target_items = None if target_items is None else sorted({int(t) for t in target_items})

    def poison(self, split: Split, fraction: float, seed: int = 0) -> PoisonedData:
        fraction = _check_fraction(self.name, fraction)
        train, test = split.train, split.test
        n_users, n_items = train.n_users, train.n_items
        rng = np.random.default_rng([seed, 0xFA4E])
        counts = item_popularity(train)
        targets = np.asarray(self.target_items if self.target_items is not None
                             else choose_targets(counts, self.n_targets, seed), dtype=np.int64)
        if targets.size == 0 or targets.min() < 0 or targets.max() >= n_items:
            raise AttackConfigError(f"{self.name}: target items must lie in [0, {n_items}), got {targets.tolist()}")
        m = max(1, int(round(fraction * n_users)))
        lengths = np.bincount(train.users, minlength=n_users)
        if self.profile_size is not None:
            size = self.profile_size
        else:
            size = int(np.median(lengths[lengths > 0])) if len(train) else 10
        size = min(max(int(size), targets.size + 1), n_items)
        n_filler = size - targets.size
        others = np.setdiff1d(np.arange(n_items), targets)

        if self.profile == "bandwagon":
            # the most popular non-target items (ties by id): the same filler for every fake user
            popular = others[np.argsort(-counts[others], kind="stable")][:n_filler]
            filler = np.broadcast_to(popular, (m, popular.size))
        else:
            if self.profile == "random":
                logw = np.zeros(others.size)
            else:  # average: in proportion to popularity; never-used items only when nothing else is left
                logw = np.log(np.maximum(counts[others], 1e-12))
            # Gumbel top-k: a weighted sample without replacement per fake user, all users at once
            keys = logw[None, :] + rng.gumbel(size=(m, others.size))
            filler = others[np.argpartition(-keys, n_filler - 1, axis=1)[:, :n_filler]]
        profiles = np.concatenate([np.broadcast_to(targets, (m, targets.size)), filler], axis=1)  # [m, size]

        fake = n_users + np.arange(m, dtype=np.int64)
        users = np.repeat(fake, profiles.shape[1])
        items = profiles.reshape(-1)
        is_target = np.zeros(profiles.shape, dtype=bool)
        is_target[:, : targets.size] = True
        if _is_implicit(train):
            ratings = np.full(items.size, train.ratings[0] if len(train) else 1.0, dtype=np.float32)
        else:
            r_min, r_max = float(train.ratings.min()), float(train.ratings.max())
            if self.profile == "random":
                # a rating from the data's own scale (its distinct values), uniformly
                scale = np.unique(train.ratings)
                filler_r = rng.choice(scale, size=profiles.shape)
            elif self.profile == "average":
                sums = np.bincount(train.items, weights=train.ratings.astype(np.float64), minlength=n_items)
                mean_r = np.where(counts > 0, sums / np.maximum(counts, 1), float(train.ratings.mean()))
                filler_r = mean_r[profiles]
            else:
                filler_r = np.full(profiles.shape, r_max)
            ratings = np.where(is_target, r_max, filler_r).reshape(-1).astype(np.float32)
            ratings = np.clip(ratings, r_min, r_max)
        # timestamps after the real data, in profile order (targets last: the most recent for sequence models)
        t0 = int(max(train.timestamps.max(initial=0), test.timestamps.max(initial=0))) + 1
        order = np.argsort(is_target, axis=1, kind="stable")  # filler first, targets last
        items = np.take_along_axis(profiles, order, axis=1).reshape(-1)
        ratings = np.take_along_axis(ratings.reshape(profiles.shape), order, axis=1).reshape(-1)
        timestamps = t0 + np.tile(np.arange(profiles.shape[1], dtype=np.int64), m)

        raw = _fake_raw_ids(train.raw_user_ids, m)
        n_new = n_users + m
        source = f"{train.source} + {m} fake users ({self.profile} profiles of {size} items)"
        new_train = _with_users(train, n_new, raw, {"users": users, "items": items, "ratings": ratings,
                                                    "timestamps": timestamps}, source)
        new_test = _with_users(test, n_new, raw, None, source)
        protocol = (f"{split.protocol}; poisoned: {m} fake users appended (ids {n_users}..{n_new - 1}), "
                    f"{self.profile} profiles of {size} training items each containing target item(s) "
                    f"{targets.tolist()}, no test rows")
        return PoisonedData(Split(new_train, new_test, protocol), fake.tolist(), targets.tolist(),
                            {"attack": self.name, "profile": self.profile, "profile_size": size, "fake_users": m})

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "profile": self.profile, "target_items": self.target_items,
                "n_targets": self.n_targets, "profile_size": self.profile_size}


class RatingFlip(DataPoisoning):
    """Existing users turned malicious: explicit ratings flipped, implicit items swapped for the least popular."""

    name = "rating-flip"

    def poison(self, split: Split, fraction: float, seed: int = 0) -> PoisonedData:
        fraction = _check_fraction(self.name, fraction)
        train = split.train
        active = np.flatnonzero(np.bincount(train.users, minlength=train.n_users) > 0)
        if active.size == 0:
            raise AttackConfigError(f"{self.name}: the training set has no users")
        m = min(active.size, max(1, int(round(fraction * train.n_users))))
        rng = np.random.default_rng([seed, 0xF11B])
        malicious = np.sort(rng.choice(active, size=m, replace=False))
        rows = np.isin(train.users, malicious)
        ratings, items = train.ratings.copy(), train.items.copy()
        if _is_implicit(train):
            counts = item_popularity(train)
            least = np.argsort(counts, kind="stable")  # least popular first (ties by id)
            indptr, order = train.user_index()
            position = np.arange(order.size) - indptr[train.users[order]]  # row's place within its user
            mine = rows[order]
            items[order[mine]] = least[position[mine]]  # a user's n rows get the n least popular items
            how = "items replaced by the same number of least popular items (implicit data)"
        else:
            r_min, r_max = float(train.ratings.min()), float(train.ratings.max())
            ratings[rows] = r_max + r_min - ratings[rows]
            how = f"ratings flipped r -> {r_max:g} + {r_min:g} - r"
        new_train = Interactions(users=train.users, items=items, ratings=ratings, timestamps=train.timestamps,
                                 n_users=train.n_users, n_items=train.n_items, raw_user_ids=train.raw_user_ids,
                                 raw_item_ids=train.raw_item_ids, source=f"{train.source} + rating-flip")
        protocol = f"{split.protocol}; poisoned: {m} malicious users' training {how}"
        return PoisonedData(Split(new_train, split.test, protocol), malicious.tolist(), [],
                            {"attack": self.name, "malicious_users": m, "rows_changed": int(rows.sum())})


#: command-line name -> data-poisoning attack class
DATA_ATTACKS: dict[str, type[DataPoisoning]] = {"fake-users": FakeUsers, "rating-flip": RatingFlip}


def make_data_attack(name: str, **options: Any) -> DataPoisoning:
    """The data-poisoning attack registered as ``name``."""
    if name not in DATA_ATTACKS:
        raise AttackConfigError(f"unknown data-poisoning attack {name!r}; choose one of {', '.join(sorted(DATA_ATTACKS))}")
    return DATA_ATTACKS[name](**options)
