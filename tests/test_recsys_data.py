"""The Interactions table: validation, subsets, and the per-user CSR index."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.recsys.data import Interactions


def make(users, items, timestamps=None, ratings=None, n_users=None, n_items=None) -> Interactions:
    users = np.asarray(users)
    items = np.asarray(items)
    n_users = int(users.max()) + 1 if n_users is None else n_users
    n_items = int(items.max()) + 1 if n_items is None else n_items
    return Interactions(
        users=users,
        items=items,
        ratings=np.ones(len(users), np.float32) if ratings is None else np.asarray(ratings),
        timestamps=np.arange(len(users)) if timestamps is None else np.asarray(timestamps, dtype=np.int64),
        n_users=n_users,
        n_items=n_items,
        raw_user_ids=np.arange(n_users) + 100,
        raw_item_ids=np.arange(n_items) + 1000,
        source="test",
    )


def test_dtypes_are_normalised_and_len_counts_rows():
    data = make(np.array([0, 1], np.int32), [1, 0], ratings=np.array([4.5, 3.0]))
    assert data.users.dtype == np.int64 and data.items.dtype == np.int64
    assert data.ratings.dtype == np.float32 and data.timestamps.dtype == np.int64
    assert len(data) == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(users=[0, 5], items=[0, 1], n_users=3), r"user ids must lie in \[0, 3\)"),
        (dict(users=[0, 1], items=[0, -1], n_items=2), r"item ids must lie in \[0, 2\)"),
        (dict(users=[0, 1], items=[0, 1], timestamps=[1, 2, 3]), "differ in length"),
        (dict(users=[0, 1], items=[0, 1], ratings=[1.0, np.nan]), "finite"),
        (dict(users=[0.5, 1.0], items=[0, 1], n_users=2), "integers"),
    ],
)
def test_invalid_tables_are_rejected_with_a_named_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_select_keeps_the_id_space_and_accepts_masks_and_indices():
    data = make([0, 1, 2, 2], [3, 2, 1, 0], n_users=5, n_items=6)
    by_mask = data.select(np.array([True, False, True, False]))
    by_index = data.select(np.array([0, 2]))
    for sub in (by_mask, by_index):
        assert sub.n_users == 5 and sub.n_items == 6
        np.testing.assert_array_equal(sub.users, [0, 2])
        np.testing.assert_array_equal(sub.items, [3, 1])
        np.testing.assert_array_equal(sub.raw_user_ids, data.raw_user_ids)
    assert len(data.select(np.array([], dtype=np.int64))) == 0
    with pytest.raises(ValueError, match="mask must have shape"):
        data.select(np.array([True, False]))
    with pytest.raises(IndexError):
        data.select(np.array([7]))


def test_user_index_worked_example_orders_by_timestamp_then_row():
    #            row: 0  1  2  3  4
    data = make([1, 0, 1, 1, 0], [0, 1, 2, 3, 4], timestamps=[30, 5, 10, 10, 1], n_users=3)
    indptr, order = data.user_index()
    np.testing.assert_array_equal(indptr, [0, 2, 5, 5])
    np.testing.assert_array_equal(order[0:2], [4, 1])  # user 0: t=1, t=5
    np.testing.assert_array_equal(order[2:5], [2, 3, 0])  # user 1: t=10 (row 2), t=10 (row 3), t=30


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 6), st.integers(0, 4), st.integers(0, 5)), min_size=0, max_size=60)
)
def test_user_index_covers_every_row_once_grouped_and_time_sorted(rows):
    users = [r[0] for r in rows]
    data = make(users or [0], [r[1] for r in rows] or [0], [r[2] for r in rows] or [0], n_users=7, n_items=5)
    if not rows:
        data = data.select(np.array([], dtype=np.int64))
    indptr, order = data.user_index()
    assert len(indptr) == 8 and indptr[0] == 0 and indptr[-1] == len(data)
    np.testing.assert_array_equal(np.sort(order), np.arange(len(data)))
    for u in range(7):
        seg = order[indptr[u] : indptr[u + 1]]
        assert np.all(data.users[seg] == u)
        key = list(zip(data.timestamps[seg], seg))
        assert key == sorted(key)
