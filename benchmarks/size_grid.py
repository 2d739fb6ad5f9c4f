"""Size grid: jloss.minimize against the Python-loop idiom and the hand-fused scan (issue 14).

    python benchmarks/size_grid.py            # full grid, writes results/size-grid-<platform>.{md,json,png}
    python benchmarks/size_grid.py --quick    # tiny sizes, stdout only (what the test runs)

Huber regression (``jloss/bench/problems.py``: ``huber_problem``, ``huber_objective``) over
N in {1,000, 10,000, 100,000} x d in {8, 64, 256} x {Adam(1e-2), SGD(1e-2)}. In every cell three
rows run exactly the same steps (``tol=0``; 300 steps, 100 where N*d > 10^6 so that the largest
cells fit the run's time) and are timed by ``jloss.bench.harness.run_case``: compile apart,
interleaved in a new random order every round, BLAS limited to one thread:

* ``jloss.minimize`` (defaults: the loss of every step kept);
* ``lax.scan (hand-fused)``: ``fused_scan``, value-and-grad per step, losses stacked;
* ``Python loop of @jax.jit step``: ``python_loop``, the idiom.

Their final losses must agree (relative 1e-4). Reported per cell: time per step of each, the
idiom / minimize ratio (target >= 5x) and minimize / scan (target <= 1.0x), pass or miss; then
the crossover points along N, d and N*d, and the idiom's per-step dispatch overhead, measured on
a tiny problem (N=64, d=2): the idiom's step costs the same XLA work as minimize's plus that
overhead, so its ratio is about (compute + overhead) / compute, and >= 5x needs a step's compute
under a quarter of the overhead. Ratios are the figures to quote (one run, side by side), not
absolute times. Progress on stderr.
"""

from __future__ import annotations

import math
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout's jloss, installed or not

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402

from jloss.bench.env import environment, log, run_header, script_parser, write_results  # noqa: E402
from jloss.bench.harness import Case, Config, Target, Variant, run_case  # noqa: E402
from jloss.bench.problems import (  # noqa: E402
    fused_scan, huber_objective, huber_problem, jloss_minimize, linear_params, python_loop, result_loss,
)

FULL = {"n": (1_000, 10_000, 100_000), "d": (8, 64, 256), "steps": 300, "large_steps": 100}
QUICK = {"n": (256, 2_048), "d": (4, 16), "steps": 20, "large_steps": 20}
LARGE = 1_000_000  # N*d above which a cell runs ``large_steps``
OVERHEAD_SIZE = (64, 2)  # the tiny problem on which the idiom's dispatch overhead is measured
OPTIMIZERS = {"adam": lambda: optax.adam(1e-2), "sgd": lambda: optax.sgd(1e-2)}
IDIOM_TARGET, SCAN_TARGET = 5.0, 1.0
RTOL = 1e-4
MIN, SCAN, LOOP = "jloss.minimize", "lax.scan (hand-fused)", "Python loop of @jax.jit step"


def cell_case(n: int, d: int, opt_name: str, steps: int) -> Case:
    """The three rows on one problem, with the two targets."""
    X_np, y_np = huber_problem(n, d)
    X, y = jnp.asarray(X_np), jnp.asarray(y_np)
    params0 = linear_params(d)

    def fun(params, X, y):
        return huber_objective(params, 1.0, X, y)

    opt = OPTIMIZERS[opt_name]()
    minimize = jloss_minimize()
    scan = jax.jit(fused_scan(fun, opt, steps))
    loop = python_loop(fun, opt, steps)
    case = Case("size_grid", f"Huber N={n:,}, d={d}, {opt_name}(1e-2), {steps} steps",
                {"n": n, "d": d, "optimizer": f"{opt_name}(1e-2)", "steps": steps},
                variants=[], reference=SCAN, rtol=RTOL, warmup=0 if n * d > LARGE else None)
    case.variants += [
        Variant(MIN, lambda: minimize(fun, params0, opt, args=(X, y), max_steps=steps, tol=0.0), result_loss, "jloss"),
        Variant(SCAN, lambda: scan(params0, X, y), lambda o: o[1], "peer"),
        Variant(LOOP, lambda: loop(params0, X, y), lambda o: o[1], "peer"),
    ]
    case.targets += [Target(f"minimize >= {IDIOM_TARGET:g}x faster than the idiom", MIN, LOOP, 1 / IDIOM_TARGET),
                     Target(f"minimize <= {SCAN_TARGET:g}x the scan", MIN, SCAN, SCAN_TARGET)]
    return case


