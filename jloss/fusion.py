r"""Elementwise loss kernels with explicit derivatives, shaped so XLA fuses them into the mean.

``jax.value_and_grad(lambda p: mean(loss(p, y)))`` costs at best one pass that reduces the
per-sample loss and one that writes the gradient. Two things stop XLA (on CPU, its YNNPACK
reduction) from reaching that:

* a ``select`` (``jnp.where``, ``jnp.clip``, ``jax.nn.softplus``, ``jnp.logaddexp``) in the
  value: the reduction cannot fuse it, so the per-sample loss is written out in full first;
* an intermediate or broadcast *shared* by the value and its derivative: it gets its own
  buffer, and both passes read it back.

:func:`kernel` builds a :func:`jax.custom_jvp` from a select-free value (``minimum``,
``maximum``, ``abs``, arithmetic, ``exp``/``log1p``/``sqrt``/``tanh``) and one derivative
function per argument, free to use ``where`` to pin kink gradients. The derivatives see the
hyperparameters through :func:`jax.lax.optimization_barrier`, so their broadcasts stay apart from
the value's; a literal a derivative shares with the value (the 1 of pseudo-Huber's
``sqrt(1 + z^2)``, the hinge margin) goes through :func:`opaque` for the same reason. (XLA folds a
barrier around a bare 0, so the hinge's value avoids that literal instead.) Autodiff's own rule
for ``maximum`` would split a tie 0.5/0.5; here the derivative at every kink is whatever the
derivative function says, and it is differentiable again (so Hessians and the implicit
hypergradients of :mod:`jloss.differentiation` work).

Only large inputs need this: below :data:`MIN_SIZE` elements a kernel's plain ``where`` form is
as fast alone and faster under ``jax.vmap``, so :func:`kernel` picks the form by the (static)
size. ``tests/test_fusion.py`` checks that the two forms agree, kinks included.
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero


#: Inputs with fewer elements than this use a kernel's ``small`` form. Below it XLA's CPU backend
#: reduces with its own fused reduce-window tree, where a plain ``where`` kernel is as good, and
#: under ``jax.vmap`` (a sweep: many small problems) the fused form's arithmetic would land in the
#: library reduction, which runs it on one thread (1.6x slower for 64 x 2,000 Huber residuals).
MIN_SIZE = 1 << 18


def kernel(
    value: Callable[..., jax.Array],
    *derivatives: Callable[..., jax.Array],
    small: Callable[..., jax.Array] | None = None,
) -> Callable[..., jax.Array]:
    """``value(x, *hyper)`` with ``d value / d arg_i = derivatives[i](x, *hyper)``.

    ``x`` is the per-sample input (a residual, a margin, a logit); ``hyper`` are the loss's
    hyperparameters (or a second array input). Every derivative has the broadcast shape of the
    value or broadcasts to it. ``small``, if given, is the same function written plainly (its
    autodiff derivatives pinned the same way), used for inputs of fewer than :data:`MIN_SIZE`
    elements (per ``vmap`` member: shapes are static, so the choice is made at trace time).
    """
    fun = jax.custom_jvp(value)

    def jvp(primals, tangents):
        out = fun(*primals)
        x, *hyper = primals
        if hyper:
            hyper = list(jax.lax.optimization_barrier(tuple(hyper)))
        args = (x, *hyper)
        out_dot = None
        for derivative, tangent in zip(derivatives, tangents):
            if isinstance(tangent, SymbolicZero):
                continue
            term = derivative(*args) * tangent
            out_dot = term if out_dot is None else out_dot + term
        if out_dot is None:
            out_dot = jnp.zeros_like(out)
        return out, jnp.broadcast_to(out_dot, out.shape).astype(out.dtype)

    fun.defjvp(jvp, symbolic_zeros=True)
    if small is None:
        return fun

    def dispatch(*args, **kwargs):
        shapes = [jnp.shape(a) for a in (*args, *kwargs.values())]
        size = math.prod(np.broadcast_shapes(*shapes))
        return (small if size < MIN_SIZE else fun)(*args, **kwargs)

    return dispatch


def opaque(value: float, dtype) -> jax.Array:
    """The scalar ``value`` behind an optimization barrier: XLA cannot merge its broadcast with
    the same literal's in the loss value (which would give that broadcast its own buffer)."""
    return jax.lax.optimization_barrier(jnp.asarray(value, dtype))
