"""Where a run's data comes from: the synthetic generator's size options and interaction files of any layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedsecure.cli import main


def cli(argv: list, capsys) -> tuple[int, str, str]:
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse refusals
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


# -- synthetic data at any size ---------------------------------------------------------------------------------


def test_the_size_options_shape_the_synthetic_data(tmp_path, capsys):
    out = tmp_path / "r.json"
    rc, _, stderr = cli(["run", "--users", 60, "--items", 80, "--interactions-per-user", 8, "--rounds", 1,
                         "--dim", 8, "--negatives", 0, "--quiet", "--json", out], capsys)
    assert rc == 0, stderr
    result = json.loads(out.read_text())
    assert (result["data"]["users"], result["data"]["items"]) == (60, 80)
    assert 5 * 60 <= result["data"]["interactions"] <= 12 * 60
    assert result["config"]["users"] == 60 and result["config"]["interactions_per_user"] == 8


@pytest.mark.parametrize("option, value", [("--users", 100), ("--items", 50), ("--interactions-per-user", 9)])
def test_a_size_option_with_a_data_file_is_refused_by_name(tmp_path, capsys, option, value):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,1,4.0,5\n")
    rc, _, stderr = cli(["run", "--data", path, option, value], capsys)
    assert rc == 2 and option in stderr and "--data synthetic" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("option, value", [("--users", 0), ("--items", 9), ("--interactions-per-user", 4)])
def test_a_size_below_the_generator_floor_is_refused_by_name(capsys, option, value):
    rc, _, stderr = cli(["run", option, value], capsys)
    assert rc == 2 and option in stderr


# -- interaction files of any layout ----------------------------------------------------------------------------

import csv  # noqa: E402
import io  # noqa: E402

import numpy as np  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from fedsecure.recsys.movielens import DataFormatError  # noqa: E402
from fedsecure.recsys.tables import load_interactions  # noqa: E402

id_text = st.one_of(st.integers(0, 10**12).map(str),
                    st.text("abcdefghijklmnopqrstuvwxyzABC0123456789_-", min_size=1, max_size=8))
rows_st = st.lists(st.tuples(id_text, id_text, st.sampled_from([0.5, 1.0, 3.5, 5.0, 2.25]),
                             st.integers(0, 2**40)), min_size=1, max_size=40)


def _as_read(data) -> list[tuple[str, str, float, int]]:
    """The rows as the source's raw ids, in table order."""
    return [(str(data.raw_user_ids[u]), str(data.raw_item_ids[i]), float(r), int(t))
            for u, i, r, t in zip(data.users, data.items, data.ratings, data.timestamps)]


def _normal(rows, ids_are_ints: tuple[bool, bool]):
    """The rows with ids as the reader would give them back (integers lose leading zeros)."""
    fix = lambda v, as_int: str(int(v)) if as_int else v  # noqa: E731
    return [(fix(u, ids_are_ints[0]), fix(i, ids_are_ints[1]), r, t) for u, i, r, t in rows]


def _all_int(values) -> bool:
    return all(v.isdigit() for v in values)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_st, delimiter=st.sampled_from([",", "\t"]),
       header=st.sampled_from([("user_id", "item_id", "rating", "timestamp"), ("uid", "asin", "score", "ts"),
                               ("who", "what", "stars", "when")]))
def test_a_table_round_trips(tmp_path_factory, rows, delimiter, header):
    folder = tmp_path_factory.mktemp("t")
    path = folder / ("x.tsv" if delimiter == "\t" else "x.csv")
    out = io.StringIO()
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(out.getvalue())
    columns = None if header[0] != "who" else ",".join(header)  # detected, or named
    data, detected = load_interactions(path, columns)
    assert (detected is None) == (columns is not None)
    if detected is not None:
        assert detected == ",".join(header)
    ints = (_all_int([r[0] for r in rows]), _all_int([r[1] for r in rows]))
    assert _as_read(data) == _normal(rows, ints)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pairs=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 10**9)), min_size=1, max_size=60),
       sep=st.sampled_from([" ", "\t", "  "]))
def test_user_item_lines_round_trip_in_line_order(tmp_path_factory, pairs, sep):
    path = tmp_path_factory.mktemp("s") / "data.txt"
    path.write_text("".join(f"{u}{sep}{i}\n" for u, i in pairs))
    data, detected = load_interactions(path)
    assert detected is None
    assert [(int(data.raw_user_ids[u]), int(data.raw_item_ids[i])) for u, i in zip(data.users, data.items)] == pairs
    assert data.timestamps.tolist() == list(range(len(pairs)))  # the line order is the time order
    # each user's sequence (as the models read it) is their lines in file order
    indptr, order = data.user_index()
    for u in range(data.n_users):
        rows = order[indptr[u]:indptr[u + 1]]
        assert list(rows) == sorted(rows)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=rows_st)
def test_a_parquet_table_round_trips(tmp_path_factory, rows):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path_factory.mktemp("p") / "x.parquet"
    u, i, r, t = zip(*rows)
    pq.write_table(pa.table({"user_id": list(u), "item_id": list(i), "rating": list(r), "timestamp": list(t)}), path)
    data, detected = load_interactions(path)
    assert detected == "user_id,item_id,rating,timestamp"
    ints = (_all_int(u), _all_int(i))
    assert _as_read(data) == _normal(rows, ints)


