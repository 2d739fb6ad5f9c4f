"""Classification losses: the family checker over every loss, plus loss-specific facts."""

from __future__ import annotations

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import jloss
import reference as ref
from loss_checkers import CLASSIFICATION, F32, F64, S, assert_close

CE_INT, CE_PROB, BCE, HINGE, SQ_HINGE, MC_HINGE = CLASSIFICATION
WITH_HYPER = [c for c in CLASSIFICATION if c.spec.hyper is not None]
WITH_LABEL_ERRORS = [c for c in CLASSIFICATION if c.spec.invalid_labels]
WITH_PADDING = [c for c in CLASSIFICATION if c.spec.masked_label_fill is not None]
KINKS = [pytest.param(c, i, id=f"{c}-{i}") for c in CLASSIFICATION for i in range(len(c.spec.kinks))]


# --------------------------------------------------------------------------- the checker
# (reductions, weights and masks: tests/test_reduction.py runs the same checkers over every loss)
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("checker", CLASSIFICATION, ids=repr)
def test_reference(checker, dtype):
    checker.check_reference(dtype)


@pytest.mark.parametrize("checker", CLASSIFICATION, ids=repr)
def test_jit_equals_eager(checker):
    checker.check_jit_equals_eager()


@pytest.mark.parametrize("checker", CLASSIFICATION, ids=repr)
def test_minimum(checker):
    checker.check_minimum()


@pytest.mark.parametrize("checker", WITH_PADDING, ids=repr)
def test_masked_labels_not_checked(checker):
    checker.check_masked_labels_not_checked()


@pytest.mark.parametrize("checker", CLASSIFICATION, ids=repr)
def test_vmap(checker):
    checker.check_vmap()


@pytest.mark.parametrize("checker", WITH_HYPER, ids=repr)
def test_hyperparameter_array(checker):
    checker.check_hyperparameter_array()


@pytest.mark.parametrize("checker", CLASSIFICATION, ids=repr)
def test_grad_reference(checker):
    checker.check_grad_reference()


@pytest.mark.parametrize("checker", CLASSIFICATION, ids=repr)
def test_check_grads(checker):
    checker.check_grads()


@pytest.mark.parametrize("checker, i", KINKS)
def test_kink_gradient(checker, i):
    checker.check_kink(i)


@pytest.mark.parametrize("checker", CLASSIFICATION, ids=repr)
def test_extreme(checker):
    checker.check_extreme()


@pytest.mark.parametrize("checker", WITH_HYPER, ids=repr)
def test_hyperparameter_errors(checker):
    checker.check_hyperparameter_errors()


@pytest.mark.parametrize("checker", WITH_LABEL_ERRORS, ids=repr)
def test_label_errors(checker):
    checker.check_label_errors()


@pytest.mark.parametrize("checker", CLASSIFICATION, ids=repr)
def test_shape_errors(checker):
    checker.check_shape_errors()


@pytest.mark.parametrize("checker", CLASSIFICATION, ids=repr)
def test_integer_predictions(checker):
    checker.check_integer_predictions()


# --------------------------------------------------------------------------- loss-specific
# (each test is one jitted program on the canonical shape S: compiling is what costs)
def _logits(seed, c=5):
    return np.random.default_rng(seed).normal(scale=2.0, size=S + (c,)).astype(np.float32)


def _labels(seed, c=5):
    return np.random.default_rng(seed).integers(0, c, size=S).astype(np.int32)


def _none_and_grad(fn, x, *args, **kwargs):
    """Per-sample values, and the gradient of their sum w.r.t. x."""
    none = fn(x, *args, **kwargs, reduction="none")
    grad = jax.grad(lambda z: fn(z, *args, **kwargs, reduction="sum"))(x)
    return none, grad


def test_cross_entropy_integer_labels_equal_one_hot_probabilities():
    x, y = _logits(0), _labels(0)
    onehot = np.eye(5, dtype=np.float32)[y]
    eps_values = (0.0, 0.2, 1.0)

    @jax.jit
    def run(x, y, onehot):
        return [
            (
                _none_and_grad(jloss.cross_entropy, x, y, label_smoothing=e),
                _none_and_grad(jloss.cross_entropy, x, onehot, label_smoothing=e),
            )
            for e in eps_values
        ]

    for eps, (a, b) in zip(eps_values, run(x, y, onehot)):
        chex.assert_trees_all_close(a, b, rtol=1e-6, atol=1e-6)
        if eps == 1.0:  # full smoothing: the uniform target, whatever the label
            assert_close(a[0], -np.mean(ref._log_softmax(x), axis=-1), rtol=1e-5)


