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

from jloss import _loops
from jloss._options import (
    Options,
    check_args,
    check_fun,
    check_history,
    check_max_steps,
    check_optimizer,
    check_progress,
    check_tol,
    grid_size,
    member_optimizer,
    prepare_params,
    resolve_batching,
)
from jloss._placement import members_sharding, minibatch_options, place_members
from jloss._result import Result
from jloss._tree import as_float, strong
from jloss.differentiation import resolve_diff

__all__ = ["sweep", "sweep_table", "sweep_best", "sweep_member", "SweepTable"]


@functools.partial(jax.jit, static_argnums=0)
def _cold_start(optimizer, params, grid):
    """Every member's starting params (``params`` repeated K times) and optimizer state."""
    k = jax.tree_util.tree_leaves(grid)[0].shape[0]
    params = jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (k,) + jnp.shape(x)), params)
    state = jax.vmap(lambda h, p: member_optimizer("sweep", optimizer, h).init(p))(grid, params)
    return params, strong(state)


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
    check_fun(name, fun)
    if not isinstance(optimizer, optax.GradientTransformation) and not callable(optimizer):
        check_optimizer(name, optimizer, what="optimizer (a transformation or h -> transformation)")
    max_steps = check_max_steps(name, max_steps)
    tol = check_tol(name, tol)
    history = check_history(name, history)
    args = check_args(name, args)
    progress = check_progress(name, progress)
    k = grid_size(name, grid)
    grid = jax.tree_util.tree_map(jnp.asarray, grid)
    batch_size, batch_args, key = resolve_batching(name, args, batch_size, batch_args, key, shift=1)
    if init is None:
        if init_params is None:
            raise ValueError(f"{name}: init_params is None; pass parameters or init=result.")
        # Built here, not in the compiled sweep, so that cold and warm starts share one program.
        params0, opt_state0 = _cold_start(optimizer, prepare_params(name, init_params), grid)
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
        params0 = prepare_params(name, init.params)
        opt_state0, offset = strong(init.opt_state), init.total_steps
    members = members_sharding(grid)
    if members is not None:  # a grid sharded over devices (jloss.sharding.shard_grid)
        params0, opt_state0, offset = place_members(members, (params0, opt_state0, offset))
    tol = as_float(tol)
    options = Options(
        max_steps=max_steps,
        history=history,
        batch_size=batch_size,
        batch_args=batch_args,
        progress=progress,
        diff=resolve_diff(name, diff),
        name=name,
        **minibatch_options(name, args, batch_size, batch_args, shift=1),
    )
    return _loops.sweep_jit(fun, optimizer, options, params0, grid, args, opt_state0, tol, key, offset)


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
    return jax.tree_util.keystr(path, simple=True, separator=".") if path else "h"


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
    k_grid = grid_size("sweep_table", grid)
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
