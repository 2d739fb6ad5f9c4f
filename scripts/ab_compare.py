"""A/B timing of two jloss source trees, side by side in one run: ``python scripts/ab_compare.py A B``.

``A`` and ``B`` are folders that hold a ``jloss`` package (e.g. a ``git worktree`` of main and this
checkout). Each runs in a worker process of its own (``PYTHONPATH=A`` or ``B``, the same Python
and libraries); the workers build and compile the same workloads, then the driver asks them in
turn, round after round (``--rounds``, A and B alternating, the first of each round alternating
too), to time ``--calls`` calls of each workload. It prints each workload's median time per call
for A and B and the ratio B / A (on a shared machine the ratio, not the times, is the figure to
quote), and whether A and B compiled the same program (the optimized HLO, names, source
locations and metadata left out; a refactor that should not change the loops should say yes),
and how many Python/C function calls one call makes on the host (the front end's work).

Workloads: a small Huber regression with Adam (N=2,000, d=16, 2,000 steps), the same with
L-BFGS (to ``tol=1e-6``), a sweep of 16 deltas x 500 Adam steps, and a minibatch run (N=20,000,
batch 500, 1,000 steps).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import statistics
import subprocess
import sys
import time


def _normalized(hlo: str) -> str:
    """Compiled HLO text without what a refactor may change and the machine code does not depend
    on: instruction and computation names, source locations, metadata."""
    out = []
    for line in hlo.splitlines():
        if re.match(r'^\s*\d+ (\{|")', line) or line.strip() in ("FileNames", "FunctionNames", "FileLocations", "StackFrames"):
            continue
        line = re.sub(r"metadata=\{[^}]*\}", "", line)
        line = re.sub(r", origin=\{[^}]*\}", "", line)
        line = re.sub(r"%[\w.-]+", "%x", line)
        out.append(re.sub(r"\.\d+", "", line))
    return "\n".join(out)


def _python_calls(f) -> int:
    """Python and C function calls made on the host by one call of ``f`` (the front end's work,
    a count that does not depend on the machine's load)."""
    count = [0]

    def profile(frame, event, arg):
        if event in ("call", "c_call"):
            count[0] += 1

    sys.setprofile(profile)
    try:
        f()
    finally:
        sys.setprofile(None)
    return count[0] - 2  # f itself and setprofile


def worker() -> None:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    import jloss

    rng = np.random.default_rng(0)
    n, d = 2000, 16
    X = jnp.asarray(rng.normal(size=(n, d)), jnp.float32)
    y = X @ jnp.asarray(rng.normal(size=d), jnp.float32) + jnp.asarray(rng.standard_t(2, size=n), jnp.float32)
    Xb = jnp.asarray(rng.normal(size=(20_000, d)), jnp.float32)
    yb = Xb @ jnp.ones(d, jnp.float32)
    p0 = {"w": jnp.zeros(d), "b": jnp.zeros(())}

    def fun(p, X, y):
        return jloss.huber(X @ p["w"] + p["b"], y, 1.0)

    def fun_h(p, delta, X, y):
        return jloss.huber(X @ p["w"] + p["b"], y, delta)

    adam, lbfgs = optax.adam(1e-2), optax.lbfgs()
    grid = jnp.geomspace(0.1, 10.0, 16)
    key = jax.random.key(0)
    work = {  # name: (function, its array arguments)
        "minimize adam": (lambda X, y: jloss.minimize(fun, p0, adam, args=(X, y), max_steps=2000), (X, y)),
        "minimize lbfgs": (
            lambda X, y: jloss.minimize(fun, p0, lbfgs, args=(X, y), max_steps=200, tol=1e-6), (X, y)
        ),
        "sweep adam": (lambda X, y: jloss.sweep(fun_h, p0, adam, grid, args=(X, y), max_steps=500), (X, y)),
        "minibatch adam": (
            lambda X, y: jloss.minimize(fun, p0, adam, args=(X, y), max_steps=1000, batch_size=500, key=key),
            (Xb, yb),
        ),
    }
    programs, calls = {}, {}
    for name, (f, a) in work.items():  # compile and warm up; the compiled program, without names
        jax.block_until_ready(f(*a))
        jax.block_until_ready(f(*a))
        programs[name] = hashlib.sha256(_normalized(jax.jit(f).lower(*a).compile().as_text()).encode()).hexdigest()
        calls[name] = _python_calls(lambda: jax.block_until_ready(f(*a)))
    print(json.dumps({"ready": jloss.__file__, "programs": programs, "calls": calls}), flush=True)
    for line in sys.stdin:
        name, calls = json.loads(line)
        f, a = work[name]
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            jax.block_until_ready(f(*a))
            times.append(time.perf_counter() - start)
        print(json.dumps(times), flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", help="folder holding the A (old) jloss package")
    p.add_argument("b", help="folder holding the B (new) jloss package")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--calls", type=int, default=1)
    args = p.parse_args()
    procs = {}
    for label, path in (("A", args.a), ("B", args.b)):
        env = dict(os.environ, PYTHONPATH=os.path.abspath(path))
        procs[label] = subprocess.Popen(
            [sys.executable, __file__, "--worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
    programs, host_calls = {}, {}
    for label, proc in procs.items():
        ready = json.loads(proc.stdout.readline())
        programs[label], host_calls[label] = ready["programs"], ready["calls"]
        print(f"{label}: {ready['ready']}", file=sys.stderr)
    names = ["minimize adam", "minimize lbfgs", "sweep adam", "minibatch adam"]
    times = {(label, name): [] for label in procs for name in names}
    for r in range(args.rounds):
        order = ["A", "B"] if r % 2 == 0 else ["B", "A"]
        for name in names:
            for label in order:
                proc = procs[label]
                proc.stdin.write(json.dumps([name, args.calls]) + "\n")
                proc.stdin.flush()
                times[label, name] += json.loads(proc.stdout.readline())
    for proc in procs.values():
        proc.stdin.close()
        proc.wait()
    print("| workload | A median (ms) | B median (ms) | B / A | same compiled program | host calls A / B |")
    print("|---|---|---|---|---|---|")
    for name in names:
        a, b = statistics.median(times["A", name]), statistics.median(times["B", name])
        same = "yes" if programs["A"][name] == programs["B"][name] else "no"
        hosts = f"{host_calls['A'][name]} / {host_calls['B'][name]}"
        print(f"| {name} | {a * 1e3:.2f} | {b * 1e3:.2f} | {b / a:.3f} | {same} | {hosts} |")
    return 0


if __name__ == "__main__":
    if "--worker" in sys.argv:
        worker()
    else:
        sys.exit(main())
