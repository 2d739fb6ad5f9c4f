"""Tabular data for the command line: a CSV loader with readable errors, standardisation, splits.

NumPy and the standard library's :mod:`csv` only. Every mistake a user can make in their input
(a missing file or column, a value that is not a number, rows with missing values) raises
:class:`UserError`, whose message says what was wrong and where; the CLI prints it without a
traceback.

>>> import io
>>> table = load_csv(io.StringIO("x,y\\n1,2\\n2,4\\n3,\\n"), target="y")
>>> table.features, table.X.shape, table.dropped
(('x',), (2, 1), 1)
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from typing import IO, Sequence

import numpy as np

#: Cell spellings read as a missing value (NaN), compared case-insensitively.
MISSING = frozenset({"", "nan", "na", "n/a", "null", "none", "?"})


class UserError(Exception):
    """A mistake in what the user asked for or gave us, reported as ``jloss: error: <message>``."""


@dataclasses.dataclass(frozen=True)
class Table:
    """Numeric data read from a CSV: features ``X`` (n, d), target ``y`` (n,), and what was done."""

    X: np.ndarray
    y: np.ndarray
    features: tuple[str, ...]
    target: str
    source: str
    rows_read: int
    dropped: int = 0
    notes: tuple[str, ...] = ()


def _open(source: str | os.PathLike | IO[str]):
    if hasattr(source, "read"):
        return source, getattr(source, "name", "<stream>"), False
    path = os.fspath(source)
    if not os.path.exists(path):
        raise UserError(f"no such file: {path}")
    if os.path.isdir(path):
        raise UserError(f"{path} is a directory, not a CSV file")
    try:
        return open(path, newline="", encoding="utf-8-sig"), path, True
    except OSError as e:
        raise UserError(f"cannot read {path}: {e.strerror or e}") from None


def _number(cell: str, row: int, column: str, source: str) -> float:
    text = cell.strip()
    if text.lower() in MISSING:
        return math.nan
    try:
        return float(text)
    except ValueError:
        raise UserError(
            f"{source}: row {row}, column {column!r}: {cell!r} is not a number "
            "(choose numeric columns with --features)"
        ) from None


def load_csv(
    source: str | os.PathLike | IO[str],
    target: str,
    features: Sequence[str] | None = None,
    *,
    nan: str = "drop",
) -> Table:
    """Read ``target`` and ``features`` (default: every other column) from a CSV with a header.

    Rows are numbered as in a spreadsheet: the header is row 1, the first data row row 2.
    Empty cells and ``nan``/``NA``/``null`` are missing values. ``nan="drop"`` drops every row
    with a missing value in the chosen columns and says how many in :attr:`Table.notes`;
    ``nan="error"`` raises :class:`UserError` naming the first such rows.
    """
    if nan not in ("drop", "error"):
        raise UserError(f"nan handling must be 'drop' or 'error', got {nan!r}")
    handle, name, close = _open(source)
    try:
        try:
            rows = list(csv.reader(handle))
        except (csv.Error, UnicodeDecodeError) as e:
            raise UserError(f"{name} is not a readable CSV file: {e}") from None
    finally:
        if close:
            handle.close()
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise UserError(f"{name} is empty: expected a header row with column names")
    header = [c.strip() for c in rows[0]]
    index = {c: i for i, c in enumerate(header)}
    known = ", ".join(header)
    if target not in index:
        raise UserError(f"{name} has no column {target!r} for the target; its columns are: {known}")
    if features is None:
        features = [c for c in header if c != target]
        if not features:
            raise UserError(f"{name} has no columns besides the target {target!r} to use as features")
    features = list(features)
    missing = [c for c in features if c not in index]
    if missing:
        raise UserError(f"{name} has no column {missing[0]!r}; its columns are: {known}")
    if target in features:
        raise UserError(f"column {target!r} is the target; it cannot also be a feature")
    if len(set(features)) != len(features):
        raise UserError(f"a feature column is named twice: {features}")
    columns = features + [target]
    data = np.empty((len(rows) - 1, len(columns)))
    for i, row in enumerate(rows[1:]):
        if len(row) != len(header):
            raise UserError(f"{name}: row {i + 2} has {len(row)} cells but the header has {len(header)}")
        for j, c in enumerate(columns):
            data[i, j] = _number(row[index[c]], i + 2, c, name)
    if not np.all(np.isfinite(data[~np.isnan(data)])):
        r, c = np.argwhere(np.isinf(data))[0]
        raise UserError(f"{name}: row {r + 2}, column {columns[c]!r} is infinite")
    bad = np.isnan(data).any(axis=1)
    notes = []
    if bad.any():
        where = ", ".join(str(r + 2) for r in np.flatnonzero(bad)[:5]) + (", ..." if bad.sum() > 5 else "")
        if nan == "error":
            raise UserError(f"{name}: {bad.sum()} of {len(data)} rows have missing values (rows {where}); "
                            "fix them or pass --nan drop to drop them")
        notes.append(f"dropped {bad.sum()} of {len(data)} rows with missing values (rows {where}); "
                     "pass --nan error to stop instead")
        data = data[~bad]
    if len(data) == 0:
        raise UserError(f"{name} has no complete data rows")
    return Table(data[:, :-1], data[:, -1], tuple(features), target, name, len(bad), int(bad.sum()), tuple(notes))


@dataclasses.dataclass(frozen=True)
class Scaler:
    """Per-column standardisation ``(x - mean) / scale``; constant columns keep scale 1."""

    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, X: np.ndarray) -> "Scaler":
        X = np.asarray(X, dtype=np.float64)
        scale = X.std(axis=0)
        return cls(X.mean(axis=0), np.where(scale > 0, scale, 1.0))

    @classmethod
    def identity(cls, d: int) -> "Scaler":
        return cls(np.zeros(d), np.ones(d))

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean) / self.scale

    def unscale(self, coef: np.ndarray, intercept) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients of a linear model on standardised inputs, in the original units.

        ``coef`` has shape (d,) or (d, k) and ``intercept`` () or (k,).
        """
        coef = np.asarray(coef, dtype=np.float64)
        s = self.scale.reshape((-1,) + (1,) * (coef.ndim - 1))
        m = self.mean.reshape(s.shape)
        w = coef / s
        return w, np.asarray(intercept, dtype=np.float64) - (w * m).sum(axis=0)


def write_csv(path: str | os.PathLike, columns: dict[str, np.ndarray], digits: int = 6) -> None:
    """Write equal-length numeric columns as a CSV with a header row (``digits`` significant digits)."""
    names = list(columns)
    data = np.column_stack([np.asarray(columns[c], dtype=np.float64) for c in names])
    try:
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(names)
            w.writerows([f"{v:.{digits}g}" for v in row] for row in data)
    except OSError as e:
        raise UserError(f"cannot write {os.fspath(path)}: {e.strerror or e}") from None


def split(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random (train, validation) index arrays, ``fraction`` of ``n`` (at least one) held out."""
    if not 0 < fraction < 1:
        raise UserError(f"the validation fraction must be between 0 and 1, got {fraction}")
    k = min(max(1, round(n * fraction)), n - 1)
    if k < 1:
        raise UserError(f"need at least 2 rows to hold some out for validation, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[k:]), np.sort(perm[:k])
