"""Bilevel tuning: a loss hyperparameter by gradient descent on a validation error (``jloss tune``).

The inner problem fits the linear model ``X w + b`` by minimizing a robust loss with
hyperparameter ``h`` (Huber's or pseudo-Huber's delta) with :func:`jloss.minimize`; the outer
problem minimizes the validation error of that fit over ``log h``. The hypergradient
``d val / d log h`` comes from :mod:`jloss.differentiation` (implicit differentiation: one inner
solve plus one conjugate-gradient solve per outer step), each inner solve warm-started from the
previous solution. The outer steps are gradient descent on ``log h`` with Rprop's step sizes
(Riedmiller & Braun, 1993): a step of ``step`` against the sign of the hypergradient, the step
growing by 1.2 while the sign holds and halving when it flips. The hypergradient's size varies by
orders of magnitude along the way (1e-2 far from the optimum, 1e-5 next to it) while its sign is
reliable, so a sign-based step travels fast and then brackets the minimum like a bisection. :func:`tune` runs that next to a grid
(:func:`jloss.sweep` over many values, one inner solve each) and returns both paths, so that the
number of inner solves each needs to reach the grid's best validation error can be compared.

Everything runs in float64 (``jax.enable_x64``): the validation curves are flat near their
optimum (differences of 1e-4 decide which value is best), below what float32 solves resolve.

Which loss: pseudo-Huber (the default) is smooth, so its solution, and the validation error, are
smooth functions of delta and gradient descent finds the minimum. Huber's loss has a jump in its
second derivative at ``|r| = delta``: the fitted coefficients are only piecewise smooth in delta
and, on the demo's data, the validation error has local minima a few tenths of a percent above
the best one, where gradient descent can stop (``tune(loss="huber")`` shows it; the grid does not
care). The implicit derivative is exact on each smooth piece.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jloss import demo
from jloss._cli_common import EXIT_OK, add_csv, fmt, heading, load, table, write_json
from jloss.data import Scaler, UserError, split
from jloss.linear import loss_info, make_optimizer, objective
from jloss.minimize import minimize
from jloss.sweep import sweep

__all__ = ["TuneResult", "tune", "demo_tune", "TUNABLE", "add_arguments", "run"]

#: Losses whose hyperparameter ``tune`` can tune (positive, with a derivative of the solution).
TUNABLE = ("pseudo_huber", "huber")
DEFAULT_GRID = "logspace:0.01:30:64"


@dataclasses.dataclass
class TuneResult:
    """Hypergradient descent next to a grid sweep, on one train/validation split.

    ``values``/``val``/``grad``/``inner_steps`` have one entry per outer iteration, i.e. per inner
    solve: the hyperparameter tried, its validation error, ``d val / d log h`` there, and the
    optimizer steps of that (warm-started) solve. ``grid``/``grid_val``/``grid_steps`` are the same
    for the sweep (one cold-started solve per grid value).
    """

    loss: str
    hyperparameter: str
    metric: str
    values: np.ndarray
    val: np.ndarray
    grad: np.ndarray
    inner_steps: np.ndarray
    grid: np.ndarray
    grid_val: np.ndarray
    grid_steps: np.ndarray
    coef: np.ndarray  # the best iterate's coefficients, original units
    intercept: float
    features: tuple[str, ...]
    step: float  # the first step in log h
    match_rtol: float = 1e-4

    @property
    def best(self) -> int:
        """Index of the outer iterate with the smallest validation error."""
        return int(np.argmin(self.val))

    @property
    def grid_best(self) -> int:
        """Index of the grid value with the smallest validation error."""
        return int(np.argmin(self.grid_val))

    @property
    def solves_to_match(self) -> int | None:
        """Inner solves until the validation error is within ``match_rtol`` (relative) of the
        grid's best, or at or below it; ``None`` if that never happened."""
        target = self.grid_val[self.grid_best] * (1.0 + self.match_rtol)
        hits = np.flatnonzero(self.val <= target)
        return int(hits[0]) + 1 if hits.size else None

    @property
    def solves_to_beat(self) -> int | None:
        """Inner solves until the validation error is at or below the grid's best (or ``None``)."""
        hits = np.flatnonzero(self.val <= self.grid_val[self.grid_best])
        return int(hits[0]) + 1 if hits.size else None

    def as_dict(self) -> dict:
        """A JSON-ready summary (``jloss tune --json``)."""
        k, g = self.best, self.grid_best
        return {
            "loss": self.loss, "hyperparameter": self.hyperparameter, "metric": self.metric,
            "first_step": self.step,
            "path": [{"solve": i + 1, self.hyperparameter: float(h), "val": float(v), "dval_dlog": float(d),
                      "inner_steps": int(s)}
                     for i, (h, v, d, s) in enumerate(zip(self.values, self.val, self.grad, self.inner_steps))],
            "best": {self.hyperparameter: float(self.values[k]), "val": float(self.val[k]), "solve": k + 1,
                     "coefficients": dict(zip(self.features, self.coef.tolist())), "intercept": self.intercept},
            "grid": {"values": self.grid.tolist(), "val": self.grid_val.tolist(), "steps": self.grid_steps.tolist(),
                     "best": {self.hyperparameter: float(self.grid[g]), "val": float(self.grid_val[g])}},
            "inner_solves": {"gradient": len(self.val), "grid": len(self.grid),
                             "to_match": self.solves_to_match, "to_beat": self.solves_to_beat,
                             "match_rtol": self.match_rtol},
            "optimizer_steps": {"gradient": int(self.inner_steps.sum()), "grid": int(self.grid_steps.sum())},
        }


