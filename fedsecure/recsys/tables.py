"""Interaction files of any layout: CSV/TSV/Parquet tables with named columns, and ``user item`` sequence lines.

``load_interactions(path, columns=None)`` reads, by the path:

=========================  ==============================================================
what                       how it is read
=========================  ==============================================================
a MovieLens folder, or     :func:`fedsecure.recsys.movielens.load_movielens` (unless
``ratings.csv`` (with its  ``columns`` is given for a ``.csv``)
header), ``*.dat``,
``*.data``
``*.parquet``              the columns named by ``columns``, or detected (needs
                           ``pyarrow``: ``pip install 'fedsecure[parquet]'``)
a table with a header      delimiter TAB if the header has one, else ``,``; quoted fields
(``*.csv``, ``*.tsv``,     as in RFC 4180; the columns named by ``columns``, or detected
any file whose first line
has letters)
``user item`` lines        whitespace-separated pairs, no header, one interaction per
                           line, **the line order is the time order** (the layout of the
                           SASRec paper's data sets): line ``n`` gets timestamp ``n``
=========================  ==============================================================

``columns`` is ``"user,item[,rating][,timestamp]"``: header names in that
order. Without it, the common names are detected (``userId``, ``user_id``,
``user``, ``uid``, ...; ``movieId``, ``item_id``, ``item``, ``product_id``,
``asin``, ...; ``rating``, ``score``, ``stars``; ``timestamp``, ``time``,
``ts``, ...) and the choice is returned for the caller to print as a note.
Ids may be any text; they are re-indexed densely in sorted order (numerically
when every id is an integer). A missing rating is 1.0 (implicit feedback); a
missing timestamp column gives each row its row number, so the file's order
is the time order. Every error is a
:class:`~fedsecure.recsys.movielens.DataFormatError` naming the file, the
1-based line (the header is line 1) and the problem.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import numpy as np

from fedsecure.recsys.data import Interactions
from fedsecure.recsys.movielens import FORMATS, DataFormatError, _reindex, _reject_first, _show, load_movielens

__all__ = ["COMMON_NAMES", "load_interactions", "parse_columns"]

ROLES = ("user", "item", "rating", "timestamp")
#: header names detected for each role when ``columns`` is not given (compared case-insensitively)
COMMON_NAMES: dict[str, tuple[str, ...]] = {
    "user": ("userid", "user_id", "user", "uid", "customer_id", "visitorid", "reviewerid", "session_id"),
    "item": ("movieid", "item_id", "itemid", "item", "iid", "product_id", "productid", "asin", "business_id",
             "track_id", "book_id", "isbn"),
    "rating": ("rating", "ratings", "score", "stars", "overall", "book-rating"),
    "timestamp": ("timestamp", "time", "ts", "unixreviewtime", "datetime", "date", "event_time"),
}


def parse_columns(text: str) -> list[str]:
    """``"user,item[,rating][,timestamp]"`` as a list of 2 to 4 distinct, non-empty header names."""
    names = [c.strip() for c in text.split(",")]
    if not 2 <= len(names) <= 4 or not all(names):
        raise ValueError(f"--columns takes 'user,item[,rating][,timestamp]' (2 to 4 header names), got {text!r}")
    if len(set(names)) != len(names):
        raise ValueError(f"--columns names a header column twice: {text!r}")
    return names


def load_interactions(path: str | os.PathLike, columns: str | None = None) -> tuple[Interactions, str | None]:
    """Read interactions from ``path`` (see the module docstring).

    Returns ``(data, detected)``: ``detected`` is the header names used, in the
    order user,item[,rating][,timestamp], when they were detected rather than
    given (None otherwise), for the caller to print.
    """
    path = Path(path)
    names = parse_columns(columns) if columns is not None else None
    if path.is_dir() or not path.is_file():
        if names is not None and path.is_dir():
            raise ValueError(f"--columns names the columns of one file; {path} is a folder: give the file")
        return load_movielens(path), None  # folders and missing paths: its messages
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet(path, names)
    with open(path, "rb") as f:
        first = f.readline()
    if first.startswith(b"\xef\xbb\xbf"):
        first = first[3:]
    if names is None:
        movielens_header = FORMATS["ml-latest"].header
        if suffix in (".dat", ".data") or (suffix == ".csv" and first.strip() == movielens_header):
            return load_movielens(path), None
    text = first.decode("utf-8", errors="replace")
    if any(ch.isalpha() for ch in text):
        return _table(path, names)
    if names is not None:
        raise DataFormatError(path, 1, f"--columns names header columns, but line 1 is not a header: {_show(first)}")
    if len(first.split()) == 2 and b"," not in first:
        return _sequence_lines(path), None
    return load_movielens(path), None  # numeric MovieLens-like lines: its detection and errors


# -- whitespace `user item` lines -----------------------------------------------------------------------------


def _sequence_lines(path: Path) -> Interactions:
    data = _text(path)
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    if not lines:
        raise DataFormatError(path, 1, "no interactions: the file has no lines")
    users, items = [], []
    for n, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) != 2:
            what = "an empty line" if not fields else f"{len(fields)} fields in {_show(line.encode())}"
            raise DataFormatError(path, n, f"expected 2 whitespace-separated fields 'user item' (the layout of "
                                           f"line 1), got {what}")
        users.append(fields[0])
        items.append(fields[1])
    return _build(users, items, None, np.arange(len(lines), dtype=np.int64),
                  source=f"{path} (user item lines in time order)")


# -- tables with a header -------------------------------------------------------------------------------------


def _table(path: Path, names: list[str] | None) -> tuple[Interactions, str | None]:
    data = _text(path)
    header_line, _, _ = data.partition("\n")
    delimiter = "\t" if "\t" in header_line else ","
    reader = csv.reader(io.StringIO(data), delimiter=delimiter, strict=True)
    try:
        header = next(reader)
    except (StopIteration, csv.Error) as exc:
        raise DataFormatError(path, 1, f"cannot read the header: {exc}") from None
    header = [h.strip() for h in header]
    picked, note = _pick_columns(path, header, names)
    width = len(header)
    values: list[list[str]] = [[] for _ in picked]
    line_of_row: list[int] = []
    try:
        for row in reader:
            line = reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                raise DataFormatError(path, line, "empty line")
            if len(row) != width:
                sep = "TAB" if delimiter == "\t" else "','"
                raise DataFormatError(path, line, f"expected {width} fields separated by {sep} (as the header), "
                                                  f"got {len(row)} in {_show(delimiter.join(row).encode())}")
            for out, k in zip(values, picked.values()):
                out.append(row[k])
            line_of_row.append(line)
    except csv.Error as exc:
        raise DataFormatError(path, reader.line_num, f"malformed CSV: {exc}") from None
    if not line_of_row:
        raise DataFormatError(path, 2, "no interactions: the file has a header and no data lines")
    cols = dict(zip(picked, values))
    return _from_columns(path, cols, np.asarray(line_of_row)), note


def _pick_columns(path: Path, header: list[str], names: list[str] | None) -> tuple[dict[str, int], str | None]:
    """Role -> column index: from ``names`` (checked against the header) or detected from common names."""
    if names is not None:
        missing = [n for n in names if n not in header]
        if missing:
            raise DataFormatError(path, 1, f"--columns names {', '.join(repr(m) for m in missing)}, not in the "
                                           f"header; the columns are: {', '.join(header)}")
        return {role: header.index(n) for role, n in zip(ROLES, names)}, None
    lower = [h.lower() for h in header]
    picked: dict[str, int] = {}
    for role in ROLES:
        for candidate in COMMON_NAMES[role]:
            if candidate in lower and lower.index(candidate) not in picked.values():
                picked[role] = lower.index(candidate)
                break
    if "user" not in picked or "item" not in picked:
        role = "user" if "user" not in picked else "item"
        raise DataFormatError(path, 1, f"no {role} column among {', '.join(header)}: name them with "
                                       f"--columns user,item[,rating][,timestamp]")
    return picked, ",".join(header[k] for k in picked.values())


# -- Parquet ---------------------------------------------------------------------------------------------------


def _parquet(path: Path, names: list[str] | None) -> tuple[Interactions, str | None]:
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ValueError(f"{path}: reading Parquet needs pyarrow: pip install 'fedsecure[parquet]'") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataFormatError(path, 1, f"not a readable Parquet file: {exc}") from None
    header = list(table.column_names)
    picked, note = _pick_columns(path, header, names)
    cols = {role: [None if v is None else str(v) for v in table.column(k).to_pylist()] for role, k in picked.items()}
    if not len(table):
        raise DataFormatError(path, 2, "no interactions: the table has no rows")
    # "line" of a Parquet row: its row number + 1 (row 1 is the first row; there is no header line)
    return _from_columns(path, cols, np.arange(1, len(table) + 1), rows_are_lines=False), note


# -- shared -----------------------------------------------------------------------------------------------------


def _text(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataFormatError(path, line, "not UTF-8 text") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _from_columns(path: Path, cols: dict[str, list], lines: np.ndarray, rows_are_lines: bool = True) -> Interactions:
    where = "line" if rows_are_lines else "row"
    for role, values in cols.items():
        for j, v in enumerate(values):
            if v is None or not str(v).strip():
                raise DataFormatError(path, int(lines[j]), f"empty {role} ({where} {lines[j]})")
    ratings = _numbers(path, cols["rating"], lines, "rating", float) if "rating" in cols else None
    if "timestamp" in cols:
        timestamps = _numbers(path, cols["timestamp"], lines, "timestamp", int)
    else:
        timestamps = np.arange(len(lines), dtype=np.int64)  # row order is time order
    return _build(cols["user"], cols["item"], ratings, timestamps, source=str(path))


def _numbers(path: Path, values: list, lines: np.ndarray, name: str, kind: type) -> np.ndarray:
    try:
        arr = np.asarray(values, dtype=np.float64 if kind is float else np.int64)
    except (ValueError, OverflowError):
        for j, v in enumerate(values):
            try:
                kind(str(v).strip())
            except (ValueError, OverflowError):
                what = "a number" if kind is float else "an integer (Unix seconds)"
                raise DataFormatError(path, int(lines[j]), f"{name} {str(v)!r} is not {what}") from None
        raise DataFormatError(path, int(lines[0]), f"the {name} column could not be read")  # pragma: no cover
    first_line = int(lines[0])
    if not np.array_equal(lines, np.arange(first_line, first_line + len(lines))):
        # lines are not consecutive (quoted newlines): report through a lookup
        def reject(bad: np.ndarray, describe) -> None:  # noqa: ANN001
            if bad.any():
                j = int(np.argmax(bad))
                raise DataFormatError(path, int(lines[j]), describe(j))
    else:
        def reject(bad: np.ndarray, describe) -> None:  # noqa: ANN001
            _reject_first(path, bad, first_line, describe)
    if kind is float:
        reject(~np.isfinite(arr), lambda j: f"{name} {values[j]!r} is not a finite number")
    else:
        reject(arr < 0, lambda j: f"{name} {arr[j]} is negative")
    return arr


def _ids(values: list[str]) -> np.ndarray:
    """Integer ids where every one is an integer (sorted numerically), else the text (sorted as text)."""
    stripped = [str(v).strip() for v in values]
    try:
        return np.asarray(stripped, dtype=np.int64)
    except (ValueError, OverflowError):
        return np.asarray(stripped)


def _build(users: list, items: list, ratings: np.ndarray | None, timestamps: np.ndarray, *,
           source: str) -> Interactions:
    dense = []
    for raw in (_ids(users), _ids(items)):
        if raw.dtype.kind == "i" and raw.size and raw.min() >= 0:
            dense.append(_reindex(raw))
        else:
            distinct, inverse = np.unique(raw, return_inverse=True)
            dense.append((distinct, inverse.astype(np.int64)))
    (raw_users, u), (raw_items, i) = dense
    return Interactions(
        users=u, items=i, ratings=np.ones(len(u), np.float32) if ratings is None else ratings,
        timestamps=timestamps, n_users=len(raw_users), n_items=len(raw_items),
        raw_user_ids=raw_users, raw_item_ids=raw_items, source=source,
    )
