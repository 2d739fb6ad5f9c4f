"""Derivatives of every loss w.r.t. EVERY float input, against float64 references.

The float inputs of a loss are its predictions, its targets when they are floats (regression
targets, soft labels, binary labels), its hyperparameter and its weights; ``where`` (a boolean
mask) and ``reduction`` (a static string) are not differentiable. For every registered loss
(``jloss.available()``, through its LossSpec in ``loss_checkers.py``), in float32 and in float64
(x64 enabled), each float input is differentiated *alone* (the others held fixed, as a user
differentiating w.r.t. labels only does), in reverse mode (``jax.grad``) and in forward mode
(``jax.jacfwd``), for reduction ``"mean"`` (``sum(w l) / sum(w)``) and ``"sum"`` (``sum(w l)``)
with weights; and all at once through ``jax.jvp`` and ``jax.vjp`` of ``reduction="none"`` (``w l``)
with a scalar hyperparameter. The expected values are five-point central differences, in float64,
of the NumPy formulas in ``reference.py`` on the same (rounded) inputs, drawn away from kinks;
the analytic derivative formulas there are checked against the same differences.
``test_every_float_input_is_covered`` fails when a loss has a float input that these tests do not
differentiate, so a loss added to the registry, or an input added to a loss, cannot go untested.

Speed: one jitted program per loss case and dtype computes every derivative (compiling is the
cost; the finite differences are NumPy on a few dozen numbers).
"""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jloss
import reference as ref
from loss_checkers import ALL, F32, F64, S, assert_close, cast, dtype_context, f64, rng_for

NOT_DIFFERENTIABLE = {"where": "a boolean mask", "reduction": "a static string"}
REDUCED = ("mean", "sum")
FD_STEP = 1e-3  # five-point stencil: truncation ~ step^4 f^(5) / 30, rounding ~ 1e-16 |F| / step
CASES = [c for c in ALL if c.spec.name in jloss.available()]


def float_inputs(checker) -> tuple[str, ...]:
    """The float inputs a case differentiates, by argument name."""
    s = checker.spec
    names = ["predictions"]
    if s.labels != "int":  # regression targets and float labels
        names.append("targets")
    if s.hyper is not None:
        names.append(s.hyper.name)
    return (*names, "weights")


def tolerance(dtype):
    # float32: jloss's rounding (a few ulp per sample, summed over S); float64: the stencil's error
    return dict(rtol=2e-5, atol=2e-6) if jnp.dtype(dtype) == F32 else dict(rtol=1e-8, atol=1e-9)


# --------------------------------------------------------------------------- completeness
@pytest.mark.parametrize("name", jloss.available())
def test_every_float_input_is_covered(name):
    """Every argument of every registered loss is differentiated here or is not a float input."""
    info = jloss.info(name)
    cases = [c for c in CASES if c.spec.name == name]
    assert cases, f"{name}: no LossSpec in tests/loss_checkers.py, so its gradients are untested"
    params = inspect.signature(info.fn).parameters
    for arg in ("weights", *NOT_DIFFERENTIABLE):
        assert params[arg].kind is inspect.Parameter.KEYWORD_ONLY, (name, arg)
    covered = set().union(*(float_inputs(c) for c in cases))
    expected = set(params) - set(NOT_DIFFERENTIABLE)
    if "targets" not in covered:
        # integer class ids only: a float label must be refused, else it is a float input to test
        x = np.zeros((2, 3), np.float32) if info.kind == "multiclass" else np.zeros((2,), np.float32)
        with pytest.raises(TypeError):
            info.fn(x, np.zeros(x.shape[:-1] if info.kind == "multiclass" else x.shape, np.float32))
        expected.discard("targets")
    assert covered == expected, f"{name}: differentiated {sorted(covered)}, float inputs {sorted(expected)}"
    hypers = {c.spec.hyper.name for c in cases if c.spec.hyper is not None}
    assert hypers == ({info.hyperparameter} if info.hyperparameter else set()), (name, hypers)
    for c in cases:
        assert c.spec.class_axis == (info.kind == "multiclass"), (name, info.kind)


# --------------------------------------------------------------------------- inputs
def _inputs(checker, dtype):
    """Float inputs (per-row hyperparameter of shape (S[0], 1)) and the integer ones."""
    s = checker.spec
    rng = rng_for("input-gradients", s.id, str(dtype))
    hr = checker.draw_hyper(rng, (S[0], 1))
    h0 = checker.draw_hyper(rng)
    hs = [hr, h0] if hr is not None else None
    p, t = checker.draw(rng, S, F64, hs)
    if s.labels == "prob":
        # soft labels that need not sum to 1: rows scaled by 0.3, 1 or 2.5, some entries exactly 0
        t = f64(t) * rng.choice([0.3, 1.0, 2.5], size=S)[..., None]
        t = np.where(rng.random(t.shape) < 0.2, 0.0, t)
    args = {"predictions": cast(p, dtype), "targets": t if s.labels == "int" else cast(t, dtype)}
    if s.hyper is not None:
        args[s.hyper.name] = cast(hr, dtype)
    args["weights"] = cast(rng.uniform(0.5, 2.0, size=S), dtype)
    names = float_inputs(checker)
    scalar = None if s.hyper is None else cast(h0, dtype)  # a 0-d hyperparameter for "none"
    shapes = {n: () if n == getattr(s.hyper, "name", None) else np.shape(args[n]) for n in names}
    tangents = {n: cast(rng.normal(size=shapes[n]), dtype) for n in names}
    cotangent = cast(rng.normal(size=S), dtype)
    return args, names, tangents, cotangent, scalar


