"""A sweep member's objective whose ``vmap`` keeps the data the members share unbatched.

Why this exists (measured, issue 14): ``jax.vmap`` turns a ``lax.cond`` whose predicate differs
between members into a ``select`` of both branches, and *broadcasts every operand of the cond
to the batch first* (``jax._src.lax.control_flow.conditionals._cond_batching_rule``: "we
broadcast the input operands for simplicity and leave optimizations to XLA"). optax's zoom line
search (``optax.lbfgs``) evaluates the objective inside such conds (``interval_found`` decides
between its two branches, each evaluating it). The objective closes over the data, so under the
sweep's vmap every line-search iteration copied ``X`` once per member (a ``(K, N, d)``
broadcast, 7 MB for K = 48, N = 3,000, d = 12) and evaluated ``K`` matrix-vector products
against the copies instead of one matrix product ``X @ P``. XLA CPU does not undo it. That made
an L-BFGS sweep slower than a Python loop of ``minimize`` calls (1.6x-1.9x at K = 8-256).

:func:`member_value_fn` is the line search's ``value_fn`` of one member: ``params -> fun(params,
*member, *data)``, with a batching rule (``jax.custom_batching.custom_vmap``) that, for the data,
takes member 0 of a batched operand. That is exact because inside the sweep's vmap the data is
never batched by anything but such a broadcast: it is closed over from outside the vmap and is
the same for every member by the sweep's contract; the member's own arguments (its
hyperparameter) and the params keep their batch axis. Under an outer ``vmap`` of the whole
sweep (over datasets, say) the data is batched at *that* level, which this rule never sees
(it only rules the level at which it is called). Derivatives: a ``jax.custom_jvp`` on the
outside (``custom_vmap`` alone has no reverse mode) gives the params' tangent from the gradient
the rule computes anyway and the tangents of ``member``/``data``, when there are any
(``diff="unrolled"``'s forward mode through the line search), from ``jax.jvp`` of ``fun``;
the line search's own ``value_and_grad`` costs one evaluation, as before.

Only for full-batch solves: a minibatch is gathered per member step, so it can be batched for
real.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["member_value_fn"]

_SymbolicZero = jax.custom_derivatives.SymbolicZero


def _is_zero(x: Any) -> bool:
    return isinstance(x, _SymbolicZero)


def _first_member(x: jax.Array, batched: bool) -> jax.Array:
    return lax.index_in_dim(x, 0, keepdims=False) if batched else x


def _axes(batched: Any) -> Any:
    return jax.tree_util.tree_map(lambda b: 0 if b else None, batched)


def member_value_fn(fun: Callable, member: tuple, data: tuple, dtype: Any) -> Callable:
    """``params -> fun(params, *member, *data)`` cast to ``dtype``, as a line search's
    ``value_fn``, whose vmap rule keeps ``data`` unbatched (see the module docstring)."""

    def value_and_grad(p, m, d):
        return jax.value_and_grad(lambda q: fun(q, *m, *d).astype(dtype))(p)

    batched_vg = jax.custom_batching.custom_vmap(value_and_grad)

    @batched_vg.def_vmap
    def _rule(axis_size, in_batched, p, m, d):
        del axis_size
        p_batched, m_batched, d_batched = in_batched
        d = jax.tree_util.tree_map(_first_member, d, d_batched)
        if not any(jax.tree_util.tree_leaves((p_batched, m_batched))):
            out = value_and_grad(p, m, d)
            return out, jax.tree_util.tree_map(lambda _: False, out)
        out = jax.vmap(value_and_grad, in_axes=(_axes(p_batched), _axes(m_batched), None))(p, m, d)
        return out, jax.tree_util.tree_map(lambda _: True, out)

    @jax.custom_jvp
    def value(p, m, d):
        return batched_vg(p, m, d)[0]

    def value_jvp(primals, tangents):
        p, m, d = primals
        dp, dm, dd = tangents
        v, g = batched_vg(p, m, d)
        t = jnp.zeros((), v.dtype)
        for gi, ti in zip(jax.tree_util.tree_leaves(g), jax.tree_util.tree_leaves(dp, is_leaf=_is_zero)):
            if not _is_zero(ti):
                t = t + jnp.vdot(gi, ti).astype(v.dtype)
        if not all(map(_is_zero, jax.tree_util.tree_leaves((dm, dd), is_leaf=_is_zero))):
            dense = lambda x: jnp.zeros(x.aval.shape, x.aval.dtype) if _is_zero(x) else x  # noqa: E731
            dm, dd = jax.tree_util.tree_map(dense, (dm, dd), is_leaf=_is_zero)
            t = t + jax.jvp(lambda m_, d_: fun(p, *m_, *d_).astype(dtype), (m, d), (dm, dd))[1]
        return v, t

    value.defjvp(value_jvp, symbolic_zeros=True)
    return lambda params: value(params, member, data)
