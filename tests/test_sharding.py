"""jloss.sharding: the helpers in this (one-device) process, and the multi-device checks.

The multi-device checks live in ``tests/sharding_checks.py``: the number of host devices is fixed
when JAX starts, so they run in subprocesses (``sys.executable``), one with 4 CPU devices and two
that form a 2-process "cluster" (``jax.distributed`` on localhost, 2 devices each), started
together so that they share the machine's cores. This process keeps its single device.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import AxisType, PartitionSpec as P

import jloss
from jloss import sharding as js

SCRIPT = Path(__file__).with_name("sharding_checks.py")
FOUR_DEVICES = [
    "full_batch_equals_one_device_and_data_stays_sharded",
    "full_batch_lbfgs_matches_lstsq",
    "minibatch_draws_from_every_shard_and_matches_a_plain_loop",
    "the_global_shuffle_would_move_data",
    "padding_with_a_mask_equals_the_unpadded_fit",
    "minibatch_errors",
    "sweep_over_four_devices_equals_one_device",
    "sweep_on_a_two_axis_mesh_members_and_sharded_data",
]
TWO_PROCESSES = ["two_processes_data_parallel", "two_processes_sweep"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reports():
    """check name -> list of its reports (one per process), from all subprocesses."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the script sets its own
    env["JAX_PLATFORMS"] = "cpu"
    port = str(_free_port())
    commands = {
        "4 devices": [sys.executable, str(SCRIPT)],
        "process 0": [sys.executable, str(SCRIPT), "--process", "0", port],
        "process 1": [sys.executable, str(SCRIPT), "--process", "1", port],
    }
    procs = {
        name: subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, cmd in commands.items()
    }
    out = {}
    try:
        for name, proc in procs.items():
            stdout, stderr = proc.communicate(timeout=300)
            lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
            for r in lines:
                r["stderr"] = stderr[-3000:]
                out.setdefault(r["check"], []).append(r)
            out.setdefault(f"<{name}>", []).append({"rc": proc.returncode, "stderr": stderr[-3000:]})
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
    return out


def _assert_ok(reports, name, count):
    got = reports.get(name)
    assert got, f"check {name} did not report; subprocesses: " + json.dumps(
        {k: v for k, v in reports.items() if k.startswith("<")}, indent=1
    )[-4000:]
    assert len(got) == count, got
    for r in got:
        assert r["ok"], r.get("error", "") + "\n" + r["stderr"]


@pytest.mark.parametrize("name", FOUR_DEVICES)
def test_on_four_devices(reports, name):
    _assert_ok(reports, name, 1)


@pytest.mark.parametrize("name", TWO_PROCESSES)
def test_on_two_processes(reports, name):
    """Two hosts simulated by two processes: the same script on each, jax.distributed."""
    _assert_ok(reports, name, 2)


def test_every_check_is_collected(reports):
    names = {k for k in reports if not k.startswith("<")}
    assert names == set(FOUR_DEVICES) | set(TWO_PROCESSES)
    for key in ("<4 devices>", "<process 0>", "<process 1>"):
        assert reports[key][0]["rc"] == 0, reports[key][0]["stderr"]


# -- in this process (one device) ------------------------------------------------------------------


def test_make_mesh_has_auto_axes_and_checks_its_shape():
    mesh = js.make_mesh()
    assert mesh.axis_names == ("data",) and mesh.size == jax.device_count()
    assert mesh.axis_types == (AxisType.Auto,)
    two = js.make_mesh((1, 1), ("members", "data"))
    assert two.axis_names == ("members", "data")
    with pytest.raises(ValueError, match=r"needs 2 devices, but 1 are available"):
        js.make_mesh((2,), ("data",))
    with pytest.raises(ValueError, match="2 axis names"):
        js.make_mesh(None, ("a", "b"))
    with pytest.raises(ValueError, match=r"1 axis sizes \(1,\) but 2 axis names"):
        js.make_mesh((1,), ("a", "b"))


def test_shard_data_on_one_device_keeps_the_values():
    X = np.arange(12.0, dtype=np.float32).reshape(6, 2)
    y = np.arange(6, dtype=np.int32)
    Xs, ys = js.shard_data((X, y))
    np.testing.assert_array_equal(Xs, X)
    np.testing.assert_array_equal(ys, y)
    assert Xs.sharding.spec == P("data") and ys.dtype == np.int32
    (Xp, yp), mask = js.shard_data((X, y), pad=True)
    assert mask.dtype == bool and bool(mask.all()) and mask.shape == (6,)
    tree = js.shard_data({"X": X, "pair": (y, y)})
    assert set(tree) == {"X", "pair"} and tree["pair"][1].sharding.spec == P("data")
    params = js.replicate({"w": jnp.ones(3)})
    assert params["w"].sharding.is_fully_replicated
    grid = js.shard_grid({"lr": jnp.ones(4), "delta": jnp.ones(4)})
    assert grid["lr"].sharding.spec == P("data")


def test_shard_data_errors():
    X = np.ones((6, 2))
    with pytest.raises(ValueError, match=r"leading size: arrays\[0\] has 6 rows but arrays\[1\] has 5"):
        js.shard_data((X, np.ones(5)))
    with pytest.raises(ValueError, match=r"arrays\[1\] is a scalar"):
        js.shard_data((X, 1.0))
    with pytest.raises(ValueError, match="holds no arrays"):
        js.shard_data(())
    with pytest.raises(TypeError, match="pad must be True or False"):
        js.shard_data((X,), pad="yes")
    with pytest.raises(TypeError, match="mesh must be a jax.sharding.Mesh"):
        js.shard_data((X,), "data")
    with pytest.raises(ValueError, match=r"no axis 'rows'; its axes are \('data',\)"):
        js.shard_data((X,), axis="rows")
    with pytest.raises(ValueError, match=r"grid\['a'\] is a scalar"):
        js.shard_grid({"a": 1.0})


def test_sharded_data_on_one_device_runs_the_usual_program():
    """One device: shard_data is a no-op for minimize (the single-device minibatch schedule)."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)).astype(np.float32)
    y = X @ np.array([1.0, -1.0, 2.0], np.float32)
    fun = lambda w, X, y: jloss.mse(X @ w, y)  # noqa: E731
    sgd = optax.sgd(0.1)
    kw = dict(max_steps=7, batch_size=8, key=jax.random.key(0))
    plain = jloss.minimize(fun, jnp.zeros(3), sgd, args=(X, y), **kw)
    placed = jloss.minimize(fun, js.replicate(jnp.zeros(3)), sgd, args=js.shard_data((X, y)), **kw)
    np.testing.assert_array_equal(placed.params, plain.params)
