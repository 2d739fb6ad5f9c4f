"""Elementwise regression losses: the family checker over every loss, plus loss-specific facts."""

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
from jloss import fusion
from loss_checkers import F32, F64, REGRESSION, S, assert_all_finite, assert_close, dtype_context, f64, tolerance

WITH_HYPER = [c for c in REGRESSION if c.spec.hyper is not None]
KINKS = [pytest.param(c, i, id=f"{c}-{i}") for c in REGRESSION for i in range(len(c.spec.kinks))]


# --------------------------------------------------------------------------- the checker
# (reductions, weights and masks: tests/test_reduction.py runs the same checkers over every loss)
@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("checker", REGRESSION, ids=repr)
def test_reference(checker, dtype):
    checker.check_reference(dtype)


@pytest.mark.parametrize("checker", REGRESSION, ids=repr)
def test_jit_equals_eager(checker):
    checker.check_jit_equals_eager()


@pytest.mark.parametrize("checker", REGRESSION, ids=repr)
def test_perfect_prediction(checker):
    checker.check_perfect_prediction()


@pytest.mark.parametrize("checker", REGRESSION, ids=repr)
def test_broadcasting(checker):
    checker.check_broadcasting()


@pytest.mark.parametrize("checker", REGRESSION, ids=repr)
def test_vmap(checker):
    checker.check_vmap()


@pytest.mark.parametrize("checker", WITH_HYPER, ids=repr)
def test_hyperparameter_array(checker):
    checker.check_hyperparameter_array()


@pytest.mark.parametrize("checker", REGRESSION, ids=repr)
def test_grad_reference(checker):
    checker.check_grad_reference()


@pytest.mark.parametrize("checker", REGRESSION, ids=repr)
def test_check_grads(checker):
    checker.check_grads()


@pytest.mark.parametrize("checker, i", KINKS)
def test_kink_gradient(checker, i):
    checker.check_kink(i)


@pytest.mark.parametrize("checker", REGRESSION, ids=repr)
def test_extreme(checker):
    checker.check_extreme()


@pytest.mark.parametrize("checker", WITH_HYPER, ids=repr)
def test_hyperparameter_errors(checker):
    checker.check_hyperparameter_errors()


@pytest.mark.parametrize("checker", REGRESSION, ids=repr)
def test_shape_errors(checker):
    checker.check_shape_errors()


@pytest.mark.parametrize("checker", REGRESSION, ids=repr)
def test_integer_predictions(checker):
    checker.check_integer_predictions()


# --------------------------------------------------------------------------- loss-specific
# (each test is one jitted program on the canonical shape S: compiling is what costs)
def _draw(seed):
    rng = np.random.default_rng(seed)
    return rng.normal(scale=2.0, size=S).astype(np.float32), rng.normal(size=S).astype(np.float32)


def test_huber_gradient_continuous_at_delta():
    delta = 1.5
    r = np.array([delta - 1e-3, delta, delta + 1e-3, -delta - 1e-3, -delta, -delta + 1e-3], np.float32)
    run = jax.jit(
        lambda r: (
            jloss.huber(r, 0.0, delta=delta, reduction="none"),
            jax.grad(lambda p: jloss.huber(p, 0.0, delta=delta, reduction="sum"))(r),
        )
    )
    value, grad = run(r)
    assert_close(grad, [delta - 1e-3, delta, delta, -delta, -delta, -delta + 1e-3], rtol=1e-5, atol=1e-6)
    # the value is continuous too: both branches give delta**2 / 2 at |r| == delta
    assert_close(np.asarray(value)[[1, 4]], [delta**2 / 2] * 2, rtol=1e-6)