def summarize(res: dict) -> dict:
    """One cell's figures from ``run_case``'s result."""
    p = res["params"]
    rows = {r["name"]: r for r in res["rows"]}
    errors = [f"{r['name']}: {r['error']}" for r in res["rows"] if r.get("error")]
    if errors:
        return {**p, "error": "; ".join(errors)}
    per_step = {name: rows[name]["median_s"] / p["steps"] for name in (MIN, SCAN, LOOP)}
    idiom, scan = (t for t in res["targets"])
    losses = [rows[name]["final_loss"] for name in (MIN, SCAN, LOOP)]
    return {
        **p, "nd": p["n"] * p["d"],
        "minimize_step_s": per_step[MIN], "scan_step_s": per_step[SCAN], "idiom_step_s": per_step[LOOP],
        "repeats": {name: len(rows[name]["times_s"]) for name in (MIN, SCAN, LOOP)},
        "idiom_ratio": 1 / idiom["ratio"], "scan_ratio": scan["ratio"],
        "idiom_pass": idiom["passed"], "scan_pass": scan["passed"],
        "final_losses": losses,
        "loss_rel_diff": max(rows[name]["loss_rel_diff"] or 0.0 for name in (MIN, LOOP)),
        "loss_ok": not any(rows[name]["loss_flag"] for name in (MIN, SCAN, LOOP)),
    }


def dispatch_overhead(cfg: Config, steps: int, log) -> dict:
    """Per-step time of the idiom minus the scan's on a tiny problem: what a Python-dispatched step adds."""
    n, d = OVERHEAD_SIZE
    log(f"dispatch overhead: N={n}, d={d}, adam, {steps} steps")
    s = summarize(run_case(cell_case(n, d, "adam", steps), cfg))
    s["overhead_step_s"] = s["idiom_step_s"] - s["scan_step_s"]
    return s


def _between(points: list[tuple[float, float]], threshold: float, below: bool) -> str:
    """Where the ratio along an axis first crosses ``threshold`` (log-log interpolation)."""
    def bad(r):
        return r < threshold if below else r > threshold

    if not points:
        return "n/a"
    if all(bad(r) for _, r in points):
        return f"below at every size ({points[0][1]:.2f}x at {points[0][0]:,})" if below else \
            f"above at every size ({points[0][1]:.2f}x at {points[0][0]:,})"
    for (x0, r0), (x1, r1) in zip(points, points[1:]):
        if not bad(r0) and bad(r1):
            t = math.log(threshold / r0) / math.log(r1 / r0)
            at = math.exp(math.log(x0) + t * (math.log(x1) - math.log(x0)))
            return f"between {x0:,} ({r0:.2f}x) and {x1:,} ({r1:.2f}x), about {at:,.0f}"
    return "never crossed"


def crossovers(cells: list[dict]) -> list[dict]:
    """Along N (each d), along d (each N) and along N*d (all cells of an optimizer, sorted)."""
    ok = [c for c in cells if "error" not in c]
    out = []
    for opt in OPTIMIZERS:
        mine = [c for c in ok if c["optimizer"].startswith(opt)]
        lines = []
        for d in sorted({c["d"] for c in mine}):
            lines.append(("N", f"d={d}", sorted((c["n"], c) for c in mine if c["d"] == d)))
        for n in sorted({c["n"] for c in mine}):
            lines.append(("d", f"N={n:,}", sorted((c["d"], c) for c in mine if c["n"] == n)))
        lines.append(("N*d", "all", sorted(((c["nd"], c) for c in mine), key=lambda t: t[0])))
        for axis, fixed, pts in lines:
            out.append({
                "optimizer": opt, "axis": axis, "fixed": fixed,
                "idiom_below_5x": _between([(x, c["idiom_ratio"]) for x, c in pts], IDIOM_TARGET, below=True),
                "scan_above_1x": _between([(x, c["scan_ratio"]) for x, c in pts], SCAN_TARGET, below=False),
            })
    return out


def _us(s: float) -> str:
    return f"{s * 1e6:,.0f} µs" if s < 1e-2 else f"{s * 1e3:,.1f} ms"


