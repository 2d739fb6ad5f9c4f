"""Workload ``scaling``: minimize with rows sharded, and sweep with members sharded, over devices."""

from __future__ import annotations

import jax
import numpy as np
import optax

import jloss
from jloss.sharding import make_mesh, replicate, shard_data, shard_grid
from jloss.bench.harness import Case, Config, Variant, workload
from jloss.bench.problems import huber_objective, huber_problem, linear_params, result_loss, total_loss


@workload("scaling", "minimize with rows sharded, and sweep with members sharded, over 1, 2, 4, ... devices")
def _scaling(cfg: Config) -> list[Case]:
    """One row per device count D that this process sees (powers of two and all of them): the
    same call on the first D devices (``jloss.sharding``), each compared with the 1-device row.
    The number of CPU host devices is fixed when JAX starts: ``python -m jloss.scaling`` runs one
    process per count instead (and adds minibatch mode)."""
    n, d, steps = cfg.size((262_144, 32, 100), (2048, 8, 20))
    k, n_sweep = cfg.size((64, 16_384), (8, 1024))
    total = jax.device_count()
    counts = sorted({c for c in (1, 2, 4, 8, 16, 32, 64, total) if c <= total and n % c == 0 and k % c == 0})
    X_np, y_np = huber_problem(n, d, cfg.seed)
    params0 = linear_params(d)
    adam = optax.adam(0.05)
    grid = np.geomspace(0.05, 20.0, k).astype(np.float32)

    def fun(params, X, y):
        return huber_objective(params, 1.0, X, y)

    data = Case("scaling", f"full-batch Huber regression N={n:,}, d={d}, Adam, {steps} steps; rows over D devices",
                {"n": n, "d": d, "steps": steps, "device_counts": counts}, variants=[],
                reference="1 device", name="scaling_data", rtol=1e-4)
    members = Case("scaling", f"sweep of K={k} Huber deltas, N={n_sweep:,}, d={d}, {steps} steps; members over D devices",
                   {"k": k, "n": n_sweep, "d": d, "steps": steps, "device_counts": counts}, variants=[],
                   reference="1 device", name="scaling_sweep", rtol=1e-4)
    for c in counts:
        mesh = make_mesh(devices=jax.devices()[:c])
        label = f"{c} device" + ("s" if c > 1 else "")
        Xs, ys = shard_data((X_np, y_np), mesh)
        p0 = replicate(params0, mesh)
        data.variants.append(Variant(
            label, lambda Xs=Xs, ys=ys, p0=p0: jloss.minimize(fun, p0, adam, args=(Xs, ys), max_steps=steps),
            result_loss, "jloss", f"{n // c:,} rows per device"))
        gs, (Xr, yr) = shard_grid(grid, mesh), replicate((X_np[:n_sweep], y_np[:n_sweep]), mesh)
        members.variants.append(Variant(
            label, lambda gs=gs, Xr=Xr, yr=yr: jloss.sweep(huber_objective, params0, adam, gs, args=(Xr, yr),
                                                            max_steps=steps),
            total_loss, "jloss", f"{k // c} members per device"))
    if total == 1:
        for case in (data, members):
            case.notes.append("this process sees one device; `python -m jloss.scaling --devices 1,2,4` "
                              "makes CPU host devices, one process per count")
    return [data, members]


# The hypergradient workload (jloss.differentiation) -----------------------------------------
