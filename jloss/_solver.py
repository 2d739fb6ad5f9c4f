"""One minimization problem as ``init``/``step``/``finish``: the solver's step semantics.

The loops around these pieces (the while loop, the paired loop, the epoch-nested minibatch
loop, the vmapped sweep loop, the progress bar's chunks) are in :mod:`jloss._loops`. Everything
here is traceable; ``fun``/``optimizer``/``options`` are Python objects and ``args``/``tol``/
``key``/``offset`` are loop-invariant arrays (closed over by the steps, never part of the carry).

Two kinds of step:

* :meth:`Solver.step` takes the candidate update unguarded: a loop that runs only while the
  status is running needs no select per leaf, a non-finite candidate stops it with status
  NONFINITE, and :func:`jloss._loops.with_replay` restores the last good state afterwards (a
  replay through the same loop);
* :meth:`Solver.masked_step` is a no-op for a stopped run (under ``jax.vmap``, a stopped
  member) and, with ``freeze_nonfinite``, does not accept a non-finite candidate: for loops that
  run every step regardless (``diff="unrolled"``'s scan) and ``sweep``'s batched loop.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jloss._batching import MinibatchSchedule, example_batch
from jloss._options import Options, check_fun_output
from jloss._result import RUNNING, Result, Status
from jloss._shared import branch_skipping, member_value_fn
from jloss._tree import all_finite, finds_value_and_grad, finite_and_sq_norm, select, strong

__all__ = ["Carry", "Solver"]


class Carry(NamedTuple):
    """The while-loop state. Data (``args``) is deliberately absent: the body closes over it."""

    params: Any
    opt_state: Any
    value: jax.Array  # loss at ``params`` (on the current minibatch in minibatch mode)
    grad: Any  # gradient at ``params``, consumed by the next update
    step: jax.Array  # updates applied by this call
    status: jax.Array  # RUNNING or a Status code
    history: jax.Array | None
    perm: jax.Array | None  # this epoch's permutation of the N samples (minibatch mode)


class Solver:
    """The pieces of one solve of ``fun(params, *args)`` with ``optimizer``: :meth:`init`,
    :meth:`step`/:meth:`masked_step`, :meth:`finish`. In minibatch mode it owns
    the :class:`~jloss._batching.MinibatchSchedule` (``schedule``; None in full-batch mode)."""

    def __init__(self, fun, optimizer, options: Options, args: tuple, tol, key, offset, members: int | None = None,
                 shared_optimizer: bool = False):
        self.fun = fun
        self.optimizer = optimizer
        self.options = options
        self.args = args
        self.tol = jnp.asarray(tol)
        self.offset = jnp.asarray(offset, jnp.int32)
        self.minibatch = options.minibatch
        self.schedule = MinibatchSchedule(options, args, key) if self.minibatch else None
        self.extra_args = isinstance(optimizer, optax.GradientTransformationExtraArgs)
        # A sweep member's solver: ``args[:members]`` are the member's own (its hyperparameter),
        # the rest is the data every member shares (see value_fn). None outside a sweep.
        self.members = members
        # The optimizer's update with the data as arguments; in a sweep whose members share the
        # optimizer object and run a line search, one whose vmap runs the line search's cond
        # branches only where taken (an optimizer without one, Adam, keeps JAX's own vmap: the
        # interpreter would only trace its update twice).
        self._skipping_update = None
        self._stored = self._plain_stored
        if members is not None and not self.minibatch:
            self._stored = branch_skipping(self._plain_stored)
            if shared_optimizer and self.extra_args:
                self._skipping_update = branch_skipping(self._plain_update)

    # -- evaluation and status ------------------------------------------------------------------

    def batch_args(self, perm, t) -> tuple:
        """The arguments of ``fun`` at global step ``t`` (the whole ``args`` in full-batch mode)."""
        return self.args if self.schedule is None else self.schedule.batch(self.args, perm, t)

    def reuses_state(self, state) -> bool:
        """True if the loss and gradient at new params can be read from the optimizer state.

        optax.lbfgs (and any line search storing value and grad) already evaluated them at the new
        params. Full-batch only: in minibatch mode the next step's batch differs from the one the
        line search used.
        """
        return self.extra_args and not self.minibatch and finds_value_and_grad(state)

    def value_fn(self, params, fargs):
        """``fun`` of the params alone, for a line search, valued in the first params leaf's dtype:
        optax's line searches store the value in that dtype, so float32 params with float64 data
        (under x64) would otherwise give their ``lax.cond`` branches of two dtypes."""
        dtype = jax.tree_util.tree_leaves(params)[0].dtype
        if self.members is not None and not self.minibatch:
            # In a sweep, the line search's conds would copy the shared data once per member.
            n = self.members
            return member_value_fn(self.fun, tuple(fargs[:n]), tuple(fargs[n:]), dtype)
        return lambda p: self.fun(p, *fargs).astype(dtype)

    def _plain_update(self, grad, state, params, value, fargs):
        return self.optimizer.update(grad, state, params, value=value, grad=grad,
                                     value_fn=self.value_fn(params, fargs))

    def value_and_grad(self, params, state, fargs):
        if self.reuses_state(state):
            return self._stored(params, state, tuple(fargs))
        value, grad = jax.value_and_grad(self.fun)(params, *fargs)
        return strong(value), strong(grad)

    def _plain_stored(self, params, state, fargs):
        """The value and gradient a line search stored in ``state`` (optax's
        ``value_and_grad_from_state``), evaluated afresh only when the stored value is not finite
        (the first step of a fresh state). In a sweep it is batched by ``branch_skipping``, so the
        evaluation runs only if some member needs it; under JAX's own rule a cond (or a 0-or-1-trip
        loop, whose evaluation XLA hoists out as loop-invariant) evaluates every step."""
        value = strong(optax.tree.get(state, "value"))
        grad = strong(optax.tree.get(state, "grad"))

        def evaluate(_):
            v, g = jax.value_and_grad(self.fun)(params, *fargs)
            return strong(v.astype(value.dtype)), strong(jax.tree_util.tree_map(lambda a, b: a.astype(b.dtype), g, grad))

        return lax.cond(jnp.isfinite(value), lambda _: (value, grad), evaluate, None)

    def status_of(self, finite, grad_norm, step):
        # tol = 0 disables the gradient test: exactly max_steps steps.
        converged = (self.tol > 0) & (grad_norm <= self.tol)
        return jnp.where(
            ~finite,
            Status.NONFINITE,
            jnp.where(
                converged,
                Status.CONVERGED,
                jnp.where(step >= self.options.max_steps, Status.MAX_STEPS, RUNNING),
            ),
        ).astype(jnp.int32)

    # -- the loop pieces ------------------------------------------------------------------------

    def init(self, params0, opt_state0) -> Carry:
        options = self.options
        check_fun_output(options.name, self.fun, params0, example_batch(self.args, options))
        state = self.optimizer.init(params0) if opt_state0 is None else opt_state0
        state = strong(state)
        perm = self.schedule.epoch_perm(self.offset) if self.minibatch else None
        value, grad = self.value_and_grad(params0, state, self.batch_args(perm, self.offset))
        finite = jnp.isfinite(value) & all_finite(grad) & all_finite(params0)
        step = jnp.zeros((), jnp.int32)
        history = jnp.full((options.max_steps,), jnp.nan, value.dtype) if options.history else None
        return Carry(
            params=params0,
            opt_state=state,
            value=value,
            grad=grad,
            step=step,
            status=self.status_of(finite, optax.tree.norm(grad), step),
            history=history,
            perm=perm,
        )

    def _candidate(self, c: Carry, perm: Any, next_perm: Any) -> tuple[Carry, jax.Array]:
        """The update of ``c`` and the evaluation at the new params, taken whatever the status:
        ``(candidate, finite)``; the candidate's history is ``c``'s."""
        t = self.offset + c.step
        known = perm is not None
        perm = perm if known else c.perm
        fargs = self.batch_args(perm, t)
        if self.extra_args:
            update = self._plain_update
            if self._skipping_update is not None and self.reuses_state(c.opt_state):
                update = self._skipping_update
            updates, state1 = update(c.grad, c.opt_state, c.params, c.value, tuple(fargs))
        else:
            updates, state1 = self.optimizer.update(c.grad, c.opt_state, c.params)
        params1 = optax.apply_updates(c.params, updates)
        if self.minibatch:
            t1 = t + 1
            if known:
                perm1 = perm if next_perm is None else next_perm
            else:
                perm1 = lax.cond(
                    self.schedule.new_epoch(t1) & self.more_steps(c),
                    lambda: self.schedule.epoch_perm(t1),
                    lambda: perm,
                )
        else:
            t1, perm1 = t + 1, None
        value1, grad1 = self.value_and_grad(params1, state1, self.batch_args(perm1, t1))
        leaves_finite, sq_norm = finite_and_sq_norm(params1, grad1)
        finite = jnp.isfinite(value1) & leaves_finite
        step1 = c.step + 1
        status1 = self.status_of(finite, jnp.sqrt(sq_norm), step1)
        return Carry(params1, state1, value1, grad1, step1, status1, c.history, perm1), finite

    def step(self, c: Carry, perm: Any = None, next_perm: Any = None) -> Carry:
        """One unguarded update and the evaluation at the new params (for a loop that runs only
        while ``c`` is running; a non-finite candidate stops it, see
        :func:`jloss._loops.with_replay`).

        In minibatch mode the step reads this epoch's permutation from ``c.perm`` and takes the
        next step's from a ``lax.cond`` (a new one at an epoch boundary), unless the caller knows
        both: ``perm`` (then ``c.perm`` may be None, and the result's is None) and ``next_perm``
        (default: ``perm``), as the epoch-nested loop does, which spares every step the cond's
        copy of the permutation.
        """
        new, finite = self._candidate(c, perm, next_perm)
        history = c.history
        if history is not None:
            entry = jnp.where(finite, new.value, jnp.nan).astype(history.dtype)
            history = lax.dynamic_update_index_in_dim(history, entry, c.step, 0)
        return new._replace(history=history, perm=None if perm is not None else new.perm)

    def masked_step(self, c: Carry, freeze_nonfinite: bool = True) -> Carry:
        """:meth:`step` as a no-op for a stopped run (a stopped member under ``jax.vmap``).

        ``freeze_nonfinite``: a non-finite candidate is not accepted either (the carry keeps the
        last good state); that costs a select per leaf of params and optimizer state every step.
        Without it (``jloss.sweep``'s batched loop) non-finite candidates are taken (they stop
        the member, and :func:`jloss._loops.with_replay` restores its last good state): the
        select then depends on the status at the start of the step only, so XLA fuses it into
        the update instead of a pass of its own.
        """
        running = c.status == RUNNING
        given = c
        if self.reuses_state(c.opt_state):
            # A line search (optax.lbfgs). A stopped member's candidate is discarded; give its
            # update a zero gradient, so that its line search ends in one iteration instead of driving the members' shared
            # loop (at a converged point it would search until its iteration limit).
            given = c._replace(grad=select(running, c.grad, jax.tree_util.tree_map(jnp.zeros_like, c.grad)))
        new, finite = self._candidate(given, None, None)
        accept = running & finite if freeze_nonfinite else running
        status = jnp.where(running, new.status, c.status)
        history = c.history
        if history is not None:
            i = jnp.minimum(c.step, self.options.max_steps - 1)
            entry = jnp.where(running & finite, new.value, jnp.nan)
            entry = jnp.where(running, entry, history[i]).astype(history.dtype)
            history = lax.dynamic_update_index_in_dim(history, entry, i, 0)
        return Carry(
            params=select(accept, new.params, c.params),
            opt_state=select(accept, new.opt_state, c.opt_state),
            value=select(accept, new.value, c.value),
            grad=select(accept, new.grad, c.grad),
            step=jnp.where(accept, new.step, c.step),
            status=status,
            history=history,
            perm=select(accept, new.perm, c.perm) if self.minibatch else None,
        )

    def more_steps(self, c: Carry) -> jax.Array:
        """Whether a step after the one ``c`` is about to take can run. The last step's
        evaluation only feeds the finiteness check (``finish`` reports the full-data loss), so
        it reuses this epoch's permutation rather than drawing one (a sort of N keys: 80 ms for
        N = 100,000 on CPU) for an epoch that never starts."""
        return c.step + 1 < self.options.max_steps

    def finish(self, c: Carry) -> Result:
        status = c.status
        if self.minibatch:
            # Report the full-data loss and gradient at the returned params.
            loss, grad = jax.value_and_grad(self.fun)(c.params, *self.args)
            bad = ~(jnp.isfinite(loss) & all_finite(grad))
            status = jnp.where(bad, jnp.int32(Status.NONFINITE), status)
        else:
            loss, grad = c.value, c.grad
        return Result(
            params=c.params,
            loss=loss,
            grad_norm=optax.tree.norm(grad),
            steps=c.step,
            total_steps=self.offset + c.step,
            converged=status == Status.CONVERGED,
            status=status,
            history=c.history,
            opt_state=c.opt_state,
        )
