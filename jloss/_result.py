"""What a solve returns: :class:`Status` and :class:`Result` (re-exported by :mod:`jloss.minimize`).

A leaf module (it imports nothing from jloss), so that every layer of the solver can name the
result type. ``Result.__module__`` is ``"jloss.minimize"``, where users import it from: reprs and
pickles are those of ``jloss.minimize.Result``.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import jax
import numpy as np

__all__ = ["Status", "MESSAGES", "Result", "RUNNING"]

RUNNING = -1  # internal status of a member that has not stopped yet; never returned


class Status(enum.IntEnum):
    """Why a run stopped. ``Result.status`` holds one of these codes as an int32 array."""

    CONVERGED = 0
    MAX_STEPS = 1
    NONFINITE = 2
    #: A non-smooth fit (:mod:`jloss.nonsmooth`) whose optimality conditions at the kinks were
    #: verified: a subgradient certificate, not a small gradient norm.
    OPTIMAL = 3

    @property
    def message(self) -> str:
        """A readable sentence for this status."""
        return MESSAGES[self]


MESSAGES = {
    Status.CONVERGED: "converged: gradient norm <= tol",
    Status.MAX_STEPS: "max_steps reached",
    Status.NONFINITE: "stopped: non-finite loss, gradient or params; returned the last finite ones",
    Status.OPTIMAL: "converged: optimality certified at the kinks (subgradient conditions hold to tol)",
}


@dataclasses.dataclass(frozen=True)
class Result:
    """What :func:`minimize` returns; a pytree (every field is an array or a pytree of arrays).

    Under ``jax.vmap`` (and in ``jloss.sweep``) every field gets a leading batch axis.

    Attributes:
      params: the returned parameters, same structure as ``init_params``. If the run stopped on a
        non-finite value these are the last parameters whose loss and gradient were finite.
      loss: ``fun(params, *args)`` at the returned ``params`` (full data, also in minibatch mode).
      grad_norm: global L2 norm of the gradient of ``fun`` at the returned ``params`` (full data).
      steps: int32, optimizer updates applied by this call (rejected non-finite steps not counted).
      total_steps: int32, ``steps`` plus the ``total_steps`` of the result passed as ``init``;
        it positions the minibatch schedule so that a warm start continues it.
      converged: bool, ``status == Status.CONVERGED`` (or ``Status.OPTIMAL`` for a certified
        non-smooth fit).
      status: int32 :class:`Status` code; ``message`` turns it into text on the host.
      history: loss after every update, shape ``(max_steps,)``, ``history[i]`` is the loss after
        update ``i + 1`` (so ``history[steps - 1] == loss`` in full-batch mode) and NaN from
        index ``steps`` on; minibatch losses in minibatch mode. ``None`` with ``history=False``.
      opt_state: the optimizer state that goes with ``params``; pass the result back as
        ``init=`` to continue exactly where this run stopped.
    """

    params: Any
    loss: jax.Array
    grad_norm: jax.Array
    steps: jax.Array
    total_steps: jax.Array
    converged: jax.Array
    status: jax.Array
    history: jax.Array | None
    opt_state: Any

    @property
    def message(self) -> str | list:
        """The status as text: a string, or nested lists of strings for a batched result."""
        if isinstance(self.status, jax.core.Tracer):
            raise TypeError(
                "Result.message is computed on the host; it is not available inside jax.jit or "
                "jax.vmap. Return the result from the transformed function and read it there."
            )
        codes = np.asarray(self.status)
        if codes.ndim == 0:
            return Status(int(codes)).message
        return np.vectorize(lambda c: Status(int(c)).message, otypes=[object])(codes).tolist()


jax.tree_util.register_dataclass(
    Result,
    data_fields=[f.name for f in dataclasses.fields(Result)],
    meta_fields=[],
)

# Users import Result and Status from jloss.minimize (or jloss): keep reprs and pickles there.
Result.__module__ = Status.__module__ = "jloss.minimize"
