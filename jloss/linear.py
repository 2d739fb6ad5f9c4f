"""Linear models fitted with any registered loss through :func:`jloss.minimize`.

What the command line (``jloss fit``, ``jloss sweep``) and the demo fit: ``X @ w + b`` (one
output for regression and binary classification, one per class for the multi-class losses),
with features optionally standardised for the optimiser and the coefficients reported back in
the original units.

>>> import numpy as np
>>> X = np.stack([np.arange(60.0) % 7, np.arange(60.0) % 5], axis=1)
>>> y = 2.0 * X[:, 0] - 3.0 * X[:, 1] + 1.0
>>> fit = fit_linear(X, y, "mse", optimizer="lbfgs")
>>> np.round(fit.coef, 3).tolist(), round(float(fit.intercept), 3), fit.message
([2.0, -3.0], 1.0, 'converged: gradient norm <= tol')
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jloss import nonsmooth, registry
from jloss.data import Scaler, UserError
from jloss.minimize import Status, minimize
from jloss.sweep import sweep, sweep_member


def _adam(lr: float | None, steps: int) -> optax.GradientTransformation:
    return optax.adam(optax.cosine_decay_schedule(0.5 if lr is None else lr, max(steps, 1), alpha=0.01))


def _sgd(lr: float | None, steps: int) -> optax.GradientTransformation:
    return optax.sgd(optax.cosine_decay_schedule(0.05 if lr is None else lr, max(steps, 1), alpha=0.01))


def _lbfgs(lr: float | None, steps: int) -> optax.GradientTransformation:
    return optax.lbfgs(learning_rate=lr)


#: Optimisers by name: ``make(learning_rate or None, steps)`` and a line for ``--help``.
OPTIMIZERS: dict[str, tuple[Callable[[float | None, int], optax.GradientTransformation], str]] = {
    "lbfgs": (_lbfgs, "optax.lbfgs with a zoom line search (no learning rate needed)"),
    "adam": (_adam, "optax.adam, learning rate (default 0.5, for standardized features) cosine-decayed to 1% "
                    "over the steps"),
    "sgd": (_sgd, "optax.sgd, learning rate (default 0.05) cosine-decayed to 1% over the steps"),
}


#: Fit methods of :func:`fit_linear` besides the Optax optimizers, with a line for ``--help``.
METHODS: dict[str, str] = {
    "auto": "exact for the piecewise-linear losses (" + ", ".join(nonsmooth.SUPPORTED) + "), lbfgs otherwise",
    "exact": "jloss.nonsmooth.solve: smoothing continuation by L-BFGS, then an active-set solve; "
             "reports 'optimality certified' only when the subgradient conditions hold",
}


def resolve_method(name: str, loss: str) -> str:
    """The fit method ``name`` means for ``loss``: ``auto`` resolved, ``exact`` checked, an Optax name
    as is; UserError for an unknown name or ``exact`` with a loss it cannot fit."""
    if name == "auto":
        return "exact" if loss in nonsmooth.SUPPORTED else "lbfgs"
    if name == "exact":
        if loss not in nonsmooth.SUPPORTED:
            raise UserError(f"--optimizer exact fits the piecewise-linear losses ({', '.join(nonsmooth.SUPPORTED)}), "
                            f"not {loss!r}; use lbfgs")
        return name
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {name!r}; known optimizers: {', '.join([*OPTIMIZERS, *METHODS])}")
    return name


def fit_dtype() -> Any:
    """float64 when ``jax_enable_x64`` is on, else float32: the dtype fits run in."""
    return jnp.float64 if jax.config.jax_enable_x64 else jnp.float32


def make_optimizer(name: str, learning_rate: float | None = None, steps: int = 1000) -> optax.GradientTransformation:
    """The optimiser called ``name`` (see :data:`OPTIMIZERS`); UserError naming the known ones.

    The same request returns the same object: minimize's compiled program is keyed on it.
    """
    if name not in OPTIMIZERS:
        raise UserError(f"unknown optimizer {name!r}; known optimizers: {', '.join(OPTIMIZERS)}")
    if learning_rate is not None and not learning_rate > 0:
        raise UserError(f"the learning rate must be > 0, got {learning_rate}")
    return _optimizer(name, None if learning_rate is None else float(learning_rate), int(steps))


@functools.lru_cache(maxsize=64)
def _optimizer(name: str, learning_rate: float | None, steps: int) -> optax.GradientTransformation:
    return OPTIMIZERS[name][0](learning_rate, steps)


def loss_info(name: str) -> registry.LossInfo:
    """:func:`jloss.info` with an unknown name turned into a UserError listing the known ones."""
    try:
        return registry.info(name)
    except ValueError as e:
        raise UserError(str(e)) from None


def objective(name: str, l2: float = 0.0) -> Callable[..., jax.Array]:
    """``fun(params, hyperparameter, X, y)``: the mean ``name`` loss of ``X @ w + b`` (+ ½ l2 |w|²).

    Cached, so repeated fits reuse one function object (and so one compiled program), however
    it is asked for (``objective("mse")`` is ``objective("mse", 0.0)``). Losses without a
    hyperparameter ignore the second argument.
    """
    return _objective(name, float(l2))


@functools.lru_cache(maxsize=None)
def _objective(name: str, l2: float) -> Callable[..., jax.Array]:
    info = registry.info(name)

    def fun(params, hyper, X, y):
        pred = X @ params["w"] + params["b"]
        value = info.fn(pred, y, hyper) if info.hyperparameter else info.fn(pred, y)
        return value + 0.5 * l2 * jnp.sum(jnp.square(params["w"]))

    fun.__name__ = fun.__qualname__ = f"linear_{name}"
    return fun


@functools.lru_cache(maxsize=None)
def mixture_objective(names: tuple[str, ...], l2: float = 0.0) -> Callable[..., jax.Array]:
    """``fun(params, h, X) = sum_k h["mix"][k] * loss_k(X @ w + b, h["y"], h["hyper"])`` (+ L2).

    With a one-hot ``mix`` this is one of the losses ``names`` on targets ``h["y"]``; swept over
    members with different ``h`` (:func:`jloss.sweep`), one compiled program fits several losses
    on several target vectors at once (each member evaluates every loss, which costs far less
    than compiling a program per loss). Single-output losses only.
    """
    infos = [registry.info(n) for n in names]

    def fun(params, h, X):
        pred = X @ params["w"] + params["b"]
        total = 0.5 * l2 * jnp.sum(jnp.square(params["w"]))
        for k, info in enumerate(infos):
            args = (h["hyper"],) if info.hyperparameter else ()
            total = total + h["mix"][k] * info.fn(pred, h["y"], *args)
        return total

    fun.__name__ = fun.__qualname__ = "linear_" + "_".join(names)
    return fun


def prepare_targets(info: registry.LossInfo, y: np.ndarray) -> tuple[jax.Array, int | None]:
    """Targets as the loss wants them (class ids for multi-class) and the number of classes."""
    y = np.asarray(y)
    if info.kind != "multiclass":
        return jnp.asarray(y, fit_dtype()), None
    if not np.all(y == np.round(y)) or y.min() < 0:
        raise UserError(f"{info.name} needs class ids 0, 1, 2, ... as targets; got values like {y[:5].tolist()}")
    classes = int(y.max()) + 1
    if classes < 2:
        raise UserError(f"{info.name} needs at least two classes in the targets")
    return jnp.asarray(y, jnp.int32), classes


def init_params(d: int, y: np.ndarray, classes: int | None = None) -> dict[str, jax.Array]:
    """Zero weights; the intercept starts at the median target for regression (a robust start)."""
    dtype = fit_dtype()
    if classes is not None:
        return {"w": jnp.zeros((d, classes), dtype), "b": jnp.zeros(classes, dtype)}
    return {"w": jnp.zeros(d, dtype), "b": jnp.asarray(np.median(y), dtype)}


def check_hyperparameter(info: registry.LossInfo, value: float | None) -> float:
    """The hyperparameter value to use: the loss's default when None (the loss checks its range)."""
    if info.hyperparameter is None:
        if value is not None:
            raise UserError(f"loss {info.name!r} has no hyperparameter; drop the value {value}")
        return 0.0
    return info.default if value is None else float(value)