def _score(metric: str):
    def mae(pred, target):
        return jnp.mean(jnp.abs(pred - target))

    def rmse(pred, target):
        return jnp.sqrt(jnp.mean(jnp.square(pred - target)))

    return {"mae": mae, "rmse": rmse}[metric]


@functools.lru_cache(maxsize=None)
def programs(loss: str, metric: str, steps: int, tol: float):
    """The compiled pieces, built once per setting: the hypergradient step and the grid sweep."""
    fun = objective(loss)
    inner = make_optimizer("lbfgs", None, steps)
    score = _score(metric)

    def validation(log_h, params, Z, t, Zv, tv):
        res = minimize(fun, params, inner, args=(jnp.exp(log_h), Z, t), max_steps=steps, tol=tol)
        p = res.params
        return score(Zv @ p["w"] + p["b"], tv), res

    hyper_step = jax.jit(jax.value_and_grad(validation, has_aux=True))

    @jax.jit
    def grid_run(grid, params, Z, t, Zv, tv):
        res = sweep(fun, params, inner, grid, args=(Z, t), max_steps=steps, tol=tol)
        p = res.params
        return jax.vmap(lambda w, b: score(Zv @ w + b, tv))(p["w"], p["b"]), res

    return hyper_step, grid_run


def tune(
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    loss: str = "pseudo_huber",
    start: float | None = None,
    iterations: int = 20,
    step: float = 0.3,
    min_step: float = 1e-3,
    grid: Sequence[float] | None = None,
    metric: str = "mae",
    steps: int = 500,
    tol: float = 1e-9,
    features: Sequence[str] | None = None,
) -> TuneResult:
    """Tune ``loss``'s hyperparameter by gradient descent on ``log h`` with implicit
    hypergradients, and sweep ``grid`` for comparison.

    The inner fits minimize the mean ``loss`` of ``Z w + b`` (``Z``: ``X`` standardized with the
    training statistics) by L-BFGS to gradient norm ``tol``; ``start`` defaults to the loss's own
    default (1.0). Each of the ``iterations`` outer steps is one inner solve (warm-started from the
    previous solution) plus one hypergradient; ``step`` is the first step in ``log h`` (Rprop's
    sizes after that, see the module docstring) and the descent stops early once the step is below
    ``min_step`` (``h`` then moves by less than 0.1%). ``grid`` defaults to 64 values from 0.01
    to 30.
    """
    info = loss_info(loss)
    if info.name not in TUNABLE:
        raise UserError(f"jloss tune tunes the delta of {' or '.join(TUNABLE)}, not {loss!r}")
    if metric not in ("mae", "rmse"):
        raise UserError(f"the validation metric must be mae or rmse, got {metric!r}")
    if iterations < 1:
        raise UserError(f"--iterations must be at least 1, got {iterations}")
    if not (np.isfinite(step) and step > 0 and min_step >= 0):
        raise UserError(f"--step must be > 0, got {step}")
    if steps < 1 or not (np.isfinite(tol) and tol > 0):
        raise UserError(f"--steps must be >= 1 and --tol > 0, got {steps} and {tol}")
    start = info.default if start is None else float(start)
    if not (np.isfinite(start) and start > 0):
        raise UserError(f"the starting {info.hyperparameter} must be > 0, got {start}")
    grid = np.geomspace(0.01, 30.0, 64) if grid is None else np.asarray(grid, np.float64)
    if grid.ndim != 1 or grid.size == 0 or not np.all(np.isfinite(grid) & (grid > 0)):
        raise UserError(f"the grid must hold values > 0, got {np.asarray(grid).tolist()}")
    features = tuple(features or (f"x{i}" for i in range(np.shape(X)[1])))

    hyper_step, grid_run = programs(info.name, metric, int(steps), float(tol))
    scaler = Scaler.fit(X)
    with jax.enable_x64(True):
        Z, Zv = jnp.asarray(scaler.transform(X)), jnp.asarray(scaler.transform(X_val))
        t, tv = jnp.asarray(y, jnp.float64), jnp.asarray(y_val, jnp.float64)
        params0 = {"w": jnp.zeros(Z.shape[1]), "b": jnp.asarray(np.median(y), jnp.float64)}

        theta, size, sign = float(np.log(start)), float(step), 0.0
        params = params0
        values, vals, grads, inner_steps, fits = [], [], [], [], []
        for _ in range(iterations):
            (val, res), g = hyper_step(jnp.asarray(theta), params, Z, t, Zv, tv)
            params = res.params
            values.append(float(np.exp(theta)))
            vals.append(float(val))
            grads.append(float(g))
            inner_steps.append(int(res.steps))
            fits.append(params)
            new_sign = float(np.sign(grads[-1]))
            size *= 0.5 if new_sign * sign < 0 else 1.2 if new_sign * sign > 0 else 1.0
            if new_sign == 0 or size < min_step:
                break
            theta, sign = theta - size * new_sign, new_sign

        grid_val, grid_res = grid_run(jnp.asarray(grid), params0, Z, t, Zv, tv)
        grid_val, grid_steps = np.asarray(grid_val), np.asarray(grid_res.steps)

    best = int(np.argmin(vals))
    coef, intercept = scaler.unscale(np.asarray(fits[best]["w"]), np.asarray(fits[best]["b"]))
    return TuneResult(
        info.name, info.hyperparameter, metric, np.array(values), np.array(vals), np.array(grads),
        np.array(inner_steps), grid, grid_val, grid_steps, coef, float(intercept), features, float(step),
    )


