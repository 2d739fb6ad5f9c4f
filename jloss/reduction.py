"""Reduction, weights, masks and the dtype policy: the one place that defines them for every loss.

Every jloss loss computes a *per-sample loss* ``l`` (the broadcast shape of predictions and
targets for elementwise losses, ``logits.shape[:-1]`` for class losses) and hands it here.

* ``where`` -- a boolean mask broadcastable to ``l``. Masked-out samples are replaced by safe
  values *before* the kernel runs and their loss is set to 0 after it (the "double where"), so
  neither a NaN loss nor a NaN gradient can leak out of a masked branch. They are not counted.
* ``weights`` -- non-negative, broadcastable to ``l``.
* ``reduction``:

  - ``"none"``: ``w * l`` (just ``l`` without weights), 0 where masked, shape of ``l``;
  - ``"sum"``: ``sum(w * l)`` over unmasked samples;
  - ``"mean"``: ``sum(w * l) / sum(w)`` over unmasked samples (``w = 1`` without weights).
    A mean over nothing (all masked, or all weights 0) is 0, with a zero gradient.

Dtype policy: predictions must be floating (``TypeError`` otherwise). ``float16`` and
``bfloat16`` inputs are computed and accumulated in ``float32`` and the result is cast back to
the input dtype; ``float32``/``float64`` are computed in their own precision. The result dtype is
that of the predictions (promoted with floating targets).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jloss import checks


def compute_dtype(dtype: Any) -> Any:
    """The dtype a loss computes in: float32 for 16-bit floats, else ``dtype`` itself."""
    dtype = jnp.dtype(dtype)
    return jnp.dtype(jnp.float32) if dtype.itemsize < 4 else dtype


def prepare_mask(name: str, where: Any, shape: tuple[int, ...]) -> jax.Array | None:
    """Validate ``where`` against the per-sample shape and broadcast it there."""
    if where is None:
        return None
    where = jnp.asarray(where)
    if where.dtype != jnp.bool_:
        raise TypeError(
            f"{name}: where must be a boolean mask, got dtype {where.dtype} (shape {where.shape}); "
            "use e.g. where=(x > 0)."
        )
    checks.check_broadcastable_to(name, "where", where.shape, shape)
    return jnp.broadcast_to(where, shape)


def mask_input(x: jax.Array, mask: jax.Array | None, fill: Any = 0, *, trailing: int = 0) -> jax.Array:
    """Replace masked-out entries of an input by ``fill`` (the first of the two ``where``s).

    ``trailing`` is the number of axes ``x`` has beyond the per-sample shape (1 for logits).
    """
    if mask is None:
        return x
    m = mask.reshape(mask.shape + (1,) * trailing)
    return jnp.where(m, x, jnp.asarray(fill, x.dtype))


def prepare_weights(name: str, weights: Any, shape: tuple[int, ...], dtype: Any) -> jax.Array | None:
    if weights is None:
        return None
    weights = jnp.asarray(weights)
    if not (jnp.issubdtype(weights.dtype, jnp.floating) or jnp.issubdtype(weights.dtype, jnp.integer)):
        raise TypeError(f"{name}: weights must be numeric, got dtype {weights.dtype}.")
    checks.check_broadcastable_to(name, "weights", weights.shape, shape)
    checks.check_value(name, "weights", weights, lambda w: w >= 0, "non-negative")
    return weights.astype(dtype)


def reduce_loss(
    name: str,
    loss: jax.Array,
    *,
    weights: Any,
    mask: jax.Array | None,
    reduction: str,
    out_dtype: Any,
) -> jax.Array:
    """Apply mask (second ``where``), weights and reduction to a per-sample loss."""
    shape = loss.shape
    w = prepare_weights(name, weights, shape, loss.dtype)
    if mask is not None:
        loss = jnp.where(mask, loss, jnp.zeros((), loss.dtype))
    if reduction == "none":
        out = loss if w is None else loss * w
        return out.astype(out_dtype)
    if loss.size == 0:  # a reduction over no samples is 0
        return jnp.sum(loss).astype(out_dtype)
    if w is None and mask is None:
        out = jnp.sum(loss) if reduction == "sum" else jnp.mean(loss)
        return out.astype(out_dtype)
    if w is None:
        w = mask.astype(loss.dtype)
    elif mask is not None:
        w = jnp.where(mask, w, jnp.zeros((), loss.dtype))
    total = jnp.sum(w * loss)
    if reduction == "sum":
        return total.astype(out_dtype)
    denom = jnp.sum(jnp.broadcast_to(w, shape))
    # A mean over nothing: total is exactly 0 then, and so is its gradient.
    out = total / jnp.where(denom == 0, jnp.ones((), denom.dtype), denom)
    return out.astype(out_dtype)


def result_dtype(*arrays: jax.Array) -> Any:
    """The output dtype: the promotion of the floating inputs."""
    floats = [a.dtype for a in arrays if jnp.issubdtype(a.dtype, jnp.floating)]
    return jnp.result_type(*floats) if floats else jnp.dtype(jnp.float32)
