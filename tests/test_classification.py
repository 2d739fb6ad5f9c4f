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
from loss_checkers import CLASSIFICATION, F32, F64, S, assert_close, assert_raises_naming, f64

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


# --------------------------------------------------------------------------- soft labels
def _soft_labels(seed, c=5):
    """Label weights that do not sum to 1: rows scaled by 0, 0.5, 1 or 3, some entries 0."""
    rng = np.random.default_rng(seed)
    g = rng.gamma(1.0, size=S + (c,))
    g = g / g.sum(-1, keepdims=True) * rng.choice([0.0, 0.5, 1.0, 3.0], size=S)[..., None]
    return np.where(rng.random(g.shape) < 0.2, 0.0, g).astype(np.float32)


def test_cross_entropy_soft_labels_need_not_sum_to_one():
    # -sum_c q_c log softmax(z)_c for any q >= 0: linear in q, 0 for q = 0; as optax and torch
    x, q = _logits(5), _soft_labels(5)
    eps = 0.2

    @jax.jit
    def run(x, q):
        ce = functools.partial(jloss.cross_entropy, reduction="none")
        return (
            ce(x, q), ce(x, 2.0 * q), ce(x, jnp.zeros_like(q)), ce(x, q, eps),
            optax.softmax_cross_entropy(x, q), jax.grad(lambda z: jloss.cross_entropy(z, jnp.zeros_like(q)))(x),
        )

    plain, doubled, zero, smoothed, theirs, grad_zero = run(x, q)
    assert_close(plain, ref.cross_entropy(x, q), rtol=1e-5, atol=1e-6)
    assert_close(doubled, 2.0 * f64(plain), rtol=1e-6, atol=1e-6)
    assert np.all(zero == 0.0) and np.all(grad_zero == 0.0)
    assert np.all(plain[q.sum(-1) == 0] == 0.0)
    assert_close(smoothed, ref.cross_entropy(x, q, eps), rtol=1e-5, atol=1e-6)
    assert_close(plain, theirs, rtol=1e-5, atol=1e-6)


def test_cross_entropy_rejects_negative_or_nan_soft_labels():
    x, q = _logits(6), _soft_labels(6)
    for bad, text in ((-0.25, "-0.25"), (np.nan, "nan")):
        qb = q.copy()
        qb[1, 2, 3] = bad
        assert_raises_naming(ValueError, ["cross_entropy", "non-negative", text], jloss.cross_entropy, x, qb)
        # masked-out samples are not checked; nor are traced labels
        m = np.ones(S, bool)
        m[1, 2] = False
        assert_close(jloss.cross_entropy(x, qb, where=m), jloss.cross_entropy(x[m], q[m]), rtol=1e-6)
        row = np.ones((S[0], 1), bool)
        row[1] = False  # a mask that broadcasts (one per row)
        assert np.isfinite(float(jloss.cross_entropy(x, qb, where=row)))
        assert jax.jit(jloss.cross_entropy)(x, qb).shape == ()


@pytest.mark.parametrize("labels", ["int", "soft"])
def test_cross_entropy_float32_accuracy_at_logits_of_1e4(labels):
    # Logits of magnitude 1e4 with several classes within a few units of the row max: a softmax
    # from exp(z - logsumexp(z)) carries logsumexp's rounding (ulp(1e4) ~ 1e-3, 2e-4 relative);
    # exp((z - m) - log s) is exact to float32 rounding, as torch's log_softmax is.
    rng = np.random.default_rng(7)
    top = rng.choice([1e4, -1e4, 3e4], size=S)[..., None]
    x = top - rng.choice([0.0, 1e4], p=[0.6, 0.4], size=S + (5,)) - rng.uniform(0.0, 4.0, size=S + (5,))
    x = x.astype(np.float32)
    y = _labels(7) if labels == "int" else _soft_labels(7)
    eps_row = np.array([[0.0], [0.1], [0.3]], np.float32)

    @jax.jit
    def run(x, y, e):
        f = lambda x, y: jloss.cross_entropy(x, y, e, reduction="sum")  # noqa: E731
        out = (jloss.cross_entropy(x, y, e, reduction="none"), jax.grad(f)(x, y))
        return out + ((jax.grad(f, argnums=1)(x, y),) if labels == "soft" else ())

    out = run(x, y, eps_row)
    assert_close(out[0], ref.cross_entropy(x, y, eps_row), rtol=1e-6, atol=1e-6)
    # gradient entries (sum_c q_c) softmax(z) - q lie within +-sum_c q_c: errors relative to that
    total = 1.0 if labels == "int" else np.sum(f64(y), axis=-1)
    scale = np.maximum((1.0 - f64(eps_row)) * total + f64(eps_row), 1e-3)[..., None]
    err = np.abs(f64(out[1]) - ref._grad_cross_entropy(x, y, eps_row)) / scale
    assert err.max() < 1e-6, err.max()
    if labels == "soft":
        assert_close(out[2], ref.GRAD_TARGETS["cross_entropy"](x, y, eps_row), rtol=1e-6, atol=1e-6)