def test_hinge_labels_must_not_mix_in_zero():
    _, x, y, _ = HINGE.inputs("errors")
    y = y.copy()
    y[1, 1] = 0.0
    for fn in (jloss.hinge, jloss.squared_hinge):
        with pytest.raises(ValueError):
            fn(x, y)


def test_hinge_family_identities_and_optax():
    # optax.hinge_loss also expects {-1, +1} labels but silently accepts {0, 1}; jloss rejects those.
    # At the margin optax's gradient is -y/2 (jnp.maximum splits ties); jloss pins it to 0.
    # optax has no squared hinge: it is hinge_loss ** 2.
    _, s, y, _ = HINGE.inputs("optax", away=False)
    run = jax.jit(
        lambda s, y: (
            jloss.hinge(s, y, reduction="none"),
            jloss.squared_hinge(s, y, reduction="none"),
            optax.hinge_loss(s, y),
        )
    )
    hinge, squared, theirs = (np.asarray(a, np.float64) for a in run(s, y))
    assert_close(hinge, theirs, rtol=1e-6, atol=1e-7)
    assert_close(squared, theirs**2, rtol=1e-6, atol=1e-6)


def test_binary_cross_entropy_is_two_class_cross_entropy_and_agrees_with_optax():
    _, x, y, _ = BCE.inputs("optax")
    run = jax.jit(
        lambda x, y: (
            jloss.binary_cross_entropy(x, y, reduction="none"),
            jloss.cross_entropy(jnp.stack([jnp.zeros_like(x), x], -1), jnp.stack([1 - y, y], -1), reduction="none"),
            optax.sigmoid_binary_cross_entropy(x, y),
        )
    )
    bce, two_class, theirs = run(x, y)
    assert_close(bce, two_class, rtol=1e-5, atol=1e-6)
    assert_close(bce, theirs, rtol=1e-5, atol=1e-6)


def test_cross_entropy_agrees_with_optax():
    x, y = _logits(4), _labels(4)
    _, _, q, _ = CE_PROB.inputs("optax")
    eps = 0.1

    @jax.jit
    def run(x, y, q):
        onehot = jax.nn.one_hot(y, 5)
        return (
            (jloss.cross_entropy(x, y, reduction="none"), optax.softmax_cross_entropy_with_integer_labels(x, y)),
            (
                jloss.cross_entropy(x, y, label_smoothing=eps, reduction="none"),
                optax.softmax_cross_entropy(x, optax.smooth_labels(onehot, eps)),
            ),
            (jloss.cross_entropy(x, q, reduction="none"), optax.softmax_cross_entropy(x, q)),
            (
                jloss.cross_entropy(x, q, label_smoothing=eps, reduction="none"),
                optax.softmax_cross_entropy(x, optax.smooth_labels(q, eps)),
            ),
        )

    for ours, theirs in run(x, y, q):
        assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_multiclass_hinge_agrees_with_optax():
    # optax.losses.multiclass_hinge_loss (not exported at optax top level) is the same
    # Crammer-Singer formula; its gradient at the margin differs (a tie in jnp.max), not its value.
    _, s, y, _ = MC_HINGE.inputs("optax", away=False)
    run = jax.jit(lambda s, y: (jloss.multiclass_hinge(s, y, reduction="none"), optax.losses.multiclass_hinge_loss(s, y)))
    ours, theirs = run(s, y)
    assert_close(ours, theirs, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- hypothesis
finite = dict(allow_nan=False, allow_infinity=False)


@functools.lru_cache(maxsize=None)
def _ce_with_shift():
    return jax.jit(
        lambda x, y, e, shift: (
            jloss.cross_entropy(x, y, label_smoothing=e, reduction="none"),
            jloss.cross_entropy(x + shift, y, label_smoothing=e, reduction="none"),
        )
    )


@settings(max_examples=25, deadline=None, derandomize=True, database=None)  # reproducible in CI
@given(
    x=hnp.arrays(np.float64, S + (5,), elements=st.floats(-60.0, 60.0, **finite)),
    y=hnp.arrays(np.int32, S, elements=st.integers(0, 4)),
    eps=hnp.arrays(np.float64, S, elements=st.floats(0.0, 1.0, **finite)),
    shift=hnp.arrays(np.float64, S + (1,), elements=st.floats(-1e3, 1e3, **finite)),
)
def test_cross_entropy_reference_and_shift_invariance_float64(x, y, eps, shift):
    with jax.enable_x64(True):
        out, shifted = _ce_with_shift()(x, y, eps, shift)
        assert out.dtype == np.float64
        assert_close(out, ref.cross_entropy(x, y, eps), rtol=1e-9, atol=1e-9)
        assert_close(shifted, out, rtol=1e-9, atol=1e-9)
