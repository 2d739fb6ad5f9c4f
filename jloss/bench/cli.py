"""The command line of the suite: ``jloss bench``, ``python -m jloss.benchmarks`` (or ``-m jloss.bench``)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Sequence

import numpy as np

from jloss import cache
from jloss.bench.harness import Config, WORKLOADS
from jloss.bench.report import markdown, plot, run_suite


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jloss bench",
        description="Time jloss's losses, minimize and sweep against the Python-loop idiom, a hand-fused "
        "lax.scan, PyTorch/scipy/scikit-learn when installed, and the hardware floor, in one process.",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds; what the smoke test runs)")
    p.add_argument("--json", metavar="FILE", help="write every raw timing and the environment to FILE")
    p.add_argument("--markdown", metavar="FILE", help="also write the markdown table to FILE")
    p.add_argument("--plot", metavar="PREFIX", nargs="?", const="",
                   help="write PNG bar charts PREFIX-<workload>.png (default prefix: the --json path "
                   "without .json, else 'bench')")
    p.add_argument("--only", metavar="NAMES", help="comma-separated workloads to run (see --list)")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument("--from-json", metavar="FILE",
                   help="run nothing: render the table (and --markdown/--plot) from a saved --json report")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per row (>= 5; default 5)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    p.add_argument("--torch-threads", type=int, metavar="N",
                   help="torch.set_num_threads(N) (default: PyTorch's own choice, recorded in the JSON)")
    p.add_argument("--no-cache", action="store_true",
                   help="do not use JAX's persistent compilation cache (default: on, as for `jloss`; "
                        "JLOSS_NO_CACHE=1 also turns it off). The compile-time rows bypass it either way")
    p.add_argument("--blas-threads", type=int, default=1, metavar="N",
                   help="BLAS threads of numpy/scipy/scikit-learn while timing, via threadpoolctl if "
                        "installed (default 1: idle OpenBLAS threads spin and slow the next row; 0: leave them)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``jloss bench``: run the suite, print the markdown table; 0 on success (misses included)."""
    args = _parser().parse_args(argv)
    if args.list:
        for name, w in WORKLOADS.items():
            print(f"{name:16s} {w.description}")
        return 0
    if args.repeats < 5:
        print("jloss bench: --repeats must be at least 5 (median and spread of >= 5 runs)", file=sys.stderr)
        return 2
    if args.from_json:
        with open(args.from_json) as f:
            report = json.load(f)
        return _emit(report, args, lambda msg: print(msg, file=sys.stderr, flush=True), write_json=False)
    if not args.no_cache:
        cache.enable()
    names = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    if names:
        unknown = [n for n in names if n not in WORKLOADS]
        if unknown:
            print(f"jloss bench: unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}",
                  file=sys.stderr)
            return 2
    cfg = Config(quick=args.quick, repeats=args.repeats, warmup=0 if args.quick else 1,
                 use_torch=not args.no_torch, seed=args.seed, torch_threads=args.torch_threads,
                 blas_threads=args.blas_threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report = run_suite(cfg, names, log)
    code = _emit(report, args, log, write_json=True)
    log(f"done in {report['wall_s']:.1f} s")
    return code


def _emit(report: dict, args: argparse.Namespace, log: Callable[[str], None], *, write_json: bool) -> int:
    table = markdown(report)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    if args.json and write_json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=_json_default)
            f.write("\n")
        log(f"wrote {args.json}")
    if args.plot is not None:
        source = args.json or args.from_json
        prefix = args.plot or (os.path.splitext(source)[0] if source else "bench")
        try:
            for path in plot(report, prefix):
                log(f"wrote {path}")
        except ImportError as err:
            log(f"--plot needs matplotlib (pip install 'jloss[plot]'): {err}")
            return 1
    return 0


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)
