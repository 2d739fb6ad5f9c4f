"""The view-count story behind jloss, as functions that return numbers (printed by ``jloss demo``).

A model predicts how many views (in thousands) a video will get from three features. The data
are **synthetic**, drawn from a seeded generator: a known linear trend plus Gaussian noise, with a
handful of viral videos whose views are far above the trend. The sections:

1. :func:`score_predictions` -- one fixed set of predictions scored with MSE, MAE and Huber: how
   much of each loss one viral video makes, and how hard it pulls (the loss's derivative).
2. :func:`fit_losses` -- the same linear model fitted with each loss (:func:`jloss.minimize`,
   all fits in one :func:`jloss.sweep` program), with and without the viral videos, scored on
   held-out clean videos.
3. :func:`entropy_examples` -- entropy in bits (coin, die) and the cross-entropy of a confident
   wrong prediction against an uncertain one, all computed with :func:`jloss.cross_entropy`.
4. :func:`classify` -- "will this video be a hit?" with cross-entropy (logistic regression) and
   hinge loss (a linear SVM).
5. :func:`delta_sweep` -- Huber's delta swept over a grid in one vmapped :func:`jloss.sweep`.

None of this imports matplotlib; :mod:`jloss.plots` draws the figures.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jloss import classification
from jloss.data import UserError, write_csv
from jloss.linear import (
    LinearFit,
    check_options,
    fit_linear,
    fit_linear_many,
    init_params,
    loss_info,
    make_optimizer,
    objective,
    standardized,
    status_message,
)
from jloss.sweep import sweep

FEATURES = ("subscribers_k", "thumbnail_score", "length_min")
#: The generator's trend: views_k = 2.0 + 0.05 subscribers_k + 3.0 thumbnail_score - 0.1 length_min.
TRUE_COEF = np.array([0.05, 3.0, -0.1])
TRUE_INTERCEPT = 2.0
NOISE_SD = 1.0
#: The three regression losses the story compares, and Huber's delta (thousands of views).
LOSSES = ("mse", "mae", "huber")
DELTA = 1.0


# --------------------------------------------------------------------------- the data


@dataclasses.dataclass(frozen=True)
class Videos:
    """A synthetic view-count data set (views in thousands).

    ``views`` are the training targets with the viral videos; ``clean_views`` the same videos
    had none gone viral; ``X_test``/``views_test`` a held-out set without viral videos.
    """

    X: np.ndarray
    views: np.ndarray
    clean_views: np.ndarray
    viral: np.ndarray
    X_test: np.ndarray
    views_test: np.ndarray
    seed: int
    features: tuple[str, ...] = FEATURES

    @staticmethod
    def trend(X: np.ndarray) -> np.ndarray:
        """The generator's noise-free trend: the predictions a well-specified model would make."""
        return np.asarray(X) @ TRUE_COEF + TRUE_INTERCEPT

    def to_csv(self, path) -> None:
        """Write the training videos (features and ``views_k``) as a CSV, to try ``jloss fit`` on."""
        write_csv(path, {**{f: self.X[:, j] for j, f in enumerate(self.features)}, "views_k": self.views})

    @property
    def top_viral(self) -> int:
        """Index of the most viral video (largest views above its clean value)."""
        return int(np.argmax(self.views - self.clean_views))


def make_videos(n: int = 300, n_test: int = 200, n_viral: int = 6, seed: int = 0) -> Videos:
    """Draw the synthetic data set: ``n`` training videos, ``n_viral`` of them viral.

    Subscribers are log-normal (median 60k: a heavy tail of big channels), the thumbnail score
    uniform in [0, 1], the length uniform in 2..20 minutes. The viral videos come from the bigger
    half of the channels: one gets 100k extra views, the others 20k to 40k.
    """
    if n_viral >= n // 2:
        raise UserError(f"n_viral={n_viral} must be less than half of n={n}")
    rng = np.random.default_rng(seed)

    def features(m: int) -> np.ndarray:
        subscribers = np.exp(rng.normal(math.log(60.0), 0.7, m))
        thumbnail = rng.uniform(0.0, 1.0, m)
        length = rng.uniform(2.0, 20.0, m)
        return np.stack([subscribers, thumbnail, length], axis=1)

    X = features(n)
    clean = Videos.trend(X) + rng.normal(0.0, NOISE_SD, n)
    X_test = features(n_test)
    views_test = Videos.trend(X_test) + rng.normal(0.0, NOISE_SD, n_test)
    big = np.flatnonzero(X[:, 0] > np.median(X[:, 0]))
    chosen = rng.choice(big, n_viral, replace=False)
    boost = np.zeros(n)
    boost[chosen] = np.concatenate([[100.0], rng.uniform(20.0, 40.0, n_viral - 1)])[:n_viral]
    viral = np.zeros(n, dtype=bool)
    viral[chosen] = True
    return Videos(X, clean + boost, clean, viral, X_test, views_test, seed)


