"""Reduction / weights / mask semantics and the dtype policy, across every loss.

The semantics (jloss/reduction.py): "none" -> w * l (0 where masked); "sum" -> sum(w * l) over
unmasked samples; "mean" -> that sum / sum(w) over unmasked samples, and 0 (with a zero gradient)
over nothing. Expected values come from ``reference.reduce``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jloss
import reference as ref
from loss_checkers import ALL, BF16, F16, LOW_PRECISION, S, assert_raises_naming

ids = repr


# --------------------------------------------------------------------------- semantics, per loss
@pytest.mark.parametrize("checker", ALL, ids=ids)
def test_mask_equals_subset(checker):
    checker.check_mask_equals_subset()


@pytest.mark.parametrize("checker", ALL, ids=ids)
def test_mask_nonfinite_inputs(checker):
    checker.check_mask_nonfinite()


@pytest.mark.parametrize("checker", ALL, ids=ids)
def test_mean_over_nothing(checker):
    checker.check_all_masked()


@pytest.mark.parametrize("checker", ALL, ids=ids)
def test_empty_batch(checker):
    checker.check_empty()


@pytest.mark.parametrize("checker", ALL, ids=ids)
def test_weights(checker):
    checker.check_weights()


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("checker", ALL, ids=ids)
def test_low_precision(checker, dtype):
    checker.check_low_precision(dtype)


# --------------------------------------------------------------------------- argument errors (eager)
@pytest.mark.parametrize("checker", ALL, ids=ids)
def test_unknown_reduction_lists_the_allowed_values(checker):
    _, p, t, h = checker.inputs("errors")
    for bad in ("avg", "MEAN"):
        assert_raises_naming(ValueError, [bad, "mean", "sum", "none"], checker.call, p, t, h, reduction=bad)


@pytest.mark.parametrize("bad", [None, "", 0])
def test_non_string_reduction_is_rejected(bad):
    with pytest.raises(ValueError, match="mean"):
        jloss.mse(np.ones(S, np.float32), np.zeros(S, np.float32), reduction=bad)


@pytest.mark.parametrize("checker", ALL, ids=ids)
def test_negative_weights_are_rejected(checker):
    _, p, t, h = checker.inputs("errors")
    w = np.ones(S, np.float32)
    w[1, 3] = -2.5
    assert_raises_naming(ValueError, ["-2.5"], checker.call, p, t, h, weights=w)


@pytest.mark.parametrize("checker", ALL, ids=ids)
def test_weights_must_broadcast_to_the_per_sample_loss(checker):
    _, p, t, h = checker.inputs("errors")
    assert_raises_naming(ValueError, ["(4,)", "(3, 5)"], checker.call, p, t, h, weights=np.ones(4, np.float32))
    # broadcastable *to* the per-sample shape: weights may not add dimensions to the loss
    with pytest.raises(ValueError, match=r"\(2, 3, 5\)"):
        checker.call(p, t, h, weights=np.ones((2,) + S, np.float32))


@pytest.mark.parametrize("checker", ALL, ids=ids)
def test_non_boolean_mask_is_a_type_error(checker):
    _, p, t, h = checker.inputs("errors")
    for dtype in (np.float32, np.int32):
        with pytest.raises(TypeError):
            checker.call(p, t, h, where=np.ones(S, dtype))


@pytest.mark.parametrize("checker", ALL, ids=ids)
def test_mask_must_broadcast_to_the_per_sample_loss(checker):
    _, p, t, h = checker.inputs("errors")
    assert_raises_naming(ValueError, ["(4,)", "(3, 5)"], checker.call, p, t, h, where=np.ones(4, bool))


def test_integer_dtype_weights_are_repetition():
    rng = np.random.default_rng(0)
    p, t = rng.normal(size=(2,) + S).astype(np.float32)
    k = rng.integers(0, 3, size=S).astype(np.int32)
    k[0, 0] = 1
    out = jloss.mse(p, t, weights=k)
    expected = np.mean(np.repeat((p - t).ravel().astype(np.float64) ** 2, k.ravel()))
    np.testing.assert_allclose(float(out), expected, rtol=1e-5)


# --------------------------------------------------------------------------- dtype policy
def test_float16_squares_do_not_overflow_before_the_mean():
    # 300**2 = 90000 overflows float16 (max 65504) but the mean, 22500, does not.
    p = np.array([300.0, 0.0, 0.0, 0.0], np.float16)
    for fn in (jloss.mse, jax.jit(jloss.mse)):
        out = fn(p, np.zeros(4, np.float16))
        assert out.dtype == F16
        assert float(out) == float(np.float16(22500.0))


@pytest.mark.parametrize("dtype, n", [(F16, 5000), (BF16, 300)])
def test_low_precision_sums_accumulate_in_float32(dtype, n):
    # A float16 accumulator stalls at 2048 when adding ones, a bfloat16 one at 256;
    # n and n / 2 are exactly representable in the dtype.
    p = jnp.ones(n, dtype)
    t = jnp.zeros(n, dtype)
    out = jax.jit(lambda a, b: jloss.mae(a, b, reduction="sum"))(p, t)
    assert out.dtype == dtype and float(out) == float(n)
    out = jax.jit(lambda a, b, w: jloss.mse(a, b, weights=w, reduction="sum"))(p, t, jnp.full(n, 0.5, dtype))
    assert out.dtype == dtype and float(out) == n / 2


def test_low_precision_with_weights_mask_and_gradient():
    # float32 weights do not promote a bfloat16 loss; the gradient keeps the input dtype
    rng = np.random.default_rng(1)
    p, t = rng.normal(size=(2,) + S).astype(BF16)
    w = rng.uniform(0.5, 2.0, size=S).astype(np.float32)
    m = rng.random(S) < 0.6
    run = jax.jit(
        lambda p, t, w, m: (
            [jloss.huber(p, t, weights=w, where=m, reduction=r) for r in ("mean", "sum", "none")],
            jax.grad(lambda x: jloss.huber(x, t, weights=w, where=m))(p),
        )
    )
    values, grad = run(p, t, w, m)
    l = ref.huber(p, t)
    for out, reduction in zip(values, ("mean", "sum", "none")):
        assert out.dtype == BF16
        np.testing.assert_allclose(
            np.asarray(out, np.float64), ref.reduce(l, weights=w, where=m, reduction=reduction), rtol=2e-2, atol=1e-3
        )
    assert grad.dtype == BF16
