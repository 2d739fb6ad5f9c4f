"""Reusable builders for workloads: the problems, the Python-loop idiom, the hand-fused scan, the
matvec floor, and the PyTorch peers' helpers.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import jloss
from jloss.minimize import minimize as _minimize
from jloss.sweep import sweep as _sweep


# ----------------------------------------------------------------------------------------------
# Reusable builders: problems, the Python-loop idiom, the hand-fused scan, the matvec floor
# ----------------------------------------------------------------------------------------------


def huber_problem(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Linear data with heavy-tailed (Student t, 2 dof) noise: float32 ``X (n, d)``, ``y (n,)``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal(d) / np.sqrt(d)
    y = X @ w + 0.5 + 0.3 * rng.standard_t(2, size=n)
    return X, y.astype(np.float32)


def classification_problem(n: int, d: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features and labels from a noisy linear softmax model: ``X (n, d)``, ``y (n,)`` int32."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    W = rng.standard_normal((d, c)) / np.sqrt(d) * 2.0
    y = np.argmax(X @ W + rng.gumbel(size=(n, c)), axis=1).astype(np.int32)
    return X, y


def linear_params(d: int, c: int | None = None) -> dict:
    """Zero parameters ``{"w": (d,) or (d, c), "b": () or (c,)}``."""
    if c is None:
        return {"w": jnp.zeros((d,), jnp.float32), "b": jnp.zeros((), jnp.float32)}
    return {"w": jnp.zeros((d, c), jnp.float32), "b": jnp.zeros((c,), jnp.float32)}


def huber_objective(params, delta, X, y):
    """``mean jloss.huber(X @ w + b, y, delta)``, the objective of the regression workloads."""
    return jloss.huber(X @ params["w"] + params["b"], y, delta)


def fused_scan(fun: Callable, optimizer: optax.GradientTransformation, steps: int, *, history: bool = True):
    """The hand-fused loop: ``steps`` updates of ``optimizer`` in one ``lax.scan``.

    ``solve(params, *args) -> (params, final_loss, history)``. With ``history`` each step takes
    ``value_and_grad`` and the scan stacks the losses (what ``minimize`` returns by default);
    without, it takes ``grad`` only and ``history`` is ``None``. Not jitted: wrap it (or vmap it).
    """

    def solve(params, *args):
        def body(carry, _):
            p, s = carry
            if history:
                value, g = jax.value_and_grad(fun)(p, *args)
            else:
                value, g = None, jax.grad(fun)(p, *args)
            u, s = optimizer.update(g, s, p)
            return (optax.apply_updates(p, u), s), value

        (p, _), hist = lax.scan(body, (params, optimizer.init(params)), None, length=steps)
        return p, fun(p, *args), hist

    return solve


def python_loop(fun: Callable, optimizer: optax.GradientTransformation, steps: int):
    """The usual idiom: a ``@jax.jit`` step called ``steps`` times from Python.

    ``solve(params, *args) -> (params, final_loss)``; the loss of every step is kept (as device
    arrays, no host sync) like a user's loss curve.
    """

    @jax.jit
    def step(p, s, *args):
        value, g = jax.value_and_grad(fun)(p, *args)
        u, s = optimizer.update(g, s, p)
        return optax.apply_updates(p, u), s, value

    final = jax.jit(fun)

    def solve(params, *args):
        p, s = params, optimizer.init(params)
        losses = []
        for _ in range(steps):
            p, s, value = step(p, s, *args)
            losses.append(value)
        return p, final(p, *args)

    return solve


def xt_dot(X, v):
    """``X.T @ v`` as one dot contracting axis 0: ``X.T @ v`` in jnp makes XLA CPU copy a
    transposed X every step (a 128 MB copy on the large problem), which no floor should pay."""
    return lax.dot_general(X, v, (((0,), (0,)), ((), ())))


def matvec_floor(X: jax.Array, steps: int, width: int | None = None):
    """The matrix products alone: ``steps`` times ``w <- s * X.T @ (X @ w)``, in one scan.

    ``width`` columns (``w`` of shape ``(d, width)``) for a batch of problems or classes, else a
    vector. ``s = 1 / lambda_max(X.T X)`` keeps the iterate bounded. ``X.T @ v`` is one
    ``dot_general`` contracting X's axis 0 (the same dot autodiff emits for the gradient), never a
    transposed copy. Returns ``run() -> w``.
    """
    Xn = np.asarray(X, np.float64)
    s = np.float32(1.0 / max(np.linalg.eigvalsh(Xn.T @ Xn)[-1], 1e-12))
    d = X.shape[1]
    w0 = jnp.ones((d,) if width is None else (d, width), X.dtype)

    @jax.jit
    def floor(X, w):
        def body(w, _):
            return xt_dot(X, X @ w) * s, None

        return lax.scan(body, w, None, length=steps)[0]

    return lambda: floor(X, w0)


def jloss_minimize():
    """``jloss.minimize`` (the workloads also accept an exception here, and then report it)."""
    return _minimize


def jloss_sweep():
    """``jloss.sweep`` (the workloads also accept an exception here, and then report it)."""
    return _sweep


def torch_device(torch) -> Any:
    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def torch_sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def torch_huber_regression(cfg, X, y, steps, lr, delta, batch_perms=None):
    """PyTorch: the same model, loss (``F.huber_loss``, same convention) and Adam, on ``device``."""
    torch = cfg.torch
    F = torch.nn.functional
    device = torch_device(torch)
    Xt, yt = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
    d = X.shape[1]

    def run():
        w = torch.zeros(d, device=device, requires_grad=True)
        b = torch.zeros((), device=device, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=lr)
        for i in range(steps):
            if batch_perms is None:
                xb, yb = Xt, yt
            else:
                idx = batch_perms(i)
                xb, yb = Xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.huber_loss(xb @ w + b, yb, delta=delta)
            loss.backward()
            opt.step()
        with torch.no_grad():
            out = float(F.huber_loss(Xt @ w + b, yt, delta=delta))
        torch_sync(torch, device)
        return out

    return run


def result_loss(result) -> float:
    return float(result.loss)


def total_loss(result) -> float:
    return float(jnp.mean(result.loss))


def adam_step(fun, opt, p, s, *args):
    value, g = jax.value_and_grad(fun)(p, *args)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, value


# The loss kernel workload -------------------------------------------------------------------
