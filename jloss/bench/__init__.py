"""The jloss benchmark suite: ``jloss bench``, ``python -m jloss.benchmarks`` or :func:`main`.

One module per part: :mod:`~jloss.bench.harness` (the data model and the timing),
:mod:`~jloss.bench.env` (the recorded environment), :mod:`~jloss.bench.problems` (reusable
builders), one module per workload family (:mod:`~jloss.bench.huber`, :mod:`~jloss.bench.sweeps`,
:mod:`~jloss.bench.cross_entropy`, :mod:`~jloss.bench.minibatch`, :mod:`~jloss.bench.loss_kernel`,
:mod:`~jloss.bench.sharded`, :mod:`~jloss.bench.hypergradient`), :mod:`~jloss.bench.report` (the
suite, the table, the plots) and :mod:`~jloss.bench.cli` (the command line).

Every workload is timed next to what a user would write instead (a ``@jax.jit`` step in a Python
loop, a hand-fused ``lax.scan``, PyTorch, scipy, scikit-learn) and next to the hardware floor
measured in the same run (the matrix-vector products alone; a streaming elementwise pass over the
same bytes). How the numbers are taken:

* every variant is called once untimed (trace and compile: the *first call* time; ``compile_s`` is
  that minus the median run) and warmed up once more, then timed ``repeats`` (>= 5) times, or
  more for a cheap row (up to ``Config.max_repeats``, filling its share of the case's budget);
* the timed calls are interleaved in one process, in a new (seeded) random order every round
  among the rows still repeating, with the garbage collector paused, and each ends with
  ``jax.block_until_ready`` (PyTorch and numpy results are read back to the host);
* the median and the spread (min, max) are reported; a row's ratio is its median over the median
  of the case's reference row (ratios in one run are the figures to quote on a shared machine);
* every solver returns its final loss, compared with the reference row's: a row that differs
  beyond the case's tolerance is flagged (``DIFF``) and cannot pass a target;
* the targets of the issue are evaluated on the measured ratios and printed as PASS/MISS.

Workloads are functions registered with :func:`workload`; each returns a list of :class:`Case`
(a set of :class:`Variant` rows timed together, their reference row and their :class:`Target`s).
Adding one is a local change (a module of its own, imported below)::

    @workload("my_workload", "what it measures")
    def my_workload(cfg: Config) -> list[Case]:
        n = cfg.size(full=100_000, quick=1_000)
        f = jax.jit(...)
        return [Case("my_workload", "title", {"n": n}, reference="floor",
                     variants=[Variant("jloss", lambda: f(x), loss=float, kind="jloss"),
                               Variant("floor", lambda: g(x), kind="floor")])]

The helpers :func:`fused_scan`, :func:`python_loop`, :func:`matvec_floor` and the problem builders
(:func:`huber_problem`) are there to be reused by such workloads.
"""

from __future__ import annotations

# The workload modules register their workloads on import: this order is the report's (keep it).
from jloss.bench import huber, sweeps, cross_entropy, minibatch, loss_kernel, sharded, hypergradient  # noqa: F401, I001
from jloss.bench.cli import main
from jloss.bench.env import environment
from jloss.bench.harness import SCHEMA, WORKLOADS, Case, Config, Target, Variant, Workload, run_case, workload
from jloss.bench.problems import (
    classification_problem,
    fused_scan,
    huber_objective,
    huber_problem,
    linear_params,
    matvec_floor,
    python_loop,
)
from jloss.bench.report import markdown, plot, run_suite

__all__ = [
    "Case",
    "Config",
    "Target",
    "Variant",
    "WORKLOADS",
    "workload",
    "run_suite",
    "run_case",
    "markdown",
    "plot",
    "environment",
    "fused_scan",
    "python_loop",
    "matvec_floor",
    "huber_problem",
    "main",
]
