"""MovieLens readers: each on-disk layout, malformed files, missing paths, and the real ml-latest-small."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedsecure.recsys.movielens import DataFormatError, load_movielens

REAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "ml-latest-small"

# The same five ratings in each layout: (raw user, raw item, rating, timestamp).
ROWS = [(7, 50, 4.0, 964982703), (3, 10, 5.0, 964981247), (7, 10, 2.0, 964982224), (12, 99, 1.0, 1), (3, 50, 3.0, 5)]


def write_csv(path: Path, rows=ROWS, header="userId,movieId,rating,timestamp") -> Path:
    lines = ([header] if header is not None else []) + [f"{u},{i},{r:.1f},{t}" for u, i, r, t in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_udata(path: Path, rows=ROWS) -> Path:
    path.write_text("".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in rows))
    return path


def write_dat(path: Path, rows=ROWS) -> Path:
    path.write_text("".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in rows))
    return path


def check_rows(data):
    assert len(data) == len(ROWS)
    np.testing.assert_array_equal(data.raw_user_ids, [3, 7, 12])  # sorted raw ids -> dense 0, 1, 2
    np.testing.assert_array_equal(data.raw_item_ids, [10, 50, 99])
    assert data.n_users == 3 and data.n_items == 3
    np.testing.assert_array_equal(data.raw_user_ids[data.users], [r[0] for r in ROWS])
    np.testing.assert_array_equal(data.raw_item_ids[data.items], [r[1] for r in ROWS])
    np.testing.assert_array_equal(data.ratings, np.array([r[2] for r in ROWS], np.float32))
    np.testing.assert_array_equal(data.timestamps, [r[3] for r in ROWS])
    assert data.users.dtype == np.int64 and data.ratings.dtype == np.float32


@pytest.mark.parametrize(
    "folder, filename, writer",
    [("ml-latest-small", "ratings.csv", write_csv), ("ml-100k", "u.data", write_udata), ("ml-1m", "ratings.dat", write_dat)],
)
def test_each_layout_reads_from_folder_and_from_file(tmp_path, folder, filename, writer):
    (tmp_path / folder).mkdir()
    file = writer(tmp_path / folder / filename)
    for path in (tmp_path / folder, file, str(file)):
        data = load_movielens(path)
        check_rows(data)
        assert data.source == str(file)


def test_half_star_ratings_and_crlf_line_endings(tmp_path):
    file = tmp_path / "ratings.csv"
    file.write_bytes(b"userId,movieId,rating,timestamp\r\n1,2,0.5,10\r\n1,3,4.5,11\r\n")
    data = load_movielens(file)
    np.testing.assert_array_equal(data.ratings, [0.5, 4.5])


def test_a_file_with_an_unknown_suffix_is_recognised_by_its_first_line(tmp_path):
    check_rows(load_movielens(write_dat(tmp_path / "ratings.txt")))
    check_rows(load_movielens(write_udata(tmp_path / "u.base.txt")))


def test_missing_folder_file_names_every_path_tried(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        load_movielens(tmp_path)
    for name in ("ratings.csv", "u.data", "ratings.dat"):
        assert str(tmp_path / name) in str(err.value)
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        load_movielens(tmp_path / "nowhere.csv")


def malformed(tmp_path: Path, name: str, content: str, line: int, problem: str):
    file = tmp_path / name
    file.write_text(content)
    with pytest.raises(DataFormatError, match=problem) as err:
        load_movielens(file)
    assert err.value.path == str(file) and err.value.line == line
    assert str(file) in str(err.value) and f"line {line}" in str(err.value)


HEADER = "userId,movieId,rating,timestamp\n"


@pytest.mark.parametrize(
    "name, content, line, problem",
    [
        ("ratings.csv", HEADER + "1,2,3.0,4\n1,2,3.0\n", 3, "expected 4 fields.*got 3"),
        ("ratings.csv", HEADER + "1,2,3.0,4\n5,6,7,8,9\n", 3, "expected 4 fields.*got 5"),
        ("ratings.csv", HEADER + "1,2,3.0,4\n1,x,3.0,4\n", 3, "item id 'x' is not an integer"),
        ("ratings.csv", HEADER + "1,2,three,4\n", 2, "rating 'three' is not a number"),
        ("ratings.csv", HEADER + "1,2,3.0,4\n1,3,5.5,4\n", 3, "rating 5.5 out of range"),
        ("ratings.csv", HEADER + "1,2,3.25,4\n", 2, "rating 3.25 out of range"),
        ("ratings.csv", HEADER + "1,2,3.0,4\n1,3,nan,4\n", 3, "rating 'nan' is not a finite number"),
        ("ratings.csv", HEADER + "1,2,3.0,-4\n", 2, "timestamp -4 is negative"),
        ("ratings.csv", "", 1, "file is empty"),
        ("ratings.csv", HEADER, 2, "no ratings"),
        ("ratings.csv", "1,2,3.0,4\n", 1, "missing or wrong header"),
        ("ratings.csv", HEADER + "1,2,3.0,4\n\n1,3,3.0,4\n", 3, "empty line"),
        ("u.data", "1\t2\t3\t4\n1\t2\t3.5\t4\n", 2, "rating 3.5 out of range"),
        ("u.data", "1\t2\t3\t4\n1\t2\t0\t4\n", 2, "rating 0 out of range"),
        ("u.data", "1\t2\t3\t4\n1 2 3 4\n", 2, "expected 4 fields separated by TAB, got 1"),
        ("u.data", "", 1, "no ratings"),
        ("ratings.dat", "1::2::3::4\n1::2::3::4\n1::2::3\n", 3, "expected 4 fields separated by '::', got 3"),
        ("ratings.dat", "1::2::3::4\n1::2::6::4\n", 2, "rating 6 out of range"),
        ("ratings.dat", "1::2::3::4\n1,5::2::3::4\n", 2, "user id '1,5' is not an integer"),
        ("ratings.dat", "1::2::3::4\n-1::2::3::4\n", 2, "user id -1 is negative"),
        ("ratings.dat", "1::2::3::4\n1::2::3::9.5\n", 2, "timestamp '9.5' is not an integer"),
    ],
)
def test_malformed_files_name_the_file_the_line_and_the_problem(tmp_path, name, content, line, problem):
    malformed(tmp_path, name, content, line, problem)


def test_error_line_numbers_are_exact_deep_in_a_large_file(tmp_path):
    rows = [(u % 50 + 1, u % 700 + 1, 3.0, 1000 + u) for u in range(5000)]
    file = write_csv(tmp_path / "ratings.csv", rows)
    lines = file.read_text().splitlines()
    lines[4321] = "9,9,9.0,9"  # line 4322, rating out of range
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError, match="line 4322: rating 9 out of range"):
        load_movielens(file)


@pytest.mark.skipif(not (REAL / "ratings.csv").is_file(), reason=f"real ml-latest-small not present at {REAL}")
def test_real_ml_latest_small():
    data = load_movielens(REAL)
    assert (len(data), data.n_users, data.n_items) == (100836, 610, 9724)
    assert data.raw_user_ids[0] == 1 and data.raw_user_ids[-1] == 610
    np.testing.assert_array_equal(np.unique(data.ratings), np.arange(1, 11) / 2)
    # First data line of the file: 1,1,4.0,964982703.
    assert (data.raw_user_ids[data.users[0]], data.raw_item_ids[data.items[0]]) == (1, 1)
    assert (data.ratings[0], data.timestamps[0]) == (4.0, 964982703)
    assert np.bincount(data.users).min() >= 20  # GroupLens: every user rated at least 20 movies


row_strategy = st.tuples(
    st.integers(1, 10**9), st.integers(1, 10**5), st.integers(2, 10), st.integers(0, 2**31 - 1)
)  # rating as a count of half stars, 1.0 .. 5.0; big user ids take the sorting reindex path


@settings(max_examples=40, deadline=None)
@given(rows=st.lists(row_strategy, min_size=1, max_size=40), layout=st.sampled_from(["csv", "udata", "dat"]),
       crlf=st.booleans())
def test_reading_what_was_written_returns_it(tmp_path_factory, rows, layout, crlf):
    folder = tmp_path_factory.mktemp("roundtrip")
    if layout == "csv":
        rows = [(u, i, h / 2, t) for u, i, h, t in rows]  # half stars
        text = "userId,movieId,rating,timestamp\n" + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in rows)
        file = folder / "ratings.csv"
    else:
        rows = [(u, i, float(h // 2), t) for u, i, h, t in rows]  # whole stars 1..5
        sep = "\t" if layout == "udata" else "::"
        text = "".join(f"{u}{sep}{i}{sep}{int(r)}{sep}{t}\n" for u, i, r, t in rows)
        file = folder / ("u.data" if layout == "udata" else "ratings.dat")
    file.write_bytes(text.replace("\n", "\r\n" if crlf else "\n").encode())
    data = load_movielens(folder)
    assert len(data) == len(rows)
    np.testing.assert_array_equal(data.raw_user_ids, sorted({r[0] for r in rows}))
    np.testing.assert_array_equal(data.raw_item_ids, sorted({r[1] for r in rows}))
    np.testing.assert_array_equal(data.raw_user_ids[data.users], [r[0] for r in rows])
    np.testing.assert_array_equal(data.raw_item_ids[data.items], [r[1] for r in rows])
    np.testing.assert_array_equal(data.ratings, np.array([r[2] for r in rows], np.float32))
    np.testing.assert_array_equal(data.timestamps, [r[3] for r in rows])