@pytest.mark.parametrize("text, columns, line, problem", [
    ("user_id,item_id,rating\n1,2,4\n1,3\n", None, 3, "expected 3 fields"),
    ("user_id,item_id,rating\n1,2,4\n1,3,x\n", None, 3, "rating 'x' is not a number"),
    ("user_id,item_id,rating\n1,2,4\n1,3,nan\n", None, 3, "not a finite number"),
    ("user_id,item_id,timestamp\n1,2,4\n1,3,yesterday\n", None, 3, "timestamp 'yesterday' is not an integer"),
    ("user_id,item_id\n1,2\n\n1,3\n", None, 3, "empty line"),
    ("user_id,item_id\n1,\n", None, 2, "empty item"),
    ("a,b,c\n1,2,3\n", None, 1, "no user column among a, b, c"),
    ("user_id,item_id\n1,2\n", "user_id,product", 1, "'product', not in the header"),
    ("user_id,item_id\n", None, 2, "no interactions"),
    ('user_id,item_id\n1,"2\n', None, 2, "malformed CSV"),
])
def test_a_bad_table_line_is_named(tmp_path, text, columns, line, problem):
    path = tmp_path / "x.csv"
    path.write_text(text)
    with pytest.raises(DataFormatError) as info:
        load_interactions(path, columns)
    assert info.value.line == line and problem in info.value.problem and str(path) in str(info.value)


@pytest.mark.parametrize("text, line, problem", [
    ("1 2\n3 4\n5 6 7\n", 3, "got 3 fields"),
    ("1 2\n\n3 4\n", 2, "got an empty line"),
])
def test_a_bad_sequence_line_is_named(tmp_path, text, line, problem):
    path = tmp_path / "seq.txt"
    path.write_text(text)
    with pytest.raises(DataFormatError) as info:
        load_interactions(path)
    assert info.value.line == line and problem in info.value.problem


def test_movielens_files_still_go_to_the_movielens_reader(tmp_path):
    path = tmp_path / "ratings.csv"
    path.write_text("userId,movieId,rating,timestamp\n1,2,4.5,10\n1,3,x,11\n")
    with pytest.raises(DataFormatError) as info:
        load_interactions(path)
    assert info.value.line == 3 and "rating 'x' is not a number" in info.value.problem  # movielens's message
    path.write_text("userId,movieId,rating,timestamp\n1,2,4.5,10\n2,3,7,11\n")
    with pytest.raises(DataFormatError, match="out of range"):  # MovieLens's rating range applies
        load_interactions(path)
    data, _ = load_interactions(path, "userId,movieId,rating,timestamp")  # a generic table: any rating
    assert sorted(data.ratings.tolist()) == [4.5, 7.0]


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_pyarrow(name, *args, **kwargs):
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pyarrow)
    (tmp_path / "x.parquet").write_bytes(b"PAR1")
    with pytest.raises(ValueError, match=r"pip install 'fedsecure\[parquet\]'"):
        load_interactions(tmp_path / "x.parquet")


def test_the_cli_trains_on_a_table_and_notes_the_detected_columns(tmp_path, capsys):
    rng = np.random.default_rng(0)
    lines = ["customer_id\tproduct_id\tstars"]
    for u in range(30):
        for i in rng.choice(60, size=8, replace=False):
            lines.append(f"c{u}\tp{i}\t{rng.integers(1, 6)}")
    path = tmp_path / "reviews.tsv"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.json"
    rc, stdout, stderr = cli(["run", "--data", path, "--rounds", 1, "--dim", 8, "--negatives", 0, "--quiet",
                              "--json", out], capsys)
    assert rc == 0, stderr
    assert "note: --columns (not given) -> customer_id,product_id,stars" in stderr
    result = json.loads(out.read_text())
    assert (result["data"]["users"], result["data"]["items"]) == (30, len({ln.split("\t")[1] for ln in lines[1:]}))
    assert result["adjustments"][0]["option"] == "--columns"


def test_the_cli_reads_user_item_lines_and_refuses_columns_for_them(tmp_path, capsys):
    path = tmp_path / "seq.txt"
    rng = np.random.default_rng(1)
    path.write_text("".join(f"{u} {i}\n" for u in range(1, 31) for i in rng.choice(50, 6, replace=False) + 1))
    rc, _, stderr = cli(["run", "--data", path, "--model", "sasrec", "--rounds", 1, "--dim", 8, "--negatives", 0,
                         "--quiet"], capsys)
    assert rc == 0, stderr
    rc, _, stderr = cli(["run", "--data", path, "--columns", "u,i"], capsys)
    assert rc == 2 and "line 1 is not a header" in stderr and len(stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("argv, problem", [
    (["--columns", "user_id,item_id"], "synthetic data has none"),
    (["--data", "x.csv", "--columns", "u"], "2 to 4 header names"),
    (["--data", "x.csv", "--columns", "u,u"], "twice"),
    (["--loss", "bce"], "--model sasrec"),
    (["--model", "sasrec", "--loss", "full", "--setting", "cross-silo", "--dp", "dpsgd", "--noise-multiplier", 1],
     "--loss sampled-softmax or bce"),
])
def test_bad_data_and_loss_options_are_refused_by_name(tmp_path, capsys, argv, problem):
    (tmp_path / "x.csv").write_text("u,i\n1,2\n")
    argv = [a if a != "x.csv" else tmp_path / "x.csv" for a in argv]
    rc, _, stderr = cli(["run", *argv], capsys)
    assert rc == 2 and problem in stderr, stderr
