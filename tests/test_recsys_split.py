"""Per-user splits: no leakage, latest-by-timestamp to test, sizes, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.recsys.data import Interactions
from fedsecure.recsys.split import leave_last_out, random_holdout
from fedsecure.recsys.synthetic import generate


def table(users, items, timestamps, n_users=None, n_items=None) -> Interactions:
    users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
    n_users = n_users or int(users.max()) + 1
    n_items = n_items or int(items.max()) + 1
    return Interactions(users, items, np.arange(len(users), dtype=np.float32) % 5 + 1, np.asarray(timestamps),
                        n_users, n_items, np.arange(n_users), np.arange(n_items), "test")


def pairs(data: Interactions) -> set[tuple[int, int, int]]:
    return set(zip(data.users.tolist(), data.items.tolist(), data.timestamps.tolist()))


def test_leave_last_out_worked_example():
    # user 0: items 5 (t=3), 6 (t=1), 7 (t=2) -> latest is item 5
    # user 1: items 1 (t=9), 2 (t=9) -> tie in time: the later row (item 2) is latest
    # user 2: a single interaction -> stays in train
    data = table([0, 1, 0, 2, 1, 0], [5, 1, 6, 3, 2, 7], [3, 9, 1, 4, 9, 2])
    split = leave_last_out(data)
    assert sorted(zip(split.test.users, split.test.items)) == [(0, 5), (1, 2)]
    assert sorted(zip(split.train.users, split.train.items)) == [(0, 6), (0, 7), (1, 1), (2, 3)]
    assert "leave-last-out" in split.protocol and "2 test rows over 2 users" in split.protocol
    two = leave_last_out(data, n_test=2)
    assert sorted(zip(two.test.users, two.test.items)) == [(0, 5), (0, 7)]  # user 1 has only 2: kept in train


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 9), st.integers(0, 20)), min_size=1, max_size=80),
       st.integers(1, 3))
def test_leave_last_out_partitions_rows_and_tests_are_latest(rows, n_test):
    data = table(*zip(*rows), n_users=6, n_items=10)
    split = leave_last_out(data, n_test=n_test)
    assert len(split.train) + len(split.test) == len(data)
    counts = np.bincount(data.users, minlength=6)
    test_counts = np.bincount(split.test.users, minlength=6)
    np.testing.assert_array_equal(test_counts, np.where(counts > n_test, n_test, 0))
    for u in np.unique(split.test.users):
        assert split.test.timestamps[split.test.users == u].min() >= split.train.timestamps[split.train.users == u].max()


def test_no_test_interaction_leaks_into_train_on_synthetic_data():
    data = generate(n_users=300, n_items=500, mean_interactions=20, seed=3)
    for split in (leave_last_out(data), leave_last_out(data, n_test=3), random_holdout(data, 0.25, seed=1)):
        # Each row goes to exactly one side: the (user, item, time) multisets add up.
        assert len(split.train) + len(split.test) == len(data)
        assert not pairs(split.train) & pairs(split.test)
        assert pairs(split.train) | pairs(split.test) == pairs(data)
        assert set(np.unique(split.test.users)) <= set(np.unique(split.train.users))
        assert split.train.n_items == split.test.n_items == data.n_items


def test_random_holdout_sizes_and_determinism():
    data = generate(n_users=200, n_items=400, mean_interactions=20, seed=5)
    split = random_holdout(data, test_fraction=0.2, seed=7)
    counts = np.bincount(data.users, minlength=data.n_users)
    expected = np.minimum(np.floor(0.2 * counts + 0.5), counts - 1)
    np.testing.assert_array_equal(np.bincount(split.test.users, minlength=data.n_users), expected)
    again = random_holdout(data, test_fraction=0.2, seed=7)
    assert pairs(again.test) == pairs(split.test)
    assert pairs(random_holdout(data, test_fraction=0.2, seed=8).test) != pairs(split.test)
    assert "random holdout" in split.protocol and "seed 7" in split.protocol


def test_random_holdout_keeps_a_training_row_per_user():
    data = table([0, 1, 1], [0, 1, 2], [1, 2, 3])
    split = random_holdout(data, test_fraction=0.9)
    np.testing.assert_array_equal(np.bincount(split.train.users, minlength=2), [1, 1])


@pytest.mark.parametrize("call", [lambda d: leave_last_out(d, 0), lambda d: random_holdout(d, 1.0),
                                  lambda d: random_holdout(d, 0.0)])
def test_bad_split_arguments_are_rejected(call):
    with pytest.raises(ValueError):
        call(table([0], [0], [0]))
