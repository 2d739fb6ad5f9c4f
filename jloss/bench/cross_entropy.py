"""Workload ``cross_entropy``: softmax cross-entropy classification."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jloss
from jloss.bench.harness import Case, Config, Target, Variant, workload
from jloss.bench.problems import classification_problem, fused_scan, jloss_minimize, linear_params, matvec_floor, python_loop, result_loss, torch_device, torch_sync


@workload("cross_entropy", "softmax cross-entropy (N=20,000, d=64, 10 classes, Adam, 500 steps)")
def _cross_entropy(cfg: Config) -> list[Case]:
    n, d, c, steps = cfg.size((20_000, 64, 10, 500), (500, 8, 4, 20))
    lr = 0.05
    X_np, y_np = classification_problem(n, d, c, cfg.seed)
    X, y = jnp.asarray(X_np), jnp.asarray(y_np)
    params0 = linear_params(d, c)

    def fun(params, X, y):
        return jloss.cross_entropy(X @ params["w"] + params["b"], y)

    adam = optax.adam(lr)
    case = Case(
        "cross_entropy",
        f"softmax cross-entropy N={n:,}, d={d}, {c} classes, Adam(lr={lr}), {steps:,} steps",
        {"n": n, "d": d, "classes": c, "steps": steps, "optimizer": f"adam({lr})"},
        variants=[],
        reference="lax.scan (hand-fused)",
        warmup=0,  # seconds per call: the first call is the warm-up
    )
    V = case.variants
    minimize = jloss_minimize()
    if isinstance(minimize, Exception):
        case.skip("jloss.minimize", f"jloss.minimize unavailable: {minimize}")
    else:
        V.append(Variant("jloss.minimize", lambda: minimize(fun, params0, adam, args=(X, y), max_steps=steps),
                         result_loss, "jloss", "defaults: history=True"))
        V.append(Variant("jloss.minimize (history=False)",
                         lambda: minimize(fun, params0, adam, args=(X, y), max_steps=steps, history=False),
                         result_loss, "jloss", quick=False))
    scan = jax.jit(fused_scan(fun, adam, steps))
    scan_grad = jax.jit(fused_scan(fun, adam, steps, history=False))
    V.append(Variant("lax.scan (hand-fused)", lambda: scan(params0, X, y), lambda o: o[1], "peer",
                     "value_and_grad per step, losses stacked"))
    V.append(Variant("lax.scan (grad only)", lambda: scan_grad(params0, X, y), lambda o: o[1], "peer",
                     quick=False))
    loop = python_loop(fun, adam, steps)
    V.append(Variant("Python loop of @jax.jit step", lambda: loop(params0, X, y), lambda o: o[1], "peer",
                     quick=False))
    if cfg.torch is not None:
        V.append(Variant("torch", _torch_cross_entropy(cfg, X_np, y_np, c, steps, lr), float, "peer",
                         "F.cross_entropy + torch.optim.Adam", quick=False))
    else:
        case.skip("torch", cfg.torch_missing)
    V.append(Variant("floor: matmuls alone", matvec_floor(X, steps, width=c), None, "floor",
                     f"X @ W and X.T @ G per step, W of shape (d, {c})", quick=False))
    if not isinstance(minimize, Exception):
        case.targets.append(Target("minimize (Adam) <= 1.0x hand-fused scan", "jloss.minimize",
                                   "lax.scan (hand-fused)", 1.0))
    return [case]


def _torch_cross_entropy(cfg, X_np, y_np, c, steps, lr):
    torch = cfg.torch
    F = torch.nn.functional
    device = torch_device(torch)
    Xt, yt = torch.from_numpy(X_np).to(device), torch.from_numpy(y_np.astype(np.int64)).to(device)
    d = X_np.shape[1]

    def run():
        W = torch.zeros(d, c, device=device, requires_grad=True)
        b = torch.zeros(c, device=device, requires_grad=True)
        opt = torch.optim.Adam([W, b], lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(Xt @ W + b, yt).backward()
            opt.step()
        with torch.no_grad():
            out = float(F.cross_entropy(Xt @ W + b, yt))
        torch_sync(torch, device)
        return out

    return run
