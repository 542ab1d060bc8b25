"""Client partitions: every row exactly once, one user per device client, seeded Dirichlet silos."""

from __future__ import annotations

import numpy as np
import pytest

from fedsecure.recsys.partition import cross_device, cross_silo
from fedsecure.recsys.split import leave_last_out
from fedsecure.recsys.synthetic import generate


@pytest.fixture(scope="module")
def train():
    return leave_last_out(generate(n_users=400, n_items=600, mean_interactions=15, seed=2)).train


def assert_exact_cover(train, clients):
    rows = np.concatenate([c.rows for c in clients])
    np.testing.assert_array_equal(np.sort(rows), np.arange(len(train)))  # every row exactly once
    users = np.concatenate([c.users for c in clients])
    assert len(users) == len(np.unique(users))  # every user in exactly one client
    np.testing.assert_array_equal(np.sort(users), np.unique(train.users))
    for c in clients:
        assert c.rows.dtype == np.int64 and len(c) > 0
        np.testing.assert_array_equal(np.unique(train.users[c.rows]), np.sort(c.users))


def test_cross_device_is_one_user_per_client_with_its_rows_in_time_order(train):
    clients = cross_device(train)
    assert_exact_cover(train, clients)
    for c in clients:
        assert c.users.tolist() == [c.client_id]
        assert np.all(train.users[c.rows] == c.client_id)
        assert np.all(np.diff(train.timestamps[c.rows]) >= 0)


def test_cross_device_skips_users_without_training_rows(train):
    subset = train.select(train.users != 0)
    assert 0 not in [c.client_id for c in cross_device(subset)]


def test_range_silos_are_contiguous_and_near_equal(train):
    clients = cross_silo(train, n_silos=7)
    assert_exact_cover(train, clients)
    sizes = [len(c.users) for c in clients]
    assert len(clients) == 7 and max(sizes) - min(sizes) <= 1
    assert [c.client_id for c in clients] == list(range(7))
    for a, b in zip(clients, clients[1:]):
        assert a.users.max() < b.users.min()
        assert np.all(np.diff(a.users) > 0)


def test_dirichlet_silos_are_deterministic_skewed_and_drop_empty_silos(train):
    a = cross_silo(train, n_silos=10, scheme="dirichlet", alpha=0.1, seed=4)
    b = cross_silo(train, n_silos=10, scheme="dirichlet", alpha=0.1, seed=4)
    assert_exact_cover(train, a)
    assert [c.users.tolist() for c in a] == [c.users.tolist() for c in b]
    c = cross_silo(train, n_silos=10, scheme="dirichlet", alpha=0.1, seed=5)
    assert [x.users.tolist() for x in a] != [x.users.tolist() for x in c]
    assert [x.client_id for x in a] == list(range(len(a)))
    # Small alpha concentrates users: the largest silo holds far more than an equal share.
    assert max(len(x.users) for x in a) > 2 * len(np.unique(train.users)) / 10
    assert len(a) < 10  # with alpha 0.1 some of 10 shares are ~0 and those silos end up empty


def test_more_silos_than_users_drops_the_empty_ones(train):
    small = train.select(train.users < 3)
    clients = cross_silo(small, n_silos=8)
    assert_exact_cover(small, clients)
    assert len(clients) == 3


@pytest.mark.parametrize("kwargs, message", [(dict(n_silos=0), "n_silos"), (dict(n_silos=3, scheme="zipf"), "range, dirichlet"),
                                             (dict(n_silos=3, scheme="dirichlet", alpha=0.0), "alpha")])
def test_bad_partition_arguments_are_rejected(train, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cross_silo(train, **kwargs)
