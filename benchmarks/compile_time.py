"""Compile time and second-run latency: jloss's programs against the hand-fused scan (issue 14).

    python benchmarks/compile_time.py            # writes results/compile-time-<platform>.{md,json}
    python benchmarks/compile_time.py --quick    # tiny sizes, stdout only (what the test runs)

Huber regression (``jloss/bench/problems.py``), N = 3,000, d = 12, float32. Four workloads
(``jloss.bench.compile_time.CompileWorkload``), each built by ``jloss.bench.compile_time.build``:

* ``jloss.minimize`` with ``optax.adam(0.05)``, 500 steps, tol 1e-5;
* ``jloss.minimize`` with ``optax.lbfgs()``, 200 steps, tol 1e-5;
* ``jloss.sweep`` with Adam over K = 8 Huber deltas (500 steps, tol 1e-5);
* ``jloss.sweep`` with ``optax.lbfgs()`` over K = 48 deltas (200 steps, tol 1e-5, history off:
  the sweep of ``benchmarks/lbfgs_sweep.py``);

each against the hand-fused scan of the same workload: ``jax.jit`` of a ``lax.scan`` over the
same number of steps of value-and-grad + update (``jloss.bench.problems.fused_scan``; for L-BFGS
``jloss.bench.compile_time.lbfgs_scan``, optax's documented step), ``jax.vmap``-ed over the
deltas for the sweeps.

1. Compile time of the first call, persistent cache off, with a fresh ``fun``, optimizer and
   ``jit`` every repetition (nothing cached in memory): the sum of JAX's monitoring events
   during the call (jaxpr trace + MLIR lowering + XLA backend compile, reported apart too), and
   the first call's wall time minus the steady-state call time. R repetitions, the 8 rows in a
   new random order every round, after one unrecorded warm-up round at the quick sizes (JAX's
   one-time costs); medians. Target: jloss / scan <= 1.2x, PASS or MISS per workload.
2. Repeated call: the trace and compile events of a second call with new arrays of the same
   shapes (must be 0 / 0).
3. Second-run latency of the command line, in subprocesses (``python -m jloss``) with
   ``JLOSS_CACHE_DIR`` a fresh temporary directory: ``jloss fit`` (with and without the progress
   bar) and ``jloss demo --no-plots --no-progress``, cold (empty cache), warm (same cache) and
   ``jloss --no-cache`` (reference), against ``python -c "import jloss.cli"`` (the floor); and one
   instrumented warm run per command that counts what it still traces, lowers and loads.

Ratios are the figures to quote (one run, side by side), not absolute times. Progress on stderr.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)  # the checkout's jloss, installed or not

import jax  # noqa: E402

from jloss.bench.compile_time import CompileWorkload, build, compile_events, inputs  # noqa: E402
from jloss.bench.env import environment, log, run_header, script_parser, write_results  # noqa: E402
from jloss.bench.harness import Config  # noqa: E402

FULL = {"n": 3_000, "d": 12, "adam_steps": 500, "lbfgs_steps": 200, "k_adam": 8, "k_lbfgs": 48, "repeats": 4,
        "steady_calls": 3, "cli_repeats": 3, "reference_repeats": 1}
QUICK = {"n": 200, "d": 4, "adam_steps": 20, "lbfgs_steps": 20, "k_adam": 2, "k_lbfgs": 4, "repeats": 1,
         "steady_calls": 1, "cli_repeats": 1, "reference_repeats": 0}
TARGET = 1.2
IMPLS = ("jloss", "scan")
STEADY_BUDGET_S = 1.0  # steady-state calls stop early once they took this long (the L-BFGS vmap scan runs seconds)

# A `python -m jloss` that reports the compile events of the whole run on stderr (one JSON line).
PROBE = ("import json, sys\n"
         "from jloss.bench.compile_time import compile_events\n"
         "with compile_events() as ev:\n"
         "    from jloss.cli import main\n"
         "    rc = main(sys.argv[1:])\n"
         "print('JLOSS_COMPILE_EVENTS ' + json.dumps(ev), file=sys.stderr)\n"
         "sys.exit(rc)\n")


def workloads(grid: dict) -> list[CompileWorkload]:
    return [
        CompileWorkload("minimize (Adam)", "adam", grid["adam_steps"]),
        CompileWorkload("minimize (L-BFGS)", "lbfgs", grid["lbfgs_steps"]),
        CompileWorkload(f"sweep (Adam, K={grid['k_adam']})", "adam", grid["adam_steps"], grid["k_adam"]),
        CompileWorkload(f"sweep (L-BFGS, K={grid['k_lbfgs']})", "lbfgs", grid["lbfgs_steps"], grid["k_lbfgs"],
                        history=False),
    ]


# ----------------------------------------------------------------------------------------------
# In process: the first call's compile, the repeated call
# ----------------------------------------------------------------------------------------------


def measure(w: CompileWorkload, impl: str, n: int, d: int, steady_calls: int) -> dict:
    """One repetition of one row: a fresh build, its first call (events and wall), for jloss a
    second call with new arrays (events: must be none), then steady-state calls."""
    first_args, new_args = inputs(w, n, d, 0), inputs(w, n, d, 1)
    call = build(w, impl, d)
    with compile_events() as first:
        t0 = time.perf_counter()
        jax.block_until_ready(call(*first_args))
        first_s = time.perf_counter() - t0
    repeat = {"traces": None, "compiles": None}
    if impl == "jloss":  # not the scan: a call of its L-BFGS vmap takes seconds, and jax.jit's cache is not in question
        with compile_events() as repeat:
            jax.block_until_ready(call(*new_args))
    steady: list[float] = []  # on the first call's arrays: the run time differs with the data (line searches)
    while not steady or (len(steady) < steady_calls and sum(steady) < STEADY_BUDGET_S):
        t0 = time.perf_counter()
        jax.block_until_ready(call(*first_args))
        steady.append(time.perf_counter() - t0)
    steady_s = statistics.median(steady)
    out = {k: first[k] for k in ("trace_s", "lower_s", "backend_s", "compile_s", "traces", "lowerings", "compiles",
                                 "programs", "program_backend_s")}
    out.update(first_s=first_s, steady_s=steady_s, steady_calls=len(steady), wall_compile_s=first_s - steady_s,
               repeat_traces=repeat["traces"], repeat_compiles=repeat["compiles"])
    if first["traces"] == 0:
        out["error"] = "the first call traced nothing: a program was cached in memory"
    return out


def _per_program(ms: list[dict]) -> list[float] | None:
    """The median backend seconds of each program of the first call, over the repetitions."""
    if any(m["programs"] != ms[0]["programs"] for m in ms):
        return None
    return [statistics.median(m["program_backend_s"][i] for m in ms) for i in range(len(ms[0]["programs"]))]


def in_process(grid: dict, warmup: dict | None, log) -> list[dict]:
    ws = workloads(grid)
    rows = [(w, impl) for w in ws for impl in IMPLS]
    if warmup is not None:  # JAX's one-time costs (first traces of jnp/optax functions), unrecorded
        log(f"warm-up round at N={warmup['n']}, d={warmup['d']}")
        for w in workloads(warmup):
            for impl in IMPLS:
                measure(w, impl, warmup["n"], warmup["d"], 1)
    reps: dict = {(w.name, impl): [] for w, impl in rows}
    order_rng = random.Random(0)
    for r in range(grid["repeats"]):
        order = rows[:]
        order_rng.shuffle(order)
        for w, impl in order:
            m = measure(w, impl, grid["n"], grid["d"], grid["steady_calls"])
            reps[(w.name, impl)].append(m)
            log(f"round {r + 1}/{grid['repeats']}: {w.name} {impl}: compile {m['compile_s']:.2f} s "
                f"(backend {m['backend_s']:.2f} s), first call {m['first_s']:.2f} s, "
                f"steady {m['steady_s'] * 1e3:.1f} ms")
    cells = []
    for w in ws:
        cell = {"workload": w.name, "describe": w.describe(), "optimizer": w.optimizer, "steps": w.steps,
                "members": w.members, "history": w.history, "tol": w.tol, "repeats": grid["repeats"]}
        for impl in IMPLS:
            ms = reps[(w.name, impl)]
            errors = [m["error"] for m in ms if "error" in m]
            med = {k: statistics.median(m[k] for m in ms)
                   for k in ("trace_s", "lower_s", "backend_s", "compile_s", "first_s", "steady_s", "wall_compile_s")}
            cell[impl] = {**med, "traces": max(m["traces"] for m in ms), "compiles": max(m["compiles"] for m in ms),
                          "programs": ms[0]["programs"], "program_backend_s": _per_program(ms),
                          "repeat_traces": None if impl == "scan" else max(m["repeat_traces"] for m in ms),
                          "repeat_compiles": None if impl == "scan" else max(m["repeat_compiles"] for m in ms),
                          "compile_s_all": [m["compile_s"] for m in ms], "errors": errors}
        j, s = cell["jloss"], cell["scan"]
        cell["ratio"] = j["compile_s"] / s["compile_s"]
        cell["wall_ratio"] = j["wall_compile_s"] / s["wall_compile_s"] if s["wall_compile_s"] > 0 else float("nan")
        cell["passed"] = cell["ratio"] <= TARGET
        cell["zero_recompiles"] = j["repeat_traces"] == 0 and j["repeat_compiles"] == 0
        cells.append(cell)
    return cells


# ----------------------------------------------------------------------------------------------
# Subprocesses: the command line's cold and warm runs
# ----------------------------------------------------------------------------------------------


def _env(cache_dir: str | None) -> dict:
    env = dict(os.environ)
    env.pop("JLOSS_NO_CACHE", None)
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if cache_dir is not None:
        env["JLOSS_CACHE_DIR"] = cache_dir
    return env


def _run(argv: list[str], cache_dir: str | None, cwd: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, *argv], cwd=cwd, env=_env(cache_dir), capture_output=True, text=True,
                         timeout=600)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {out.returncode}: {out.stderr[-500:]}")
    return wall, out.stderr


def cli_commands(quick: bool, csv: str) -> dict[str, list[str]]:
    fit = ["fit", "--csv", csv, "--target", "views_k", "--loss", "huber"]
    cmds = {"jloss fit --no-progress": fit + ["--no-progress"]}
    if not quick:
        cmds["jloss fit (progress bar on)"] = fit
        cmds["jloss demo --no-plots --no-progress"] = ["demo", "--no-plots", "--no-progress"]
    return cmds


def command_line(grid: dict, quick: bool, log) -> dict:
    from jloss.demo import make_videos

    tmp = tempfile.mkdtemp(prefix="jloss-compile-time-")
    try:
        csv = os.path.join(tmp, "videos.csv")
        make_videos(seed=0).to_csv(csv)
        cmds = cli_commands(quick, csv)
        floor_argv = ["-c", "import jloss.cli"]
        _run(floor_argv, None, tmp)  # the OS's file cache: the first import of jax reads it from disk
        runs: dict = {name: {"cold": [], "warm": [], "no_cache": [], "entries": []} for name in cmds}
        floor, last_dir = [], {}
        order_rng = random.Random(1)
        for r in range(grid["cli_repeats"]):
            floor.append(_run(floor_argv, None, tmp)[0])
            order = list(cmds)
            order_rng.shuffle(order)
            for name in order:
                d = os.path.join(tmp, f"cache-{len(os.listdir(tmp))}")
                cold = _run(["-m", "jloss", *cmds[name]], d, tmp)[0]
                runs[name]["entries"].append(len(os.listdir(d)) if os.path.isdir(d) else 0)
                warm = _run(["-m", "jloss", *cmds[name]], d, tmp)[0]
                runs[name]["cold"].append(cold)
                runs[name]["warm"].append(warm)
                last_dir[name] = d
                if r < grid["reference_repeats"]:
                    runs[name]["no_cache"].append(_run(["-m", "jloss", "--no-cache", *cmds[name]], None, tmp)[0])
                log(f"round {r + 1}/{grid['cli_repeats']}: {name}: cold {cold:.2f} s, warm {warm:.2f} s")
        rows = []
        for name, argv in cmds.items():
            # one more warm run, instrumented: what it still traces, lowers and loads from the cache
            _, err = _run(["-c", PROBE, *argv], last_dir[name], tmp)
            line = [x for x in err.splitlines() if x.startswith("JLOSS_COMPILE_EVENTS ")]
            events = json.loads(line[-1].split(" ", 1)[1]) if line else None
            if events is not None:
                events.pop("programs", None)
            rv = runs[name]
            cold, warm = statistics.median(rv["cold"]), statistics.median(rv["warm"])
            rows.append({"command": name, "argv": argv, "cold_s": cold, "warm_s": warm, "warm_over_cold": warm / cold,
                         "no_cache_s": statistics.median(rv["no_cache"]) if rv["no_cache"] else None,
                         "runs": len(rv["cold"]), "no_cache_runs": len(rv["no_cache"]),
                         "cache_entries": max(rv["entries"]), "warm_events": events, "all": rv})
        return {"floor_s": statistics.median(floor), "floor_runs": len(floor), "rows": rows}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------


def _s(x: float) -> str:
    return f"{x:.3f} s"


def markdown(cells: list[dict], cli: dict, grid: dict, quick: bool) -> str:
    warm = "no warm-up round (quick)" if quick else "after a warm-up round"
    lines = [f"## Compile time of the first call (persistent cache off; Huber, N={grid['n']:,}, d={grid['d']}, "
             f"float32; median of {grid['repeats']} fresh builds, {warm})", ""]
    head = ("| workload | jloss: trace + lower + backend = compile | "
            "hand-fused scan: trace + lower + backend = compile | "
            f"jloss / scan | ≤ {TARGET:g}x | first call − steady: jloss, scan (ratio) | programs (jloss, scan) | "
            "repeated call: traces / compiles |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for c in cells:
        j, s = c["jloss"], c["scan"]
        parts = lambda m: (f"{m['trace_s']:.3f} + {m['lower_s']:.3f} + {m['backend_s']:.3f} = "  # noqa: E731
                           f"{_s(m['compile_s'])}")
        lines.append(
            f"| {c['workload']} | {parts(j)} | {parts(s)} | {c['ratio']:.2f}x | {'PASS' if c['passed'] else 'MISS'} | "
            f"{_s(j['wall_compile_s'])}, {_s(s['wall_compile_s'])} ({c['wall_ratio']:.2f}x) | "
            f"{j['compiles']}, {s['compiles']} | {j['repeat_traces']} / {j['repeat_compiles']} |")
    passed = [c["workload"] for c in cells if c["passed"]]
    missed = [c["workload"] for c in cells if not c["passed"]]
    lines += ["", f"compile-time target (jloss ≤ {TARGET:g}x the hand-fused scan) met by {len(passed)} of "
              f"{len(cells)} workloads" + (f"; PASS: {', '.join(passed)}" if passed else "")
              + (f"; MISS: {', '.join(missed)}" if missed else "") + ".",
              "zero recompiles on a repeated call (new arrays, same shapes): "
              + ("yes, every jloss row 0 traces / 0 compiles" if all(c["zero_recompiles"] for c in cells) else "NO")
              + ".", ""]
    noisy = [f"{c['workload']} {impl} ({_s(c[impl]['steady_s'])} a call)" for c in cells for impl in IMPLS
             if c[impl]["steady_s"] > 0.25 * c[impl]["compile_s"]]
    if noisy:
        lines += ["first call − steady is only as good as the steady time is stable: unreliable where a call "
                  f"itself takes a large part of the compile time ({', '.join(noisy)}); the event sums are the "
                  "figures compared.", ""]
    for c in cells:
        j = c["jloss"]
        progs = j["programs"] if j["program_backend_s"] is None else \
            [f"{name} ({s:.3f} s)" for name, s in zip(j["programs"], j["program_backend_s"])]
        lines.append(f"- {c['workload']}: {c['describe']}; jloss compiles {', '.join(progs)} (backend, median).")
    lines += ["", "## Second-run latency of the command line (subprocesses, `JLOSS_CACHE_DIR` a fresh temporary "
              "directory)", ""]
    head = ("| command | cold (empty cache) | warm (same cache) | warm / cold | `--no-cache` | "
            "runs (cold, warm / no-cache) | cache entries written |")
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for r in cli["rows"]:
        nc = _s(r["no_cache_s"]) if r["no_cache_s"] is not None else "n/a"
        lines.append(f"| `{r['command']}` | {_s(r['cold_s'])} | {_s(r['warm_s'])} | {r['warm_over_cold']:.2f}x | "
                     f"{nc} | "
                     f"{r['runs']} / {r['no_cache_runs']} | {r['cache_entries']} |")
    lines.append(f"| `python -c \"import jloss.cli\"` (floor: interpreter + imports) | {_s(cli['floor_s'])} | | | | "
                 f"{cli['floor_runs']} | |")
    lines.append("")
    for r in cli["rows"]:
        e = r["warm_events"]
        if e is None:
            lines.append(f"- warm `{r['command']}`: no events reported")
            continue
        lines.append(
            f"- warm `{r['command']}` still traces {e['traces']} programs ({e['trace_s']:.3f} s) and lowers "
            f"{e['lowerings']} ({e['lower_s']:.3f} s); of {e['compiles']} backend compiles {e['cache_hits']} were "
            f"loaded from the cache, {e['cache_misses']} missed it and "
            f"{e['compiles'] - e['cache_hits'] - e['cache_misses']} "
            f"compiled without a lookup (host callbacks) ({e['backend_s']:.3f} s in all): "
            f"{e['compile_s']:.3f} s of compile work left, of {_s(r['warm_s'])} (floor {_s(cli['floor_s'])}).")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = script_parser(__doc__)
    p.add_argument("--repeats", type=int, help="fresh builds per row (default: 4; quick 1)")
    p.add_argument("--cli-repeats", type=int, help="cold and warm runs per command (default: 3; quick 1)")
    p.add_argument("--no-cli", action="store_true", help="leave out the command-line part")
    args = p.parse_args(argv)
    grid = dict(QUICK if args.quick else FULL)
    if args.repeats:
        grid["repeats"] = args.repeats
    if args.cli_repeats:
        grid["cli_repeats"] = args.cli_repeats
    cfg = Config(quick=args.quick)

    load0, t_start = os.getloadavg(), time.perf_counter()
    cells = in_process(grid, None if args.quick else QUICK, log)
    cli = command_line(grid, args.quick, log) if not args.no_cli else {"floor_s": float("nan"), "floor_runs": 0,
                                                                        "rows": []}
    env = environment(cfg)
    load1 = os.getloadavg()
    wall = time.perf_counter() - t_start
    text = run_header(env, load0, load1, wall) + markdown(cells, cli, grid, args.quick)
    print(text)
    if not args.quick:
        stem = os.path.join(HERE, "results", f"compile-time-{env['platform']}")
        write_results(stem, text, {"environment": env, "wall_s": wall, "grid": grid, "target": TARGET,
                                   "cells": cells, "command_line": cli})
        log(f"wrote {stem}.md, .json")
    # exit status: the measurement is complete (no row errored, no recompile); misses are results
    ok = all(not c[i]["errors"] for c in cells for i in IMPLS) and all(c["zero_recompiles"] for c in cells)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