# --------------------------------------------------------------------------- 1. scoring


def per_sample(name: str, predictions, targets, delta: float = DELTA) -> tuple[np.ndarray, np.ndarray]:
    """Per-sample loss and its derivative in the prediction, both from jloss (``jax.grad``)."""
    info = loss_info(name)
    value, slope = _value_and_slope(info.name, jnp.asarray(predictions, jnp.float32),
                                    jnp.asarray(targets, jnp.float32), jnp.float32(delta))
    return np.asarray(value, np.float64), np.asarray(slope, np.float64)


AXES = {
    "regression": "residual r = prediction - target",
    "binary": "margin y s (label +1)",
    "multiclass": "margin m = z_true - z_other (2 classes)",
}


def loss_curves(
    names: Sequence[str], x, hyperparameters: dict[str, float] | None = None
) -> dict[str, tuple[str, np.ndarray, np.ndarray]]:
    """Registered losses and their derivatives (``jax.grad`` of the jloss functions) along ``x``.

    ``x`` is the residual r for regression losses, the margin y*s of a positive example for
    binary ones, and the true class's logit margin over one rival (logits ``[m, 0]``, class 0)
    for multi-class ones. Hyperparameters default to each loss's default. Returns, per name,
    (what x is, loss, derivative). All curves come from one compiled program.
    """
    infos = [loss_info(n) for n in names]
    hyper = [(hyperparameters or {}).get(i.name, i.default) or 0.0 for i in infos]
    curves = _curves(tuple(i.name for i in infos), jnp.asarray(x, jnp.float32), jnp.asarray(hyper, jnp.float32))
    return {i.name: (AXES[i.kind], np.asarray(v), np.asarray(d)) for i, (v, d) in zip(infos, curves)}


def loss_curve(name: str, x, hyperparameter: float | None = None) -> tuple[str, np.ndarray, np.ndarray]:
    """One loss of :func:`loss_curves`: (what x is, loss, derivative)."""
    hypers = None if hyperparameter is None else {loss_info(name).name: hyperparameter}
    return loss_curves([name], x, hypers)[loss_info(name).name]


def _along(info, h):
    """The loss of ``info`` as a function of one residual / margin (see :func:`loss_curves`)."""
    args = (h,) if info.hyperparameter else ()
    if info.kind == "regression":
        return lambda r: info.fn(r, 0.0, *args)
    if info.kind == "binary":
        return lambda s: info.fn(s, 1.0, *args)
    return lambda m: info.fn(jnp.stack([m, jnp.zeros_like(m)]), 0, *args)


@functools.partial(jax.jit, static_argnums=0)
def _curves(names: tuple[str, ...], x, hypers):
    return [jax.vmap(jax.value_and_grad(_along(loss_info(n), hypers[k])))(x) for k, n in enumerate(names)]


@functools.partial(jax.jit, static_argnums=0)
def _value_and_slope(name: str, predictions, targets, delta):
    info = loss_info(name)

    def one(p, t):
        return info.fn(p, t, delta) if info.hyperparameter else info.fn(p, t)

    return jax.vmap(jax.value_and_grad(one))(predictions, targets)


@dataclasses.dataclass(frozen=True)
class LossShare:
    """How one loss scores the fixed predictions."""

    loss: str
    mean: float
    mean_without_viral: float
    top_share: float
    viral_share: float
    top_pull: float
    typical_pull: float

    @property
    def pull_ratio(self) -> float:
        return self.top_pull / self.typical_pull


@dataclasses.dataclass(frozen=True)
class Scoreboard:
    """Section 1: the trend's predictions scored with each loss."""

    rows: list[dict]
    shares: dict[str, LossShare]
    n: int
    n_viral: int
    delta: float