def check_options(steps: int, tol: float, l2: float = 0.0) -> None:
    """UserError unless ``steps >= 1``, ``tol >= 0`` and ``l2 >= 0`` (all finite)."""
    if steps < 1:
        raise UserError(f"--steps must be at least 1, got {steps}")
    if not (np.isfinite(tol) and tol >= 0):
        raise UserError(f"--tol must be a number >= 0, got {tol}")
    if not (np.isfinite(l2) and l2 >= 0):
        raise UserError(f"--l2 must be a number >= 0, got {l2}")


def status_message(status: Any) -> str:
    """The readable message of a minimize status code (``Status(code).message``)."""
    return Status(int(np.asarray(status))).message


@dataclasses.dataclass
class LinearFit:
    """A fitted linear model: coefficients in the original units plus the raw minimize result."""

    loss: str
    hyperparameter: float | None
    coef: np.ndarray
    intercept: np.ndarray
    result: Any
    scaler: Scaler
    optimizer: str

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Predictions (scores or logits for classification) for rows of ``X``."""
        return np.asarray(X, dtype=np.float64) @ self.coef + self.intercept

    @property
    def final_loss(self) -> float:
        return float(self.result.loss)

    @property
    def steps(self) -> int:
        return int(self.result.steps)

    @property
    def message(self) -> str:
        return status_message(self.result.status)

    @property
    def history(self) -> np.ndarray:
        """Loss per step (steps not taken dropped)."""
        h = self.result.history
        h = np.asarray(h if not isinstance(h, dict) else h["loss"], dtype=np.float64).ravel()
        return h[np.isfinite(h)][: max(self.steps, 1)]


def standardized(X: np.ndarray, standardize: bool) -> tuple[Scaler, jax.Array]:
    """The scaler for ``X`` (identity when not standardising) and the scaled features, in
    :func:`fit_dtype` (float32, or float64 under ``jax_enable_x64``)."""
    X = np.asarray(X, dtype=np.float64)
    scaler = Scaler.fit(X) if standardize else Scaler.identity(X.shape[1])
    return scaler, jnp.asarray(scaler.transform(X), fit_dtype())


def _fitted(info: registry.LossInfo, hyper: float, result: Any, scaler: Scaler, optimizer: str) -> LinearFit:
    coef, intercept = scaler.unscale(np.asarray(result.params["w"]), np.asarray(result.params["b"]))
    return LinearFit(info.name, hyper if info.hyperparameter else None, coef, intercept, result, scaler, optimizer)


def fit_linear(
    X: np.ndarray,
    y: np.ndarray,
    loss: str = "mse",
    hyperparameter: float | None = None,
    *,
    optimizer: str = "auto",
    learning_rate: float | None = None,
    steps: int = 500,
    tol: float = 1e-6,
    standardize: bool = True,
    l2: float = 0.0,
    progress: bool = False,
) -> LinearFit:
    """Fit ``X @ w + b`` by minimising the mean ``loss`` (+ ½ l2 |w|²).

    ``optimizer``: an Optax optimizer of :data:`OPTIMIZERS` run by :func:`jloss.minimize`
    (``steps`` updates at most, stopping when the gradient norm is at most ``tol``), or a method
    of :data:`METHODS`: ``"exact"`` solves a piecewise-linear loss to its certified optimum with
    :func:`jloss.nonsmooth.solve` (``steps`` L-BFGS steps per smoothing stage at most; its
    certificate has its own tolerance, see there), and ``"auto"`` (default) picks ``"exact"`` for
    those losses and ``"lbfgs"`` for the rest. The fit runs in float32, or float64 under
    ``jax_enable_x64``. ``hyperparameter`` is the loss's (Huber's delta, the quantile's tau; its
    default when None). Mistakes in the request (unknown loss or optimiser, labels outside the
    loss's domain) raise :class:`UserError`.
    """
    info = loss_info(loss)
    hyper = check_hyperparameter(info, hyperparameter)
    check_options(steps, tol, l2)
    method = resolve_method(optimizer, info.name)
    opt = None if method == "exact" else make_optimizer(method, learning_rate, steps)
    scaler, Z = standardized(X, standardize)
    targets, classes = prepare_targets(info, y)
    params = init_params(Z.shape[1], np.asarray(y), classes)
    fun = objective(info.name, float(l2))
    try:  # one eager call: the loss checks its hyperparameter and the labels, with clear messages
        fun(params, hyper, Z, targets)
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None
    if method == "exact":
        result = nonsmooth.solve(Z, targets, info.name, hyper if info.hyperparameter else None, l2=float(l2),
                                 init=params, stage_steps=min(int(steps), 200))
    else:
        result = minimize(
            fun, params, opt, args=(jnp.asarray(hyper, Z.dtype), Z, targets), max_steps=steps, tol=tol,
            progress=progress,
        )
    return _fitted(info, hyper, result, scaler, method)


def fit_linear_many(
    X: np.ndarray,
    targets: Sequence[np.ndarray],
    losses: Sequence[str],
    hyperparameters: Sequence[float | None] | None = None,
    *,
    optimizer: str = "adam",
    learning_rate: float | None = None,
    steps: int = 500,
    tol: float = 1e-5,
    standardize: bool = True,
    l2: float = 0.0,
    progress: bool = False,
) -> list[LinearFit]:
    """Fit K linear models in one compiled program: member k minimises ``losses[k]`` (with
    ``hyperparameters[k]``) on ``targets[k]``, all on the same features ``X``.

    This is :func:`jloss.sweep` of :func:`mixture_objective` over a grid whose members carry the
    loss choice, the hyperparameter and the targets; every member stops on its own ``tol``.
    Single-output losses (regression and binary classification) only. Labels and
    hyperparameters are not checked here (the losses only check concrete values, and here they
    are traced): pass valid ones, as :func:`fit_linear` would insist.
    """
    if len(targets) != len(losses):
        raise ValueError(f"fit_linear_many: {len(targets)} target vectors for {len(losses)} losses")
    hyperparameters = [None] * len(losses) if hyperparameters is None else list(hyperparameters)
    infos = [loss_info(n) for n in losses]
    if any(i.kind == "multiclass" for i in infos):
        raise UserError("fit_linear_many fits one output per model; use fit_linear for multi-class losses")
    names = tuple(dict.fromkeys(i.name for i in infos))
    hypers = [check_hyperparameter(i, h) for i, h in zip(infos, hyperparameters)]
    check_options(steps, tol, l2)
    opt = make_optimizer(optimizer, learning_rate, steps)
    scaler, Z = standardized(X, standardize)
    dtype = fit_dtype()
    Y = jnp.asarray(np.stack([np.asarray(t, np.float64) for t in targets]), dtype)
    mix = jnp.asarray([[float(n == i.name) for n in names] for i in infos], dtype)
    hyper = jnp.asarray(hypers, dtype)
    fun = mixture_objective(names, float(l2))
    grid = {"mix": mix, "hyper": hyper, "y": Y}
    params = init_params(Z.shape[1], np.asarray(targets[0]))
    result = sweep(fun, params, opt, grid, args=(Z,), max_steps=steps, tol=tol, progress=progress)
    return [_fitted(info, hypers[k], sweep_member(result, k), scaler, optimizer) for k, info in enumerate(infos)]
