"""Scaling benchmark: throughput of ``minimize`` and ``sweep`` against the number of devices.

``python -m jloss.scaling [--devices 1,2,4] [--quick]`` prints a markdown table; every device count
runs in its own process (the number of CPU host devices is fixed when JAX starts). Each row also
compares the final loss with the same call on one device. On CPU the host devices share the
machine's cores, so the table shows correctness more than speed; with several accelerators it is
the real figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jloss
from jloss.bench.problems import huber_objective, huber_problem
from jloss._loops import solve_jit
from jloss._options import Options
from jloss.sharding import make_mesh, replicate, shard_data, shard_grid

__all__ = ["scaling_benchmark", "scaling_markdown", "main"]


def _scaling_worker(d: int, quick: bool, repeats: int) -> list[dict]:
    """Time the workloads on the first ``d`` devices of this process; each result's final loss is
    compared with the same call on one device (minibatch: the same per-shard schedule)."""
    if len(jax.devices()) < d:
        raise RuntimeError(f"{d} devices asked for, {len(jax.devices())} available")
    mesh = make_mesh(devices=jax.devices()[:d])
    n, dim, steps = (4096, 16, 50) if quick else (262_144, 32, 100)
    bs, mb_steps = (256, 100) if quick else (4096, 300)
    k, n_sweep = (8, 1024) if quick else (32, 16_384)
    X, y = huber_problem(n, dim)
    params0 = {"w": np.zeros(dim, np.float32), "b": np.zeros((), np.float32)}
    adam = optax.adam(0.05)
    key = jax.random.key(0)

    def fun(p, X, y):
        return huber_objective(p, 1.0, X, y)

    def timed(run, items):
        out = run()
        jax.block_until_ready(out)  # compile and warm up
        jax.block_until_ready(run())
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            jax.block_until_ready(run())
            times.append(time.perf_counter() - start)
        median = float(np.median(times))
        return out, {"median_s": median, "min_s": float(min(times)), "per_s": items / median}

    rows = []
    Xs, ys = shard_data((X, y), mesh)
    p0 = replicate(params0, mesh)

    res, t = timed(lambda: jloss.minimize(fun, p0, adam, args=(Xs, ys), max_steps=steps), n * steps)
    ref = jloss.minimize(fun, params0, adam, args=(X, y), max_steps=steps)
    rows.append(dict(workload="full_batch", unit="samples/s", loss=float(res.loss),
                     loss_1dev=float(ref.loss), **t))

    res, t = timed(
        lambda: jloss.minimize(fun, p0, adam, args=(Xs, ys), max_steps=mb_steps, batch_size=bs,
                               key=key),
        bs * mb_steps,
    )
    # one device, the same per-shard schedule (D shards of the rows, no mesh)
    p1 = jax.tree_util.tree_map(jnp.asarray, params0)
    options = Options(max_steps=mb_steps, history=True, batch_size=bs, batch_args=(0, 1),
                       batch_shards=d)
    ref = solve_jit(fun, adam, options, p1, (X, y), adam.init(p1), jnp.float32(0), key,
                     jnp.int32(0))
    rows.append(dict(workload="minibatch", unit="samples/s", loss=float(res.loss),
                     loss_1dev=float(ref.loss), **t))

    grid = np.geomspace(0.05, 20.0, k).astype(np.float32)
    gs = shard_grid(grid, mesh)
    Xr, yr = replicate((X[:n_sweep], y[:n_sweep]), mesh)
    res, t = timed(
        lambda: jloss.sweep(huber_objective, params0, adam, gs, args=(Xr, yr), max_steps=steps),
        k * n_sweep * steps,
    )
    ref = jloss.sweep(huber_objective, params0, adam, grid, args=(X[:n_sweep], y[:n_sweep]),
                      max_steps=steps)
    rows.append(dict(workload="sweep", unit="member-samples/s", loss=float(np.mean(res.loss)),
                     loss_1dev=float(np.mean(ref.loss)), **t))
    sizes = {"full_batch": f"N={n}, d={dim}, Adam {steps} steps",
             "minibatch": f"N={n}, d={dim}, batch {bs}, {mb_steps} steps",
             "sweep": f"K={k} deltas, N={n_sweep}, d={dim}, {steps} steps"}
    dev = jax.devices()[0]
    for r in rows:
        r.update(devices=d, problem=sizes[r["workload"]], platform=dev.platform,
                 device_kind=dev.device_kind,
                 loss_rel_diff=abs(r["loss"] - r["loss_1dev"]) / max(abs(r["loss_1dev"]), 1e-30))
    return rows


def scaling_benchmark(
    device_counts: Sequence[int] = (1, 2, 4),
    *,
    quick: bool = False,
    repeats: int = 5,
    timeout: float = 900,
) -> list[dict]:
    """Throughput of ``minimize`` (full batch, minibatch) and ``sweep`` against the device count.

    Each device count runs in its own Python process (the number of CPU host devices is fixed when
    JAX starts: on CPU the process gets ``--xla_force_host_platform_device_count=D``; on an
    accelerator it uses the first D devices). Data is sharded with :func:`jloss.sharding.shard_data`, a sweep's
    grid with :func:`jloss.sharding.shard_grid`. Every row also holds the final loss of the same call on one
    device (``loss_1dev``) and their relative difference: the correctness check. On CPU host
    devices share the machine's cores, so the table shows correctness more than speed; on a
    machine with several accelerators it is the real figure.

    Returns:
      one dict per (workload, device count): ``workload``, ``devices``, ``median_s``,
      ``min_s``, ``per_s`` (throughput in ``unit``), ``speedup`` (over the smallest count),
      ``loss``, ``loss_1dev``, ``loss_rel_diff``, ``problem``, ``platform``.
    """
    rows = []
    for d in device_counts:
        env = dict(os.environ)  # the flag makes D CPU devices; accelerators are left as they are
        flags = [f for f in env.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in f]
        env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={d}"])
        cmd = [sys.executable, "-m", "jloss.scaling", "--worker", str(d), "--repeats", str(repeats)]
        if quick:
            cmd.append("--quick")
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"the {d}-device run failed:\n{proc.stderr[-3000:]}")
        rows += [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    base = {}
    for r in rows:
        base.setdefault(r["workload"], r["per_s"])
        r["speedup"] = r["per_s"] / base[r["workload"]]
    return rows


def scaling_markdown(rows: list[dict]) -> str:
    """The rows of :func:`scaling_benchmark` as a markdown table."""
    lines = [
        "| workload | problem | devices | median s | throughput | speedup | loss vs 1 device |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['problem']} | {r['devices']} | {r['median_s']:.4g} | "
            f"{r['per_s']:.3g} {r['unit']} | {r['speedup']:.2f}x | {r['loss_rel_diff']:.1e} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m jloss.scaling [--devices 1,2,4] [--quick] [--repeats R] [--json FILE]``: the
    scaling table (see :func:`scaling_benchmark`)."""
    parser = argparse.ArgumentParser(prog="python -m jloss.scaling", description=main.__doc__)
    parser.add_argument("--devices", default="1,2,4", help="device counts, e.g. 1,2,4")
    parser.add_argument("--quick", action="store_true", help="small problems (a smoke test)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        for row in _scaling_worker(args.worker, args.quick, args.repeats):
            print(json.dumps(row), flush=True)
        return 0
    counts = [int(c) for c in args.devices.split(",")]
    rows = scaling_benchmark(counts, quick=args.quick, repeats=args.repeats)
    dev = rows[0]
    print(f"jloss scaling on {dev['platform']} ({dev['device_kind']}); one process per device count\n")
    print(scaling_markdown(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