def score_predictions(videos: Videos, losses: Sequence[str] = LOSSES, delta: float = DELTA, rows: int = 5) -> Scoreboard:
    """Score the trend's predictions against the actual (training) views with each loss.

    For each loss: the mean, the mean without the viral videos, the top viral video's share of
    the total, all viral videos' share, and the pull |dl/d prediction| of the top viral video
    next to the median pull of an ordinary video.
    """
    pred = videos.trend(videos.X)
    top = videos.top_viral
    shares, per = {}, {}
    for name in losses:
        value, slope = per[name] = per_sample(name, pred, videos.views, delta)
        total = value.sum()
        shares[name] = LossShare(
            name,
            float(value.mean()),
            float(value[~videos.viral].mean()),
            float(value[top] / total),
            float(value[videos.viral].sum() / total),
            float(abs(slope[top])),
            float(np.median(abs(slope[~videos.viral]))),
        )
    shown = [top] + list(np.flatnonzero(~videos.viral)[: rows - 1])
    table = []
    for i in shown:
        row = {"video": int(i), "viral": bool(videos.viral[i]), "actual": float(videos.views[i]),
               "predicted": float(pred[i]), "error": float(pred[i] - videos.views[i])}
        for name in losses:
            row[name] = float(per[name][0][i])
        table.append(row)
    return Scoreboard(table, shares, len(pred), int(videos.viral.sum()), delta)


# --------------------------------------------------------------------------- 2. fitting


@dataclasses.dataclass
class LossFit:
    """One loss fitted with and without the viral videos, scored on the clean held-out set.

    ``fit``/``clean_fit`` are solved to their optimum (L-BFGS to a gradient tolerance for the
    smooth losses, :func:`jloss.nonsmooth.solve`'s certified optimum for MAE): the numbers the
    demo quotes come from them. ``descent``/``clean_descent`` are plain gradient descent (Adam)
    on the same objectives, drawn step by step in the training figure against that optimum.
    """

    loss: str
    fit: LinearFit
    clean_fit: LinearFit
    test_mae: float
    test_rmse: float
    descent: LinearFit | None = None
    clean_descent: LinearFit | None = None

    @property
    def slope_shift(self) -> float:
        """How far the viral videos moved the subscribers coefficient."""
        return float(self.fit.coef[0] - self.clean_fit.coef[0])


def fit_losses(
    videos: Videos,
    losses: Sequence[str] = LOSSES,
    delta: float = DELTA,
    *,
    steps: int = 500,
    progress: bool = False,
) -> dict[str, LossFit]:
    """Fit the linear model with each loss on the data with the viral videos and on the same
    videos without them, to the optimum (:func:`fit_linear` with its ``"auto"`` method), and
    score on the held-out clean videos. Also runs ``steps`` steps of Adam (cosine-decayed
    learning rate) on each objective, all in one vmapped program, for the training figure."""
    hypers = [delta if loss_info(n).hyperparameter else None for n in losses]
    descents = fit_linear_many(
        videos.X,
        [videos.views] * len(losses) + [videos.clean_views] * len(losses),
        list(losses) * 2,
        hypers * 2,
        optimizer="adam",
        steps=steps,
        progress=progress,
    )
    out = {}
    for k, (name, hyper) in enumerate(zip(losses, hypers)):
        fit, clean = (fit_linear(videos.X, views, name, hyper, steps=steps, tol=1e-6)
                      for views in (videos.views, videos.clean_views))
        err = fit.predict(videos.X_test) - videos.views_test
        out[name] = LossFit(name, fit, clean, float(np.abs(err).mean()), float(np.sqrt(np.square(err).mean())),
                            descents[k], descents[len(losses) + k])
    return out


# --------------------------------------------------------------------------- 3. entropy


def bits(nats) -> float:
    return float(nats) / math.log(2.0)


def entropy_bits(probabilities: Sequence[float]) -> float:
    """Entropy in bits, as the cross-entropy of a distribution with itself (via jloss)."""
    p = jnp.asarray(probabilities, jnp.float32)
    return bits(_cross_entropy(jnp.log(p), p))


def cross_entropy_bits(probabilities: Sequence[float], true_class: int) -> float:
    """Cross-entropy in bits of a predicted distribution when ``true_class`` happened."""
    logits = jnp.log(jnp.asarray(probabilities, jnp.float32))
    return bits(_cross_entropy(logits, jnp.asarray(true_class)))


_cross_entropy = jax.jit(classification.cross_entropy)


@dataclasses.dataclass(frozen=True)
class Entropy:
    """Section 3: entropies and cross-entropies, in bits."""

    entropies: dict[str, tuple[tuple[float, ...], float]]
    classes: tuple[str, ...]
    true_class: int
    predictions: dict[str, tuple[tuple[float, ...], float]]


def entropy_examples() -> Entropy:
    """A fair coin (1 bit), a fair die (log2 6 bits), a loaded coin; then a video that turned out
    'normal' scored against a confident wrong, an uncertain and a confident right prediction."""
    dists = {"fair coin": (0.5, 0.5), "fair die": (1 / 6,) * 6, "loaded coin (90/10)": (0.9, 0.1)}
    entropies = {k: (p, entropy_bits(p)) for k, p in dists.items()}
    classes = ("flop", "normal", "viral")
    truth = 1
    preds = {
        "confident and wrong": (0.90, 0.05, 0.05),
        "uncertain": (1 / 3, 1 / 3, 1 / 3),
        "confident and right": (0.05, 0.90, 0.05),
    }
    return Entropy(entropies, classes, truth, {k: (p, cross_entropy_bits(p, truth)) for k, p in preds.items()})


