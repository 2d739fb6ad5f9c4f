"""The loops of a solve, and the compiled solves of ``minimize`` and ``sweep``.

:func:`solve` is ``minimize``'s whole solve as one traceable function
``(fun, optimizer, options) x (params0, args, opt_state0, tol, key, offset) -> Result``:
``fun``/``optimizer``/``options`` are static (Python objects), the rest are arrays; the data in
``args`` is loop-invariant (read by the loop body, never carried), so a ``jax.custom_jvp`` around
the solve (:mod:`jloss.differentiation`) can treat ``args`` as the differentiable inputs.
:func:`solve_sweep` is ``sweep``'s: the same steps vmapped over the members inside one loop.
:data:`solve_jit` and :data:`sweep_jit` are them under ``jax.jit`` with the derivatives that
``options.diff`` selects.

The loops, fastest first (see :func:`solve`):

* :func:`run`: the full-batch loop of unguarded steps; for a small state (params, optimizer
  state and gradient up to :data:`PAIR_MAX_BYTES` together) and an optimizer without a line
  search it takes two steps per iteration (an odd count too: no loop of single steps
  follows), with the same result bitwise: on XLA CPU a small problem's step is mostly
  per-iteration and per-thunk overhead, and pairs run it about 5-10% faster;
* :func:`run_epochs`: the minibatch loop, nested (epochs outside, steps inside);
* :func:`loop`: a plain ``lax.while_loop``, or what ``options.diff`` runs instead (a
  ``lax.scan`` of ``max_steps`` masked steps for ``diff="unrolled"``);
* :func:`loop_with_bar`: any of these in chunks between progress callbacks.

Only a run that failed is replayed, up to its last good step, through the same loop
(:func:`with_replay`).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

from jloss import differentiation
from jloss._options import Options, member_optimizer
from jloss._progress import ProgressBar, alive, progress_every
from jloss._result import RUNNING, Result, Status
from jloss._solver import Carry, Solver
from jloss._tree import select, tree_bytes

__all__ = [
    "PAIR_MAX_BYTES",
    "loop",
    "loop_with_bar",
    "pairs",
    "run",
    "run_epochs",
    "solve",
    "solve_jit",
    "solve_sweep",
    "sweep_jit",
    "with_replay",
]

# The full-batch loop takes two steps per iteration while params, optimizer state and gradient
# take at most this many bytes (it keeps a second copy of them): see run.
PAIR_MAX_BYTES = 1 << 20


def _running(c: Carry) -> jax.Array:
    return c.status == RUNNING


def loop(options: Options, cond: Callable, body: Callable, carry: Any) -> Any:
    """The solve's loop: a ``lax.while_loop``, or what ``options.diff`` runs instead (a
    ``lax.scan`` of ``max_steps`` steps for ``diff="unrolled"``)."""
    if options.diff is None:
        return lax.while_loop(cond, body, carry)
    return options.diff.loop(cond, body, carry, options.max_steps)


def loop_with_bar(
    options: Options,
    running: Callable,
    count: Callable,
    body: Callable,
    carry: Any,
    report: Callable,
    chunk_run: Callable | None = None,
    first: Any = True,
) -> Any:
    """:func:`loop` with progress callbacks (``minimize``'s and ``sweep``'s bar).

    ``running(carry)`` is the loop's condition, ``count(carry)`` its (unbatched) step count and
    ``report(carry, start)`` the callback, which returns the count at which to call back next.
    The steps between two callbacks run in an inner loop (the loop without a bar plus one
    comparison in its condition) and the callback in the outer one. A loop of ``max_steps``
    steps (``diff="unrolled"``'s scan) cannot nest, so there a ``lax.cond`` guards a callback
    per step. ``chunk_run(carry, limit)``, if given, runs a chunk instead of the plain loop of
    ``body`` (minimize's :func:`run`, two steps per iteration). ``first`` (a bool, traced or
    not) is the first callback's ``start`` flag: False for :func:`with_replay`'s second trip,
    which goes on with the bar the first one opened.
    """
    state = (carry, report(carry, first))
    if options.runs_every_step:

        def guarded(state):
            c, next_report = state
            c = body(c)
            next_report = lax.cond(
                (count(c) >= next_report) | ~running(c), lambda: report(c, False), lambda: next_report
            )
            return c, next_report

        return loop(options, lambda s: running(s[0]) & alive(s[1]), guarded, state)[0]

    def chunk(state):
        c, next_report = state
        if chunk_run is not None:
            c = chunk_run(c, next_report)
        else:
            c = loop(options, lambda ci: running(ci) & (count(ci) < next_report), body, c)
        return c, report(c, False)

    return lax.while_loop(lambda s: running(s[0]) & alive(s[1]), chunk, state)[0]


def pairs(solver: Solver, c: Carry) -> bool:
    """Whether :func:`run` takes two steps per loop iteration: in full-batch mode, when the
    params, optimizer state and gradient together take at most :data:`PAIR_MAX_BYTES` (the
    paired loop keeps a second copy of them), and not for a line search (an optimizer whose
    state stores the value and gradient it found: optax.lbfgs). The pair puts two copies of the
    step into the program; a line search's step holds a loop of its own and compiles slowly, so
    there the second copy cost more than it saved (N=3,000, d=12: compile 3.1 s -> 1.9 s without
    it, a run of 100 steps 11.5 -> 13.6 ms; 2-core CPU, jax 0.10.2, 2026-12-07)."""
    if solver.minibatch or solver.options.max_steps < 2 or solver.reuses_state(c.opt_state):
        return False
    return tree_bytes((c.params, c.opt_state, c.grad)) <= PAIR_MAX_BYTES


def run(solver: Solver, c: Carry, limit: Any = None) -> Carry:
    """Unguarded steps while ``c`` is running (and ``c.step < limit``): the full-batch loop.

    When :func:`pairs` allows, one loop iteration takes two steps. On XLA CPU each iteration
    of a while loop costs a few microseconds besides its thunks, and XLA shares work between
    the two steps (the step counter, the bias corrections), so a small problem runs about 5-10%
    faster. The second step of a pair runs even when the first one stopped the run
    (converged, non-finite, ``max_steps``) or reached ``limit``; the loop then keeps the first
    step's state, which it carries alongside, and puts back the history entry the second step
    overwrote: the result is the one-step loop's, bitwise. So an odd count needs no loop of
    single steps after the pairs (which put a third copy of the step into the program and
    compiled about 20% longer).
    """
    options = solver.options
    n = options.max_steps
    end = n if limit is None else jnp.minimum(limit, n)
    if not pairs(solver, c):
        return loop(options, lambda c: _running(c) & (c.step < end), solver.step, c)

    def two_steps(state):
        c0 = state[0]
        c1 = solver.step(c0)
        i = jnp.minimum(c1.step, n - 1)  # where the second step writes its history entry
        saved = None if c1.history is None else c1.history[i]
        c2 = solver.step(c1)
        first_stopped = ~_running(c1) | (c1.step >= end)
        c2 = c2._replace(status=jnp.where(first_stopped, c1.status, c2.status))
        return c2, c1._replace(history=None), first_stopped, saved

    saved0 = None if c.history is None else c.history[0]
    state = (c, c._replace(history=None), jnp.zeros((), bool), saved0)
    c2, first, first_stopped, saved = loop(
        options, lambda s: _running(s[0]) & (s[0].step < end), two_steps, state
    )
    take = lambda a, b: select(first_stopped, a, b)  # noqa: E731
    history = c2.history
    if history is not None:
        i = jnp.minimum(first.step, n - 1)
        entry = jnp.where(first_stopped, saved, history[i]).astype(history.dtype)
        history = lax.dynamic_update_index_in_dim(history, entry, i, 0)
    return c2._replace(
        params=take(first.params, c2.params),
        opt_state=take(first.opt_state, c2.opt_state),
        value=take(first.value, c2.value),
        grad=take(first.grad, c2.grad),
        step=jnp.where(first_stopped, first.step, c2.step),
        history=history,
    )


def run_epochs(solver: Solver, c: Carry, limit: Any = None) -> Carry:
    """The unguarded minibatch loop, nested: epochs outside, steps inside.

    The inner loop closes over the epoch's permutation instead of carrying it, and only the
    epoch's last step (whose evaluation uses the next epoch's first batch) draws a new one,
    once per epoch; the carry's ``perm`` is the current epoch's between epochs. It also stops at
    ``limit`` steps, if given (still running: :func:`with_replay`'s second trip).
    """
    schedule = solver.schedule
    running = _running if limit is None else (lambda ci: _running(ci) & (ci.step < limit))

    def in_epoch(ci):  # the next step's batch is still in this epoch
        return running(ci) & ((solver.offset + ci.step + 1) % schedule.n_batches != 0)

    def epoch(co):
        perm = co.perm
        inner = lax.while_loop(in_epoch, lambda ci: solver.step(ci, perm=perm), co._replace(perm=None))

        def boundary(ci):
            t1 = solver.offset + ci.step + 1
            next_perm = lax.cond(solver.more_steps(ci), lambda: schedule.epoch_perm(t1), lambda: perm)
            out = solver.step(ci, perm=perm, next_perm=next_perm)
            return out._replace(perm=next_perm)

        return lax.cond(running(inner), boundary, lambda ci: ci._replace(perm=perm), inner)

    return lax.while_loop(running, epoch, c)


def with_replay(start: Carry, carry: Carry, run_trip: Callable, batched: bool = False) -> Carry:
    """``run_trip(carry, limit, first)`` (the solve's loop of unguarded steps, stopping at the
    step count ``limit`` too), then, for a run that failed, its replay: the last good state.

    A run that stopped on a non-finite candidate holds that candidate. It restarts from
    ``start`` and runs again, through the same loop, up to the step before (the steps are
    deterministic), then stops with status NONFINITE; it keeps the first run's history (the
    replay rewrites the same entries). Both trips are one ``lax.while_loop`` around the loop, so
    the program holds one copy of the loop and its steps: a replay in a loop of its own, with a
    step of its own, doubled the step's share of the compile time. A run that did not fail takes
    one trip. ``batched`` (a sweep): the carry has a leading member axis, ``limit`` is per member,
    and ``run_trip`` stops each replaying member at its limit itself; members that did not fail
    stay stopped during the second trip.
    """
    no_limit = jnp.full(carry.status.shape, jnp.iinfo(jnp.int32).max, jnp.int32)

    def trip(state):
        c, limit, trips = state
        c = run_trip(c, limit, trips == 0)
        failed = (trips == 0) & (c.status == Status.NONFINITE) & (c.step > start.step)
        limit = jnp.where(failed, c.step - 1, limit)
        # Replays with nothing to replay (the first step failed) are done at once.
        restart = start._replace(
            history=c.history, status=jnp.where(start.step < limit, RUNNING, Status.NONFINITE).astype(jnp.int32)
        )
        take = jax.vmap(select) if batched else select
        c = take(failed, restart, c)
        if not batched:  # the replay stopped at its limit, still running
            c = c._replace(status=jnp.where((trips == 1) & _running(c), Status.NONFINITE, c.status))
        return c, limit, trips + 1

    def more(state):
        c, _, trips = state
        return (trips == 0) | jnp.any(_running(c))

    return lax.while_loop(more, trip, (carry, no_limit, jnp.zeros((), jnp.int32)))[0]


def solve(
    fun: Callable,
    optimizer: Any,
    options: Options,
    params0: Any,
    args: tuple,
    opt_state0: Any,
    tol: Any,
    key: Any,
    offset: Any,
) -> Result:
    """The whole solve as one traceable function (``minimize`` is this under ``jax.jit``).

    ``fun``, ``optimizer`` and ``options`` are static; ``params0``, ``args``, ``opt_state0``
    (``None``: ``optimizer.init(params0)``), ``tol``, ``key`` (``None`` outside minibatch mode)
    and ``offset`` (int32, the ``total_steps`` already done) are arrays/pytrees of arrays.
    """
    solver = Solver(fun, optimizer, options, args, tol, key, offset)
    start = carry = solver.init(params0, opt_state0)
    # A loop that runs every step regardless of status (diff="unrolled") needs the masked step.
    guarded = options.runs_every_step
    body = solver.masked_step if guarded else solver.step
    if options.progress:
        every = progress_every(options.max_steps, options.progress)
        bar = ProgressBar(options.max_steps, options.name, every=every, key=(fun, optimizer, options))
        report = lambda c, start: bar.report(c.step, _running(c).astype(jnp.int32), c.status, start)  # noqa: E731
        if guarded:
            return solver.finish(loop_with_bar(options, _running, lambda c: c.step, body, carry, report))

        def run_trip(c, limit, first):
            chunk_run = lambda ci, until: run(solver, ci, jnp.minimum(until, limit))  # noqa: E731
            running = lambda ci: _running(ci) & (ci.step < limit)  # noqa: E731
            return loop_with_bar(options, running, lambda ci: ci.step, body, c, report, chunk_run, first)

    elif guarded:
        return solver.finish(loop(options, _running, body, carry))
    elif solver.minibatch:
        run_trip = lambda c, limit, first: run_epochs(solver, c, limit)  # noqa: E731
    else:
        run_trip = lambda c, limit, first: run(solver, c, limit)  # noqa: E731
    return solver.finish(with_replay(start, carry, run_trip))


def _solve_with_derivatives(fun, optimizer, options: Options, *arrays) -> Result:
    return differentiation.solve(solve, fun, optimizer, options, *arrays)


#: :func:`solve` under ``jax.jit`` (``fun``, ``optimizer``, ``options`` static), with the
#: derivatives that ``options.diff`` selects.
solve_jit = jax.jit(_solve_with_derivatives, static_argnums=(0, 1, 2))


def _member_solver(fun, optimizer, options: Options, h, args, tol, key, offset) -> Solver:
    """The solver of member ``h``: ``fun(params, h, *args)``."""
    opt = member_optimizer(options.name, optimizer, h)
    shared = opt is optimizer  # one optimizer object for every member (not optimizer(h))
    return Solver(fun, opt, options, (h,) + tuple(args), tol, key, offset, members=1, shared_optimizer=shared)


def solve_sweep(fun, optimizer, options: Options, params0, grid, args, opt_state0, tol, key, offset) -> Result:
    """The sweep as one traceable function; ``params0``, ``opt_state0`` and ``offset`` have a
    leading axis K (one entry per member), ``args``/``tol``/``key`` are shared."""
    k = jax.tree_util.tree_leaves(grid)[0].shape[0]

    def solver(h, off):
        return _member_solver(fun, optimizer, options, h, args, tol, key, off)

    carry = jax.vmap(lambda h, off, p, s: solver(h, off).init(p, s))(grid, offset, params0, opt_state0)
    start = carry
    # Stopped members are frozen; a non-finite candidate stops its member and is undone by
    # with_replay (unless the loop runs every step: diff="unrolled").
    recovers = not options.runs_every_step
    step_member = jax.vmap(
        lambda h, off, c: solver(h, off).masked_step(c, freeze_nonfinite=not recovers)
    )
    bar = None
    if options.progress:
        every = progress_every(options.max_steps, options.progress)
        bar = ProgressBar(options.max_steps, options.name, members=k, every=every)

    # The loop runs until every member has stopped; stopped members are frozen inside the step.
    # Its counter ``it`` stays unbatched, so the progress bar's chunks are real loops. A member
    # replaying a failed run (with_replay's second trip) stops at its ``limit``.
    def n_running(c):
        return jnp.sum(c.status == RUNNING, dtype=jnp.int32)

    def any_running(state):
        return jnp.any(state[1].status == RUNNING)

    def run_trip(c, limit, first):
        def body(state):
            it, ci = state
            ci = step_member(grid, offset, ci)
            if limit is not None:
                at_limit = (ci.status == RUNNING) & (ci.step >= limit)
                ci = ci._replace(status=jnp.where(at_limit, Status.NONFINITE, ci.status).astype(jnp.int32))
            return it + 1, ci

        state = (jnp.zeros((), jnp.int32), c)
        if bar is None:
            return loop(options, any_running, body, state)[1]
        report = lambda s, start: bar.report(s[0], n_running(s[1]), -1, start)  # noqa: E731
        return loop_with_bar(options, any_running, lambda s: s[0], body, state, report, first=first)[1]

    carry = with_replay(start, carry, run_trip, batched=True) if recovers else run_trip(carry, None, True)
    return jax.vmap(lambda h, off, c: solver(h, off).finish(c))(grid, offset, carry)


def _sweep_with_derivatives(fun, optimizer, options: Options, *arrays) -> Result:
    return differentiation.sweep_solve(solve_sweep, fun, optimizer, options, *arrays)


#: :func:`solve_sweep` under ``jax.jit``, with the derivatives that ``options.diff`` selects.
sweep_jit = jax.jit(_sweep_with_derivatives, static_argnums=(0, 1, 2))
