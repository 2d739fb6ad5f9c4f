"""``sweep``: minimize one objective for K hyperparameter values in one compiled program.

``sweep(fun, init_params, optimizer, grid)`` is ``minimize`` of ``fun(., grid[k], *args)`` for
every ``k``, vmapped: one XLA program, the data in ``args`` shared (not copied per member), every
member stopping on its own criterion. Helpers turn the result into a table
(:func:`sweep_table`), pick the best member by a metric (:func:`sweep_best`) and extract one
member (:func:`sweep_member`).
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jloss import checks
from jloss.minimize import (
    _RUNNING,
    Result,
    _check_args,
    _check_max_steps,
    _check_optimizer,
    _check_progress,
    _as_float,
    _check_tol,
    _loop,
    _loop_with_bar,
    _runs_every_step,
    _Options,
    _prepare_params,
    _progress_every,
    _ProgressBar,
    _resolve_batching,
    _resolve_diff,
    _Solver,
    _strong,
)
from jloss.sharding import _members_sharding, _minibatch_options, _place_members

__all__ = ["sweep", "sweep_table", "sweep_best", "sweep_member", "SweepTable"]


def _grid_size(name: str, grid: Any) -> int:
    leaves = jax.tree_util.tree_leaves_with_path(grid)
    if not leaves:
        raise ValueError(
            f"{name}: grid is empty; pass an array with a leading axis K or a dict of them."
        )
    k, _ = checks.leading_size(
        checks.labelled_leaves("grid", grid),
        lambda where: (
            f"{name}: every grid leaf must be an array with a leading axis K (one entry per "
            f"member), but {where} is a scalar. (A Python list of numbers is a pytree of "
            "scalars: wrap it, e.g. jnp.array([0.1, 1.0, 10.0]).)"
        ),
        lambda first, k, where, m: (
            f"{name}: grid leaves must share their leading axis K: {first} has {k} entries "
            f"but {where} has {m}."
        ),
    )
    if k == 0:
        raise ValueError(f"{name}: grid has K = 0 members.")
    return int(k)


def _member_optimizer(name: str, optimizer, h) -> optax.GradientTransformation:
    """The optimizer of member ``h``: ``optimizer`` itself or ``optimizer(h)``."""
    if isinstance(optimizer, optax.GradientTransformation):
        return optimizer
    opt = optimizer(h)
    _check_optimizer(name, opt, what="the optimizer factory's result optimizer(h)")
    return opt


def _member_solver(fun, optimizer, options, h, args, tol, key, offset) -> _Solver:
    """The solver of member ``h``: ``fun(params, h, *args)``."""
    opt = _member_optimizer(options.name, optimizer, h)
    return _Solver(fun, opt, options, (h,) + tuple(args), tol, key, offset)


@functools.partial(jax.jit, static_argnums=0)
def _cold_start(optimizer, params, grid):
    """Every member's starting params (``params`` repeated K times) and optimizer state."""
    k = jax.tree_util.tree_leaves(grid)[0].shape[0]
    params = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (k,) + jnp.shape(x)), params)
    state = jax.vmap(lambda h, p: _member_optimizer("sweep", optimizer, h).init(p))(grid, params)
    return params, _strong(state)