# --------------------------------------------------------------------------- 4. classification

#: Features of the hit classifier (two, so the decision boundary can be drawn).
CLASSIFIER_FEATURES = (0, 1)
MARGINS = (-2.0, -1.0, 0.0, 0.5, 1.0, 2.0, 4.0)


@dataclasses.dataclass
class ClassifierFit:
    loss: str
    fit: LinearFit
    train_accuracy: float
    test_accuracy: float
    beyond_margin: float  # fraction of training videos with margin y*s > 1 (zero loss and zero gradient)


@dataclasses.dataclass
class Classification:
    """Section 4: 'hit' (top quarter of clean views) from subscribers and thumbnail score."""

    threshold: float
    fits: dict[str, ClassifierFit]
    margins: tuple[float, ...]
    margin_losses: dict[str, tuple[float, ...]]
    X: np.ndarray
    labels: np.ndarray


def margin_losses(margins: Sequence[float] = MARGINS) -> dict[str, tuple[float, ...]]:
    """Cross-entropy (nats) and hinge of a positive example at each margin y*s."""
    s = jnp.asarray(margins, jnp.float32)
    ones = jnp.ones_like(s)
    bce = classification.binary_cross_entropy(s, ones, reduction="none")
    hinge = classification.hinge(s, ones, reduction="none")
    return {"binary_cross_entropy": tuple(np.asarray(bce).tolist()), "hinge": tuple(np.asarray(hinge).tolist())}


def classify(videos: Videos, *, steps: int = 500, l2: float = 0.01, progress: bool = False) -> Classification:
    """Fit 'is it a hit?' with binary cross-entropy (labels 0/1) and hinge (labels -1/+1), each
    + L2, to the optimum: L-BFGS to a gradient tolerance for cross-entropy, the certified
    optimum of :func:`jloss.nonsmooth.solve` for the hinge (an L2-SVM)."""
    cols = list(CLASSIFIER_FEATURES)
    threshold = float(np.quantile(videos.clean_views, 0.75))
    hit = videos.clean_views > threshold
    hit_test = videos.views_test > threshold
    X, X_test = videos.X[:, cols], videos.X_test[:, cols]
    labels = {"binary_cross_entropy": hit.astype(float), "hinge": np.where(hit, 1.0, -1.0)}
    fits = {}
    for name, y in labels.items():
        fit = fit_linear(X, y, name, steps=steps, tol=1e-6, l2=l2, progress=progress)
        signed = np.where(hit, 1.0, -1.0) * fit.predict(X)
        fits[name] = ClassifierFit(
            name,
            fit,
            float(np.mean((fit.predict(X) > 0) == hit)),
            float(np.mean((fit.predict(X_test) > 0) == hit_test)),
            float(np.mean(signed > 1.0 + 1e-5)),  # strictly beyond: on the margin, a sample still pulls
        )
    return Classification(threshold, fits, MARGINS, margin_losses(MARGINS), X, hit)


# --------------------------------------------------------------------------- 5. delta sweep


def parse_grid(text: str) -> np.ndarray:
    """A grid of hyperparameter values: ``0.1,0.5,1``, ``logspace:0.01:10:64`` or ``linspace:a:b:n``."""
    text = text.strip()
    try:
        if text.startswith(("logspace:", "linspace:")):
            kind, a, b, n = text.split(":")
            a, b, n = float(a), float(b), int(n)
            if n < 1:
                raise ValueError
            if kind == "logspace":
                if a <= 0 or b <= 0:
                    raise UserError(f"logspace bounds must be > 0, got {a} and {b}")
                grid = np.geomspace(a, b, n)
            else:
                grid = np.linspace(a, b, n)
        else:
            grid = np.array([float(v) for v in text.split(",") if v.strip()])
    except ValueError:
        raise UserError(
            f"cannot read the grid {text!r}: give comma-separated numbers (0.1,0.5,1,2,5), "
            "logspace:START:STOP:COUNT or linspace:START:STOP:COUNT"
        ) from None
    if grid.size == 0:
        raise UserError("the grid is empty")
    if not np.all(np.isfinite(grid)):
        raise UserError(f"the grid has a value that is not finite: {grid.tolist()}")
    return grid


