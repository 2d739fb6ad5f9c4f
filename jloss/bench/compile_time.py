"""Compile-time measurement for ``benchmarks/compile_time.py``: JAX's compile events, the
hand-fused L-BFGS scan, and the workloads built with fresh objects (nothing cached in memory).

A "compile" here is what JAX's monitoring reports for a call, in three parts, each summed over
every program the call traces:

* ``trace``: ``/jax/core/compile/jaxpr_trace_duration`` (Python tracing to a jaxpr; only
  top-level traces are logged, so nested ``jit`` traces are not counted twice);
* ``lower``: ``/jax/core/compile/jaxpr_to_mlir_module_duration`` (jaxpr to StableHLO);
* ``backend``: ``/jax/core/compile/backend_compile_duration`` (XLA's compile; with the persistent
  cache on, a cache hit is logged here too, with the time it took to load the program).
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from jloss.bench.problems import fused_scan, huber_objective, huber_problem, linear_params
from jloss.minimize import minimize
from jloss.sweep import sweep

TRACE = "/jax/core/compile/jaxpr_trace_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
BACKEND = "/jax/core/compile/backend_compile_duration"
PARTS = {TRACE: "trace", LOWER: "lower", BACKEND: "backend"}
CACHE_HITS = "/jax/compilation_cache/cache_hits"
CACHE_MISSES = "/jax/compilation_cache/cache_misses"


@contextlib.contextmanager
def compile_events() -> Iterator[dict]:
    """JAX's compile events inside the block: ``{"trace_s", "lower_s", "backend_s", "compile_s"
    (their sum), "traces", "lowerings", "compiles", "cache_hits", "cache_misses", "programs" (the
    names of the programs compiled or loaded), "program_backend_s" (the backend seconds of each)}``."""
    out = {"trace_s": 0.0, "lower_s": 0.0, "backend_s": 0.0, "traces": 0, "lowerings": 0, "compiles": 0,
           "cache_hits": 0, "cache_misses": 0, "programs": [],
           "program_backend_s": []}
    counts = {"trace": "traces", "lower": "lowerings", "backend": "compiles"}

    def on_duration(event, duration, **kwargs):
        part = PARTS.get(event)
        if part is not None:
            out[part + "_s"] += duration
            out[counts[part]] += 1
            if part == "backend":
                out["programs"].append(str(kwargs.get("fun_name")))
                out["program_backend_s"].append(duration)

    def on_event(event, **kwargs):
        if event == CACHE_HITS:
            out["cache_hits"] += 1
        elif event == CACHE_MISSES:
            out["cache_misses"] += 1

    jax.monitoring.register_event_duration_secs_listener(on_duration)
    jax.monitoring.register_event_listener(on_event)
    try:
        yield out
    finally:
        jax.monitoring.unregister_event_duration_listener(on_duration)
        jax.monitoring.unregister_event_listener(on_event)
        out["compile_s"] = out["trace_s"] + out["lower_s"] + out["backend_s"]


def lbfgs_scan(fun: Callable, optimizer: optax.GradientTransformationExtraArgs, steps: int, *,
               history: bool = True):
    """The hand-fused L-BFGS loop: ``steps`` updates in one ``lax.scan``, as optax's L-BFGS docs
    write a step (``optax.value_and_grad_from_state``, ``update(..., value=, grad=, value_fn=)``).

    ``solve(params, *args) -> (params, final_loss, history)`` (``history`` the loss at every step,
    or ``None``), like :func:`jloss.bench.problems.fused_scan`. Not jitted: wrap it (or vmap it).
    """

    def solve(params, *args):
        value_fn = lambda p: fun(p, *args)  # noqa: E731
        value_and_grad = optax.value_and_grad_from_state(value_fn)

        def body(carry, _):
            p, s = carry
            value, g = value_and_grad(p, state=s)
            u, s = optimizer.update(g, s, p, value=value, grad=g, value_fn=value_fn)
            return (optax.apply_updates(p, u), s), value if history else None

        (p, _), hist = lax.scan(body, (params, optimizer.init(params)), None, length=steps)
        return p, value_fn(p), hist

    return solve


@dataclasses.dataclass(frozen=True)
class CompileWorkload:
    """One workload: ``minimize`` (``members`` None) or ``sweep`` over ``members`` Huber deltas."""

    name: str
    optimizer: str  # "adam" or "lbfgs"
    steps: int
    members: int | None = None
    history: bool = True
    tol: float = 1e-5

    def describe(self) -> str:
        what = "jloss.minimize" if self.members is None else f"jloss.sweep, K={self.members}"
        opt = "optax.adam(0.05)" if self.optimizer == "adam" else "optax.lbfgs()"
        hist = "" if self.history else ", history=False"
        return f"{what}, {opt}, {self.steps} steps, tol={self.tol:g}{hist}"


def fresh_optimizer(name: str) -> optax.GradientTransformation:
    """A new optimizer object (jloss keys its compiled programs by the optimizer's identity)."""
    return optax.adam(0.05) if name == "adam" else optax.lbfgs()


def fresh_fun(sweep_member: bool) -> Callable:
    """A new Huber objective function object: ``fun(params, X, y)`` (delta 1) or ``fun(params, delta, X, y)``."""
    if sweep_member:
        def fun(params, delta, X, y):
            return huber_objective(params, delta, X, y)
    else:
        def fun(params, X, y):
            return huber_objective(params, 1.0, X, y)
    return fun


def inputs(w: CompileWorkload, n: int, d: int, seed: int) -> tuple:
    """The call's arrays, ``(X, y)`` or ``(deltas, X, y)``; another ``seed`` gives new arrays of the same shapes."""
    X, y = huber_problem(n, d, seed)
    data = (jnp.asarray(X), jnp.asarray(y))
    if w.members is None:
        return data
    deltas = np.geomspace(0.1, 10.0, w.members).astype(np.float32) * np.float32(1 + 0.01 * seed)
    return (jnp.asarray(deltas), *data)


def build(w: CompileWorkload, impl: str, d: int) -> Callable[..., Any]:
    """``call(*inputs)`` for ``impl`` ``"jloss"`` or ``"scan"``, with a fresh ``fun``, a fresh
    optimizer and (for the scan) a fresh ``jax.jit``: its first call traces and compiles everything."""
    fun, opt = fresh_fun(w.members is not None), fresh_optimizer(w.optimizer)
    params0 = linear_params(d)
    kw = {"max_steps": w.steps, "tol": w.tol, "history": w.history}
    if impl == "jloss":
        if w.members is None:
            return lambda X, y: minimize(fun, params0, opt, args=(X, y), **kw)
        return lambda deltas, X, y: sweep(fun, params0, opt, deltas, args=(X, y), **kw)
    make = fused_scan if w.optimizer == "adam" else lbfgs_scan
    solve = make(fun, opt, w.steps, history=w.history)
    if w.members is None:
        f = jax.jit(solve)
        return lambda X, y: f(params0, X, y)
    f = jax.jit(jax.vmap(solve, in_axes=(None, 0, None, None)))
    return lambda deltas, X, y: f(params0, deltas, X, y)
