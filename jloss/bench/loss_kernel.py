"""Workload ``loss_kernel``: value-and-grad of every registered loss against a streaming pass."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jloss
from jloss.bench.harness import Case, Config, Target, Variant, workload
from jloss.bench.problems import torch_device, torch_sync


def _kernel_inputs(name: str, kind: str, n: int, rng: np.random.Generator):
    """Predictions and targets with ``n`` float32 prediction elements for a registered loss."""
    if kind == "multiclass":
        c = 10
        z = rng.standard_normal((n // c, c), dtype=np.float32) * 2
        labels = rng.integers(0, c, size=n // c).astype(np.int32)
        return z, labels
    p = rng.standard_normal(n, dtype=np.float32) * 2
    if kind == "binary":
        t = rng.integers(0, 2, size=n).astype(np.float32)
        if "hinge" in name:
            t = 2 * t - 1
        return p, t
    return p, rng.standard_normal(n, dtype=np.float32)


def _kernel_peers(name: str, info) -> dict[str, Callable]:
    """Hand-written and optax equivalents of a loss's mean (same convention as jloss)."""
    h = info.default
    peers: dict[str, Callable] = {}
    if name == "mse":
        peers["optax.squared_error"] = lambda p, t: jnp.mean(optax.squared_error(p, t))
    elif name == "mae":
        peers["hand-written jnp.abs"] = lambda p, t: jnp.mean(jnp.abs(p - t))
    elif name == "huber":
        peers["optax.huber_loss"] = lambda p, t: jnp.mean(optax.huber_loss(p, t, delta=h))

        def hand(p, t):
            r = p - t
            a = jnp.abs(r)
            return jnp.mean(jnp.where(a <= h, 0.5 * r * r, h * (a - 0.5 * h)))

        peers["hand-written jnp.where"] = hand
    elif name == "pseudo_huber":
        peers["hand-written formula"] = lambda p, t: jnp.mean(h * h * (jnp.sqrt(1 + ((p - t) / h) ** 2) - 1))
    elif name == "log_cosh":
        peers["optax.log_cosh"] = lambda p, t: jnp.mean(optax.log_cosh(p, t))
    elif name == "quantile":
        peers["hand-written max"] = lambda p, t: jnp.mean(jnp.maximum(h * (t - p), (h - 1) * (t - p)))
    elif name == "epsilon_insensitive":
        peers["hand-written relu"] = lambda p, t: jnp.mean(jax.nn.relu(jnp.abs(p - t) - h))
    elif name == "cross_entropy":
        peers["optax.softmax_cross_entropy_with_integer_labels"] = (
            lambda z, y: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y)))
    elif name == "binary_cross_entropy":
        peers["optax.sigmoid_binary_cross_entropy"] = lambda p, t: jnp.mean(optax.sigmoid_binary_cross_entropy(p, t))
    elif name == "hinge":
        peers["optax.hinge_loss"] = lambda p, t: jnp.mean(optax.hinge_loss(p, t))
    elif name == "squared_hinge":
        peers["hand-written relu^2"] = lambda p, t: jnp.mean(jnp.square(jax.nn.relu(1 - p * t)))
    elif name == "multiclass_hinge":
        peers["optax.losses.multiclass_hinge_loss"] = (
            lambda z, y: jnp.mean(optax.losses.multiclass_hinge_loss(z, y)))
    return peers


def _torch_kernel(cfg, name: str, p_np, t_np):
    torch = cfg.torch
    F = torch.nn.functional
    fns = {
        "mse": F.mse_loss,
        "mae": F.l1_loss,
        "huber": lambda p, t: F.huber_loss(p, t, delta=1.0),
        "cross_entropy": F.cross_entropy,
        "binary_cross_entropy": F.binary_cross_entropy_with_logits,
    }
    if name not in fns:
        return None
    fn = fns[name]
    device = torch_device(torch)
    p = torch.from_numpy(p_np).to(device).requires_grad_(True)
    t = torch.from_numpy(t_np.astype(np.int64) if t_np.dtype == np.int32 else t_np).to(device)

    def run():
        p.grad = None
        loss = fn(p, t)
        loss.backward()
        torch_sync(torch, device)
        return loss.item()

    return run