def demo_tune(seed: int = 0, **options) -> TuneResult:
    """:func:`tune` on the demo's synthetic videos: trained with the viral ones, validated on the
    held-out videos without."""
    videos = demo.make_videos(seed=seed)
    return tune(videos.X, videos.views, videos.X_test, videos.views_test, features=videos.features, **options)


# ----------------------------------------------------------------------------------------------
# The command line: ``jloss tune`` (registered in jloss.cli's command table)
# ----------------------------------------------------------------------------------------------


def add_arguments(p) -> None:
    """The options of ``jloss tune``."""
    p.add_argument("--loss", default="pseudo_huber", choices=TUNABLE,
                   help="the loss whose delta is tuned (default: pseudo_huber, smooth in delta; huber's "
                        "validation error can have local minima in delta)")
    p.add_argument("--start", type=float, default=None, metavar="DELTA",
                   help="starting delta (default: the loss's default, 1)")
    p.add_argument("--iterations", type=int, default=20,
                   help="at most this many outer gradient steps, one inner solve each (default: 20)")
    p.add_argument("--step", type=float, default=0.3,
                   help="first step in log(delta); then x1.2 while the hypergradient's sign holds, x0.5 when "
                        "it flips (Rprop); stops below 1e-3 (default: 0.3)")
    p.add_argument("--grid", default=DEFAULT_GRID, metavar="GRID",
                   help=f"the grid to compare with, as in `jloss sweep` (default: {DEFAULT_GRID})")
    p.add_argument("--metric", choices=("mae", "rmse"), default="mae",
                   help="the validation error to minimize (default: mae)")
    p.add_argument("--steps", type=int, default=500, help="maximum L-BFGS steps per inner solve (default: 500)")
    p.add_argument("--tol", type=float, default=1e-9,
                   help="inner solves stop at this gradient norm (default: 1e-9, float64)")
    add_csv(p, required=False)
    p.add_argument("--val-fraction", type=float, default=0.25,
                   help="share of the CSV rows held out for validation (default: 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, or of the demo data (default: 0)")
    p.add_argument("--json", metavar="OUT", help="also write the path and the counts as JSON to OUT ('-' for stdout)")