def _sweep(fun, optimizer, options, params0, grid, args, opt_state0, tol, key, offset):
    """The sweep as one traceable function; ``params0``, ``opt_state0`` and ``offset`` have a
    leading axis K (one entry per member), ``args``/``tol``/``key`` are shared."""
    k = jax.tree_util.tree_leaves(grid)[0].shape[0]

    def solver(h, off):
        return _member_solver(fun, optimizer, options, h, args, tol, key, off)

    carry = jax.vmap(lambda h, off, p, s: solver(h, off).init(p, s))(
        grid, offset, params0, opt_state0
    )
    start = carry
    # Stopped members are frozen; a non-finite candidate stops its member and is undone by
    # recover() after the loop (unless the loop runs every step: diff="unrolled").
    guard = "full" if _runs_every_step(options) else "stopped"
    step_member = jax.vmap(lambda h, off, c: solver(h, off).step(c, guard=guard))

    # The loop runs until every member has stopped; stopped members are frozen inside step().
    # Its counter ``it`` stays unbatched, so the progress bar's chunks are real loops.
    def n_running(c):
        return jnp.sum(c.status == _RUNNING, dtype=jnp.int32)

    def body(state):
        it, c = state
        return it + 1, step_member(grid, offset, c)

    def any_running(state):
        return jnp.any(state[1].status == _RUNNING)

    state = (jnp.zeros((), jnp.int32), carry)
    if options.progress:
        report = _ProgressBar(options.max_steps, options.name, members=k, every=_progress_every(options)).report
        _, carry = _loop_with_bar(
            options, any_running, lambda s: s[0], body, state, lambda s, start: report(s[0], n_running(s[1]), -1, start)
        )
    else:
        _, carry = _loop(options, any_running, body, state)
    if guard == "stopped":
        carry = jax.vmap(lambda h, off, s, c: solver(h, off).recover(s, c))(grid, offset, start, carry)
    return jax.vmap(lambda h, off, c: solver(h, off).finish(c))(grid, offset, carry)


def _sweep_differentiable(fun, optimizer, options, *arrays) -> Result:
    """``_sweep`` with the derivatives that ``options.diff`` selects (jloss.differentiation)."""
    if options.diff is None:
        return _sweep(fun, optimizer, options, *arrays)
    from jloss import differentiation

    return differentiation.sweep_solve(_sweep, fun, optimizer, options, *arrays)


_sweep_jit = jax.jit(_sweep_differentiable, static_argnums=(0, 1, 2))


