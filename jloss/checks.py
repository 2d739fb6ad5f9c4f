"""Input checks shared by every jloss entry point.

Checks on *shapes and dtypes* run at trace time and always apply. Checks on *values* (a
Huber ``delta <= 0``, a label outside its domain) only run when the value is concrete, that is
outside ``jax.jit``/``jax.vmap``/``jax.grad`` tracing; inside a trace the value is unknown and the
check is skipped rather than forcing a host synchronisation.

Every failure raises ``ValueError`` (or ``TypeError`` for a wrong dtype) with a message that names
the function, the offending argument and its value or shape.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

REDUCTIONS = ("mean", "sum", "none")


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds a known value (not a tracer inside jit/vmap/grad)."""
    return not isinstance(x, jax.core.Tracer)


def concrete_value(x: Any) -> np.ndarray | None:
    """``x`` as a NumPy array when it is concrete, else ``None``."""
    if x is None or not is_concrete(x):
        return None
    return np.asarray(x)


def check_reduction(name: str, reduction: Any) -> str:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(
            f"{name}: reduction={reduction!r} is not one of {REDUCTIONS}. "
            "(Under jax.jit, pass reduction as a static argument.)"
        )
    return reduction


def check_floating(name: str, argname: str, x: Any) -> jax.Array:
    """Return ``x`` as an array; raise TypeError unless its dtype is floating."""
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{name}: {argname} must have a floating dtype, got {x.dtype} "
            f"(shape {x.shape}); cast it, e.g. {argname}.astype(jnp.float32)."
        )
    return x


def broadcast_shapes(name: str, **shapes: tuple[int, ...]) -> tuple[int, ...]:
    """Broadcast the named shapes or raise ValueError naming all of them."""
    try:
        return tuple(np.broadcast_shapes(*shapes.values()))
    except ValueError:
        described = ", ".join(f"{k} {tuple(v)}" for k, v in shapes.items())
        raise ValueError(f"{name}: shapes do not broadcast: {described}.") from None


def check_broadcastable_to(name: str, argname: str, shape: tuple[int, ...], target: tuple[int, ...]):
    """Raise ValueError unless ``shape`` broadcasts to exactly ``target``."""
    try:
        out = np.broadcast_shapes(tuple(shape), tuple(target))
    except ValueError:
        out = None
    if out is None or tuple(out) != tuple(target):
        raise ValueError(
            f"{name}: {argname} of shape {tuple(shape)} does not broadcast to the per-sample "
            f"loss shape {tuple(target)}."
        )


def check_value(name: str, argname: str, x: Any, ok, requirement: str) -> None:
    """If ``x`` is concrete and ``ok(x)`` is False anywhere, raise ValueError."""
    v = concrete_value(x)
    if v is None:
        return
    good = np.asarray(ok(v))
    if not np.all(good):
        bad = v[~good] if v.ndim else v
        example = np.ravel(bad)[:5].tolist()
        raise ValueError(f"{name}: {argname} must be {requirement}; got {example}.")


def check_hyperparameter(name: str, argname: str, x: Any, ok, requirement: str) -> jax.Array:
    """Check a loss hyperparameter: a real number or array, validated when concrete."""
    if isinstance(x, (bool, np.bool_)):
        raise TypeError(f"{name}: {argname} must be a real number, got {x!r}.")
    arr = jnp.asarray(x)
    if not (jnp.issubdtype(arr.dtype, jnp.floating) or jnp.issubdtype(arr.dtype, jnp.integer)):
        raise TypeError(f"{name}: {argname} must be a real number, got dtype {arr.dtype}.")
    check_value(name, argname, x, ok, requirement)
    return arr


def leading_size(leaves, scalar_error, mismatch_error) -> tuple[int | None, str | None]:
    """The leading size shared by labelled arrays, and the label of the first; (None, None) if
    there are none. ``leaves`` holds ``(label, array)`` pairs. A scalar raises
    ``ValueError(scalar_error(label))``, a different leading size
    ``ValueError(mismatch_error(first_label, size, label, its_size))``: each caller words its own.
    """
    n = first = None
    for label, leaf in leaves:
        shape = np.shape(leaf)
        if len(shape) == 0:
            raise ValueError(scalar_error(label))
        if n is None:
            n, first = shape[0], label
        elif shape[0] != n:
            raise ValueError(mismatch_error(first, n, label, shape[0]))
    return n, first


def labelled_leaves(prefix: str, tree: Any):
    """``(prefix + keystr(path), leaf)`` for every leaf of ``tree``."""
    leaves = jax.tree_util.tree_leaves_with_path(tree)
    return [(f"{prefix}{jax.tree_util.keystr(path)}", leaf) for path, leaf in leaves]
