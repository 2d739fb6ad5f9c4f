"""Every public entry point in float64 mode (``jax.enable_x64(True)``) and in the default 32-bit
mode, with float32 and with float64 data: it runs, its results have the dtypes below, and its
answer equals an independent reference computed in float64 by NumPy/SciPy.

The package is imported normally; x64 is switched on only inside the tests (the ``x64`` and
``in_x64`` fixtures), as a user would with ``with jax.enable_x64(True):``.

Modes. Both modes, float32 and float64 data: ``minimize`` (lbfgs, adam), ``fit_linear`` (mse)
and ``jloss fit`` (mse). x64 only, float32 and float64 data where the entry point takes data:
``minimize`` under ``jax.jit``/``jax.vmap``/``jax.grad``, ``sweep``, ``fit_linear`` (huber,
mae), ``fit_linear_many``, ``jloss fit`` (huber, mae), ``jloss sweep``; their 32-bit mode is what
test_sweep, test_differentiation, test_nonsmooth and test_cli run. ``tune``: called in 32-bit
mode and as ``jloss tune`` under x64.

What is asserted about dtypes ("FIT" is float64 under x64, float32 otherwise):

* ``jloss.minimize`` / ``jloss.sweep``: ``params`` keep the dtype of ``init_params``; the loss
  and the history have the dtype of ``fun``'s value (params and data promoted); float32 data
  with float64 params is fitted in float64 (exactly, on the float32 values).
* ``jax.grad`` through ``minimize`` w.r.t. a hyperparameter has the hyperparameter's dtype.
* ``fit_linear`` / ``fit_linear_many`` / ``jloss fit``: the fit runs in FIT whatever the dtype of
  the data (``result.params`` in FIT); ``coef``/``intercept`` are float64 NumPy arrays.
* ``jloss.tuning.tune`` / ``jloss tune``: always float64 (it enables x64 itself).

References: least squares by ``np.linalg.lstsq``; Huber by an exact active-set Newton
iteration in NumPy (finite for Huber: the solution solves one linear system once the set of
residuals beyond delta is right); the LAD (mae) fit as the vertex of the HiGHS LP solution,
solved exactly from the rows it interpolates; pseudo-Huber by damped Newton in NumPy. The
references see the data as the user passed it (float32 data: its float32 values, in float64),
so under x64 the tolerances are float64 ones (1e-9 relative): a fit that silently ran in
float32 misses them by orders of magnitude.

Cost: every check reuses a few compiled programs. ``objective("mse"/"huber")`` with the cached
``make_optimizer("lbfgs", None, 500)`` and 60 x 2 data is the program of ``fit_linear``,
``jloss fit``, the direct ``minimize`` calls and the single fits the sweep is compared with;
``jloss tune`` runs the demo's defaults (the programs of test_differentiation's tune test).
"""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from scipy.optimize import linprog

import jloss
from jloss import cli, demo, tuning
from jloss.data import split
from jloss.linear import fit_linear, fit_linear_many, make_optimizer, objective

N, D = 60, 2
STEPS = 500  # fit_linear's and jloss fit's default: one compiled program for all of them
DELTAS = (0.5, 1.0, 2.0)  # exact in float32 too
MSE, HUBER = objective("mse"), objective("huber")  # the functions fit_linear, jloss sweep and tune use
LBFGS = make_optimizer("lbfgs", None, STEPS)  # the object fit_linear uses (cached)
ADAM = optax.adam(0.1, b1=0.5)  # converges to a gradient norm of 1e-11 here (plain 0.9 momentum oscillates)


def mode(flag):
    """Run a test in x64 (True) or the default 32-bit mode (False)."""
    return pytest.param(flag, id="x64" if flag else "x32")


@pytest.fixture(params=[mode(False), mode(True)])
def x64(request):
    with jax.enable_x64(request.param):
        yield request.param


@pytest.fixture
def in_x64():
    with jax.enable_x64(True):
        yield True


