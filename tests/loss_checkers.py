"""Reusable property checkers, one per loss family.

* :class:`ElementwiseRegressionChecker` -- losses of ``r = predictions - targets`` (mse, huber, ...).
* :class:`ClassificationChecker` -- logits/scores + labels, with a class axis (cross_entropy,
  multiclass_hinge) or elementwise (binary_cross_entropy, hinge, squared_hinge).

A checker is built from a small frozen :class:`LossSpec` (name, hyperparameter, kinks, extreme
magnitude, label kind, ...) and exposes ``check_*`` methods; the test modules parametrize over the
checkers at the bottom of this file. Expected values always come from the float64 NumPy formulas in
``reference.py``, never from jloss itself (except the jit/vmap/eager self-consistency checks).

Speed: on CPU the cost of these tests is compilation. Eager JAX compiles every primitive for every
new shape (about a second per loss and shape), and jitted programs cost in proportion to their
distinct content, while jit's cache makes a second call with the same signature free. So the
checks read named *parts* (inputs + outputs, computed once per session and shared by the tests)
that run a few jitted functions on a few canonical shapes (``S``, ``K``), so that most parts share
a compiled program; full gradients of both mean and sum are only taken where the reduction
semantics need them. Eager execution is kept for what only exists eagerly: the checks of concrete
values (errors, padding labels under a mask) and the jit-equals-eager comparison.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import re
import zlib
from typing import Any, Callable

import chex
import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import pytest

import jloss
import reference as ref

REDUCTIONS = ("mean", "sum", "none")
SHAPES = ((), (7,), (3, 5), (2, 3, 4))
SHAPES64 = ((), (2, 3, 4))  # float64: the rank extremes (the dtype, not the shapes, is the point)
S = (3, 5)  # the canonical per-sample shape
K = 9  # samples kept by the canonical mask (and total of the canonical integer weights)
BF16 = jnp.dtype(jnp.bfloat16)
F16 = jnp.dtype(jnp.float16)
F32 = jnp.dtype(jnp.float32)
F64 = jnp.dtype(jnp.float64)
LOW_PRECISION = (BF16, F16)


# --------------------------------------------------------------------------- helpers
def rng_for(*key: Any) -> np.random.Generator:
    """A deterministic generator per test (seeded from the test's identity)."""
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def dtype_context(dtype):
    """float64 needs x64 enabled; everything else runs in the default (32-bit) mode."""
    return jax.enable_x64(True) if jnp.dtype(dtype) == F64 else contextlib.nullcontext()


def cast(x, dtype) -> np.ndarray:
    """A NumPy array of ``dtype`` (bfloat16 via ml_dtypes)."""
    return np.asarray(np.asarray(x, np.float64).astype(jnp.dtype(dtype)))


def f64(x) -> np.ndarray:
    return ref.f64(x)


def tolerance(dtype) -> dict:
    """Tolerance of a jloss result against the float64 reference on the *same rounded inputs*."""
    return {
        F64: dict(rtol=1e-10, atol=1e-12),
        F32: dict(rtol=2e-5, atol=2e-6),
        F16: dict(rtol=3e-3, atol=1e-4),
        BF16: dict(rtol=2e-2, atol=1e-3),
    }[jnp.dtype(dtype)]


def assert_close(actual, expected, **tol):
    np.testing.assert_allclose(f64(actual), f64(expected), **tol)


def assert_all_finite(*trees):
    for leaf in jax.tree_util.tree_leaves(trees):
        assert np.all(np.isfinite(f64(leaf))), f"non-finite values: {leaf}"


def assert_raises_naming(exc_type, fragments, fn, *args, **kwargs):
    """``fn`` raises ``exc_type`` whose message contains every fragment (literal text)."""
    with pytest.raises(exc_type, match=re.escape(str(fragments[0]))) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    for frag in fragments[1:]:
        assert str(frag) in message, f"{frag!r} not in error message {message!r}"
    return message


def _expand(b, x):
    b = np.asarray(b)
    return b.reshape(b.shape + (1,) * (np.ndim(x) - b.ndim))


def away_from(draw: Callable[[tuple], np.ndarray], bad: Callable[[np.ndarray], np.ndarray], shape):
    """``draw(shape)`` with the entries (or rows) where ``bad`` is True redrawn until none is."""
    x = draw(shape)
    for _ in range(200):
        b = np.asarray(bad(x))
        if not b.any():
            return x
        x = np.where(_expand(b, x), draw(shape), x)
    raise AssertionError("rejection sampling failed")


def sum_to(g, shape):
    """Sum a broadcast gradient back to ``shape`` (the adjoint of broadcasting)."""
    g = np.asarray(g)
    while g.ndim > len(shape):
        g = g.sum(axis=0)
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def canonical_mask(rng, shape=S, keep=K):
    """A boolean mask with exactly ``keep`` True entries (so subsets have one fixed shape)."""
    m = np.zeros(int(np.prod(shape)), bool)
    m[rng.permutation(m.size)[:keep]] = True
    return m.reshape(shape)


def canonical_counts(rng, shape=S):
    """Integer repetition counts (some 0) that sum to ``K``."""
    base = np.zeros(int(np.prod(shape)), np.int64)
    base[:6] = [3, 2, 1, 1, 1, 1]
    return rng.permutation(base).reshape(shape)


# --------------------------------------------------------------------------- specs
@dataclasses.dataclass(frozen=True)
class Hyper:
    """A loss hyperparameter: its keyword, default, a range of valid values, invalid examples."""

    name: str
    default: float
    low: float
    high: float
    invalid: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class Kink:
    """Inputs at a kink and the exact gradient of the summed loss w.r.t. predictions there."""

    predictions: Any
    targets: Any
    grad: Any
    hyper: float | None = None  # None: the default


@dataclasses.dataclass(frozen=True)
class LossSpec:
    name: str  # attribute of jloss
    id: str = ""  # test id (defaults to name)
    hyper: Hyper | None = None
    smooth: bool = True  # check_grads order 2 (else 1)
    kinks: tuple[Kink, ...] = ()
    extreme: float = 1e30  # |input| magnitude (float32) for the extreme-value test
    # regression: kink locations in r as a function of the hyperparameter value
    kink_locations: Callable[[Any], tuple] = lambda h: ()
    # classification only
    labels: str = ""  # "int" | "prob" | "unit" (bce, [0,1]) | "pm1" (hinge)
    class_axis: bool = False
    invalid_labels: tuple[tuple[Any, str], ...] = ()  # (labels, regex the message must match)
    masked_label_fill: Any = None  # label value allowed where masked (e.g. -100 padding)
    num_classes: int = 5

    def __post_init__(self):
        if not self.id:
            object.__setattr__(self, "id", self.name)


# --------------------------------------------------------------------------- the base checker
class _Checker:
    """The family-independent properties; subclasses say how to draw inputs and what to expect.

    Every jitted check reads a named *part*: ``part(name)`` returns its inputs and
    ``result(name)`` its outputs, computed once per session (several tests read the same part).
    A part runs one of a few jitted functions, so parts with the same signature share one
    compiled program: ``_values`` (the three reductions), ``_light`` (those and the gradients of
    the sum) or ``_evaluate`` (those and the gradients of the mean, for weights and masks). The
    hyperparameter is a Python number in the weights/mask parts and one value per row of ``S``
    in the ``_light`` parts on ``S``.
    """

    differentiable_targets = False  # gradients w.r.t. targets are part of the contract
    poison_targets: Any = None  # what may sit in masked-out targets (None: leave them valid)

    def __init__(self, spec: LossSpec):
        self.spec = spec
        self._parts_cache: dict[bool, dict] = {}
        self._results: dict[tuple, dict] = {}
        self._jitted: dict[str, Callable] = {}

    def __repr__(self):
        return self.spec.id

    # ---- to provide
    def draw(self, rng, shape, dtype, h=None, away=True):  # -> predictions, targets (NumPy)
        raise NotImplementedError

    def per_sample_shape(self, p, t):
        raise NotImplementedError

    def _family_parts(self, rng, p, t, h) -> dict:
        return {}

    # ---- plumbing
    @property
    def fn(self):
        return getattr(jloss, self.spec.name)

    def kw(self, h):
        return {} if (self.spec.hyper is None or h is None) else {self.spec.hyper.name: h}

    def call(self, p, t, h=None, **kwargs):
        """The loss, eagerly."""
        return self.fn(p, t, **self.kw(h), **kwargs)

    def _loss(self, p, t, h, weights, where, reduction):
        return self.fn(p, t, **self.kw(h), weights=weights, where=where, reduction=reduction)

    def _values(self, p, t, h, weights, where):
        return {r: self._loss(p, t, h, weights, where, r) for r in REDUCTIONS}

    def _grads(self, p, t, h, weights, where, reduction):
        names = ["p"] + (["t"] if self.differentiable_targets else [])
        argnums = [0] + ([1] if self.differentiable_targets else [])
        if h is not None:
            names.append("h")
            argnums.append(2)
        if weights is not None:
            names.append("w")
            argnums.append(3)
        grads = jax.grad(self._loss, argnums=tuple(argnums))(p, t, h, weights, where, reduction)
        return {f"d{n}_{reduction}": g for n, g in zip(names, grads)}

    def _light(self, p, t, h, weights, where):
        """{"mean", "sum", "none", "dp_sum", ["dt_sum", "dh_sum", "dw_sum"]}."""
        return {**self._values(p, t, h, weights, where), **self._grads(p, t, h, weights, where, "sum")}

    def _evaluate(self, p, t, h, weights, where):
        """{"mean", "sum", "none", "dp_mean", ["dt_mean", "dh_mean", "dw_mean"]}."""
        return {**self._values(p, t, h, weights, where), **self._grads(p, t, h, weights, where, "mean")}

    def _vmapped(self, P, T, H):
        in_h = None if H is None else 0
        return jax.vmap(lambda p, t, h: self._light(p, t, h, None, None), in_axes=(0, 0, in_h))(P, T, H)

    def _swept(self, p, t, hs):
        return jax.vmap(lambda h: self._values(p, t, h, None, None))(hs)

    def reference(self, p, t, h=None):
        f = ref.PER_SAMPLE[self.spec.name]
        return f(p, t) if (self.spec.hyper is None or h is None) else f(p, t, f64(h))

    def reference_grad(self, p, t, h=None):
        f = ref.GRAD_PREDICTIONS[self.spec.name]
        return f(p, t) if (self.spec.hyper is None or h is None) else f(p, t, f64(h))

    def draw_hyper(self, rng, shape=()):
        hp = self.spec.hyper
        if hp is None:
            return None
        v = rng.uniform(hp.low, hp.high, size=shape)
        return float(v) if shape == () else v

    def rng(self, *key):
        return rng_for(self.spec.id, *key)

    def inputs(self, key, shape=S, dtype=F32, away=True):
        """Fresh inputs: a random valid hyperparameter (or None) and predictions/targets."""
        rng = self.rng(key, shape, str(dtype))
        h = self.draw_hyper(rng)
        p, t = self.draw(rng, shape, dtype, h, away=away)
        return rng, p, t, h

    # ---- the parts
    def _parts(self, x64: bool) -> dict:
        """name -> (function, arguments): the float32 (and 16-bit) parts, or the float64 ones."""
        if x64:
            return self._parts64()
        ev, li, va = self._evaluate, self._light, self._values
        hp = self.spec.hyper
        rng = self.rng("parts")
        h = self.draw_hyper(rng)
        parts = {}
        for shape in SHAPES:
            parts[f"reference:{shape}"] = (va, (*self.draw(rng, shape, F32, h, away=False), h, None, None))
        hr = self.draw_hyper(rng, (S[0], 1))  # one hyperparameter per row
        hr = None if hr is None else hr.astype(np.float32)
        p, t = self.draw(rng, S, F32, [h, hr])  # the canonical inputs, away from kinks of both
        m = canonical_mask(rng)
        w = rng.uniform(0.5, 2.0, size=S).astype(np.float32)
        ones_w, ones_m, no_m = np.ones(S, np.float32), np.ones(S, bool), np.zeros(S, bool)
        parts["plain"] = (li, (p, t, hr, None, None))
        parts["unweighted"] = (va, (p, t, h, None, None))
        # a mask alone (the reduction's mask-only path)
        parts["masked"] = (ev, (p, t, h, None, m))
        parts["masked_poisoned"] = (ev, (*self._poison(p, t, m), h, None, m))
        parts["all_masked"] = (ev, (p, t, h, None, no_m))
        parts["all_masked_poisoned"] = (ev, (*self._poison(p, t, no_m), h, None, no_m))
        parts["subset"] = (va, (p[m], t[m], h, None, None))
        # weights and a mask
        parts["clean"] = (ev, (p, t, h, w, m))
        parts["poisoned"] = (ev, (*self._poison(p, t, m), h, w, m))
        parts["all_masked_weighted"] = (ev, (*self._poison(p, t, no_m), h, w, no_m))
        parts["zero_weights"] = (ev, (p, t, h, np.zeros(S, np.float32), ones_m))
        parts["row"] = (va, (p, t, h, rng.uniform(0.1, 2.0, size=S[1:]).astype(np.float32), m[:, :1]))
        parts["empty"] = (va, (*self.draw(rng, (0,), F32, h), h, None, None))
        # weights alone
        parts["ones"] = (va, (p, t, h, ones_w, None))
        k = canonical_counts(rng)
        parts["counts"] = (va, (p, t, h, k.astype(np.float32), None))
        rp = np.repeat(np.reshape(p, (-1,) + np.shape(p)[len(S) :]), k.ravel(), axis=0)
        rt = np.repeat(np.reshape(t, (-1,) + np.shape(t)[len(S) :]), k.ravel(), axis=0)
        parts["repeated"] = (va, (rp, rt, h, None, None))
        # 16-bit inputs
        for dtype in LOW_PRECISION:
            parts[f"low:{dtype}"] = (va, (*self.draw(rng, S, dtype, h), h, None, None))
        # vmap over a batch of inputs and of hyperparameters, and the equivalent loop
        H = None if hr is None else np.stack([self.draw_hyper(rng, (S[0], 1)) for _ in range(4)]).astype(np.float32)
        PT = [self.draw(rng, S, F32, None if H is None else H[i]) for i in range(4)]
        P, T = np.stack([a for a, _ in PT]), np.stack([b for _, b in PT])
        parts["vmap"] = (self._vmapped, (P, T, H))
        for i in range(4):
            parts[f"vmap:{i}"] = (li, (P[i], T[i], None if H is None else H[i], None, None))
        if hp is not None:  # a batch of Python-number hyperparameters (a sweep) over fixed data
            hs = np.linspace(hp.low, hp.high, 4).astype(np.float32)
            parts["sweep"] = (self._swept, (p, t, hs))
            for i in range(4):
                parts[f"sweep:{i}"] = (va, (p, t, float(hs[i]), None, None))  # as "unweighted"
        for i, kink in enumerate(self.spec.kinks):
            kp = np.asarray(kink.predictions, np.float32)
            kt = np.asarray(kink.targets)
            kt = kt.astype(np.float32) if kt.dtype.kind == "f" else kt.astype(np.int32)
            parts[f"kink:{i}"] = (li, (kp, kt, kink.hyper, None, None))
        parts.update(self._family_parts(rng, p, t, hr))
        return parts

    def _parts64(self) -> dict:
        rng = self.rng("parts64")
        h = self.draw_hyper(rng)
        parts = {}
        for shape in SHAPES64:
            parts[f"reference:{shape}"] = (self._values, (*self.draw(rng, shape, F64, h, away=False), h, None, None))
        # gradients against the analytic derivative / finite differences, with a hyperparameter
        # per row (which also broadcasts it)
        hr = self.draw_hyper(rng, (S[0], 1))
        p, t = self.draw(rng, S, F64, hr)
        parts["gradref"] = (self._light, (p, t, hr, None, None))
        return parts

    def part(self, name, x64=False):
        if x64 not in self._parts_cache:
            self._parts_cache[x64] = self._parts(x64)
        return self._parts_cache[x64][name][1]

    def result(self, name, x64=False):
        """The outputs of part ``name`` as NumPy arrays (computed once).

        Parts whose function is ``_values`` are cheap and mostly of distinct signatures: they are
        computed together, in one program (a program's fixed cost is most of theirs). If that
        fails, each runs alone again, so that each test reports its own failure."""
        key = (name, x64)
        if key not in self._results:
            self.part(name, x64)
            parts = self._parts_cache[x64]
            group = [n for n, (fn, _) in parts.items() if fn == self._values]
            with dtype_context(F64 if x64 else F32):
                if name in group and (("values-group", x64) not in self._results):
                    self._results[("values-group", x64)] = {}
                    try:
                        outs = jax.jit(lambda args: [self._values(*a) for a in args])([parts[n][1] for n in group])
                        self._results.update({(n, x64): jax.tree_util.tree_map(np.asarray, o) for n, o in zip(group, outs)})
                    except Exception:  # noqa: BLE001 -- isolated below, part by part
                        pass
                if key not in self._results:
                    fn, args = parts[name]
                    jitted = self._jitted.setdefault(fn.__name__, jax.jit(fn))
                    self._results[key] = jax.tree_util.tree_map(np.asarray, jitted(*args))
        return self._results[key]

    # ---- reference values and dtypes
    def check_reference(self, dtype):
        """Every shape in SHAPES (SHAPES64 for float64), every reduction, against the float64 formula."""
        dtype = jnp.dtype(dtype)
        x64 = dtype == F64
        for shape in SHAPES64 if x64 else SHAPES:
            p, t, h, _, _ = self.part(f"reference:{shape}", x64)
            out = self.result(f"reference:{shape}", x64)
            expected = self.reference(p, t, h)
            assert expected.shape == shape == self.per_sample_shape(p, t)
            for reduction in REDUCTIONS:
                o = out[reduction]
                assert o.dtype == dtype, (shape, reduction, o.dtype)
                assert o.shape == (shape if reduction == "none" else ()), (shape, reduction, o.shape)
                assert_close(o, ref.reduce(expected, reduction=reduction), **tolerance(dtype))

    def check_low_precision(self, dtype):
        """16-bit inputs: the result in the input dtype (computed in float32, so only the final
        rounding differs from the reference on the same rounded inputs)."""
        dtype = jnp.dtype(dtype)
        p, t, h, _, _ = self.part(f"low:{dtype}")
        out = self.result(f"low:{dtype}")
        l = self.reference(p, t, h)
        for reduction in REDUCTIONS:
            assert out[reduction].dtype == dtype, (reduction, out[reduction].dtype)
            assert_close(out[reduction], ref.reduce(l, reduction=reduction), **tolerance(dtype))

    def check_jit_equals_eager(self):
        """Eager, jit with the reduction static (functools.partial), and the reference agree."""
        rng, p, t, h = self.inputs("jit")
        w = rng.uniform(0.0, 2.0, size=S).astype(np.float32)
        m = canonical_mask(rng)
        l = self.reference(p, t, h)
        for reduction in REDUCTIONS:
            eager = self.call(p, t, h, weights=w, where=m, reduction=reduction)
            jitted = jax.jit(functools.partial(self.fn, reduction=reduction))
            out = jitted(p, t, **self.kw(None if h is None else jnp.float32(h)), weights=w, where=m)
            assert out.shape == eager.shape and out.dtype == eager.dtype
            chex.assert_trees_all_close(out, eager, rtol=1e-6, atol=1e-6)
            assert_close(eager, ref.reduce(l, weights=w, where=m, reduction=reduction), **tolerance(F32))
        # the defaults: reduction="mean" and the default hyperparameter
        default = None if self.spec.hyper is None else self.spec.hyper.default
        assert_close(self.fn(p, t), np.mean(self.reference(p, t, default)), **tolerance(F32))

    # ---- masks
    def check_mask_equals_subset(self):
        """loss(x[m]) == loss(x, where=m); 'none' is 0 where masked; broadcast masks and weights."""
        p, t, h, _, m = self.part("masked")
        full, sub = self.result("masked"), self.result("subset")
        for reduction in ("mean", "sum"):
            assert_close(full[reduction], sub[reduction], rtol=1e-6, atol=1e-6)
        assert full["none"].shape == S
        assert np.all(full["none"][~m] == 0.0)
        assert_close(full["none"][m], sub["none"], rtol=1e-6, atol=1e-7)
        # gradients: zero on masked samples, the derivative elsewhere (divided by the count)
        g = self.reference_grad(p, t, h)
        assert np.all(full["dp_mean"][~m] == 0.0)
        assert_close(full["dp_mean"][m], g[m] / K, rtol=1e-5, atol=1e-6)
        # a mask and weights that broadcast to the per-sample shape
        p, t, h, w, row = self.part("row")
        out = self.result("row")
        l = self.reference(p, t, h)
        for reduction in REDUCTIONS:
            assert out[reduction].shape == (S if reduction == "none" else ())
            assert_close(out[reduction], ref.reduce(l, weights=w, where=row, reduction=reduction), **tolerance(F32))

    def _poison(self, p, t, m):
        """Put NaN/inf into masked-out samples (and padding labels where allowed)."""
        p = np.array(p)
        bad = _expand(~m, p)
        parity = np.arange(p.size).reshape(p.shape) % 2
        p = np.where(bad & (parity == 0), np.nan, np.where(bad & (parity == 1), np.inf, p)).astype(p.dtype)
        if self.poison_targets is not None:
            t = np.where(_expand(~m, t), self.poison_targets, t).astype(np.asarray(t).dtype)
        return p, t

    def check_mask_nonfinite(self):
        """NaN/inf in masked-out inputs: the value and gradients are the clean ones (finite)."""
        for clean_name, name in (("masked", "masked_poisoned"), ("clean", "poisoned")):
            m = self.part(name)[-1]
            clean, out = self.result(clean_name), self.result(name)
            assert_all_finite(out)
            for key in out:
                assert_close(out[key], clean[key], rtol=1e-6, atol=1e-7, err_msg=(name, key))
            for key in ("dp_mean", "dt_mean", "dw_mean"):
                if key in out:
                    assert np.all(out[key][~m] == 0.0), f"masked-out samples got a gradient ({name}, {key})"

    def check_all_masked(self):
        """A mean (or sum) over nothing is 0 with a zero gradient, even over NaN inputs."""
        for name in ("all_masked", "all_masked_poisoned", "all_masked_weighted"):
            for key, v in self.result(name).items():
                assert np.all(v == 0.0), (name, key, v)
        # all weights zero is also a mean over nothing (d/dweights is not: it is the loss)
        for key, v in self.result("zero_weights").items():
            if not key.startswith("dw"):
                assert np.all(v == 0.0), ("zero weights", key, v)

    def check_empty(self):
        """No samples at all: 'none' is empty, mean and sum are 0."""
        out = self.result("empty")
        assert out["none"].shape == (0,)
        assert float(out["mean"]) == 0.0 and float(out["sum"]) == 0.0

    # ---- weights
    def check_weights(self):
        """All-ones == unweighted; integer weights == repetition; sum(w l)/sum(w); d/dweights."""
        plain, ones = self.result("unweighted"), self.result("ones")
        for key in plain:
            assert_close(ones[key], plain[key], rtol=1e-5, atol=1e-6, err_msg=key)
        for reduction in ("mean", "sum"):
            assert_close(self.result("counts")[reduction], self.result("repeated")[reduction], rtol=1e-5, atol=1e-6)
        # real weights with a mask, against the reference semantics
        p, t, h, w, m = self.part("clean")
        out = self.result("clean")
        l = self.reference(p, t, h)
        for reduction in REDUCTIONS:
            assert_close(out[reduction], ref.reduce(l, weights=w, where=m, reduction=reduction), **tolerance(F32))
        # d/dw_i [sum(w l) / sum(w)] = (l_i - mean) / sum(w) for unmasked i, 0 for masked i
        wm = np.where(m, w, 0.0)
        mean = np.sum(wm * l) / np.sum(wm)
        assert_close(out["dw_mean"], np.where(m, l - mean, 0.0) / np.sum(wm), rtol=1e-5, atol=1e-6)

    # ---- transformations
    def check_vmap(self):
        """vmap over a batch (with a hyperparameter per sample), and over a batch of Python-number
        hyperparameters with fixed data, equals a loop and the reference."""
        P, T, H = self.part("vmap")
        vm = self.result("vmap")
        for i in range(P.shape[0]):
            one = self.result(f"vmap:{i}")
            for key in one:
                assert_close(vm[key][i], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
            h = None if H is None else H[i]
            assert_close(vm["none"][i], self.reference(P[i], T[i], h), **tolerance(F32))
        if self.spec.hyper is not None:
            p, t, hs = self.part("sweep")
            sweep = self.result("sweep")
            for i, h in enumerate(hs):
                one = self.result(f"sweep:{i}")
                for key in one:
                    assert_close(sweep[key][i], one[key], rtol=1e-5, atol=1e-6, err_msg=key)
                assert_close(sweep["none"][i], self.reference(p, t, h), **tolerance(F32))

    def check_hyperparameter_array(self):
        """A hyperparameter array broadcasts against the per-sample loss."""
        p, t, h, _, _ = self.part("plain")
        out = self.result("plain")
        l = self.reference(p, t, h)
        for reduction in REDUCTIONS:
            assert out[reduction].shape == (S if reduction == "none" else ())
            assert_close(out[reduction], ref.reduce(l, reduction=reduction), **tolerance(F32))
        assert out["dh_sum"].shape == h.shape

    # ---- gradients
    def check_grad_reference(self):
        """float64: d/dpredictions is the analytic derivative; d/dhyperparameter (one per row)
        is a central finite difference of the reference."""
        p, t, h, _, _ = self.part("gradref", x64=True)
        out = self.result("gradref", x64=True)
        g = self.reference_grad(p, t, h)
        assert_close(out["dp_sum"], g, rtol=1e-10, atol=1e-12)
        if self.differentiable_targets:
            assert_close(out["dt_sum"], -g, rtol=1e-10, atol=1e-12)
        if h is not None:
            e = 1e-6
            fd = np.sum(self.reference(p, t, h + e) - self.reference(p, t, h - e), axis=1, keepdims=True) / (2 * e)
            assert out["dh_sum"].shape == h.shape
            assert_close(out["dh_sum"], fd, rtol=1e-6, atol=1e-8)

    def check_grads(self):
        """jax.test_util.check_grads w.r.t. predictions against finite differences, away from kinks
        (float64): first order in both modes; for smooth losses also the second order, as
        check_grads of the gradient in forward mode (forward-over-reverse: what jax.hessian
        computes). A single check_grads(order=2) compiles ~3x more programs for the same
        derivatives. (Gradients w.r.t. targets and hyperparameters: check_grad_reference.)"""
        with jax.enable_x64(True):
            rng = self.rng("check-grads")
            h = self.draw_hyper(rng)
            p, t = self.draw(rng, (2, 3), F64, h)
            f = jax.jit(lambda x: self._loss(x, t, h, None, None, "sum"))
            jax.test_util.check_grads(f, (jnp.asarray(p),), order=1, modes=("fwd", "rev"))
            if self.spec.smooth:
                grad = jax.jit(jax.grad(lambda x: self._loss(x, t, h, None, None, "sum")))
                jax.test_util.check_grads(grad, (jnp.asarray(p),), order=1, modes=("fwd",))

    def check_kink(self, i: int):
        """The gradient at a kink is pinned exactly (float32)."""
        kink = self.spec.kinks[i]
        p, t, h, _, _ = self.part(f"kink:{i}")
        out = self.result(f"kink:{i}")
        expected = np.asarray(kink.grad, np.float32)
        np.testing.assert_array_equal(out["dp_sum"], expected)
        if self.differentiable_targets:
            np.testing.assert_array_equal(out["dt_sum"], -expected)
        assert_close(out["none"], self.reference(p, t, h), rtol=1e-6, atol=1e-7)

    # ---- errors (eager: values are only checked when concrete)
    def check_hyperparameter_errors(self):
        hp = self.spec.hyper
        _, p, t, _ = self.inputs("errors")
        for bad in hp.invalid:
            assert_raises_naming(ValueError, [repr(bad), hp.name], self.call, p, t, bad)
            # also inside an array of hyperparameters
            arr = np.full(S, hp.default, np.float32)
            arr[1, 2] = bad
            assert_raises_naming(ValueError, [repr(bad)], self.call, p, t, arr)

    def check_integer_predictions(self):
        _, p, t, h = self.inputs("errors")
        with pytest.raises(TypeError):
            self.call(np.round(p).astype(np.int32), t, h)


# --------------------------------------------------------------------------- regression
class ElementwiseRegressionChecker(_Checker):
    """Losses of r = predictions - targets, evaluated elementwise."""

    differentiable_targets = True
    poison_targets = np.inf

    def per_sample_shape(self, p, t):
        return np.broadcast_shapes(np.shape(p), np.shape(t))

    def draw(self, rng, shape, dtype, h=None, away=True):
        """``h``: the hyperparameter whose kinks to avoid (None: the default), or a list of them."""
        hp = self.spec.hyper
        hs = h if isinstance(h, list) else [h]
        hs = [hp.default if (hp is not None and hv is None) else hv for hv in hs]
        t = rng.normal(size=shape)
        draw_r = lambda s: rng.normal(scale=2.0, size=s)  # noqa: E731
        if away:
            kinks = [k for hv in hs for k in self.spec.kink_locations(hv)]

            def bad(r):
                out = np.zeros(np.shape(r), bool)
                for k in kinks:
                    out |= np.abs(r - k) < 0.05
                return out

            r = away_from(draw_r, bad, shape)
        else:
            r = draw_r(shape)
        return cast(t + r, dtype), cast(t, dtype)

    def _family_parts(self, rng, p, t, h):
        ev = self._light
        parts = {"perfect": (ev, (p, p, h, None, None))}
        # predictions (5,) and targets (3, 1): broadcasting both ways, and a rank promotion
        parts["broadcast"] = (ev, (cast(rng.normal(size=(5,)), F32), cast(rng.normal(size=(3, 1)), F32), h, None, None))
        # huge residuals, some the difference of two huge numbers of opposite sign
        r = self.spec.extreme * rng.choice([1.0, -1.0, 0.5, -0.25], size=S)
        te = np.where(rng.random(S) < 0.3, -r / 2, 0.0)
        hd = None if self.spec.hyper is None else np.full((S[0], 1), self.spec.hyper.default, np.float32)
        parts["extreme"] = (ev, (cast(te + r, F32), cast(te, F32), hd, None, None))
        return parts

    def check_perfect_prediction(self):
        """loss(x, x) == 0 exactly, for every reduction, with a zero gradient; >= 0 elsewhere."""
        out = self.result("perfect")
        for key in ("mean", "sum", "none", "dp_sum", "dt_sum"):
            assert np.all(out[key] == 0.0), (key, out[key])
        for shape in SHAPES:
            assert np.all(self.result(f"reference:{shape}")["none"] >= 0.0)

    def check_broadcasting(self):
        """'none' has the broadcast shape of predictions and targets; gradients their shapes."""
        for name in ("broadcast",):
            p, t, h, _, _ = self.part(name)
            out = self.result(name)
            assert out["none"].shape == S
            for reduction in REDUCTIONS:
                assert_close(out[reduction], ref.reduce(self.reference(p, t, h), reduction=reduction), **tolerance(F32))
            assert out["dp_sum"].shape == p.shape and out["dt_sum"].shape == t.shape
            g = self.reference_grad(p, t, h)
            assert_close(out["dp_sum"], sum_to(g, p.shape), **tolerance(F32))
            assert_close(out["dt_sum"], -sum_to(g, t.shape), **tolerance(F32))

    def check_shape_errors(self):
        rng = self.rng("shape-errors")
        p, t = cast(rng.normal(size=S), F32), cast(rng.normal(size=(4,)), F32)
        assert_raises_naming(ValueError, ["(3, 5)", "(4,)"], self.fn, p, t)

    def check_extreme(self):
        """Huge residuals in float32: finite value and gradients equal to the float64 formula."""
        p, t, h, _, _ = self.part("extreme")
        out = self.result("extreme")
        assert_all_finite(out)
        l = self.reference(p, t, h)
        for reduction in REDUCTIONS:
            assert_close(out[reduction], ref.reduce(l, reduction=reduction), rtol=1e-5, atol=0)
        assert_close(out["dp_sum"], self.reference_grad(p, t, h), rtol=1e-5, atol=0)
        assert_close(out["dt_sum"], -self.reference_grad(p, t, h), rtol=1e-5, atol=0)


# --------------------------------------------------------------------------- classification
class ClassificationChecker(_Checker):
    """Logits/scores and labels; ``spec.class_axis`` for losses with a trailing class axis."""

    @property
    def poison_targets(self):
        return self.spec.masked_label_fill

    def per_sample_shape(self, p, t):
        return np.shape(p)[:-1] if self.spec.class_axis else np.broadcast_shapes(np.shape(p), np.shape(t))

    def draw(self, rng, shape, dtype, h=None, away=True):
        s = self.spec
        c = s.num_classes
        shape = tuple(shape)
        if s.labels == "int":
            y = rng.integers(0, c, size=shape).astype(np.int32)
            onehot = y[..., None] == np.arange(c)
            draw_x = lambda sh: rng.normal(scale=2.0, size=sh)  # noqa: E731
            if away and s.name == "multiclass_hinge":
                # no ties in max_j (s_j + [j != y]): away from the margin and from argmax ties
                def bad(x):
                    v = np.sort(x + 1.0 - onehot, axis=-1)
                    return (v[..., -1] - v[..., -2]) < 0.05

                return cast(away_from(draw_x, bad, shape + (c,)), dtype), y
            return cast(draw_x(shape + (c,)), dtype), y
        if s.labels == "prob":
            g = rng.gamma(1.0, size=shape + (c,))
            return cast(rng.normal(scale=2.0, size=shape + (c,)), dtype), cast(g / g.sum(-1, keepdims=True), dtype)
        if s.labels == "unit":
            y = rng.uniform(0.0, 1.0, size=shape)
            y = np.where(rng.random(shape) < 0.3, np.round(y), y)
            return cast(rng.normal(scale=2.0, size=shape), dtype), cast(y, dtype)
        if s.labels == "pm1":
            y = rng.choice([-1.0, 1.0], size=shape)
            draw_x = lambda sh: rng.normal(scale=1.5, size=sh)  # noqa: E731
            x = away_from(draw_x, lambda x: np.abs(1.0 - y * x) < 0.05, shape) if away else draw_x(shape)
            return cast(x, dtype), cast(y, dtype)
        raise AssertionError(s.labels)

    def _onehot(self, y):
        return y[..., None] == np.arange(self.spec.num_classes)

    def _family_parts(self, rng, x, y, h):
        s, ev = self.spec, self._light
        parts = {}
        # huge logits / scores (distinct values per sample, so that no max is tied)
        if s.class_axis:
            base = np.array([1.0, -1.0, 0.5, -0.5, 0.25])[: s.num_classes]
            big = np.stack([rng.permutation(base) for _ in range(int(np.prod(S)))]).reshape(S + (s.num_classes,))
        else:
            big = rng.choice([-1.0, 1.0, 0.5, -0.5], size=S)
        for hh in ([None] if h is None else [0.0, 0.1]):
            row = None if hh is None else np.full((S[0], 1), hh, np.float32)
            parts[f"extreme:{hh}"] = (ev, (cast(s.extreme * big, F32), y, row, None, None))
        # where the loss is minimal
        if s.name == "cross_entropy":
            hq = f64(h)[..., None]
            q = self._onehot(y) if s.labels == "int" else f64(y)
            q = (1 - hq) * q + hq / s.num_classes
            best = np.log(q) + rng.normal(size=S)[..., None]  # log q + any per-sample shift
            parts["min:best"] = (ev, (cast(best, F32), y, h, None, None))
            if s.labels == "int":
                zero = np.zeros((S[0], 1), np.float32)
                parts["min:confident"] = (ev, (cast(30.0 * self._onehot(y), F32), y, zero, None, None))
        elif s.labels == "unit":
            yy = f64(y)
            hard = (yy == 0) | (yy == 1)
            soft = np.clip(yy, 1e-6, 1 - 1e-6)
            best = np.where(hard, np.where(yy == 1, 40.0, -40.0), np.log(soft) - np.log1p(-soft))
            parts["min:best"] = (ev, (cast(best, F32), y, None, None, None))
        elif s.labels == "pm1":
            good = f64(y) * rng.uniform(1.0, 3.0, size=S)  # y s >= 1
            bad = f64(y) * rng.uniform(-3.0, 0.95, size=S)  # y s < 1
            parts["min:good"] = (ev, (cast(good, F32), y, None, None, None))
            parts["min:bad"] = (ev, (cast(bad, F32), y, None, None, None))
        elif s.name == "multiclass_hinge":
            # the true class ahead of every other by more than 1
            ahead = np.max(f64(x), axis=-1, keepdims=True) + 1.0 + rng.uniform(0.1, 1.0, S)[..., None]
            parts["min:good"] = (ev, (cast(np.where(self._onehot(y), ahead, f64(x)), F32), y, None, None, None))
        if s.masked_label_fill is not None:
            m = canonical_mask(rng)
            y_pad = np.where(m, y, s.masked_label_fill).astype(y.dtype)
            hs = float(np.ravel(h)[0])  # a Python number here: the weights/mask program
            parts["padding"] = (self._evaluate, (x, y_pad, hs, np.ones(S, np.float32), m))
            parts["padding:subset"] = (self._values, (x[m], y[m], hs, None, None))
        return parts

    def check_minimum(self):
        """Where the loss is minimal: zero (hinges) or the entropy of the target (log losses)."""
        s = self.spec
        x, y, h, _, _ = self.part("plain")
        plain = self.result("plain")["none"]
        if s.name == "cross_entropy":
            hq = f64(h)[..., None]
            q = self._onehot(y) if s.labels == "int" else f64(y)
            q = (1 - hq) * q + hq / s.num_classes
            entropy = -np.sum(q * np.log(q), axis=-1)
            assert np.all(plain >= entropy - 1e-5)
            # logits = log q (+ any per-sample shift) minimise the loss: value H(q), gradient 0
            out = self.result("min:best")
            assert_close(out["none"], entropy, rtol=1e-5, atol=1e-5)
            assert_close(out["dp_sum"], np.zeros(x.shape), atol=1e-6)
            if s.labels == "int":
                # a confident, correct prediction without smoothing costs (almost) nothing
                out = self.result("min:confident")["none"]
                assert np.all(out >= 0.0) and np.all(out < 1e-10)
        elif s.labels == "unit":
            yy = f64(y)
            ent = -(np.where(yy > 0, yy * np.log(np.maximum(yy, 1e-300)), 0.0)
                    + np.where(yy < 1, (1 - yy) * np.log(np.maximum(1 - yy, 1e-300)), 0.0))
            assert np.all(plain >= ent - 1e-5)
            # at logit(y) the loss is the binary entropy and the gradient 0; for hard labels a
            # confident correct logit costs (almost) nothing
            out = self.result("min:best")
            assert_close(out["none"], ent, rtol=1e-4, atol=1e-6)
            assert_close(out["dp_sum"], np.zeros(S), atol=1e-6)
        elif s.labels == "pm1":
            out = self.result("min:good")
            assert np.all(out["none"] == 0.0) and np.all(out["dp_sum"] == 0.0)
            assert np.all(self.result("min:bad")["none"] > 0.0)
        elif s.name == "multiclass_hinge":
            assert np.all(plain >= 0.0)
            wrong = np.argmax(x, axis=-1) != y
            assert np.all(plain[wrong] >= 1.0 - 1e-6)
            out = self.result("min:good")
            assert np.all(out["none"] == 0.0) and np.all(out["dp_sum"] == 0.0)
        else:
            raise AssertionError(s)

    def check_label_errors(self):
        s = self.spec
        rng = self.rng("label-errors")
        for labels, pattern in s.invalid_labels:
            labels = np.asarray(labels)
            x = self.draw(rng, labels.shape, F32)[0]
            if labels.dtype.kind == "f":
                labels = labels.astype(np.float32)
            with pytest.raises(ValueError, match=pattern):
                self.fn(x, labels)

    def check_masked_labels_not_checked(self):
        """Padding labels (e.g. -100) under a mask are fine: the loss is the subset's (eager and
        jitted), and the padded samples get no gradient."""
        x, y_pad, h, _, m = self.part("padding")
        sub, out = self.result("padding:subset"), self.result("padding")
        for reduction in ("mean", "sum"):
            assert_close(self.call(x, y_pad, h, where=m, reduction=reduction), sub[reduction], rtol=1e-6, atol=1e-7)
            assert_close(out[reduction], sub[reduction], rtol=1e-6, atol=1e-7)
        assert_all_finite(out)
        assert np.all(out["dp_mean"][~m] == 0.0)

    def check_shape_errors(self):
        s = self.spec
        c = s.num_classes
        rng = self.rng("shape-errors")
        if s.class_axis:
            x = cast(rng.normal(size=(4, c)), F32)
            if s.labels == "int":
                y = np.zeros((3,), np.int32)
                msg = assert_raises_naming(ValueError, ["(3,)"], self.fn, x, y)
                assert "(4, 5)" in msg or "(4,)" in msg, msg
            else:
                y = cast(np.full((4, 3), 1 / 3), F32)
                assert_raises_naming(ValueError, ["(4, 5)", "(4, 3)"], self.fn, x, y)
        else:
            x = cast(rng.normal(size=S), F32)
            y = self.draw(rng, (4,), F32)[1]
            assert_raises_naming(ValueError, ["(3, 5)", "(4,)"], self.fn, x, y)

    def check_extreme(self):
        """Huge logits/scores in float32: finite value and gradients matching the float64 formula."""
        for name in ["extreme:None"] if self.spec.hyper is None else ["extreme:0.0", "extreme:0.1"]:
            x, y, h, _, _ = self.part(name)
            out = self.result(name)
            assert_all_finite(out)
            l = self.reference(x, y, h)
            for reduction in REDUCTIONS:
                assert_close(out[reduction], ref.reduce(l, reduction=reduction), rtol=1e-5, atol=1e-6)
            assert_close(out["dp_sum"], self.reference_grad(x, y, h), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- the loss table
def _zeros(*shape):
    return np.zeros(shape).tolist()


DELTA = Hyper("delta", 1.0, 0.5, 2.0, invalid=(0.0, -0.5))
REGRESSION = tuple(
    ElementwiseRegressionChecker(s)
    for s in (
        LossSpec("mse", extreme=1e18),
        LossSpec(
            "mae",
            smooth=False,
            kink_locations=lambda h: (0.0,),
            kinks=(Kink([0.0, 1.25], [0.0, 1.25], [0.0, 0.0]),),
        ),
        LossSpec(
            "huber",
            hyper=DELTA,
            kink_locations=lambda h: (h, -np.asarray(h)),
            kinks=(
                # r == 0, |r| == delta (gradient delta * sign(r))
                Kink([0.0, 1.5, -1.5, 0.75], [0.0, 0.0, 0.0, 0.75], [0.0, 1.5, -1.5, 0.0], hyper=1.5),
                Kink([0.0, 1.0, -1.0, 0.75], [0.0, 0.0, 0.0, 0.75], [0.0, 1.0, -1.0, 0.0]),  # default delta
            ),
        ),
        LossSpec("pseudo_huber", hyper=DELTA),
        LossSpec("log_cosh"),
        LossSpec(
            "quantile",
            hyper=Hyper("tau", 0.5, 0.1, 0.9, invalid=(1.5, -0.25)),
            smooth=False,
            kink_locations=lambda h: (0.0,),
            kinks=(
                Kink([0.0, 2.5], [0.0, 2.5], [0.0, 0.0], hyper=0.25),
                Kink([0.0, 2.5], [0.0, 2.5], [0.0, 0.0]),
                Kink([0.0, 2.5], [0.0, 2.5], [0.0, 0.0], hyper=1.0),
            ),
        ),
        LossSpec(
            "epsilon_insensitive",
            hyper=Hyper("epsilon", 0.1, 0.05, 0.5, invalid=(-0.125,)),
            smooth=False,
            kink_locations=lambda h: (h, -np.asarray(h)),
            kinks=(
                # |r| == epsilon (also as a difference of two numbers), r == 0
                Kink([0.5, -0.5, 0.0, 0.75], [0.0, 0.0, 0.0, 0.25], [0.0, 0.0, 0.0, 0.0], hyper=0.5),
                Kink([0.1, -0.1, 0.0, 1.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0]),  # default epsilon
                Kink([0.0, 2.0, -2.0, 0.5], [0.0, 2.0, -2.0, 0.5], [0.0, 0.0, 0.0, 0.0], hyper=0.0),  # like mae
            ),
        ),
    )
)

LABEL_SMOOTHING = Hyper("label_smoothing", 0.0, 0.05, 0.3, invalid=(1.5, -0.25))
PM1_ERRORS = (
    ([0.0, 1.0, 1.0], r"\{0, ?1\}"),  # the common silent bug: {0, 1} labels
    ([1.0, 0.5, -1.0], r"0\.5"),
)
CLASSIFICATION = tuple(
    ClassificationChecker(s)
    for s in (
        LossSpec(
            "cross_entropy",
            id="cross_entropy_int",
            labels="int",
            class_axis=True,
            hyper=LABEL_SMOOTHING,
            extreme=1e4,
            masked_label_fill=-100,
            invalid_labels=(([0, 7, 1], r"\b7\b"), ([-3, 0, 1, 2], r"-3\b")),
        ),
        LossSpec(
            "cross_entropy",
            id="cross_entropy_prob",
            labels="prob",
            class_axis=True,
            hyper=LABEL_SMOOTHING,
            extreme=1e4,
        ),
        LossSpec(
            "binary_cross_entropy",
            labels="unit",
            extreme=1e4,
            invalid_labels=(([0.5, 1.5], r"1\.5"), ([-0.25, 1.0], r"-0\.25")),
        ),
        LossSpec(
            "hinge",
            labels="pm1",
            smooth=False,
            extreme=1e30,
            invalid_labels=PM1_ERRORS,
            kinks=(Kink([1.0, -1.0, 0.5], [1.0, -1.0, 1.0], [0.0, 0.0, -1.0]),),
        ),
        LossSpec(
            "squared_hinge",
            labels="pm1",
            smooth=True,  # C1; order 2 holds away from the margin
            extreme=1e15,
            invalid_labels=PM1_ERRORS,
            kinks=(Kink([1.0, -1.0, 0.5], [1.0, -1.0, 1.0], [0.0, 0.0, -1.0]),),
        ),
        LossSpec(
            "multiclass_hinge",
            labels="int",
            class_axis=True,
            smooth=False,
            extreme=1e30,
            kinks=(
                # max_{j != y} s_j + 1 == s_y: exactly on the margin (also with tied runners-up)
                Kink([[2.0, 1.0, 0.0], [0.5, 1.5, -0.5], [0.0, 1.0, 0.0]], [0, 1, 1], _zeros(3, 3)),
            ),
        ),
    )
)

ALL = REGRESSION + CLASSIFICATION
