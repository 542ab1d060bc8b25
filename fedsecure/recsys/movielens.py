"""Readers for the MovieLens rating files as users have them on disk.

Three layouts are recognised, from the path given (a folder or a file):

=====================  ==========================  ============================  ==================
release                file                        line format                   ratings
=====================  ==========================  ============================  ==================
ml-latest(-small)      ``ratings.csv``             header ``userId,movieId,``    0.5 .. 5.0 in
                                                   ``rating,timestamp``, commas  half-star steps
ml-100k                ``u.data``                  ``user<TAB>item<TAB>rating``  integers 1 .. 5
                                                   ``<TAB>timestamp``
ml-1m / ml-10m         ``ratings.dat``             ``user::item::rating::time``  1 .. 5 (ml-10m:
                                                                                 half stars)
=====================  ==========================  ============================  ==================

Parsing is vectorised (numpy's C ``loadtxt`` on integer/float columns), so the
1M rows of ml-1m load in well under a second. Only when the fast path rejects
the file does a line-by-line pass run, to name the exact line and what was
wrong in a :class:`DataFormatError`. Ids are re-indexed densely in the order of
the sorted raw ids.
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fedsecure.recsys.data import Interactions

__all__ = ["DataFormatError", "load_movielens", "FORMATS"]


class DataFormatError(ValueError):
    """A rating file is malformed. The message names the file, the 1-based line and the problem."""

    def __init__(self, path: str | os.PathLike, line: int, problem: str) -> None:
        self.path = str(path)
        self.line = line
        self.problem = problem
        super().__init__(f"{self.path}, line {line}: {problem}")


@dataclass(frozen=True)
class _Format:
    name: str
    filename: str
    separator: bytes
    header: bytes | None
    min_rating: float
    max_rating: float
    half_stars: bool  # True: ratings are multiples of 0.5; False: integers


FORMATS: dict[str, _Format] = {
    "ml-latest": _Format("ml-latest", "ratings.csv", b",", b"userId,movieId,rating,timestamp", 0.5, 5.0, True),
    "ml-100k": _Format("ml-100k", "u.data", b"\t", None, 1.0, 5.0, False),
    # ml-10m shares ml-1m's layout but has half-star ratings from 0.5; accept both.
    "ml-1m": _Format("ml-1m", "ratings.dat", b"::", None, 0.5, 5.0, True),
}
_FIELDS = ("user id", "item id", "rating", "timestamp")


def load_movielens(path: str | os.PathLike) -> Interactions:
    """Read MovieLens ratings from ``path`` (a release folder or the ratings file itself).

    In a folder, ``ratings.csv``, ``u.data`` and ``ratings.dat`` are tried in
    that order. A file is recognised by its name (``*.csv``, ``*.data``,
    ``*.dat``), else by its first line. Raises :class:`FileNotFoundError`
    naming every path tried, or :class:`DataFormatError` naming the file, line
    and problem.
    """
    path = Path(path)
    if path.is_dir():
        tried = [path / fmt.filename for fmt in FORMATS.values()]
        for candidate, fmt in zip(tried, FORMATS.values()):
            if candidate.is_file():
                return _read(candidate, fmt)
        raise FileNotFoundError(
            f"no MovieLens ratings file in {path}; tried: " + ", ".join(str(t) for t in tried)
        )
    if not path.is_file():
        if path.exists():  # a device, a pipe: never read it (it may not end)
            raise DataFormatError(path, 1, "not a regular file: give a MovieLens folder or its ratings file")
        raise FileNotFoundError(f"MovieLens ratings path does not exist: {path}")
    return _read(path, _format_of(path))


def _format_of(path: Path) -> _Format:
    suffix = path.suffix.lower()
    by_suffix = {".csv": "ml-latest", ".data": "ml-100k", ".dat": "ml-1m"}
    if suffix in by_suffix:
        return FORMATS[by_suffix[suffix]]
    with open(path, "rb") as f:
        first = f.readline()
    if b"::" in first:
        return FORMATS["ml-1m"]
    if b"\t" in first:
        return FORMATS["ml-100k"]
    if b"," in first:
        return FORMATS["ml-latest"]
    raise DataFormatError(
        path, 1, "cannot tell the MovieLens format: expected ',' (ratings.csv), TAB (u.data) or '::' (ratings.dat)"
    )


def _read(path: Path, fmt: _Format) -> Interactions:
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if b"\r" in data:
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")  # Windows, and old Mac, line ends
    first_line = 1
    if fmt.header is not None:
        if not data.strip():
            raise DataFormatError(path, 1, f"file is empty; expected the header {fmt.header.decode()!r}")
        head, _, data = data.partition(b"\n")
        if head.strip() != fmt.header:
            raise DataFormatError(
                path, 1, f"missing or wrong header: expected {fmt.header.decode()!r}, got {_show(head)}"
            )
        first_line = 2
    if data.endswith(b"\n"):
        data = data.rstrip(b"\n")
    if not data.strip():
        raise DataFormatError(path, first_line, "no ratings: the file has no data lines")
    if data.startswith(b"\n") or b"\n\n" in data:
        at = 0 if data.startswith(b"\n") else data.index(b"\n\n") + 1
        raise DataFormatError(path, first_line + data.count(b"\n", 0, at), "empty line")
    n_lines = data.count(b"\n") + 1

    table = _parse_fast(data, fmt)
    if table is None or len(table) != n_lines:
        _diagnose(path, data, fmt, first_line)  # raises with the offending line
        raise DataFormatError(path, first_line, "could not parse the file")  # pragma: no cover - defensive
    users, items, ratings, timestamps = (table[f] for f in ("u", "i", "r", "t"))

    _reject_first(path, ~np.isfinite(ratings), first_line, lambda j: f"rating '{ratings[j]:g}' is not a finite number")
    bad = (ratings < fmt.min_rating) | (ratings > fmt.max_rating)
    step = ratings * 2.0 if fmt.half_stars else ratings
    bad |= step != np.round(step)
    _reject_first(path, bad, first_line, lambda j: (
        f"rating {ratings[j]:g} out of range: expected "
        f"{'half stars' if fmt.half_stars else 'integers'} in [{fmt.min_rating:g}, {fmt.max_rating:g}]"
    ))
    _reject_first(path, users < 0, first_line, lambda j: f"user id {users[j]} is negative")
    _reject_first(path, items < 0, first_line, lambda j: f"item id {items[j]} is negative")
    _reject_first(path, timestamps < 0, first_line, lambda j: f"timestamp {timestamps[j]} is negative")

    raw_users, dense_users = _reindex(users)
    raw_items, dense_items = _reindex(items)
    return Interactions(
        users=dense_users,
        items=dense_items,
        ratings=ratings.astype(np.float32),
        timestamps=timestamps,
        n_users=len(raw_users),
        n_items=len(raw_items),
        raw_user_ids=raw_users,
        raw_item_ids=raw_items,
        source=str(path),
    )


def _reindex(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(sorted distinct raw ids, dense id of each entry)``, as ``np.unique(return_inverse=True)``."""
    top = int(raw.max())
    if top > 4 * len(raw) + 1_000_000:  # sparse id space: sort
        distinct, dense = np.unique(raw, return_inverse=True)
        return distinct, dense.astype(np.int64)
    # Dense-enough ids (all MovieLens releases): a presence table is O(n + max id), no sort.
    present = np.zeros(top + 1, dtype=bool)
    present[raw] = True
    return np.flatnonzero(present).astype(np.int64), (np.cumsum(present) - 1)[raw]


