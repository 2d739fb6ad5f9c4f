"""L-BFGS sweeps: jloss.sweep with optax.lbfgs against a loop of jloss.minimize calls (issue 14).

    python benchmarks/lbfgs_sweep.py            # K = 8, 48, 256; writes results/lbfgs-sweep-<platform>.{md,json}
    python benchmarks/lbfgs_sweep.py --quick    # tiny sizes, stdout only (what the test runs)

Huber regression (``jloss/bench/problems.py``), N = 3,000, d = 12, K Huber deltas from 0.1 to 10,
``optax.lbfgs()`` to a gradient norm of 1e-5 (at most 200 steps), per-member stopping. Each K is
one case of ``jloss.bench.sweeps.lbfgs_sweep_case`` timed by ``jloss.bench.harness.run_case``
(compile apart, rows interleaved in a new random order every round):

* ``jloss.sweep``: one vmapped program (the optimizer's update batched by
  ``jloss._shared.branch_skipping``, see its docstring for the measured cause it fixes);
* ``loop of jloss.minimize``: K calls of one compiled program (the reference);
* ``vmap of optax's L-BFGS loop``: ``jax.vmap`` of the ``while_loop`` in optax's L-BFGS docs, what
  a user would batch without jloss (JAX's own batching of the line search's conds).

Target: the sweep at most 0.5x the loop at every K. The final losses must agree (relative 1e-4)
and every member must converge (stop on tol, not on max_steps), else the case is flagged.
Ratios are the figures to quote (one run, side by side), not absolute times. Progress on stderr.
"""

from __future__ import annotations

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout's jloss, installed or not

from jloss.bench.env import environment, log, run_header, script_parser, write_results  # noqa: E402
from jloss.bench.harness import Config, run_case  # noqa: E402
from jloss.bench.sweeps import LBFGS_SWEEP_TARGET, lbfgs_sweep_case  # noqa: E402

FULL = {"k": (8, 48, 256), "n": 3_000, "d": 12}
QUICK = {"k": (2, 4), "n": 200, "d": 4}
SWEEP, LOOP, PEER = "jloss.sweep", "loop of jloss.minimize", "vmap of optax's L-BFGS loop"


def summarize(res: dict) -> dict:
    p = res["params"]
    rows = {r["name"]: r for r in res["rows"]}
    errors = [f"{r['name']}: {r['error']}" for r in res["rows"] if r.get("error")]
    if errors:
        return {**p, "error": "; ".join(errors)}
    (target,) = res["targets"]
    return {
        **p,
        "sweep_s": rows[SWEEP]["median_s"], "loop_s": rows[LOOP]["median_s"], "peer_s": rows[PEER]["median_s"],
        "sweep_compile_s": max(p["sweep_first_call_s"] - rows[SWEEP]["median_s"], 0.0), "loop_compile_s": rows[LOOP]["compile_s"],
        "peer_compile_s": rows[PEER]["compile_s"],
        "repeats": {name: len(rows[name]["times_s"]) for name in (SWEEP, LOOP, PEER)},
        "ratio": target["ratio"], "peer_ratio": rows[PEER]["median_s"] / rows[LOOP]["median_s"],
        "passed": target["passed"],
        "loss_rel_diff": max(rows[name]["loss_rel_diff"] or 0.0 for name in (SWEEP, PEER)),
        "loss_ok": not any(rows[name]["loss_flag"] for name in (SWEEP, LOOP, PEER)),
        "all_converged": p["converged"] == p["members"],
    }


def _ms(s: float) -> str:
    return f"{s * 1e3:,.2f} ms"


def markdown(cells: list[dict]) -> str:
    head = (f"| K | member steps | converged | sweep | loop of minimize | vmap of optax loop | sweep / loop | "
            f"≤ {LBFGS_SWEEP_TARGET:g}x | optax vmap / loop | compile: sweep, loop, optax vmap | losses agree |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for c in cells:
        if "error" in c:
            lines.append(f"| {c['members']} | | | error: {c['error']} |")
            continue
        lines.append(
            f"| {c['members']} | {c['min_steps']}-{c['max_member_steps']} | {c['converged']}/{c['members']} | "
            f"{_ms(c['sweep_s'])} | {_ms(c['loop_s'])} | {_ms(c['peer_s'])} | {c['ratio']:.2f}x | "
            f"{'pass' if c['passed'] else '**miss**'} | {c['peer_ratio']:.2f}x | "
            f"{c['sweep_compile_s']:.1f} s, {c['loop_compile_s']:.1f} s, {c['peer_compile_s']:.1f} s | "
            f"{'yes' if c['loss_ok'] else 'NO'} ({c['loss_rel_diff']:.0e}) |")
    ok = [c for c in cells if "error" not in c]
    lines += ["", f"target (sweep ≤ {LBFGS_SWEEP_TARGET:g}x the loop) met at {sum(c['passed'] for c in ok)} of "
              f"{len(cells)} K; every member converged: {'yes' if all(c['all_converged'] for c in ok) else 'NO'}."]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = script_parser(__doc__, case_budget=8.0, per="K")
    args = p.parse_args(argv)
    grid = QUICK if args.quick else FULL
    cfg = Config(quick=args.quick, repeats=3 if args.quick else 7, case_budget_s=args.case_budget,
                 max_repeats=41, target_repeats=11)

    load0, t_start = os.getloadavg(), time.perf_counter()
    cells, raw = [], []
    for k in grid["k"]:
        log(f"K={k} (N={grid['n']:,}, d={grid['d']})")
        res = run_case(lbfgs_sweep_case(cfg, k, grid["n"], grid["d"]), cfg, log)
        raw.append(res)
        cells.append(summarize(res))
    env = environment(cfg)
    load1 = os.getloadavg()
    wall = time.perf_counter() - t_start
    text = run_header(env, load0, load1, wall) + markdown(cells)
    print(text)
    if not args.quick:
        stem = os.path.join(HERE, "results", f"lbfgs-sweep-{env['platform']}")
        write_results(stem, text, {"environment": env, "wall_s": wall, "cells": cells, "raw": raw})
        log(f"wrote {stem}.md, .json")
    # exit status: the comparison is honest (every K ran, the losses agree, every member converged)
    return 0 if all("error" not in c and c["loss_ok"] and c["all_converged"] for c in cells) else 1


if __name__ == "__main__":
    sys.exit(main())