def markdown(cells: list[dict], cross: list[dict], over: dict) -> str:
    o = over["overhead_step_s"]
    head = ("| optimizer | N | d | N*d | steps | minimize / step | scan / step | idiom / step | "
            "idiom / minimize | ≥ 5x | minimize / scan | ≤ 1.0x | model (c + o) / c | losses agree |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in cells:
        if "error" in c:
            lines.append(f"| {c['optimizer']} | {c['n']:,} | {c['d']} | | {c['steps']} | error: {c['error']} |")
            continue
        model = (c["scan_step_s"] + o) / c["minimize_step_s"]
        lines.append(
            f"| {c['optimizer']} | {c['n']:,} | {c['d']} | {c['nd']:,} | {c['steps']} | {_us(c['minimize_step_s'])} | "
            f"{_us(c['scan_step_s'])} | {_us(c['idiom_step_s'])} | {c['idiom_ratio']:.2f}x | "
            f"{'pass' if c['idiom_pass'] else '**miss**'} | {c['scan_ratio']:.2f}x | "
            f"{'pass' if c['scan_pass'] else '**miss**'} | {model:.2f}x | "
            f"{'yes' if c['loss_ok'] else 'NO'} ({c['loss_rel_diff']:.0e}) |")
    ok = [c for c in cells if "error" not in c]
    n_idiom, n_scan = sum(c["idiom_pass"] for c in ok), sum(c["scan_pass"] for c in ok)
    lines += ["", f"idiom target (≥ 5x) met in {n_idiom} of {len(cells)} cells; scan target (≤ 1.0x) in "
              f"{n_scan} of {len(cells)}.", "",
              f"Dispatch overhead of the idiom, measured on N={over['n']}, d={over['d']} (Adam, "
              f"{over['steps']} steps): idiom {_us(over['idiom_step_s'])} per step, scan "
              f"{_us(over['scan_step_s'])}, minimize {_us(over['minimize_step_s'])}; overhead o = "
              f"{_us(o)} per step. ≥ 5x needs a step's compute c ≤ o / 4 = {_us(o / 4)} (with minimize at "
              f"the scan's speed); the model column is (scan step + o) / minimize step.", "",
              "| optimizer | axis | fixed | idiom ratio drops below 5x | minimize / scan rises above 1.0x |",
              "|---|---|---|---|---|"]
    lines += [f"| {x['optimizer']} | {x['axis']} | {x['fixed']} | {x['idiom_below_5x']} | {x['scan_above_1x']} |"
              for x in cross]
    return "\n".join(lines)


def plot(cells: list[dict], over: dict, path: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    markers = {"adam": "o", "sgd": "s"}
    colors = dict(zip(FULL["d"] + QUICK["d"], ("C0", "C1", "C2", "C0", "C1")))
    ok = [c for c in cells if "error" not in c]
    for opt, m in markers.items():
        for d in sorted({c["d"] for c in ok}):
            pts = sorted((c["nd"], c) for c in ok if c["d"] == d and c["optimizer"].startswith(opt))
            if not pts:
                continue
            xs = [x for x, _ in pts]
            kw = {"marker": m, "color": colors.get(d), "linestyle": "-" if opt == "adam" else "--",
                  "label": f"{opt}, d={d}"}
            left.plot(xs, [c["idiom_ratio"] for _, c in pts], **kw)
            right.plot(xs, [c["scan_ratio"] for _, c in pts], **kw)
    xs = sorted(c["nd"] for c in ok)
    if xs:
        o = over["overhead_step_s"]
        # the model with minimize at the scan's speed and a step's compute taken from the Adam cells
        adam = sorted((c["nd"], c["scan_step_s"]) for c in ok if c["optimizer"].startswith("adam"))
        left.plot([x for x, _ in adam], [(s + o) / s for _, s in adam], ":", color="grey",
                  label="model (c + o) / c, Adam")
    left.axhline(IDIOM_TARGET, color="red", lw=1)
    right.axhline(SCAN_TARGET, color="red", lw=1)
    left.set(xscale="log", yscale="log", xlabel="N * d", ylabel="idiom time / minimize time",
             title="vs the Python-loop idiom (target ≥ 5x)")
    right.set(xscale="log", xlabel="N * d", ylabel="minimize time / scan time",
              title="vs the hand-fused scan (target ≤ 1.0x)")
    left.legend(fontsize=7)
    right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> int:
    p = script_parser(__doc__, case_budget=6.0, per="cell")
    args = p.parse_args(argv)
    grid = QUICK if args.quick else FULL
    cfg = Config(quick=args.quick, repeats=3 if args.quick else 5, case_budget_s=args.case_budget,
                 max_repeats=25, target_repeats=9)

    load0, t_start = os.getloadavg(), time.perf_counter()
    over = dispatch_overhead(cfg, grid["steps"], log)
    cells, raw = [], []
    for opt in OPTIMIZERS:
        for n in grid["n"]:
            for d in grid["d"]:
                steps = grid["large_steps"] if n * d > LARGE else grid["steps"]
                log(f"{opt} N={n:,} d={d} ({steps} steps)")
                res = run_case(cell_case(n, d, opt, steps), cfg)
                raw.append(res)
                cells.append(summarize(res))
    cross = crossovers(cells)
    env = environment(cfg)
    load1 = os.getloadavg()
    wall = time.perf_counter() - t_start
    text = run_header(env, load0, load1, wall) + markdown(cells, cross, over)
    print(text)
    if not args.quick:
        stem = os.path.join(HERE, "results", f"size-grid-{env['platform']}")
        write_results(stem, text, {"environment": env, "wall_s": wall, "overhead": over, "cells": cells,
                                   "crossovers": cross, "raw": raw})
        plot(cells, over, stem + ".png")
        log(f"wrote {stem}.md, .json, .png")
    # exit status: the comparison is honest (every cell ran, the losses agree); misses are results
    return 0 if all("error" not in c and c["loss_ok"] for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
