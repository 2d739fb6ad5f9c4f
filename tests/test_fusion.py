"""The loss kernels' structure: XLA fuses each value into its mean (no full-size temporary).

``benchmarks/`` shows the speed; this checks the property behind it, from the compiled
program's own buffer sizes, so a kernel that reintroduces a ``select`` into its value (and with
it a per-sample temporary) fails here. CPU only: other backends fuse differently.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jloss
from jloss import fusion

N, C = fusion.MIN_SIZE, 10  # the fused forms start at MIN_SIZE elements


def _inputs(name):
    k1, k2 = jax.random.split(jax.random.PRNGKey(0))
    if name in ("cross_entropy", "multiclass_hinge"):
        return jax.random.normal(k1, (N // C, C)), jax.random.randint(k2, (N // C,), 0, C)
    x = jax.random.normal(k1, (N,))
    if name in ("hinge", "squared_hinge"):
        return x, jnp.where(jax.random.normal(k2, (N,)) > 0, 1.0, -1.0)
    if name == "binary_cross_entropy":
        return x, (jax.random.normal(k2, (N,)) > 0).astype(jnp.float32)
    return x, jax.random.normal(k2, (N,))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="fusion decisions are backend-specific")
@pytest.mark.parametrize("name", jloss.available())
def test_value_and_grad_of_the_mean_has_no_full_size_temporary(name):
    loss = jloss.get(name)
    predictions, targets = _inputs(name)
    compiled = jax.jit(jax.value_and_grad(loss)).lower(predictions, targets).compile()
    temp = compiled.memory_analysis().temp_size_in_bytes
    per_sample = predictions.shape[0] * predictions.dtype.itemsize
    # Class losses may keep a few per-sample vectors (max, logsumexp, argmax), any loss a few
    # scalars; nothing of the predictions' size may be written out besides the gradient itself.
    allowed = (3 * per_sample if predictions.ndim == 2 else 0) + 1024
    assert temp <= allowed, f"{name}: {temp} bytes of temporaries for {predictions.nbytes} of predictions"


def test_kernel_uses_the_given_derivatives_to_second_order():
    # A value whose autodiff derivative would differ at the kink (maximum splits ties 0.5/0.5).
    relu = fusion.kernel(lambda x: jnp.maximum(x, 0.0), lambda x: jnp.where(x > 0, 1.0, 0.0))
    assert float(jax.grad(relu)(0.0)) == 0.0
    assert float(jax.grad(relu)(2.0)) == 1.0
    soft = fusion.kernel(lambda x, a: a * jnp.log1p(jnp.exp(x)), lambda x, a: a * jax.nn.sigmoid(x),
                         lambda x, a: jnp.log1p(jnp.exp(x)))
    x = jnp.array([-1.5, 0.3, 2.0], jnp.float64) if jax.config.jax_enable_x64 else jnp.array([-1.5, 0.3, 2.0])
    check_grads(soft, (x, 0.7), order=2, modes=["fwd", "rev"], atol=1e-2, rtol=1e-2)
    # jvp with a symbolic-zero tangent in the hyperparameter gives the x-derivative alone.
    _, t = jax.jvp(lambda x: soft(x, 0.7), (x,), (jnp.ones_like(x),))
    np.testing.assert_allclose(t, 0.7 * jax.nn.sigmoid(x), rtol=1e-6)


# Residual-like inputs with every kink in them: 0, +-1 (Huber's delta and the hinge margin),
# +-0.1 (epsilon), huge values, and random ones.
_KINKS = jnp.array([0.0, 1.0, -1.0, 0.1, -0.1, 1e30, -1e30, 2.5, -0.3, 1e-8])
_HYPER = {"huber": 1.0, "pseudo_huber": 1.0, "quantile": 0.3, "epsilon_insensitive": 0.1}


def _both_forms(monkeypatch, fun, *args):
    monkeypatch.setattr(fusion, "MIN_SIZE", 0)
    fused = fun(*args)
    monkeypatch.setattr(fusion, "MIN_SIZE", 1 << 62)
    plain = fun(*args)
    return fused, plain


@pytest.mark.parametrize(
    "name", ["mae", "huber", "pseudo_huber", "log_cosh", "quantile", "epsilon_insensitive",
             "hinge", "squared_hinge", "binary_cross_entropy"],
)
def test_fused_and_small_forms_agree_with_pinned_kinks(monkeypatch, name):
    loss = jloss.get(name)
    x = jnp.concatenate([_KINKS, jax.random.normal(jax.random.PRNGKey(1), (40,))])
    if name in ("hinge", "squared_hinge"):  # margins 1 - y s at the kinks: s = y (1 - kink)
        y = jnp.where(jnp.arange(x.size) % 2 == 0, 1.0, -1.0)
        x = jnp.where(jnp.abs(x) < 1e20, y * (1.0 - x), x)
    elif name == "binary_cross_entropy":
        y = (jnp.arange(x.size) % 3 == 0).astype(jnp.float32)
    else:
        y = jnp.zeros_like(x)
    hyper = (_HYPER[name],) if name in _HYPER else ()

    def values_and_derivatives(x):
        per_sample = lambda x, *h: loss(x, y, *h, reduction="none")  # noqa: E731
        grad = jax.grad(lambda x: jnp.sum(per_sample(x, *hyper)))(x)  # elementwise: d l_i / d x_i
        d_hyper = jax.jacfwd(lambda h: per_sample(x, h))(*hyper) if hyper else None
        return per_sample(x, *hyper), grad, d_hyper

    fused, plain = _both_forms(monkeypatch, values_and_derivatives, x)  # no jit: traced anew
    np.testing.assert_allclose(fused[0], plain[0], rtol=1e-6)
    # the derivative in the predictions, kinks included, is the same number in both forms
    np.testing.assert_allclose(fused[1], plain[1], rtol=1e-5, atol=1e-7)
    if hyper:  # and in the hyperparameter
        np.testing.assert_allclose(fused[2], plain[2], rtol=1e-5, atol=1e-7)