def test_identities_between_regression_losses():
    p, t = _draw(0)
    run = jax.jit(
        lambda p, t: {
            "huber": jloss.huber(p, t, reduction="none"),
            "mse": jloss.mse(p, t, reduction="none"),
            "mae": jloss.mae(p, t, reduction="none"),
            "quantile": jloss.quantile(p, t, tau=0.5, reduction="none"),
            "eps0": jloss.epsilon_insensitive(p, t, epsilon=0.0, reduction="none"),
            "under": jloss.quantile(jnp.zeros(S), jnp.full(S, 2.0), tau=0.9),
            "over": jloss.quantile(jnp.full(S, 2.0), jnp.zeros(S), tau=0.9),
        }
    )
    out = {k: np.asarray(v, np.float64) for k, v in run(p, t).items()}
    inside = np.abs(p - t) <= 1.0
    assert inside.any() and (~inside).any()
    # huber: half the squared error inside delta, linear outside
    assert_close(out["huber"][inside], 0.5 * out["mse"][inside], rtol=1e-6)
    assert_close(out["huber"][~inside], out["mae"][~inside] - 0.5, rtol=1e-6)
    # the median pinball loss is half the absolute error; epsilon = 0 is the absolute error
    assert_close(out["quantile"], 0.5 * out["mae"], rtol=1e-6)
    assert_close(out["eps0"], out["mae"], rtol=1e-6)
    # the pinball loss is asymmetric: under-prediction (targets > predictions) costs tau per unit
    assert_close(out["under"], 1.8, rtol=1e-6)
    assert_close(out["over"], 0.2, rtol=1e-5)


@pytest.mark.parametrize(
    "name, argname, value", [("quantile", "tau", 0.0), ("quantile", "tau", 1.0), ("epsilon_insensitive", "epsilon", 0.0)]
)
def test_hyperparameter_edges_are_valid(name, argname, value):
    # eager: concrete hyperparameters are validated, and the closed interval is allowed
    p, t = _draw(2)
    out = getattr(jloss, name)(p, t, **{argname: value})
    assert_close(out, np.mean(ref.PER_SAMPLE[name](p, t, value)), rtol=1e-5)


def test_large_residuals_float32():
    # cosh overflows float32 beyond ~89 and (r / delta)**2 beyond ~1.8e19 * delta: neither may
    r = np.array([100.0, -100.0, 1e4, -3e38, 1e30, -1e30, 3e20], np.float32)
    big = np.array([1e30, -1e30, 3e20, -1e4], np.float32)
    run = jax.jit(
        lambda r, big: (
            jloss.log_cosh(r, 0.0, reduction="none"),
            jax.grad(lambda p: jloss.log_cosh(p, 0.0, reduction="sum"))(r),
            jloss.pseudo_huber(big, 0.0, delta=2.0, reduction="none"),
            jax.grad(lambda p: jloss.pseudo_huber(p, 0.0, delta=2.0, reduction="sum"))(big),
        )
    )
    out = run(r, big)
    assert_all_finite(out)
    log_cosh, log_cosh_grad, pseudo, pseudo_grad = out
    assert_close(log_cosh, np.abs(r.astype(np.float64)) - np.log(2.0), rtol=1e-6)
    assert_close(log_cosh_grad, np.sign(r), rtol=1e-6)
    assert_close(pseudo, 2.0 * np.abs(big.astype(np.float64)) - 4.0, rtol=1e-6)
    assert_close(pseudo_grad, 2.0 * np.sign(big), rtol=1e-6)


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-6), (np.float64, 1e-14)])
def test_log_cosh_is_accurate_for_small_residuals(dtype, rtol):
    # log cosh r = log1p(2 sinh^2(r / 2)) in float64 (no cancellation): |r| + log1p(exp(-2|r|))
    # - log 2 (optax's form) returns 0 at r = 1e-4 in float32 and is 7% off at 1e-3.
    r = np.array([1e-6, -1e-4, 1e-3, -0.01, 0.1, 0.5, -1.0, 3.0, 19.9, -20.0, 20.1, 50.0], dtype)
    exact = np.log1p(2.0 * np.sinh(r.astype(np.float64) / 2.0) ** 2)
    with dtype_context(dtype):
        for n in (len(r), fusion.MIN_SIZE):  # the plain and the fused (large input) programs
            x = np.resize(r, n)
            got = jax.jit(lambda x: jloss.log_cosh(x, jnp.zeros_like(x), reduction="none"))(x)
            assert got.dtype == dtype
            assert_close(np.asarray(got)[: len(r)], exact, rtol=rtol)


