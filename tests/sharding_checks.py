"""Checks of ``jloss.sharding`` that need several devices; ``tests/test_sharding.py`` runs them.

The number of host devices is fixed when JAX starts, so these run in their own process:

    python tests/sharding_checks.py                    # every check on 4 CPU devices
    python tests/sharding_checks.py --process I PORT   # process I of the 2-process (2 hosts) check

Each check prints one JSON line ``{"check": name, "ok": bool, "error": text}``. References are
independent of the sharded code path: the single-device run of the same call, ``np.linalg.lstsq``,
and a plain Python/optax loop that draws the documented per-shard minibatches itself.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import traceback

DEVICES = 2 if "--process" in sys.argv else 4  # per process
if __name__ == "__main__":  # (pytest's doctest collection imports this file: leave its JAX alone)
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={DEVICES}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P  # noqa: E402

import jloss  # noqa: E402
from jloss import sharding as js  # noqa: E402
from jloss import _loops  # noqa: E402
from jloss._options import Options  # noqa: E402

# One problem for every check: N rows, F features. Sizes are picked so that a data-sized
# collective (a batch of B or B / D rows, or all N) is larger than any params-sized one.
N, F, B = 128, 3, 32
ADAM = optax.adam(0.05)
SGD = optax.sgd(0.1)
LBFGS = optax.lbfgs()
CHECKS = {}


def check(fn):
    CHECKS[fn.__name__] = fn
    return fn


def problem(n=N, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, F)).astype(np.float32)
    y = (X @ np.array([1.0, -2.0, 0.5]) + 0.3 * rng.normal(size=n)).astype(np.float32)
    return X, y


def mse(w, X, y):
    return jloss.mse(X @ w, y)


def huber(w, delta, X, y):
    return jloss.huber(X @ w, y, delta)


def close(a, b, rtol=2e-5, atol=2e-6):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


# -- the compiled program -------------------------------------------------------------------------

COLLECTIVE = re.compile(
    r"=\s*(?P<type>.*?)\s+(?P<op>all-gather|all-to-all|all-reduce|collective-permute|"
    r"reduce-scatter|collective-broadcast|ragged-all-to-all)(?:-start)?\("
)
SHAPE = re.compile(r"\b[a-z]+\d*\[([\d,]*)\]")


def collectives(hlo: str) -> list[tuple[str, int]]:
    """(op, elements of its largest operand) of every collective in optimized HLO text."""
    out = []
    for line in hlo.splitlines():
        m = COLLECTIVE.search(line)
        if m:
            sizes = [int(np.prod([int(d) for d in s.split(",") if d])) for s in SHAPE.findall(m["type"])]
            out.append((m["op"], max(sizes, default=1)))
    return out


def assert_no_data_traffic(hlo: str, largest: int, what: str) -> list:
    """Only all-reduces, none of more than ``largest`` elements (params-sized, not data-sized)."""
    found = collectives(hlo)
    bad = [c for c in found if c[0] != "all-reduce" or c[1] > largest]
    assert not bad, f"{what}: data-sized or data-moving collectives {bad} (all: {found})"
    return found


def spy(module, name):
    """Capture the arguments of ``module.name`` (the jitted solve) on the next call."""
    original = getattr(module, name)
    calls = []

    def wrapper(*args):
        calls.append(args)
        return original(*args)

    setattr(module, name, wrapper)
    return original, calls, lambda: setattr(module, name, original)


def compiled_text(module, name, run) -> str:
    original, calls, restore = spy(module, name)
    try:
        run()
    finally:
        restore()
    return original.lower(*calls[-1]).compile().as_text()


# -- the documented per-shard minibatch schedule, written out for a reference loop ---------------


def shard_batches(key, n, b, d, steps):
    """Row indices of every step: per epoch one permutation of each shard's n / d rows (keys
    split from fold_in(key, epoch)); step i takes rows i * b / d ... of each shard."""
    local, per = n // d, b // d
    per_epoch = local // per
    perms = jax.jit(  # (epochs, d, local)
        lambda epochs: jax.vmap(
            lambda e: jax.vmap(lambda k: jax.random.permutation(k, local))(
                jax.random.split(jax.random.fold_in(key, e), d)
            )
        )(epochs)
    )(jnp.arange(-(-steps // per_epoch)))
    perms = np.asarray(perms) + local * np.arange(d)[:, None]  # shard s holds rows s * local + r
    return [perms[t // per_epoch, :, (t % per_epoch) * per:(t % per_epoch + 1) * per].reshape(-1)
            for t in range(steps)]


def reference_minibatch_loop(fun, w0, opt, X, y, batches, *h):
    """A plain Python loop of jitted optax steps over the given batches: ``fun(w, *h, Xb, yb)``."""

    @jax.jit
    def step(w, s, Xb, yb, *h):
        g = jax.grad(fun)(w, *h, Xb, yb)
        u, s = opt.update(g, s, w)
        return optax.apply_updates(w, u), s

    w, s = jnp.asarray(w0), opt.init(jnp.asarray(w0))
    for idx in batches:
        w, s = step(w, s, X[idx], y[idx], *h)
    return w


# -- checks on 4 devices -------------------------------------------------------------------------


@check
def full_batch_equals_one_device_and_data_stays_sharded():
    X, y = problem()
    mesh = js.make_mesh()
    Xs, ys = js.shard_data((X, y), mesh)
    assert Xs.sharding.spec == P("data") and len(Xs.sharding.device_set) == 4
    assert Xs.addressable_shards[0].data.shape == (N // 4, F)
    seen = []

    def fun(w, X, y):  # records where the compiler put the residual, a data-sized intermediate
        r = X @ w - y
        jax.debug.inspect_array_sharding(r, callback=seen.append)
        return 0.5 * jnp.mean(r**2)

    one = jloss.minimize(fun, jnp.zeros(F), ADAM, args=(X, y), max_steps=40)
    seen.clear()
    run = lambda: jloss.minimize(fun, jnp.zeros(F), ADAM, args=(Xs, ys), max_steps=40)  # noqa: E731
    many = run()
    close(many.params, one.params)
    close(many.history, one.history)
    assert int(many.steps) == int(one.steps) == 40
    assert seen and all(s.spec == P("data") and s.mesh == mesh for s in seen), seen
    assert many.params.sharding.is_fully_replicated and len(many.params.sharding.device_set) == 4
    hlo = compiled_text(_loops, "solve_jit", run)
    found = assert_no_data_traffic(hlo, F, "full batch")
    assert any(op == "all-reduce" for op, _ in found)  # the gradient and loss are summed


@check
def full_batch_lbfgs_matches_lstsq():
    X, y = problem()
    Xs, ys = js.shard_data((X, y))
    res = jloss.minimize(mse, js.replicate(jnp.zeros(F)), LBFGS, args=(Xs, ys), max_steps=50, tol=1e-5)
    assert res.converged, res.message
    close(res.params, np.linalg.lstsq(X, y, rcond=None)[0], rtol=1e-4, atol=1e-4)


@check
def minibatch_draws_from_every_shard_and_matches_a_plain_loop():
    X, y = problem()
    Xs, ys = js.shard_data((X, y))
    key = jax.random.key(3)
    seen = []

    def fun(w, X, y):
        jax.debug.inspect_array_sharding(X, callback=seen.append)  # the batch inside the loop
        return 0.5 * jnp.mean((X @ w - y) ** 2)

    run = lambda: jloss.minimize(  # noqa: E731
        fun, jnp.zeros(F), SGD, args=(Xs, ys), max_steps=10, batch_size=B, key=key
    )
    res = run()
    inside = list(seen)
    # 10 steps of 4 per epoch: crosses two epoch boundaries
    ref = reference_minibatch_loop(fun, jnp.zeros(F), SGD, X, y, shard_batches(key, N, B, 4, 10))
    close(res.params, ref, rtol=1e-5, atol=1e-6)
    close(res.loss, 0.5 * mse(res.params, X, y))  # reported on the full data
    assert inside and all(s.spec == P("data") for s in inside), inside
    hlo = compiled_text(_loops, "solve_jit", run)
    assert_no_data_traffic(hlo, F, "minibatch")


@check
def the_global_shuffle_would_move_data():
    """The check above can fail: the single-device schedule (one permutation of all N rows) on
    the same sharded data makes XLA send batch rows between devices."""
    X, y = problem()
    Xs, ys = js.shard_data((X, y))
    p0 = jnp.zeros(F)
    options = Options(max_steps=10, history=True, batch_size=B, batch_args=(0, 1))
    args = (mse, SGD, options, p0, (Xs, ys), SGD.init(p0), jnp.float32(0), jax.random.key(0),
            jnp.int32(0))
    found = collectives(_loops.solve_jit.lower(*args).compile().as_text())
    assert any(size >= B for _, size in found), found


@check
def padding_with_a_mask_equals_the_unpadded_fit():
    X, y = problem(n=130, seed=1)  # 130 = 4 * 32 + 2
    try:
        js.shard_data((X, y))
    except ValueError as e:
        assert "N=130" in str(e) and "4" in str(e) and "pad=True" in str(e), e
    else:
        raise AssertionError("N=130 over 4 devices must be a ValueError")
    (Xs, ys), mask = js.shard_data((X, y), pad=True)
    assert Xs.shape == (132, F) and mask.shape == (132,) and int(mask.sum()) == 130
    assert mask.sharding.spec == P("data")

    def masked(w, X, y, m):
        return jloss.mse(X @ w, y, where=m)

    one = jloss.minimize(mse, jnp.zeros(F), ADAM, args=(X, y), max_steps=30)
    many = jloss.minimize(masked, jnp.zeros(F), ADAM, args=(Xs, ys, mask), max_steps=30)
    close(many.params, one.params)
    close(many.loss, one.loss)
    mb = jloss.minimize(masked, jnp.zeros(F), ADAM, args=(Xs, ys, mask), max_steps=5,
                        batch_size=44, key=jax.random.key(0))  # the mask is sliced with the rows
    assert bool(jnp.all(jnp.isfinite(mb.history)))


@check
def minibatch_errors():
    X, y = problem()
    Xs, ys = js.shard_data((X, y))
    try:
        jloss.minimize(mse, jnp.zeros(F), SGD, args=(Xs, ys), batch_size=30, key=jax.random.key(0))
    except ValueError as e:
        assert "batch_size=30" in str(e) and "multiple of 4" in str(e) and "28 or 32" in str(e), e
    else:
        raise AssertionError("batch_size=30 over 4 shards must be a ValueError")
    explicit = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Explicit,))
    Xe = jax.device_put(X, NamedSharding(explicit, P("data")))
    ye = jax.device_put(y, NamedSharding(explicit, P("data")))
    try:
        jloss.minimize(mse, jnp.zeros(F), SGD, args=(Xe, ye), batch_size=B, key=jax.random.key(0))
    except ValueError as e:
        assert "Explicit" in str(e) and "make_mesh" in str(e), e
    else:
        raise AssertionError("data on an Explicit mesh axis must be a ValueError in minibatch mode")
    other = js.make_mesh((2, 2), ("a", "b"))
    y2 = jax.device_put(y, NamedSharding(other, P("a")))
    try:
        jloss.minimize(mse, jnp.zeros(F), SGD, args=(Xs, y2), batch_size=B, key=jax.random.key(0))
    except ValueError as e:
        assert "sharded differently" in str(e), e
    else:
        raise AssertionError("rows placed on two different meshes must be a ValueError")
    try:
        js.shard_grid(jnp.ones(6))
    except ValueError as e:
        assert "K=6" in str(e) and "multiple of 4" in str(e), e
    else:
        raise AssertionError("K=6 over 4 devices must be a ValueError")
    try:
        js.shard_data((X, y), js.make_mesh((2, 2), ("a", "b")), axis="data")
    except ValueError as e:
        assert "no axis 'data'" in str(e), e
    else:
        raise AssertionError("an unknown mesh axis must be a ValueError")


@check
def sweep_over_four_devices_equals_one_device():
    X, y = problem()
    grid = jnp.logspace(-1, 1, 8)
    gs = js.shard_grid(grid)
    one = jloss.sweep(huber, jnp.zeros(F), ADAM, grid, args=(X, y), max_steps=60, tol=1e-3)
    run = lambda: jloss.sweep(huber, jnp.zeros(F), ADAM, gs, args=(X, y), max_steps=60, tol=1e-3)  # noqa: E731
    many = run()
    close(many.params, one.params)
    close(many.history, one.history)
    np.testing.assert_array_equal(many.steps, one.steps)
    for leaf in jax.tree_util.tree_leaves(many):
        assert leaf.sharding.spec[0] == "data" and len(leaf.sharding.device_set) == 4, leaf.sharding
    assert len(many.params.addressable_shards) == 4
    assert many.params.addressable_shards[1].data.shape == (2, F)  # 2 members per device
    hlo = compiled_text(_loops, "sweep_jit", run)
    found = assert_no_data_traffic(hlo, 1, "sweep")  # only "is any member still running?"
    assert found, "expected the all-reduce of the members' running flags"
    warm = jloss.sweep(huber, None, ADAM, gs, args=(X, y), max_steps=10, init=many)
    assert warm.params.sharding.spec[0] == "data"


@check
def sweep_on_a_two_axis_mesh_members_and_sharded_data():
    X, y = problem()
    mesh = js.make_mesh((2, 2), ("members", "data"))
    grid = jnp.array([0.1, 0.5, 1.0, 5.0])
    gs = js.shard_grid(grid, mesh, axis="members")
    Xs, ys = js.shard_data((X, y), mesh, axis="data")
    # minibatches per shard of the data (2 shards), every member on its own pair of devices
    key = jax.random.key(1)
    run = lambda: jloss.sweep(  # noqa: E731
        huber, jnp.zeros(F), SGD, gs, args=(Xs, ys), max_steps=6, batch_size=B, key=key
    )
    mb = run()
    assert mb.params.sharding.spec[0] == "members" and mb.loss.sharding.spec == P("members")
    batches = shard_batches(key, N, B, 2, 6)
    ref = jax.vmap(lambda h: reference_minibatch_loop(huber, jnp.zeros(F), SGD, X, y, batches, h))
    close(mb.params, ref(grid), rtol=1e-5, atol=1e-6)
    hlo = compiled_text(_loops, "sweep_jit", run)
    assert_no_data_traffic(hlo, 2 * F, "2-axis minibatch sweep")  # gradients of 2 members


# -- the 2-process check (two hosts, simulated) ---------------------------------------------------


def process_main(pid: int, port: int) -> int:
    """One of 2 processes with 2 CPU devices each, as on 2 hosts: the same script everywhere."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU collectives across processes
    jax.distributed.initialize(
        coordinator_address=f"localhost:{port}", num_processes=2, process_id=pid,
        initialization_timeout=60,
    )
    results = []

    def record(name, fn):
        start = time.perf_counter()
        try:
            fn()
            results.append({"check": name, "ok": True})
        except Exception:
            results.append({"check": name, "ok": False, "error": traceback.format_exc()})
        results[-1].update(process=pid, seconds=round(time.perf_counter() - start, 2))

    X, y = problem()  # every process can build the whole data here; each passes its half
    half = slice(pid * N // 2, (pid + 1) * N // 2)

    def local(a):
        return np.asarray(a.addressable_data(0))

    def data_parallel():
        assert jax.process_count() == 2 and jax.device_count() == 4
        mesh = js.make_mesh()
        Xs, ys = js.shard_data((X[half], y[half]), mesh)
        assert Xs.shape == (N, F) and not Xs.is_fully_addressable
        res = jloss.minimize(mse, np.zeros(F, np.float32), ADAM, args=(Xs, ys), max_steps=30)
        ref = jloss.minimize(mse, np.zeros(F, np.float32), ADAM, args=(X, y), max_steps=30)
        close(local(res.params), ref.params)
        key = jax.random.key(2)
        mb = jloss.minimize(mse, np.zeros(F, np.float32), SGD, args=(Xs, ys), max_steps=6,
                            batch_size=B, key=key)
        ref = reference_minibatch_loop(mse, jnp.zeros(F), SGD, X, y, shard_batches(key, N, B, 4, 6))
        close(local(mb.params), ref, rtol=1e-5, atol=1e-6)

    def sweep_parallel():
        grid = np.array([0.1, 0.5, 1.0, 5.0], np.float32)
        gs = js.shard_grid(grid)
        res = jloss.sweep(huber, np.zeros(F, np.float32), ADAM, gs, args=js.replicate((X, y)),
                          max_steps=30)
        ref = jloss.sweep(huber, np.zeros(F, np.float32), ADAM, grid, args=(X, y), max_steps=30)
        for shard in res.params.addressable_shards:  # this process's members
            close(shard.data, ref.params[shard.index])

    record("two_processes_data_parallel", data_parallel)
    record("two_processes_sweep", sweep_parallel)
    for r in results:
        print(json.dumps(r), flush=True)
    jax.distributed.shutdown()
    return 0


def main(names=None) -> int:
    assert jax.device_count() == DEVICES, jax.devices()
    for name, fn in CHECKS.items():
        if names and name not in names:
            continue
        start, cpu = time.perf_counter(), time.process_time()
        try:
            fn()
            out = {"check": name, "ok": True}
        except Exception:
            out = {"check": name, "ok": False, "error": traceback.format_exc()}
        out["seconds"] = round(time.perf_counter() - start, 2)
        out["cpu_seconds"] = round(time.process_time() - cpu, 2)
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    if "--process" in sys.argv:
        i = sys.argv.index("--process")
        sys.exit(process_main(int(sys.argv[i + 1]), int(sys.argv[i + 2])))
    sys.exit(main(sys.argv[1:]))