_ROW = np.dtype([("u", np.int64), ("i", np.int64), ("r", np.float64), ("t", np.int64)])


def _parse_fast(data: bytes, fmt: _Format) -> np.ndarray | None:
    """All rows as a structured array, or None if numpy's parser rejects any line."""
    if fmt.separator != b",":
        if b"," in data:
            return None  # a stray comma would become a field separator below
        data = data.replace(fmt.separator, b",")
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        return None
    if b"." not in data:
        # Integer ratings (ml-100k, ml-1m): numpy parses integers ~2x faster than floats.
        try:
            table = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.int64, comments=None, ndmin=2)
        except ValueError:
            table = None  # a rating such as 'nan' or '1e1': the float parse below decides
        if table is not None:
            if table.shape[1] != 4:
                return None
            rows = np.empty(len(table), dtype=_ROW)
            for name, column in zip(_ROW.names, table.T):
                rows[name] = column
            return rows
    try:
        return np.loadtxt(io.StringIO(text), delimiter=",", dtype=_ROW, comments=None, ndmin=1)
    except ValueError:
        return None


# What numpy's parser takes (Python's int() and float() also take '1_000', which numpy does not).
_INTEGER = re.compile(r"^\s*[+-]?\d+\s*$")
_NUMBER = re.compile(r"^\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*$")
_NON_FINITE = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def _diagnose(path: Path, data: bytes, fmt: _Format, first_line: int) -> None:
    """Slow path, run only on a file the fast parser rejected: raise for the first bad line."""
    sep = fmt.separator
    sep_name = {b",": "','", b"\t": "TAB", b"::": "'::'"}[sep]
    for offset, raw in enumerate(data.split(b"\n")):
        line = first_line + offset
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise DataFormatError(path, line, f"non-ASCII bytes in {_show(raw)}") from None
        fields = text.split(sep.decode())
        if len(fields) != 4:
            raise DataFormatError(
                path, line, f"expected 4 fields separated by {sep_name}, got {len(fields)} in {_show(raw)}"
            )
        for k, (name, value) in enumerate(zip(_FIELDS, fields)):
            try:
                if not (_NUMBER if k == 2 else _INTEGER).match(value) and value.strip().lower() not in _NON_FINITE:
                    raise ValueError(value)
                number = float(value) if k == 2 else int(value)
            except ValueError:
                kind = "a number" if k == 2 else "an integer"
                raise DataFormatError(path, line, f"{name} {value!r} is not {kind}") from None
            if k == 2 and not math.isfinite(number):
                raise DataFormatError(path, line, f"rating {value!r} is not a finite number")
            if k != 2 and not -(2**63) <= number < 2**63:
                raise DataFormatError(path, line, f"{name} {value!r} does not fit in 64 bits")
        if "," in text and sep != b",":
            raise DataFormatError(path, line, f"unexpected ',' in {_show(raw)}")
    raise DataFormatError(
        path, first_line, "the numeric parser rejected the file, but no single bad line was found (mixed number formats?)"
    )


def _reject_first(path: Path, bad: np.ndarray, first_line: int, describe) -> None:
    if bad.any():
        j = int(np.argmax(bad))
        raise DataFormatError(path, first_line + j, describe(j))


def _show(raw: bytes, limit: int = 80) -> str:
    text = raw.decode("ascii", errors="backslashreplace")
    return repr(text if len(text) <= limit else text[:limit] + "...")
