"""Zero recompiles on a repeated call (issue 14): a second call with new arrays of the same shapes
traces nothing and compiles nothing, for minimize, sweep, nonsmooth.solve, fit_linear and
``jloss fit``.

Two counters: ``fun``'s own trace counter (a Python counter incremented while ``fun`` is traced)
and JAX's monitoring events for every jaxpr trace and backend compile
(``/jax/core/compile/jaxpr_trace_duration``, ``/jax/core/compile/backend_compile_duration``),
which also see the programs with no user function (nonsmooth.solve, the CLI).
"""

import contextlib
import io

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jloss
import jloss._progress
from jloss import cli, demo, nonsmooth
from jloss.linear import fit_linear
from trace_events import jax_events

def test_the_event_counter_sees_a_retrace():
    f = jax.jit(lambda x: x * 2)
    f(jnp.ones(3))
    with jax_events() as same:
        f(jnp.zeros(3))
    with jax_events() as other:
        f(jnp.zeros(4))
    assert same["trace"] == same["compile"] == 0
    assert other["trace"] >= 1 and other["compile"] >= 1


def problem(seed, n=64, d=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X @ np.arange(1.0, d + 1) + 0.1 * rng.standard_t(2, n)).astype(np.float32)
    return jnp.asarray(X), jnp.asarray(y)


class Counted:
    """``fun`` with a Python counter of how often it is traced (it runs only under tracing)."""

    def __init__(self):
        self.traces = 0

    def __call__(self, params, *args):
        self.traces += 1
        delta, X, y = args if len(args) == 3 else (1.0, *args)
        return jloss.huber(X @ params["w"] + params["b"], y, delta)


def params(d=3):
    return {"w": jnp.zeros(d), "b": jnp.zeros(())}


def assert_no_retrace(counts, fun=None, before=None):
    assert counts["trace"] == 0 and counts["compile"] == 0, counts["names"]
    if fun is not None:
        assert fun.traces == before


@pytest.mark.parametrize("history", [True, False])
def test_minimize_twice(history):
    fun, opt = Counted(), optax.adam(0.05)
    jloss.minimize(fun, params(), opt, args=problem(0), max_steps=30, history=history).loss.block_until_ready()
    traced = fun.traces
    assert traced >= 1
    with jax_events() as counts:
        r = jloss.minimize(fun, params(), opt, args=problem(1), max_steps=30, history=history)
        r.loss.block_until_ready()
    assert_no_retrace(counts, fun, traced)


def test_minimize_lbfgs_with_tol_twice():
    fun, opt = Counted(), optax.lbfgs()
    jloss.minimize(fun, params(), opt, args=problem(0), max_steps=40, tol=1e-5).loss.block_until_ready()
    traced = fun.traces
    with jax_events() as counts:
        jloss.minimize(fun, params(), opt, args=problem(1), max_steps=40, tol=1e-5).loss.block_until_ready()
    assert_no_retrace(counts, fun, traced)


@pytest.mark.parametrize("make_opt", [lambda: optax.adam(0.05), optax.lbfgs], ids=["adam", "lbfgs"])
def test_sweep_twice(make_opt):
    fun, opt = Counted(), make_opt()
    deltas = jnp.asarray([0.5, 1.0, 2.0])
    jloss.sweep(fun, params(), opt, deltas, args=problem(0), max_steps=30).loss.block_until_ready()
    traced = fun.traces
    deltas = jnp.asarray([0.7, 1.4, 3.0])
    with jax_events() as counts:
        jloss.sweep(fun, params(), opt, deltas, args=problem(1), max_steps=30).loss.block_until_ready()
    assert_no_retrace(counts, fun, traced)


@pytest.mark.parametrize("loss", ["mae", "quantile"])
def test_nonsmooth_solve_twice(loss):
    X, y = problem(0)
    jax.block_until_ready(nonsmooth.solve(X, y, loss))
    X, y = problem(1)
    with jax_events() as counts:
        jax.block_until_ready(nonsmooth.solve(X, y, loss))
    assert_no_retrace(counts)


@pytest.mark.parametrize("loss, optimizer", [("mse", "auto"), ("mae", "auto"), ("huber", "adam")])
def test_fit_linear_twice(loss, optimizer):
    X, y = (np.asarray(a) for a in problem(0))
    fit_linear(X, y, loss, optimizer=optimizer, steps=50).final_loss
    X, y = (np.asarray(a) for a in problem(1))
    with jax_events() as counts:
        fit_linear(X, y, loss, optimizer=optimizer, steps=50).final_loss
    assert_no_retrace(counts)


@pytest.mark.parametrize("loss", ["huber", "mae"])
@pytest.mark.parametrize("interval", [0.0, 1e6], ids=["slow-host", "fast-host"])
def test_cli_fit_twice_in_one_process(tmp_path, monkeypatch, loss, interval):
    # The bar's refresh interval stands in for the host's speed: with 1e6 s every solve is
    # "quick" (a fast host), which once made the second fit switch to a program without a bar,
    # compiled then (a CI failure); with 0 none is.
    monkeypatch.setattr(jloss._progress.ProgressBar, "interval", interval)
    monkeypatch.setattr(jloss._progress, "RATES", {})  # no speed known from an earlier test
    paths = []
    for seed in (0, 1):
        path = tmp_path / f"videos{seed}.csv"
        demo.make_videos(seed=seed).to_csv(str(path))
        paths.append(str(path))

    def fit(path):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            code = cli.main(["--no-cache", "fit", "--csv", path, "--target", "views_k", "--loss", loss])
        assert code == 0
        return out.getvalue()

    fit(paths[0])
    with jax_events() as counts:
        out = fit(paths[1])
    assert "jloss fit" in out
    assert_no_retrace(counts)
