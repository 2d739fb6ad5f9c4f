"""Pytree and dtype helpers of the solver (a leaf module: it imports nothing from jloss).

Written by hand where the library versions do not fit: :func:`select` keeps each leaf's dtype
and handles PRNG keys, which ``optax.tree.where`` does not; :func:`finite_and_sq_norm` fuses the
finiteness test and the squared norm into one reduction per leaf.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jloss.checks import is_concrete

__all__ = [
    "all_finite",
    "finite_and_sq_norm",
    "is_key",
    "is_weak",
    "select",
    "as_float",
    "strong",
    "init_state",
    "tree_bytes",
    "finds_value_and_grad",
]


def all_finite(tree: Any) -> jax.Array:
    """True if every leaf of ``tree`` is finite everywhere."""
    leaves = jax.tree_util.tree_leaves(tree)
    return functools.reduce(
        jnp.logical_and, [jnp.all(jnp.isfinite(x)) for x in leaves], jnp.asarray(True)
    )


def finite_and_sq_norm(params: Any, grad: Any) -> tuple[jax.Array, jax.Array]:
    """(every leaf of ``params`` and ``grad`` finite, squared norm of ``grad``): one fused
    reduction per leaf (``0 * x`` is 0 for a finite x and NaN otherwise, without overflow)."""
    bad, sq = [], []
    for p, g in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(grad)):
        g = jnp.asarray(g)
        flag = jnp.zeros_like(g) * p + jnp.zeros_like(g) * g
        if g.ndim == 0:
            b, s = flag, g * g
        else:
            zero = jnp.zeros((), g.dtype)
            b, s = lax.reduce((flag, g * g), (zero, zero), lambda a, c: (a[0] + c[0], a[1] + c[1]), tuple(range(g.ndim)))
        bad.append(b)
        sq.append(s)
    if not sq:
        return jnp.asarray(True), jnp.zeros((), jnp.float32)
    return jnp.isfinite(functools.reduce(jnp.add, bad)), functools.reduce(jnp.add, sq)


def is_key(x: Any) -> bool:
    """True for a typed PRNG key array."""
    return jax.dtypes.issubdtype(jnp.result_type(x), jax.dtypes.prng_key)


def is_weak(x: Any) -> bool:
    """True for a weakly typed value (a Python scalar, or a JAX array made from one)."""
    if isinstance(x, (bool, int, float, complex)):
        return True
    if isinstance(x, (jax.Array, jax.core.Tracer)):
        return jax.typeof(x).weak_type
    return False  # NumPy arrays and scalars are strongly typed


def select(pred: jax.Array, new: Any, old: Any) -> Any:
    """``new`` where ``pred`` else ``old``, leaf by leaf, keeping the types of ``old``."""

    def select_leaf(a, b):
        if is_key(b):
            return jax.random.wrap_key_data(
                jnp.where(pred, jax.random.key_data(a), jax.random.key_data(b)),
                impl=jax.random.key_impl(b),
            )
        return lax.convert_element_type(jnp.where(pred, a, b), jnp.result_type(b))

    return jax.tree_util.tree_map(select_leaf, new, old)


def as_float(x: Any) -> Any:
    """A scalar as a strongly typed value of the default float dtype (one cache key for all
    tols; a NumPy scalar for a concrete value, so no device dispatch)."""
    if is_concrete(x) and not isinstance(x, jax.Array):
        return np.asarray(x, dtype=jnp.result_type(float))
    return lax.convert_element_type(x, jnp.result_type(float))


def strong(tree: Any) -> Any:
    """The same values without weak types, so that the loop carry keeps one fixed type (only
    weakly typed leaves are converted: no device dispatch for the others)."""
    return jax.tree_util.tree_map(
        lambda x: lax.convert_element_type(x, jnp.result_type(x)) if is_weak(x) else x, tree
    )


@functools.partial(jax.jit, static_argnums=0)
def init_state(optimizer: optax.GradientTransformation, params: Any) -> Any:
    """``optimizer.init(params)`` in one dispatch, strongly typed."""
    return jax.tree_util.tree_map(
        lambda x: x if is_key(x) else lax.convert_element_type(x, jnp.result_type(x)),
        optimizer.init(params),
    )


def tree_bytes(tree: Any) -> int:
    """The bytes the leaves of ``tree`` take (a PRNG key, e.g. optax.noisy_sgd's state, counts as
    8: at most two uint32 words)."""
    return sum(
        (8 if is_key(x) else np.dtype(jnp.result_type(x)).itemsize) * int(np.prod(jnp.shape(x)))
        for x in jax.tree_util.tree_leaves(tree)
    )


def finds_value_and_grad(opt_state: Any) -> bool:
    """True if the state stores the loss and gradient at the new params (optax line searches)."""
    try:
        value = optax.tree.get(opt_state, "value")
        grad = optax.tree.get(opt_state, "grad")
    except (KeyError, ValueError, TypeError):
        return False
    return value is not None and grad is not None and jnp.shape(value) == ()