def _ce_reference_gradient(z, q, eps):
    """d/d(z, q, eps) of the mean of cross_entropy, from reference.py's formulas (float64)."""
    n = np.prod(z.shape[:-1])
    grads = [ref._grad_cross_entropy(z, q, eps) / n]
    if np.asarray(q).dtype.kind == "f":
        grads.append(ref.GRAD_TARGETS["cross_entropy"](z, q, eps) / n)
    grads.append(np.sum(ref.GRAD_HYPERPARAMETER["cross_entropy"](z, q, eps)) / n)
    return grads


@pytest.mark.parametrize("labels", ["int", "soft"])
def test_cross_entropy_hessian_in_every_input(labels):
    # Second order w.r.t. logits, soft labels and label_smoothing, fwd-over-rev (jax.hessian),
    # rev-over-rev and fwd-over-fwd, against central differences of the analytic gradient.
    rng = np.random.default_rng(8)
    z = rng.normal(scale=2.0, size=(2, 4))
    q = rng.integers(0, 4, size=(2,)).astype(np.int32) if labels == "int" else rng.uniform(0.0, 1.5, size=(2, 4))
    eps = 0.15
    with jax.enable_x64(True):
        inputs = (z, eps) if labels == "int" else (z, q, eps)
        argnums = tuple(range(len(inputs)))

        def loss(*a):
            return jloss.cross_entropy(a[0], q, a[-1]) if labels == "int" else jloss.cross_entropy(*a)

        hessians = jax.jit(
            lambda *a: [h(loss, argnums)(*a) for h in (
                jax.hessian,
                lambda f, n: jax.jacrev(jax.jacrev(f, n), n),
                lambda f, n: jax.jacfwd(jax.jacfwd(f, n), n),
            )]
        )(*inputs)
    step = 1e-5

    def grad(a):
        return _ce_reference_gradient(a[0], q if labels == "int" else a[1], a[-1])

    for j, x in enumerate(inputs):  # column block j: d(grad)/d(input j) by central differences
        x = np.asarray(x, np.float64)
        for idx in np.ndindex(x.shape):
            e = np.zeros(x.shape)
            e[idx] = step
            plus = grad([*inputs[:j], x + e, *inputs[j + 1:]])
            minus = grad([*inputs[:j], x - e, *inputs[j + 1:]])
            for i, (gp, gm) in enumerate(zip(plus, minus)):
                fd = (gp - gm) / (2 * step)
                for h in hessians:
                    block = np.asarray(h[i][j])
                    assert_close(block[(Ellipsis, *idx)] if idx else block, fd, rtol=1e-7, atol=1e-9,
                                 err_msg=(labels, i, j, idx))


def test_cross_entropy_row_statistics_are_differentiable_in_the_shift_too():
    # cross_entropy passes the row max through stop_gradient, but the custom JVP of its row
    # statistics is exact in the shift m as well: the loss S log s - U does not depend on m.
    from jloss.classification import class_stats

    rng = np.random.default_rng(9)
    z, q = rng.normal(size=(3, 4)), rng.uniform(0.0, 2.0, size=(3, 4))
    m0 = z.max(-1)
    with jax.enable_x64(True):
        def stats(z, m, q):
            s, up, _, total = class_stats(z, m, q, False, True)
            return jnp.stack([jnp.log(s) + m, up + m * total, total])  # logsumexp, z.q, sum q

        dm = rng.normal(size=3)
        dz, dq = rng.normal(size=z.shape), rng.normal(size=q.shape)
        _, tangent = jax.jit(lambda *a: jax.jvp(stats, a[:3], a[3:]))(z, m0, q, dz, dm, dq)
        _, shift_only = jax.jit(lambda *a: jax.jvp(lambda m: stats(a[0], m, a[2]), (a[1],), (a[3],)))(z, m0, q, dm)
    sm = np.exp(ref._log_softmax(z))
    expected = np.stack([np.sum(sm * dz, -1), np.sum(q * dz + z * dq, -1), np.sum(dq, -1)])
    assert_close(tangent, expected, rtol=1e-12, atol=1e-12)
    assert_close(shift_only, np.zeros((3, 3)), atol=1e-12)