@workload("loss_kernel", "value-and-grad of every registered loss on 10^7 float32 elements vs a streaming pass")
def _loss_kernel(cfg: Config) -> list[Case]:
    n = cfg.size(10_000_000, 100_000)
    rng = np.random.default_rng(cfg.seed)
    cases = []
    sub = jax.jit(lambda a, b: a - b)
    sub_cls = jax.jit(lambda z, y: z - y[:, None].astype(z.dtype))
    names = jloss.available()
    if cfg.quick:  # one loss of each kind: the smoke run checks the harness, not every kernel
        names = [n for n in ("huber", "binary_cross_entropy", "cross_entropy") if n in names] or names[:1]
    for name in names:
        info = jloss.info(name)
        p_np, t_np = _kernel_inputs(name, info.kind, n, rng)
        p, t = jnp.asarray(p_np), jnp.asarray(t_np)
        fn = info.fn
        vg = jax.jit(jax.value_and_grad(lambda p, t, fn=fn: fn(p, t)))
        case = Case(
            "loss_kernel",
            f"{name}: value-and-grad of the mean, {p_np.size:,} float32 elements {tuple(p_np.shape)}",
            {"loss": name, "elements": int(p_np.size), "shape": list(p_np.shape), "kind": info.kind},
            variants=[],
            reference="floor: jit stream",
            name=f"loss_kernel/{name}",
            loss_reference="jloss",
            rtol=1e-4,
        )
        V = case.variants
        V.append(Variant("jloss", lambda vg=vg, p=p, t=t: vg(p, t), lambda o: o[0], "jloss",
                         f"jax.jit(jax.value_and_grad(jloss.{name}))",
                         compiled=lambda vg=vg, p=p, t=t: vg.lower(p, t).compile()))
        for peer, f in _kernel_peers(name, info).items():
            g = jax.jit(jax.value_and_grad(f))
            V.append(Variant(peer, lambda g=g, p=p, t=t: g(p, t), lambda o: o[0], "peer", quick=False,
                             compiled=lambda g=g, p=p, t=t: g.lower(p, t).compile()))
        if cfg.torch is not None:
            run = _torch_kernel(cfg, name, p_np, t_np)
            if run is not None:
                V.append(Variant("torch", run, float, "peer", "loss.backward() into a fresh .grad", quick=False))
        else:
            case.skip("torch", cfg.torch_missing)
        if info.kind == "multiclass":
            floor = lambda p=p, t=t: sub_cls(p, t)  # noqa: E731
            out = np.empty_like(p_np)
            t_col = t_np[:, None]
            np_floor = lambda p_np=p_np, t_col=t_col, out=out: np.subtract(p_np, t_col, out=out)  # noqa: E731
        else:
            floor = lambda p=p, t=t: sub(p, t)  # noqa: E731
            out = np.empty_like(p_np)
            np_floor = lambda p_np=p_np, t_np=t_np, out=out: np.subtract(p_np, t_np, out=out)  # noqa: E731
        jit_floor = sub_cls if info.kind == "multiclass" else sub
        V.append(Variant("floor: jit stream", floor, None, "floor",
                         "jax.jit(a - b): reads both inputs, allocates and writes a gradient-sized output",
                         compiled=lambda f=jit_floor, p=p, t=t: f.lower(p, t).compile()))
        V.append(Variant("floor: numpy in-place", lambda f=np_floor: (f(), None)[1], None, "floor",
                         "np.subtract(a, b, out=c): the same bytes, no allocation"))
        case.targets.append(Target(f"{name} value-and-grad <= 1.5x the jit stream", "jloss",
                                   "floor: jit stream", 1.5))
        cases.append(case)
    return cases


# The scaling workload (jloss.sharding) ------------------------------------------------------