def sweep(
    fun: Callable[..., jax.Array],
    init_params: Any,
    optimizer: optax.GradientTransformation | Callable[[Any], optax.GradientTransformation],
    grid: Any,
    *,
    args: tuple = (),
    max_steps: int = 1000,
    tol: float = 0.0,
    history: bool = True,
    batch_size: int | None = None,
    batch_args: tuple[int, ...] | None = None,
    key: Any = None,
    init: Result | None = None,
    progress: bool | int = False,
    diff: Any = "implicit",
) -> Result:
    """Minimize ``fun(params, h, *args)`` for every hyperparameter ``h`` of ``grid`` at once.

    Member ``k`` equals ``minimize(lambda p, *a: fun(p, grid[k], *a), init_params, opt_k,
    args=args, ...)`` to float tolerance, where ``opt_k`` is ``optimizer`` or
    ``optimizer(grid[k])``.
    All members run in one compiled program: the loop steps a vmapped update until every member
    has stopped, each on its own criterion (a stopped member no longer changes); ``args`` (the
    data) is shared by all members, not copied per member.

    Args:
      fun: ``fun(params, h, *args) -> scalar`` loss; ``h`` is one member's slice of ``grid``.
      init_params: starting parameters, shared by all members (any pytree of floating arrays);
        ``None`` when ``init`` is given.
      optimizer: an ``optax.GradientTransformation`` used by every member, or a callable
        ``h -> GradientTransformation`` (e.g. ``lambda h: optax.adam(h["lr"])`` for a
        learning-rate sweep). Reuse the same object across calls to avoid recompiling.
      grid: an array with leading axis K, or a pytree (e.g. a dict) of such arrays, all with the
        same K. ``h = grid[k]`` (leaf by leaf) is passed to ``fun`` and to ``optimizer``.
      args, max_steps, tol, history, batch_size, batch_args, key, progress, diff: as in
        :func:`jloss.minimize` (``batch_args`` indexes ``args``; the minibatch schedule, driven by
        ``key``, is the same for every member). ``tol`` is shared by all members.
      init: a previous sweep's :class:`Result` (every field with leading axis K), with
        ``init_params=None``, to continue each member exactly where it stopped.
      progress: one tqdm bar for the whole sweep (iterations of the shared loop, with the number
        of members still running), updated at most every 1% of ``max_steps`` and every 0.1 s
        (the schedule of ``minimize``'s ``progress``).

    Returns:
      a :class:`jloss.Result` whose every field has a leading axis K (see ``minimize`` for the
      fields and the stopping rule). ``result.message`` is a list of K strings.
      See :func:`sweep_table`, :func:`sweep_best` and :func:`sweep_member`.

    Many devices: a ``grid`` sharded along K (``jloss.sharding.shard_grid``) runs K / D members
    on each of D devices and every field of the result keeps that sharding; the data in ``args``
    is then replicated (``jloss.sharding.replicate`` or NumPy arrays) or, on a 2-D mesh, sharded
    over the other axis (``shard_data(..., mesh, axis="data")``), as in :func:`jloss.minimize`.

    Gradients: as in :func:`jloss.minimize`, w.r.t. ``args`` and the ``grid`` (member ``k``'s
    params depend on ``grid[k]`` only), e.g. ``jax.jacfwd`` of the params w.r.t. the grid;
    ``diff="implicit"`` solves one small linear system per member, vmapped.
    """
    name = "sweep"
    if not callable(fun):
        raise TypeError(f"{name}: fun must be callable, got {type(fun).__name__}.")
    if not isinstance(optimizer, optax.GradientTransformation) and not callable(optimizer):
        _check_optimizer(
            name, optimizer, what="optimizer (a transformation or h -> transformation)"
        )
    max_steps = _check_max_steps(name, max_steps)
    tol = _check_tol(name, tol)
    if not isinstance(history, (bool, np.bool_)):
        raise TypeError(f"{name}: history must be True or False, got {history!r}.")
    args = _check_args(name, args)
    progress = _check_progress(name, progress)
    k = _grid_size(name, grid)
    grid = jax.tree_util.tree_map(jnp.asarray, grid)
    batch_size, batch_args, key = _resolve_batching(
        name, args, batch_size, batch_args, key, shift=1
    )
    if init is None:
        if init_params is None:
            raise ValueError(f"{name}: init_params is None; pass parameters or init=result.")
        # Built here, not in the compiled sweep, so that cold and warm starts share one program.
        params0, opt_state0 = _cold_start(optimizer, _prepare_params(name, init_params), grid)
        offset = np.zeros((k,), np.int32)
    else:
        if not isinstance(init, Result):
            raise TypeError(
                f"{name}: init must be the Result of a previous sweep, got {type(init).__name__}."
            )
        steps_shape = np.shape(init.total_steps)
        if steps_shape != (k,):
            raise ValueError(
                f"{name}: init must be a sweep result with K={k} members (leading axis of grid); "
                f"its total_steps has shape {steps_shape}."
            )
        if init_params is not None:
            raise ValueError(
                f"{name}: init is a Result, which continues from its own params; pass "
                "init_params=None."
            )
        params0 = _prepare_params(name, init.params)
        opt_state0, offset = _strong(init.opt_state), init.total_steps
    members = _members_sharding(grid)
    if members is not None:  # a grid sharded over devices (jloss.sharding.shard_grid)
        params0, opt_state0, offset = _place_members(members, (params0, opt_state0, offset))
    tol = _as_float(tol)
    options = _Options(
        max_steps=max_steps,
        history=bool(history),
        batch_size=batch_size,
        batch_args=batch_args,
        progress=progress,
        diff=_resolve_diff(name, diff),
        name=name,
        **_minibatch_options(name, args, batch_size, batch_args, shift=1),
    )
    return _sweep_jit(fun, optimizer, options, params0, grid, args, opt_state0, tol, key, offset)


# ----------------------------------------------------------------------------------------------
# Helpers on a sweep result (host side)
# ----------------------------------------------------------------------------------------------


def _num_members(result: Result) -> int:
    shape = np.shape(result.status)
    if len(shape) != 1:
        raise ValueError(
            f"expected a sweep result (status of shape (K,)), got status of shape {shape}."
        )
    return shape[0]


def sweep_member(result: Result, k: int) -> Result:
    """Member ``k`` of a sweep result, as the :class:`Result` of a single ``minimize``."""
    n = _num_members(result)
    if not -n <= k < n:
        raise IndexError(f"sweep_member: k={k} is out of range for a sweep of {n} members.")
    return jax.tree_util.tree_map(lambda x: x[k], result)