# --------------------------------------------------------------------------- optax agreement
def test_agrees_with_optax():
    p, t = _draw(3)
    deltas = (1.0, 0.3, 2.5)

    @jax.jit
    def run(p, t):
        out = {
            # optax.squared_error is r**2 like jloss.mse; optax.l2_loss is 0.5 * r**2 (half of mse)
            "squared_error": (jloss.mse(p, t, reduction="none"), optax.squared_error(p, t)),
            "l2_loss": (jloss.mse(p, t, reduction="none"), 2.0 * optax.l2_loss(p, t)),
            "log_cosh": (jloss.log_cosh(p, t, reduction="none"), optax.log_cosh(p, t)),
        }
        for d in deltas:  # huber: values and gradients (optax's is the same convention)
            ours = jax.value_and_grad(lambda x: jloss.huber(x, t, delta=d, reduction="sum"))(p)
            theirs = jax.value_and_grad(lambda x: optax.huber_loss(x, t, delta=d).sum())(p)
            out[f"huber:{d}"] = (ours, theirs)
        return out

    for name, (ours, theirs) in run(p, t).items():
        chex.assert_trees_all_close(ours, theirs, rtol=1e-5, atol=1e-6, custom_message=name)


# optax has no mae, pseudo-Huber, quantile (pinball) or epsilon-insensitive loss to compare with.


# --------------------------------------------------------------------------- hypothesis
finite = dict(allow_nan=False, allow_infinity=False)
DELICATE = ("huber", "pseudo_huber", "log_cosh")


@functools.lru_cache(maxsize=None)
def _delicate():
    return jax.jit(
        lambda p, t, h: {
            "huber": jloss.huber(p, t, delta=h, reduction="none"),
            "pseudo_huber": jloss.pseudo_huber(p, t, delta=h, reduction="none"),
            "log_cosh": jloss.log_cosh(p, t, reduction="none"),
        }
    )


@settings(max_examples=25, deadline=None, derandomize=True, database=None)  # reproducible in CI
@given(
    r=hnp.arrays(np.float64, S, elements=st.floats(-1e6, 1e6, **finite)),
    t=hnp.arrays(np.float64, S, elements=st.floats(-10.0, 10.0, **finite)),
    h=hnp.arrays(np.float64, S, elements=st.floats(0.01, 3.0, **finite)),
)
def test_reference_at_any_magnitude_float64(r, t, h):
    with jax.enable_x64(True):
        p = t + r
        out = _delicate()(p, t, h)
        for name in DELICATE:
            assert out[name].dtype == np.float64
            expected = ref.PER_SAMPLE[name](p, t) if name == "log_cosh" else ref.PER_SAMPLE[name](p, t, h)
            assert_close(out[name], expected, **tolerance(F64), err_msg=name)


@functools.lru_cache(maxsize=None)
def _huber_pair():
    return jax.jit(
        lambda r, d: (jloss.huber(r, 0.0, delta=d, reduction="none"), jloss.pseudo_huber(r, 0.0, delta=d, reduction="none"))
    )


@settings(max_examples=25, deadline=None, derandomize=True, database=None)  # reproducible in CI
@given(
    r=hnp.arrays(np.float32, S, elements=st.floats(-1e3, 1e3, width=32, **finite)),
    delta=st.floats(0.05, 5.0),
)
def test_huber_family_bounds(r, delta):
    """pseudo_huber <= huber <= min(r**2 / 2, delta * |r|) (and all >= 0)."""
    hub, ph = (f64(a) for a in _huber_pair()(r, delta))
    a = np.abs(f64(r))
    slack = 1e-5 * (1 + a * delta)
    assert np.all(ph >= 0.0) and np.all(ph <= hub + slack)
    assert np.all(hub <= np.minimum(0.5 * a**2, delta * a) + slack)