@dataclasses.dataclass
class SweepResult:
    """One fit per grid value (one vmapped program): validation errors and coefficients."""

    loss: str
    hyperparameter: str
    grid: np.ndarray
    coef: np.ndarray  # (k, d) in original units
    intercept: np.ndarray  # (k,)
    val_mae: np.ndarray
    val_rmse: np.ndarray
    train_loss: np.ndarray
    steps: np.ndarray
    messages: list[str]
    features: tuple[str, ...]
    feature_scale: np.ndarray  # standard deviation of each feature in the training data
    metric: str = "mae"

    @property
    def best(self) -> int:
        """Index of the grid value with the smallest validation error (``metric``)."""
        return int(np.argmin(self.val_mae if self.metric == "mae" else self.val_rmse))


def delta_sweep(
    X: np.ndarray,
    y: np.ndarray,
    X_val: np.ndarray,
    y_val: np.ndarray,
    grid: Sequence[float],
    *,
    loss: str = "huber",
    features: Sequence[str] | None = None,
    optimizer: str = "adam",
    learning_rate: float | None = None,
    steps: int = 500,
    tol: float = 1e-5,
    metric: str = "mae",
    progress: bool = False,
) -> SweepResult:
    """Fit the linear model once per value of ``loss``'s hyperparameter with :func:`jloss.sweep`
    (a single vmapped program) and score each fit on the validation set."""
    info = loss_info(loss)
    if info.hyperparameter is None:
        raise UserError(f"loss {loss!r} has no hyperparameter to sweep; try huber, pseudo_huber or quantile")
    if info.kind != "regression":
        raise UserError(f"the sweep fits a regression; {loss!r} is a {info.kind} loss")
    if metric not in ("mae", "rmse"):
        raise UserError(f"the validation metric must be mae or rmse, got {metric!r}")
    check_options(steps, tol)
    grid = np.asarray(grid, dtype=np.float64)
    scaler, Z = standardized(X, True)
    t = jnp.asarray(y, Z.dtype)  # the fit's dtype: float64 under x64
    fun = objective(info.name)
    params = init_params(Z.shape[1], np.asarray(y))
    for value in np.unique(grid):  # the loss checks each value (delta > 0, tau in [0, 1], ...)
        try:
            fun(params, float(value), Z[:1], t[:1])
        except (TypeError, ValueError) as e:
            raise UserError(str(e)) from None
    opt = make_optimizer(optimizer, learning_rate, steps)
    result = sweep(fun, params, opt, jnp.asarray(grid, Z.dtype), args=(Z, t), max_steps=steps, tol=tol,
                   progress=progress)
    coef, intercept = scaler.unscale(np.asarray(result.params["w"]).T, np.asarray(result.params["b"]))
    coef = coef.T  # (k, d)
    err = np.asarray(X_val, np.float64) @ coef.T + intercept - np.asarray(y_val, np.float64)[:, None]
    status = np.asarray(result.status).ravel()
    messages = [status_message(s) for s in status]
    return SweepResult(
        info.name, info.hyperparameter, grid, coef, intercept, np.abs(err).mean(axis=0),
        np.sqrt(np.square(err).mean(axis=0)), np.asarray(result.loss, np.float64),
        np.asarray(result.steps), messages, tuple(features or (f"x{i}" for i in range(X.shape[1]))),
        scaler.scale, metric,
    )


def demo_sweep(videos: Videos, grid: Sequence[float] | None = None, **options) -> SweepResult:
    """Huber's delta swept on the demo data: trained with the viral videos, validated on clean ones."""
    grid = np.geomspace(0.1, 30.0, 12) if grid is None else grid
    return delta_sweep(videos.X, videos.views, videos.X_test, videos.views_test, grid, features=videos.features, **options)


# --------------------------------------------------------------------------- everything


@dataclasses.dataclass
class Demo:
    videos: Videos
    scoreboard: Scoreboard
    fits: dict[str, LossFit]
    entropy: Entropy
    classification: Classification
    sweep: SweepResult


def run(seed: int = 0, *, steps: int = 500, progress: bool = False) -> Demo:
    """Every section of the demo on the seeded synthetic data set (no printing, no figures)."""
    videos = make_videos(seed=seed)
    return Demo(
        videos,
        score_predictions(videos),
        fit_losses(videos, steps=steps, progress=progress),
        entropy_examples(),
        classify(videos, steps=steps, progress=progress),
        demo_sweep(videos, steps=steps, progress=progress),
    )


__all__ = [
    "Videos", "make_videos", "score_predictions", "fit_losses", "entropy_examples", "classify",
    "delta_sweep", "demo_sweep", "parse_grid", "run", "Demo",
]
