"""Batching rules for a sweep member's line search: keep shared data unbatched, skip dead branches.

Why this exists (measured, issue 14): ``jax.vmap`` turns a ``lax.cond`` whose predicate differs
between members into a ``select`` of both branches: it *runs both* for every member, and it
*broadcasts every operand of the cond to the batch first* (``jax._src.lax.control_flow.
conditionals._cond_batching_rule``: "we broadcast the input operands for simplicity and leave
optimizations to XLA"). optax's zoom line search (``optax.lbfgs``) is a ``while_loop`` whose body
is such a cond (``interval_found`` decides between zooming into the interval and searching for
it, each branch evaluating the objective). Under a sweep's vmap that cost, per line-search
iteration, two batched evaluations of the objective instead of one, selects over the whole line
search state, and (the objective closing over the data) a ``(K, N, d)`` copy of ``X`` per
member with ``K`` matrix-vector products against it. An L-BFGS sweep was slower than a Python
loop of ``minimize`` calls (1.6x-1.9x at K = 8-256).

Two pieces, both exact:

* :func:`branch_skipping` wraps a function (the optimizer's update) so that its ``vmap`` is
  evaluated by a small batching interpreter over its jaxpr: every equation is batched by
  ``jax.vmap`` as usual, except a ``cond`` with a batched predicate, which runs each branch under
  an unbatched ``lax.cond(any(members take it), ...)`` and selects per member, and a
  ``while_loop``, interpreted the same way inside (its carry batched where JAX's own rule would
  batch it). Operands keep their own batching, so the shared data is never broadcast, and a
  branch no member takes costs nothing. In the typical line-search iteration every member is in
  the same branch: one evaluation, as in one ``minimize`` call. What a branch passes through
  from its operands is read outside the cond (XLA CPU would copy each such output into the
  cond's result, a kernel per output and call), and a branch that passes everything through
  needs no cond at all: an L-BFGS sweep's program has 3 of its 8 conds and 16 of its 129 copies
  fewer (K=8), and compiles about 4% faster (K=48).
* :func:`member_value_fn` is the line search's ``value_fn`` of one member, whose batching rule
  takes member 0 of a data operand that a cond broadcast (exact: in the sweep the data is the
  same for every member by contract). It covers the path :func:`branch_skipping` leaves to JAX's
  own rules (forward-mode derivatives through the loop, ``diff="unrolled"``).

Derivatives: both are ``jax.custom_jvp`` on the outside (``custom_vmap`` has no reverse mode);
:func:`branch_skipping`'s tangent is ``jax.jvp`` of the plain function; :func:`member_value_fn`'s
takes the params' tangent from the gradient the rule computes anyway and the tangents of
``member``/``data``, when there are any, from ``jax.jvp`` of ``fun``.

Only for full-batch solves: a minibatch is gathered per member step, so it can be batched for
real.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core as jex_core

__all__ = ["branch_skipping", "member_value_fn"]

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


# -- branch_skipping: a batching interpreter that runs a cond's branch only where it is taken ------


def branch_skipping(f: Callable) -> Callable:
    """``f`` whose ``jax.vmap`` runs a batched ``lax.cond``'s branch only when some member takes it.

    The same values as ``f`` under ``vmap`` (see the module docstring). ``f`` must take every
    array it uses as an argument: arrays it closes over are constants of its jaxpr, unbatched.
    ``f`` is traced once per call (its jaxpr serves the primal, the batching rule and the
    tangent): a line search's update is slow to trace, and tracing it again in the rule cost an
    L-BFGS sweep about a sixth of its compile time.
    """

    def call(*args):
        leaves, tree = jax.tree_util.tree_flatten(args)
        closed, out_shape = jax.make_jaxpr(lambda *xs: f(*jax.tree_util.tree_unflatten(tree, xs)),
                                           return_shape=True)(*leaves)
        out_tree = jax.tree_util.tree_structure(out_shape)

        def flat(*xs):
            return jex_core.jaxpr_as_fun(closed)(*xs)

        batched_f = jax.custom_batching.custom_vmap(flat)

        @batched_f.def_vmap
        def _rule(axis_size, in_batched, *xs):
            return _eval_batched(closed, list(xs), list(in_batched), axis_size)

        @jax.custom_jvp
        def wrapped(*xs):
            return batched_f(*xs)

        @wrapped.defjvp
        def _jvp(primals, tangents):
            return jax.jvp(flat, primals, tangents)

        return jax.tree_util.tree_unflatten(out_tree, wrapped(*leaves))

    return call


def _broadcast(x: jax.Array, size: int) -> jax.Array:
    return jnp.broadcast_to(x, (size,) + jnp.shape(x))


def _select(mask: jax.Array, new: jax.Array, old: jax.Array) -> jax.Array:
    m = mask.reshape(mask.shape + (1,) * (new.ndim - 1))
    return lax.select(jnp.broadcast_to(m, new.shape), new, old)


def _bind(eqn, values) -> list:
    params = eqn.primitive.get_bind_params(eqn.params)
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*values, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _vmapped(eqn, values, flags, size) -> tuple[list, list]:
    axes = [0 if b else None for b in flags]
    outs = jax.vmap(lambda *xs: _bind(eqn, xs), in_axes=axes, axis_size=size)(*values)
    return outs, [True] * len(outs)


def _eval_batched(closed, args, flags, size) -> tuple[list, list]:
    """Evaluate ``closed`` (one member's ClosedJaxpr) on ``args``, batched on axis 0 where
    ``flags``: ``(outs, out_flags)``."""
    jaxpr = closed.jaxpr
    env: dict = {}

    def read(v):
        return (v.val, False) if isinstance(v, jex_core.Literal) else env[v]

    for v, c in zip(jaxpr.constvars, closed.consts):
        env[v] = (c, False)
    for v, a, b in zip(jaxpr.invars, args, flags):
        env[v] = (a, b)
    for eqn in jaxpr.eqns:
        values, bs = (list(t) for t in zip(*map(read, eqn.invars))) if eqn.invars else ([], [])
        if not any(bs):
            outs, out_flags = _bind(eqn, values), [False] * len(eqn.outvars)
        elif eqn.primitive is lax.cond_p and _plain_avals(eqn):
            outs, out_flags = _cond(eqn, values, bs, size)
        elif eqn.primitive is lax.while_p:
            outs, out_flags = _while(eqn, values, bs, size)
        else:
            outs, out_flags = _vmapped(eqn, values, bs, size)
        for v, o, b in zip(eqn.outvars, outs, out_flags):
            env[v] = (o, b)
    res = [read(v) for v in jaxpr.outvars]
    return [r[0] for r in res], [r[1] for r in res]


def _plain_avals(eqn) -> bool:
    """The cond's outputs are ordinary arrays (``_cond`` builds zeros of them)."""
    return all(jnp.issubdtype(a.dtype, jnp.number) or a.dtype == jnp.bool_
               for a in eqn.params["branches"][0].out_avals)


def _all_batched(closed, args, flags, size) -> list:
    outs, out_flags = _eval_batched(closed, args, flags, size)
    return [o if b else _broadcast(o, size) for o, b in zip(outs, out_flags)]


def _cond(eqn, values, flags, size) -> tuple[list, list]:
    index, ops, op_flags = values[0], values[1:], flags[1:]
    branches = eqn.params["branches"]
    if not flags[0]:  # one branch for all members: as JAX does, with operands left unbroadcast
        fns = [lambda o, br=br: _all_batched(br, o, op_flags, size) for br in branches]
        outs = lax.switch(index, fns, ops)
        return outs, [True] * len(outs)
    out = None
    for i, br in enumerate(branches):
        taken = index == i
        # An output the branch passes through from an operand is read outside the cond: inside,
        # XLA CPU copies it into the cond's result, one more kernel per output and call (15-17
        # per cond in the zoom line search's loop body).
        position = {v: k for k, v in enumerate(br.jaxpr.invars)}
        forwarded = [None if isinstance(v, jex_core.Literal) else position.get(v) for v in br.jaxpr.outvars]
        keep = [j for j, k in enumerate(forwarded) if k is None]
        computed: list = []
        if keep:
            zeros = [jnp.zeros((size,) + br.out_avals[j].shape, br.out_avals[j].dtype) for j in keep]

            def run(o, br=br, keep=keep):
                outs = _all_batched(br, o, op_flags, size)
                return [outs[j] for j in keep]

            computed = lax.cond(jnp.any(taken), run, lambda o, z=zeros: z, ops)
        fresh = iter(computed)
        out_i = [next(fresh) if k is None else ops[k] if op_flags[k] else _broadcast(ops[k], size)
                 for k in forwarded]
        out = out_i if out is None else [_select(taken, n, o) for n, o in zip(out_i, out)]
    return out, [True] * len(out)


def _out_flags(closed, avals, flags, size) -> list:
    """The output flags of ``_eval_batched`` on arguments of ``avals`` (traced, not run)."""
    found: list = []

    def f(*xs):
        outs, out_flags = _eval_batched(closed, xs, flags, size)
        found.append(out_flags)
        return outs

    jax.eval_shape(f, *[jax.ShapeDtypeStruct(((size,) if b else ()) + tuple(a.shape), a.dtype)
                        for a, b in zip(avals, flags)])
    return found[0]


def _while(eqn, values, flags, size) -> tuple[list, list]:
    p = eqn.params
    cn, bn = p["cond_nconsts"], p["body_nconsts"]
    cond_j, body_j = p["cond_jaxpr"], p["body_jaxpr"]
    cconsts, bconsts, init = values[:cn], values[cn:cn + bn], values[cn + bn:]
    cflags, bflags, init_flags = flags[:cn], flags[cn:cn + bn], flags[cn + bn:]
    avals = [v.aval for v in eqn.invars]
    cavals, bavals, carry_avals = avals[:cn], avals[cn:cn + bn], avals[cn + bn:]
    carry = list(init_flags)
    while True:  # the carry's batching: a fixed point, as in JAX's rule
        pred_batched = _out_flags(cond_j, cavals + carry_avals, cflags + carry, size)[0]
        if pred_batched:
            new = [True] * len(carry)
        else:
            new = [a or b for a, b in zip(carry, _out_flags(body_j, bavals + carry_avals, bflags + carry, size))]
        if new == carry:
            break
        carry = new
    init = [_broadcast(x, size) if b and not b0 else x for x, b, b0 in zip(init, carry, init_flags)]

    def pred(c):
        return _eval_batched(cond_j, cconsts + list(c), cflags + carry, size)[0][0]

    def body(c):
        outs, out_flags = _eval_batched(body_j, bconsts + list(c), bflags + carry, size)
        outs = [_broadcast(o, size) if b and not ob else o for o, ob, b in zip(outs, out_flags, carry)]
        if pred_batched:  # members whose predicate is false keep their carry
            running = pred(c)
            outs = [_select(running, n, o) for n, o in zip(outs, c)]
        return outs

    outs = lax.while_loop(lambda c: jnp.any(pred(c)) if pred_batched else pred(c), body, init)
    return outs, carry