def fit_dtype(x64):
    return np.float64 if x64 else np.float32


def rtol(x64):
    """Relative tolerance of a fit against its float64 reference."""
    return 1e-9 if x64 else 1e-4


def gtol(x64):
    """The gradient-norm tolerance the solves stop at (1e-5: jloss fit's default, float32's floor)."""
    return 1e-11 if x64 else 1e-5


def make_data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, D)) * [1.0, 3.0] + [0.5, -1.0]
    y = X @ np.array([2.0, -3.0]) + 1.0 + 0.5 * rng.standard_t(3, size=n)
    return X, y


def as_given(a, dtype):
    """The data a user passes in ``dtype``, and the same values in float64 (for the references)."""
    a = np.asarray(a, dtype)
    return a, a.astype(np.float64)


def design(X):
    return np.column_stack([X, np.ones(len(X))])


def rel_err(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(np.max(np.abs(got - ref)) / np.max(np.abs(ref)))


def theta(params):
    return np.concatenate([np.asarray(params["w"], np.float64).ravel(), [float(params["b"])]])


def fit_theta(fit):
    return np.concatenate([np.asarray(fit.coef).ravel(), [float(fit.intercept)]])


def lstsq(X, y):
    return np.linalg.lstsq(design(X), y, rcond=None)[0]


def huber_reference(X, y, delta):
    """The exact Huber regression: Newton on the active set (rows with |r| <= delta), iterated
    until the set is stable; then the gradient is zero up to round-off."""
    A = design(X)
    t = lstsq(X, y)
    for _ in range(100):
        r = A @ t - y
        quad = np.abs(r) <= delta
        H = A[quad].T @ A[quad]
        rhs = A[quad].T @ y[quad] - delta * A[~quad].T @ np.sign(r[~quad])
        t_new = np.linalg.solve(H, rhs)
        r_new = A @ t_new - y
        if np.array_equal(np.abs(r_new) <= delta, quad):
            grad = A.T @ np.clip(r_new, -delta, delta) / len(y)
            assert np.max(np.abs(grad)) < 1e-12
            return t_new
        t = t_new
    raise AssertionError("the Huber reference did not settle")


def huber_dtheta_ddelta(X, y, delta, t):
    """d theta* / d delta by the implicit function theorem at the Huber optimum t:
    H dtheta = -mean(sign(r) [|r| > delta] a), H = mean([|r| <= delta] a a^T)."""
    A = design(X)
    r = A @ t - y
    quad = np.abs(r) <= delta
    H = A[quad].T @ A[quad]
    return -np.linalg.solve(H, A[~quad].T @ np.sign(r[~quad]))


def lad_reference(X, y):
    """The LAD fit: HiGHS's LP optimum, then the vertex it sits on solved exactly from the p rows
    it interpolates (the LP solution is only as exact as HiGHS's 1e-7 tolerances)."""
    n, p = len(y), X.shape[1] + 1
    A = design(X)
    cost = np.concatenate([np.zeros(p), np.ones(2 * n) / n])
    res = linprog(cost, A_eq=np.hstack([A, np.eye(n), -np.eye(n)]), b_eq=y,
                  bounds=[(None, None)] * p + [(0, None)] * (2 * n), method="highs")
    assert res.status == 0, res.message
    rows = np.argsort(np.abs(A @ res.x[:p] - y))[:p]
    vertex = np.linalg.solve(A[rows], y[rows])
    assert np.mean(np.abs(A @ vertex - y)) <= res.fun * (1 + 1e-9)
    return vertex


def pseudo_huber_reference(Z, y, delta, start):
    """Damped Newton on mean(delta^2 (sqrt(1 + (r/delta)^2) - 1)), r = Z w + b - y."""
    A = design(Z)

    def f(t):
        r = A @ t - y
        return np.mean(delta**2 * (np.sqrt(1 + (r / delta) ** 2) - 1))

    t = np.array(start, np.float64)
    for _ in range(200):
        r = A @ t - y
        s = 1 + (r / delta) ** 2
        g = A.T @ (r / np.sqrt(s)) / len(y)
        if np.max(np.abs(g)) < 1e-13 * (1 + np.max(np.abs(A.T @ r)) / len(y)):
            return t
        H = (A * s[:, None] ** -1.5).T @ A / len(y)
        step = np.linalg.solve(H, g)
        a = 1.0
        while f(t - a * step) > f(t) and a > 1e-12:
            a *= 0.5
        t = t - a * step
    raise AssertionError("the pseudo-Huber reference did not converge")


def params0(X, y, dtype):
    return {"w": jnp.zeros(X.shape[1], dtype), "b": jnp.asarray(np.median(y), dtype)}


# ----------------------------------------------------------------------------------------------
# jloss.minimize
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_minimize_lbfgs_and_adam_least_squares(x64, dtype):
    """Params in the dtype of init_params (FIT: jnp.zeros' default), float32 data promoted to
    them; the least-squares optimum to float64 precision under x64."""
    fit = fit_dtype(x64)
    X, y = make_data()
    (Xd, Xr), (yd, yr) = as_given(X, dtype), as_given(y, dtype)
    ref = lstsq(Xr, yr)
    for opt in (LBFGS, ADAM):
        res = jloss.minimize(MSE, params0(Xd, yd, fit), opt, args=(fit(0.0), Xd, yd),
                             max_steps=STEPS, tol=gtol(x64))
        assert res.message == "converged: gradient norm <= tol", (opt, res.message)
        assert res.params["w"].dtype == fit and res.params["b"].dtype == fit
        assert res.loss.dtype == fit and res.history.dtype == fit
        assert rel_err(theta(res.params), ref) < rtol(x64), opt
        assert float(res.loss) == pytest.approx(np.mean((design(Xr) @ ref - yr) ** 2), rel=rtol(x64))


def test_minimize_float32_params_under_x64_stay_float32():
    """float32 params with float32 data under x64: the solve runs in float32, as asked."""
    X, y = make_data()
    X32, y32 = X.astype(np.float32), y.astype(np.float32)
    with jax.enable_x64(True):
        res = jloss.minimize(MSE, params0(X32, y32, jnp.float32), ADAM, args=(np.float32(0.0), X32, y32),
                             max_steps=STEPS, tol=1e-5)
    assert res.params["w"].dtype == jnp.float32 and res.loss.dtype == jnp.float32
    assert res.message == "converged: gradient norm <= tol"
    assert rel_err(theta(res.params), lstsq(X32.astype(np.float64), y32.astype(np.float64))) < 1e-4


def _member(delta, params, X, y):
    res = jloss.minimize(HUBER, params, LBFGS, args=(delta, X, y), max_steps=STEPS, tol=1e-11)
    return jnp.sum(res.params["w"]) + res.params["b"], res


# jit of vmap of value_and_grad through minimize: one program for the three transformations
_BATCHED = jax.jit(jax.vmap(jax.value_and_grad(_member, has_aux=True), in_axes=(0, None, None, None)))


def test_minimize_under_jit_vmap_and_grad_x64():
    """jax.jit(jax.vmap(jax.grad(...minimize...))) over Huber's delta in float64: each member's
    params equal the exact Huber fit and the eager minimize; the implicit derivative d(sum w + b)
    / d delta equals the implicit-function-theorem value from NumPy and a central difference."""
    X, y = make_data()
    with jax.enable_x64(True):
        p0 = params0(X, y, jnp.float64)
        deltas = jnp.asarray(DELTAS, jnp.float64)
        (value, res), grad = _BATCHED(deltas, p0, X, y)
        assert res.params["w"].dtype == jnp.float64 and grad.dtype == jnp.float64 and res.loss.dtype == jnp.float64
        assert res.message == ["converged: gradient norm <= tol"] * len(DELTAS)
        for k, delta in enumerate(DELTAS):
            ref = huber_reference(X, y, delta)
            member = jax.tree_util.tree_map(lambda a: a[k], res.params)
            assert rel_err(theta(member), ref) < 1e-9
            assert float(value[k]) == pytest.approx(np.sum(theta(member)), rel=1e-12)
            eager = jloss.minimize(HUBER, p0, LBFGS, args=(np.float64(delta), X, y), max_steps=STEPS, tol=1e-11)
            assert rel_err(theta(member), theta(eager.params)) < 1e-12
            exact = np.sum(huber_dtheta_ddelta(X, y, delta, ref))
            assert float(grad[k]) == pytest.approx(exact, rel=1e-8, abs=1e-12)

            def total(d):
                p = jloss.minimize(HUBER, p0, LBFGS, args=(np.float64(d), X, y), max_steps=STEPS, tol=1e-11).params
                return float(jnp.sum(p["w"]) + p["b"])

            h = 1e-4  # the solution is piecewise smooth in delta; no residual crosses delta within h
            fd = (total(delta + h) - total(delta - h)) / (2 * h)
            assert float(grad[k]) == pytest.approx(fd, rel=1e-6, abs=1e-9)


# ----------------------------------------------------------------------------------------------
# jloss.sweep
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("y_dtype", [np.float32, np.float64])
def test_sweep_over_huber_deltas_x64(in_x64, y_dtype):
    """Member k of the sweep (float64 params and features; targets and grid in ``y_dtype``) is the
    exact Huber fit with delta k, in float64. float64 targets: it is also the single minimize
    with delta k (the eager program of the jit test). float32 targets and grid are the dtypes
    `jloss sweep` passes (one program for both tests)."""
    X, y = make_data()
    yd, yr = as_given(y, y_dtype)
    p0 = params0(X, yd, jnp.float64)
    grid = np.asarray(DELTAS, y_dtype)
    res = jloss.sweep(HUBER, p0, LBFGS, grid, args=(X, yd), max_steps=STEPS, tol=1e-11)
    assert res.params["w"].dtype == jnp.float64 and res.params["w"].shape == (len(DELTAS), D)
    assert res.loss.dtype == jnp.float64
    assert res.message == ["converged: gradient norm <= tol"] * len(DELTAS)
    for k, delta in enumerate(DELTAS):
        member = theta(jloss.sweep_member(res, k).params)
        assert rel_err(member, huber_reference(X, yr, delta)) < 1e-9
        if y_dtype == np.float64:
            single = jloss.minimize(HUBER, p0, LBFGS, args=(np.float64(delta), X, yd), max_steps=STEPS, tol=1e-11)
            assert rel_err(member, theta(single.params)) < 1e-11


# ----------------------------------------------------------------------------------------------
# jloss.linear.fit_linear, fit_linear_many
# ----------------------------------------------------------------------------------------------


# (x64, loss, optimizer): the 32-bit fits of huber and mae on data like this are those of
# test_cli/test_nonsmooth; mse in 32-bit mode shares test_cli's compiled program
FITS = [(False, "mse", "lbfgs"), (True, "mse", "lbfgs"), (True, "huber", "auto"), (True, "mae", "auto")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x64, loss, optimizer", [pytest.param(*f, id="-".join(["x64" if f[0] else "x32", *f[1:]])) for f in FITS],
                         indirect=["x64"])
def test_fit_linear(x64, dtype, loss, optimizer):
    """fit_linear runs in FIT whatever the data's dtype (under x64 with float32 features: the old
    lbfgs TypeError); mse = lstsq, huber = the exact Huber fit, mae ('auto': the exact solver)
    = the LAD vertex."""
    X, y = make_data()
    (Xd, Xr), (yd, yr) = as_given(X, dtype), as_given(y, dtype)
    fit = fit_linear(Xd, yd, loss, optimizer=optimizer, tol=gtol(x64))
    assert fit.result.params["w"].dtype == fit_dtype(x64) and fit.result.loss.dtype == fit_dtype(x64)
    assert fit.coef.dtype == np.float64 and np.asarray(fit.intercept).dtype == np.float64
    if loss == "mae":
        assert fit.optimizer == "exact" and fit.result.status == jloss.Status.OPTIMAL, fit.message
        ref = lad_reference(Xr, yr)
    else:
        assert fit.optimizer == "lbfgs" and fit.message == "converged: gradient norm <= tol"
        ref = lstsq(Xr, yr) if loss == "mse" else huber_reference(Xr, yr, 1.0)
    assert rel_err(fit_theta(fit), ref) < rtol(x64)
    assert np.allclose(fit.predict(Xr), design(Xr) @ fit_theta(fit))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_linear_many_x64(in_x64, dtype):
    """Two models in one sweep program, in FIT: mse on y (lstsq) and huber on another target."""
    X, y = make_data()
    y2 = make_data(seed=1)[1]
    (Xd, Xr), (yd, yr), (y2d, y2r) = as_given(X, dtype), as_given(y, dtype), as_given(y2, dtype)
    fits = fit_linear_many(Xd, [yd, y2d], ["mse", "huber"], [None, 2.0], optimizer="lbfgs", tol=1e-11)
    for f in fits:
        assert f.result.params["w"].dtype == jnp.float64, f.loss
        assert f.message == "converged: gradient norm <= tol", f.loss
    assert rel_err(fit_theta(fits[0]), lstsq(Xr, yr)) < 1e-9
    assert rel_err(fit_theta(fits[1]), huber_reference(Xr, y2r, 2.0)) < 1e-9


# ----------------------------------------------------------------------------------------------
# The command line: jloss fit, jloss sweep, jloss tune
# ----------------------------------------------------------------------------------------------


def write_csv(path, X, y):
    """Columns x1, x2, y written with repr(): the CSV holds exactly the float64 values."""
    lines = ["x1,x2,y"] + [f"{a!r},{b!r},{t!r}" for (a, b), t in zip(X.tolist(), y.tolist())]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_json(capsys, *argv, progress=True):
    """``jloss ARGV --json -`` (and --no-progress where the command has the option): the JSON."""
    code = cli.main([*argv, *(["--no-progress"] if progress else []), "--json", "-"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "Traceback" not in err
    return json.loads(out[out.index("\n{"):]), out


@pytest.mark.parametrize("x64, loss", [pytest.param(x, loss, id=("x64-" if x else "x32-") + loss) for x, loss, _ in FITS],
                         indirect=["x64"])
def test_cli_fit(x64, loss, tmp_path, capsys):
    """jloss fit (--optimizer auto): exit 0, the coefficients of the reference to FIT precision."""
    X, y = make_data()
    csv = write_csv(tmp_path / "data.csv", X, y)
    data, out = run_json(capsys, "fit", "--csv", str(csv), "--target", "y", "--loss", loss, "--tol", str(gtol(x64)))
    ref = {"mse": lstsq, "huber": lambda X, y: huber_reference(X, y, 1.0), "mae": lad_reference}[loss](X, y)
    got = [data["coefficients"]["x1"], data["coefficients"]["x2"], data["intercept"]]
    assert rel_err(got, ref) < rtol(x64), out
    assert ("optimality certified" if loss == "mae" else "converged") in data["message"]


def test_cli_sweep_x64(tmp_path, capsys):
    """jloss sweep under x64 with lbfgs: every delta's coefficients equal the exact Huber fit on
    the training rows to float64 precision. The targets are float32 numbers (see the module
    notes: jloss.demo.delta_sweep casts targets and grid to float32; with float32-exact targets
    and grid that rounding changes nothing, and the fit itself must still be float64)."""
    X, y = make_data(n=80, seed=2)
    y = y.astype(np.float32).astype(np.float64)
    csv = write_csv(tmp_path / "sweep.csv", X, y)
    with jax.enable_x64(True):
        data, out = run_json(capsys, "sweep", "--csv", str(csv), "--target", "y", "--grid",
                             ",".join(map(str, DELTAS)), "--optimizer", "lbfgs", "--tol", "1e-11", "--no-plots")
    train, _ = split(len(y), 0.25, 0)
    assert data["grid"] == list(DELTAS)
    for k, delta in enumerate(DELTAS):
        got = data["coefficients"][k] + [data["intercept"][k]]
        assert rel_err(got, huber_reference(X[train], y[train], delta)) < 1e-9, (delta, out)


def test_tune_python_and_cli(capsys):
    """jloss.tuning.tune (called in 32-bit mode: it runs in float64 itself) and jloss tune under
    x64 give the same path, and the best iterate's coefficients are the exact pseudo-Huber fit
    at its delta (damped Newton in NumPy) to float64 precision. The demo's data and the default
    grid, steps and tol: the programs of the full `jloss tune` test."""
    videos = demo.make_videos(seed=0)
    res = tuning.tune(videos.X, videos.views, videos.X_test, videos.views_test, iterations=2,
                      features=videos.features)
    assert res.val.dtype == np.float64 and res.grid_val.dtype == np.float64 and res.coef.dtype == np.float64
    assert len(res.values) == 2 and res.values[0] == 1.0
    scaler = tuning.Scaler.fit(videos.X)
    Z = scaler.transform(videos.X)
    delta = res.values[res.best]
    ref = pseudo_huber_reference(Z, videos.views, delta, lstsq(Z, videos.views))
    coef, intercept = scaler.unscale(ref[:-1], np.asarray(ref[-1]))
    # 2e-10 and 4e-12 here; targets rounded to float32 inside tune give 3e-9 and 5e-9
    assert rel_err(np.r_[res.coef, res.intercept], np.r_[coef, intercept]) < 1e-9
    val = np.mean(np.abs(videos.X_test @ coef + intercept - videos.views_test))
    assert res.val[res.best] == pytest.approx(val, rel=1e-10)

    with jax.enable_x64(True):
        data, out = run_json(capsys, "tune", "--iterations", "2", progress=False)
    best = data["best"]
    assert best["delta"] == res.values[res.best] and best["val"] == pytest.approx(res.val[res.best], rel=1e-12)
    got = [best["coefficients"][f] for f in videos.features] + [best["intercept"]]
    assert rel_err(got, np.r_[coef, intercept]) < 1e-9, out


def test_minimize_lbfgs_float32_params_float64_data_x64():
    """x64, float32 init params, float64 data: fun's value is float64 while optax.lbfgs keeps its
    stored value in the params' dtype -> TypeError in optax.value_and_grad_from_state's lax.cond."""
    X, y = make_data()
    with jax.enable_x64(True):
        res = jloss.minimize(MSE, params0(X, y, jnp.float32), LBFGS, args=(np.float64(0.0), X, y),
                             max_steps=STEPS, tol=1e-5)
    assert res.params["w"].dtype == jnp.float32
    assert res.message == "converged: gradient norm <= tol"
    assert rel_err(theta(res.params), lstsq(X, y)) < 1e-4


def test_cli_sweep_x64_general_targets(tmp_path, capsys):
    """jloss sweep under x64 on targets that are not float32 numbers: demo.delta_sweep rounds the
    targets (and the grid) to float32, so the float64 fit is of the wrong data (~1e-8 off)."""
    X, y = make_data(n=80, seed=2)
    csv = write_csv(tmp_path / "sweep.csv", X, y)
    grid = (0.3, 1.0, 2.0)
    with jax.enable_x64(True):
        data, out = run_json(capsys, "sweep", "--csv", str(csv), "--target", "y", "--grid",
                             ",".join(map(str, grid)), "--optimizer", "lbfgs", "--tol", "1e-11", "--no-plots")
    train, _ = split(len(y), 0.25, 0)
    for k, delta in enumerate(grid):
        got = data["coefficients"][k] + [data["intercept"][k]]
        assert rel_err(got, huber_reference(X[train], y[train], delta)) < 1e-9, (delta, out)
