"""What the ``jloss`` commands share: number formatting, tables, messages, JSON and common options.

Used by :mod:`jloss.cli` and by the modules that add a command of their own (:mod:`jloss.tuning`),
so that those need not import the command table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from jloss.data import UserError, load_csv
from jloss.linear import METHODS, OPTIMIZERS

__all__ = [
    "PROG",
    "DEFAULT_OUT",
    "EXIT_OK",
    "EXIT_FAILED",
    "EXIT_USAGE",
    "fmt",
    "pct",
    "table",
    "heading",
    "note",
    "write_json",
    "add_progress",
    "add_plots",
    "add_csv",
    "add_optimizer",
    "load",
]

PROG = "jloss"
DEFAULT_OUT = "jloss-out"
#: Exit statuses: 0 success, 1 the optimisation failed (non-finite loss), 2 a user mistake.
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


# --------------------------------------------------------------------------- output helpers


def fmt(x: Any, digits: int = 4) -> str:
    """A number for a table: ``digits`` significant digits, no exponent for ordinary sizes."""
    if isinstance(x, str):
        return x
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    x = float(x)
    if not math.isfinite(x):
        return str(x)
    if x == 0:
        return "0"
    if 1e-3 <= abs(x) < 1e6:
        decimals = max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))
        return f"{x:.{decimals}f}"
    return f"{x:.{digits - 1}e}"


def pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _numeric(text: str) -> bool:
    try:
        float(text.rstrip("%x*").replace(",", ""))
        return True
    except ValueError:
        return False


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], indent: str = "  ") -> str:
    """An aligned plain-text table: numbers right-aligned, text left-aligned."""
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    right = [all(_numeric(r[i]) for r in cells if r[i]) and bool(cells) for i in range(len(headers))]

    def line(values):
        parts = [v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right)]
        return (indent + "  ".join(parts)).rstrip()

    out = [line(headers), indent + "  ".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    return "\n".join(out)


def heading(text: str) -> None:
    print()
    print(text)
    print("-" * len(text), flush=True)  # before any progress bar on stderr


def note(text: str) -> None:
    """An informational message on stderr (so stdout stays the report)."""
    print(f"{PROG}: note: {text}", file=sys.stderr)


def write_json(data: dict, target: str) -> None:
    """Write ``data`` as JSON to a file, or to stdout when ``target`` is ``-``."""
    text = json.dumps(data, indent=2, default=_jsonable)
    if target == "-":
        print(text)
        return
    try:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        Path(target).write_text(text + "\n")
    except OSError as e:
        raise UserError(f"cannot write {target}: {e.strerror or e}") from None
    note(f"wrote {target}")


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray) or hasattr(x, "tolist"):
        return np.asarray(x).tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def add_progress(p: argparse.ArgumentParser) -> None:
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="show a progress bar on stderr while fitting (default: on)")


def add_plots(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help=f"folder for {what} (default: {DEFAULT_OUT}/)")
    p.add_argument("--no-plots", dest="plots", action="store_false",
                   help="do not draw figures (no matplotlib needed)")


def add_csv(p: argparse.ArgumentParser, required: bool) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--csv", metavar="FILE", required=required, help="CSV file with a header row")
    g.add_argument("--target", metavar="COLUMN", required=required, help="the column to predict")
    g.add_argument("--features", metavar="COLUMN", nargs="+",
                   help="feature columns (default: every other column)")
    g.add_argument("--nan", choices=("drop", "error"), default="drop",
                   help="rows with missing values: drop them and say how many (default), or stop")


def add_optimizer(p: argparse.ArgumentParser, default: str, steps: int, methods: bool = False) -> None:
    g = p.add_argument_group("optimizer")
    names = {k: v[1] for k, v in OPTIMIZERS.items()} | (METHODS if methods else {})
    g.add_argument("--optimizer", default=default, metavar="NAME",
                   help="; ".join(f"{k}: {v}" for k, v in names.items()).replace("%", "%%") + f" (default: {default})")
    g.add_argument("--lr", type=float, default=None, metavar="RATE", help="learning rate (adam, sgd; optional for lbfgs)")
    g.add_argument("--steps", type=int, default=steps, help=f"maximum optimizer steps (default: {steps})")
    g.add_argument("--tol", type=float, default=1e-5,
                   help="stop when the gradient norm is at most this (default: 1e-5; 0 runs every step)")
    g.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=True,
                   help="standardize the features while fitting; coefficients are reported in the "
                        "original units either way (default: on)")


def load(args: argparse.Namespace):
    table_ = load_csv(args.csv, args.target, args.features, nan=args.nan)
    for text in table_.notes:
        note(text)
    return table_