def run(args) -> int:
    """``jloss tune``: print the gradient path, the grid's best and the inner-solve counts."""
    grid = demo.parse_grid(args.grid)
    if args.csv is None:
        if args.target or args.features:
            raise UserError("--target and --features need --csv FILE")
        videos = demo.make_videos(seed=args.seed)
        data = (videos.X, videos.views, videos.X_test, videos.views_test, videos.features)
        source = (f"the demo's synthetic videos (seed {args.seed}): {len(videos.views)} for training (with viral "
                  f"ones), {len(videos.views_test)} held out without")
    else:
        if not args.target:
            raise UserError("--csv needs --target COLUMN")
        table_ = load(args)
        train, val = split(len(table_.y), args.val_fraction, args.seed)
        data = (table_.X[train], table_.y[train], table_.X[val], table_.y[val], table_.features)
        source = f"{table_.source}: {len(train)} rows for training, {len(val)} for validation (seed {args.seed})"
    X, y, X_val, y_val, features = data
    res = tune(X, y, X_val, y_val, loss=args.loss, start=args.start, iterations=args.iterations,
               step=args.step, grid=grid, metric=args.metric, steps=args.steps, tol=args.tol,
               features=features)
    h, m = res.hyperparameter, res.metric.upper()
    print(f"jloss tune: {res.loss} {h} by gradient descent on the validation {m} (implicit hypergradients)")
    print(f"data: {source}")
    heading(f"Gradient descent on log({h}) (Rprop steps, first {res.step:g}): one inner solve per step")
    target = res.grid_val[res.grid_best]
    rows = [[i + 1, v, f"{e:.6f}", d, s, "yes" if e <= target * (1 + res.match_rtol) else ""]
            for i, (v, e, d, s) in enumerate(zip(res.values, res.val, res.grad, res.inner_steps))]
    print(table(["solve", h, f"val {m}", f"d val/d log {h}", "L-BFGS steps", "at grid's best"], rows))
    heading(f"Grid: jloss.sweep over {len(res.grid)} values, one inner solve each")
    g = res.grid_best
    print(f"best {h} {fmt(res.grid[g])}: val {m} {res.grid_val[g]:.6f} "
          f"({int(res.grid_steps.sum())} L-BFGS steps in all)")
    k = res.best
    print(f"gradient descent's best: {h} {fmt(res.values[k])}, val {m} {res.val[k]:.6f} at solve {k + 1} "
          f"({int(res.inner_steps.sum())} L-BFGS steps in all)")
    n = res.solves_to_match
    if n is None:
        print(f"\nGradient descent did not reach the grid's best (within {res.match_rtol:.0e}) in "
              f"{len(res.val)} solves; the grid took {len(res.grid)}.")
    else:
        beat = res.solves_to_beat
        extra = f"; at or below it after {beat}" if beat is not None and beat != n else ""
        print(f"\nInner solves to reach the grid's best validation {m} (within {res.match_rtol:.0e}): "
              f"{n} by gradient descent{extra}, against {len(res.grid)} for the grid.")
    if args.json:
        write_json(res.as_dict(), args.json)
    return EXIT_OK