def _path_name(path) -> str:
    parts = []
    for entry in path:
        if isinstance(entry, jax.tree_util.DictKey):
            parts.append(str(entry.key))
        elif isinstance(entry, jax.tree_util.SequenceKey):
            parts.append(str(entry.idx))
        elif isinstance(entry, jax.tree_util.GetAttrKey):
            parts.append(entry.name)
        else:
            parts.append(str(entry))
    return ".".join(parts) if parts else "h"


def _cell(value: Any) -> Any:
    arr = np.asarray(value)
    if arr.ndim == 0:
        return arr.item()
    return arr.tolist()


class SweepTable(list):
    """The rows of :func:`sweep_table`: a list of dicts; ``str()`` gives a markdown table."""

    def markdown(self, floatfmt: str = ".4g") -> str:
        """The rows as a GitHub-flavoured markdown table."""
        if not self:
            return ""
        columns = list(self[0].keys())

        def fmt(v):
            if isinstance(v, float):
                return format(v, floatfmt)
            if isinstance(v, list):
                return "[" + ", ".join(fmt(x) for x in v) + "]"
            return str(v)

        lines = [
            "| " + " | ".join(columns) + " |",
            "|" + "|".join("---" for _ in columns) + "|",
        ]
        for row in self:
            lines.append("| " + " | ".join(fmt(row[c]) for c in columns) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.markdown()


def sweep_table(result: Result, grid: Any, *, metric: Any = None) -> SweepTable:
    """One row per member: grid values, final loss, gradient norm, steps and status message.

    Args:
      result: the :class:`Result` of :func:`sweep`.
      grid: the grid passed to :func:`sweep`. An array grid gives a column ``h``; a dict grid a
        column per key (nested keys joined by ``.``).
      metric: optional extra column ``metric``: an array of shape (K,) or a callable
        ``params -> scalar`` evaluated for every member (e.g. a validation loss).

    Returns:
      a :class:`SweepTable` (a list of dicts; ``print`` it for a markdown table).
    """
    k = _num_members(result)
    k_grid = _grid_size("sweep_table", grid)
    if k_grid != k:
        raise ValueError(f"sweep_table: grid has {k_grid} members but the result has {k}.")
    columns = [
        (_path_name(path), np.asarray(leaf))
        for path, leaf in jax.tree_util.tree_leaves_with_path(grid)
    ]
    values = None if metric is None else _metric_values("sweep_table", result, metric, k)
    loss = np.asarray(result.loss)
    grad_norm = np.asarray(result.grad_norm)
    steps = np.asarray(result.steps)
    messages = result.message
    rows = SweepTable()
    for i in range(k):
        row = {"k": i}
        for col, leaf in columns:
            row[col] = _cell(leaf[i])
        row["loss"] = float(loss[i])
        row["grad_norm"] = float(grad_norm[i])
        row["steps"] = int(steps[i])
        if values is not None:
            row["metric"] = float(values[i])
        row["status"] = messages[i]
        rows.append(row)
    return rows


def _metric_values(name: str, result: Result, metric: Any, k: int) -> np.ndarray:
    if callable(metric):
        values = jax.vmap(metric)(result.params)
    else:
        values = metric
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (k,):
        raise ValueError(
            f"{name}: metric must give one scalar per member, shape ({k},); got shape "
            f"{values.shape}."
        )
    return values


def sweep_best(result: Result, metric: Any) -> tuple[int, Any]:
    """The member that minimizes ``metric``: returns ``(k, params of member k)``.

    Args:
      result: the :class:`Result` of :func:`sweep`.
      metric: a callable ``params -> scalar`` (vmapped over the members' params; close over the
        validation data), or an array of shape (K,). Members whose metric is NaN or infinite are
        skipped; ``ValueError`` if none is finite. Use ``metric=result.loss`` only when the
        members' training losses are comparable (they usually are not across e.g. Huber deltas).
    """
    k = _num_members(result)
    values = _metric_values("sweep_best", result, metric, k)
    finite = np.isfinite(values)
    if not finite.any():
        raise ValueError("sweep_best: the metric is not finite for any member.")
    index = int(np.argmin(np.where(finite, values, np.inf)))
    return index, jax.tree_util.tree_map(lambda x: x[index], result.params)