def _call(fn, hyper, a, reduction):
    kw = {} if hyper is None else {hyper: a[hyper]}
    return fn(a["predictions"], a["targets"], **kw, weights=a["weights"], reduction=reduction)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _derivatives(fn, names, hyper, args, tangents, cotangent, scalar):
    out = {}
    for reduction in REDUCED:
        for n in names:  # each input alone: the others are constants
            f = functools.partial(lambda x, n, r: _call(fn, hyper, {**args, n: x}, r), n=n, r=reduction)
            out[f"rev:{reduction}:{n}"] = jax.grad(f)(args[n])
            out[f"fwd:{reduction}:{n}"] = jax.jacfwd(f)(args[n])
    # reduction="none", every float input at once, a 0-d hyperparameter
    base = args if hyper is None else {**args, hyper: scalar}
    per_sample = lambda d: _call(fn, hyper, {**base, **d}, "none")  # noqa: E731
    primals = {n: base[n] for n in names}
    out["jvp:none"] = jax.jvp(per_sample, (primals,), (tangents,))[1]
    out["vjp:none"] = jax.vjp(per_sample, primals)[1](cotangent)[0]
    return out


# --------------------------------------------------------------------------- references
def _reference(checker, a, reduction):
    """The float64 reference of the reduced loss, from the per-sample formula."""
    h = None if checker.spec.hyper is None else a[checker.spec.hyper.name]
    return ref.reduce(checker.reference(a["predictions"], a["targets"], h), weights=a["weights"], reduction=reduction)


def _stencil(f, step=FD_STEP):
    """d/ds f(s) at 0, five-point central difference."""
    return (-f(2 * step) + 8 * f(step) - 8 * f(-step) + f(-2 * step)) / (12 * step)


def _fd_gradient(F, a, n):
    x = a[n]
    g = np.zeros(np.shape(x))
    for idx in np.ndindex(np.shape(x)):
        e = np.zeros(np.shape(x))
        e[idx] = 1.0
        g[idx] = _stencil(lambda s: F({**a, n: x + s * e}))
    return g


def _as64(args):
    return {k: (v if np.asarray(v).dtype.kind in "iu" else f64(v)) for k, v in args.items()}


@pytest.mark.parametrize("dtype", [F32, F64], ids=str)
@pytest.mark.parametrize("checker", CASES, ids=repr)
def test_gradients_of_every_float_input(checker, dtype):
    hyper = None if checker.spec.hyper is None else checker.spec.hyper.name
    args, names, tangents, cotangent, scalar = _inputs(checker, dtype)
    with dtype_context(dtype):
        out = jax.tree_util.tree_map(np.asarray, _derivatives(checker.fn, names, hyper, args, tangents, cotangent, scalar))
    a64, tol = _as64(args), tolerance(dtype)
    failures = []  # every mismatch is reported, not only the first

    def check(got, expected, what):
        try:
            assert_close(got, expected, **tol)
        except AssertionError as e:
            worst = [line.strip() for line in str(e).splitlines() if line.strip().startswith("Max")]
            failures.append(f"{what}: {'; '.join(worst)}")

    for reduction in REDUCED:
        F = functools.partial(_reference, checker, reduction=reduction)
        for n in names:
            expected = _fd_gradient(F, a64, n)
            for mode in ("rev", "fwd"):
                got = out[f"{mode}:{reduction}:{n}"]
                assert got.shape == np.shape(args[n]) and got.dtype == dtype, (mode, reduction, n, got.shape, got.dtype)
                check(got, expected, f"d/d{n} ({mode} mode, reduction={reduction!r})")
    # reduction="none": the directional derivative of w l (jvp) and the pullback of a cotangent (vjp)
    base = a64 if hyper is None else {**a64, hyper: f64(scalar)}
    none = functools.partial(_reference, checker, reduction="none")
    d = {n: f64(tangents[n]) for n in names}
    check(out["jvp:none"], _stencil(lambda s: none({**base, **{n: base[n] + s * d[n] for n in names}})), "jvp, 'none'")
    ct = f64(cotangent)
    for n in names:
        got = out["vjp:none"][n]
        assert got.shape == np.shape(base[n]), (n, got.shape)
        check(got, _fd_gradient(lambda a: np.sum(ct * none(a)), base, n), f"vjp d/d{n}, 'none'")
    assert not failures, f"{checker} ({dtype}):\n" + "\n".join(failures)


@pytest.mark.parametrize("checker", CASES, ids=repr)
def test_analytic_reference_derivatives_agree_with_finite_differences(checker):
    """reference.py's derivative formulas (predictions, float targets, hyperparameter) are the
    derivatives of its loss formulas: the two references do not share a mistake."""
    s = checker.spec
    args, names, *_ = _inputs(checker, F64)
    a = _as64(args)
    formulas = {
        "predictions": ref.GRAD_PREDICTIONS[s.name],
        "targets": ref.GRAD_TARGETS.get(s.name),
        **({} if s.hyper is None else {s.hyper.name: ref.GRAD_HYPERPARAMETER[s.name]}),
    }
    h = None if s.hyper is None else a[s.hyper.name]

    def summed(b):
        return np.sum(checker.reference(b["predictions"], b["targets"], None if h is None else b[s.hyper.name]))

    for n in names:
        if n == "weights":  # d/dw: the loss itself (test_gradients_of_every_float_input)
            continue
        formula = formulas[n]
        assert formula is not None, f"{s.name}: no derivative formula for {n} in reference.py"
        g = formula(a["predictions"], a["targets"]) if h is None else formula(a["predictions"], a["targets"], h)
        if n == getattr(s.hyper, "name", None):
            g = np.sum(g, axis=1, keepdims=True)  # per sample -> the per-row hyperparameter
        assert_close(g, _fd_gradient(summed, a, n), rtol=1e-8, atol=1e-9, err_msg=n)
