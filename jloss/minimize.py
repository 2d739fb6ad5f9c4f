"""``minimize``: one compiled Optax loop with a status code, a loss history and minibatches.

``minimize(fun, init_params, optimizer, ...)`` runs any Optax ``GradientTransformation`` inside a
single ``lax.while_loop`` and returns a :class:`Result`, a pytree that passes through ``jax.jit``
and ``jax.vmap``.

This module is the front end: it validates the inputs on the host and calls the compiled solve,
``jloss._loops.solve_jit`` (the loops, and the derivative rule that ``diff=`` selects from
:mod:`jloss.differentiation`), with ``fun``, ``optimizer`` and the options static. A second call
with new arrays of the same shapes reuses the compiled program. Static arguments are compared by
identity for functions: build the optimizer (and ``fun``) once and reuse them; a fresh
``optax.adam(1e-3)`` or a fresh ``lambda`` is a new cache key and compiles again. The layers
below, each importing only the ones under it:

* :mod:`jloss._result` (``Result``, ``Status``), :mod:`jloss._tree` (pytree helpers);
* :mod:`jloss._options` (static options, host checks), :mod:`jloss._progress` (the bar),
  :mod:`jloss._batching` (the minibatch schedule), :mod:`jloss._placement` (shardings),
  :mod:`jloss.differentiation` (derivative rules around a primal solve passed in);
* :mod:`jloss._solver` (``init``/``step``/``finish``), :mod:`jloss._loops` (the
  loops and the compiled solves of ``minimize`` and ``sweep``).
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Callable

import jax
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
    prepare_params,
    resolve_batching,
    resolve_init,
)
from jloss._placement import minibatch_options
from jloss._progress import ProgressBar, import_tqdm, quick_on_host, record_compiled, record_rate
from jloss._result import Result, Status
from jloss._tree import as_float, init_state, strong
from jloss.differentiation import resolve_diff

__all__ = ["minimize", "Result", "Status"]


def minimize(
    fun: Callable[..., jax.Array],
    init_params: Any,
    optimizer: optax.GradientTransformation,
    *,
    args: tuple = (),
    max_steps: int = 1000,
    tol: float = 0.0,
    history: bool = True,
    batch_size: int | None = None,
    batch_args: tuple[int, ...] | None = None,
    key: Any = None,
    init: Any = None,
    progress: bool | int = False,
    diff: Any = "implicit",
) -> Result:
    """Minimize ``fun(params, *args)`` with an Optax optimizer in one compiled ``lax.while_loop``.

    Args:
      fun: ``fun(params, *args) -> scalar`` loss; must be differentiable w.r.t. ``params``.
      init_params: starting parameters, any pytree of floating arrays; ``None`` when ``init``
        is a :class:`Result` (which continues from its own ``params``).
      optimizer: any ``optax.GradientTransformation``. Transformations with extra arguments
        (``optax.lbfgs()``, line searches, ``optax.contrib.reduce_on_plateau``) receive
        ``value=``, ``grad=`` and ``value_fn=`` as optax documents; a line search's stored loss
        and gradient at the new params are reused (``optax.value_and_grad_from_state``) instead
        of being computed again. Build the optimizer once and reuse the object: it is part of
        the compilation cache key, compared by identity.
      args: tuple of extra positional arguments of ``fun`` (data, hyperparameters). They are
        loop-invariant inputs of the compiled program, not part of its loop state.
      max_steps: maximum number of optimizer updates (a Python int >= 1).
      tol: stopping tolerance on the global L2 norm of the gradient (see below); ``0`` disables
        the test. May be a traced scalar.
      history: record the loss after every update (``Result.history``).
      batch_size: minibatch mode (see below); ``None`` (default) uses all data every step.
      batch_args: in minibatch mode, the indices of the ``args`` that are data, sliced along
        their leading axis. Default: all of ``args``. Every array leaf of these arguments must
        have the same leading size N; the other arguments are passed whole.
      key: PRNG key for the minibatch shuffles; required with ``batch_size``, unused otherwise.
      init: warm start. A previous :class:`Result` (with ``init_params=None``) continues
        exactly where it stopped: its ``params``, ``opt_state`` and minibatch position are
        taken over, so two runs of 500 steps equal one run of 1000, bitwise. Any other value is
        used as the optimizer state for ``init_params`` (the minibatch schedule then restarts
        at epoch 0). Cold and warm starts share one compiled program.
      progress: draw a tqdm progress bar (``pip install jloss[progress]``), fed from the compiled
        loop by a host callback at most every 1% of ``max_steps`` (an int ``n``: at most ``n``
        updates) and at most every 0.1 s: the steps between two callbacks run in an inner loop,
        and each callback returns the step of the next one from the measured speed, so a quick
        solve calls back only at its start and end and draws only its final line. Once a solve
        is known to take less than 0.1 s (the speed measured on an earlier call of the same
        program) and its program without a bar exists (an earlier eager call with
        ``progress=False`` on arrays of the same shapes compiled it), an eager call runs that
        program and draws the final line from the host: JAX dispatches programs with host
        callbacks through a slower path (about 1-3 ms per call on CPU). It never compiles a
        program for that switch, so a repeated call compiles nothing. Off, nothing is traced. Under your own ``jax.vmap`` the members share
        each callback; ``jloss.sweep`` draws one bar for all its members.
      diff: how derivatives w.r.t. ``args`` are computed (:mod:`jloss.differentiation`):
        ``"implicit"`` (default), ``"unrolled"``, ``None``, or ``Implicit(ridge=..., solver_tol=...,
        solver_maxiter=...)`` / ``Unrolled(checkpoint=True)`` for options. See Gradients below.

    Stopping rule. Each step applies one update and evaluates the loss and gradient at the new
    params; the run stops, checked in this order, when

    1. the new loss, gradient or params are not all finite: the step is rejected, the previous
       params (and their loss and optimizer state) are returned, status ``NONFINITE``;
    2. ``tol > 0`` and the gradient norm at the new params is ``<= tol``: status ``CONVERGED``;
    3. ``max_steps`` updates were applied: status ``MAX_STEPS``.

    The starting point is checked the same way (status ``NONFINITE`` or ``CONVERGED`` with
    ``steps == 0``). Under ``jax.vmap`` every member stops on its own criterion and a stopped
    member no longer changes while the others go on.

    Minibatch mode (``batch_size=B``): the N samples are shuffled once per epoch with
    ``jax.random.permutation(jax.random.fold_in(key, epoch), N)`` and each step reads the next
    B indices of that permutation (``lax.dynamic_slice``) and gathers those rows of the data
    arguments inside the loop; an epoch is ``N // B`` steps and the last ``N % B`` samples of each
    permutation are dropped (a different subset every epoch), so every batch has exactly B rows.
    ``fun`` sees the batch, so a mean-reduced loss is an unbiased estimate of the full loss.
    ``tol`` is then compared with the *minibatch* gradient norm (noisy; the default ``tol=0``
    runs ``max_steps`` steps), ``history`` holds minibatch losses, and ``loss``/``grad_norm``
    of the result are evaluated on the full data at the returned params.

    Sharded data (``jloss.sharding.shard_data``): data whose leading axis is sharded over D
    devices stays where it is; params are replicated and only the gradient is summed across
    devices. In minibatch mode each step then takes ``B / D`` rows from every device's own rows
    (one permutation per shard and epoch, see :mod:`jloss.sharding`; ``B`` must be a multiple of
    D), so no data crosses devices; the sharding is read from the arrays passed here (not from
    tracers, so call ``minimize`` itself rather than under your own ``jax.jit``).

    Returns:
      a :class:`Result` (see its fields). ``result.message`` gives the status as text.

    Gradients: ``jax.grad``, ``jax.vjp``, ``jax.jvp``, ``jax.jacfwd``/``jacrev`` of the result
    (``params`` and ``loss``) w.r.t. anything in ``args`` (data, hyperparameters) work, also under
    ``jax.jit`` and ``jax.vmap``. With ``diff="implicit"`` (default) they come from the implicit
    function theorem at the returned params (one extra conjugate-gradient solve with
    Hessian-vector products; exact at a converged, strictly convex solution; ``loss`` by the
    envelope theorem; no cost unless a derivative is taken). With ``diff="unrolled"`` the loop is a
    ``lax.scan`` of ``max_steps`` steps and the derivative is that of the steps taken (for runs
    that are not converged; reverse mode stores every step). Other fields, and ``init_params``,
    ``tol``, ``key``, have zero derivatives under ``"implicit"``. Details and the assumptions:
    :mod:`jloss.differentiation`.

    Composes with ``jax.jit`` and ``jax.vmap``; calling again with new arrays of the same shapes
    and dtypes (and the same ``fun``/``optimizer`` objects and options) does not recompile.

    >>> import jax.numpy as jnp, optax
    >>> from jloss.minimize import minimize
    >>> fun = lambda w, target: jnp.sum((w - target) ** 2)
    >>> res = minimize(fun, jnp.zeros(2), optax.sgd(0.1), args=(jnp.array([1.0, -2.0]),), tol=1e-4)
    >>> res.message, int(res.steps), res.params.round(3).tolist()
    ('converged: gradient norm <= tol', 48, [1.0, -2.0])
    """
    name = "minimize"
    check_fun(name, fun)
    check_optimizer(name, optimizer)
    max_steps = check_max_steps(name, max_steps)
    tol = check_tol(name, tol)
    history = check_history(name, history)
    args = check_args(name, args)
    progress = check_progress(name, progress)
    batch_size, batch_args, key = resolve_batching(name, args, batch_size, batch_args, key)
    params0, opt_state0, offset = resolve_init(name, init, init_params)
    params0 = prepare_params(name, params0)
    # The optimizer state is built here rather than inside the compiled solve, so that a cold
    # start and a warm start (init=result) share one compiled program.
    opt_state0 = init_state(optimizer, params0) if opt_state0 is None else strong(opt_state0)
    tol = as_float(tol)
    options = Options(
        max_steps=max_steps,
        history=history,
        batch_size=batch_size,
        batch_args=batch_args,
        progress=progress,
        diff=resolve_diff(name, diff),
        **minibatch_options(name, args, batch_size, batch_args),
    )
    arrays = (params0, args, opt_state0, tol, key, offset)
    if not progress:
        record_compiled((fun, optimizer, options), arrays)
    elif quick_on_host((fun, optimizer, options), max_steps, arrays, (fun, optimizer, _without_bar(options))):
        return _solve_drawn_on_host(fun, optimizer, options, arrays)
    return _loops.solve_jit(fun, optimizer, options, *arrays)


@functools.lru_cache(maxsize=256)
def _without_bar(options: Options) -> Options:
    """``options`` with ``progress=0`` (memoized: ``dataclasses.replace`` is not free)."""
    return dataclasses.replace(options, progress=0)


def _solve_drawn_on_host(fun, optimizer, options: Options, arrays: tuple) -> Result:
    """The solve without callbacks (JAX's fast dispatch path, no host round trips), then the
    bar's final line drawn here: what the callbacks would have drawn for a quick run."""
    start = time.perf_counter()
    result = _loops.solve_jit(fun, optimizer, _without_bar(options), *arrays)
    bar = ProgressBar(options.max_steps, options.name)
    import_tqdm(bar.desc)  # while the solve runs
    jax.block_until_ready(result)
    # np.asarray reads a CPU scalar in about 50 us; jax.device_get and int() take 0.2-0.3 ms.
    steps, status = int(np.asarray(result.steps)), int(np.asarray(result.status))
    elapsed = time.perf_counter() - start
    if steps > 0 and elapsed > 0:
        record_rate((fun, optimizer, options), steps / elapsed)
    bar.final_line(steps, status, elapsed)
    return result
