"""Figures for the demo and the command line (needs matplotlib: ``pip install 'jloss[plot]'``).

Nothing else in jloss imports this module, and it imports matplotlib only when a figure is
drawn. Figures are built with :class:`matplotlib.figure.Figure` directly (no ``pyplot``), so
drawing changes no global backend or state. Each ``*_figure`` function returns the figure;
:func:`save` writes it as a PNG. The numbers come from :mod:`jloss.demo` (all derivatives are
``jax.grad`` of the jloss functions).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from jloss.data import UserError
from jloss.demo import loss_curves
from jloss.registry import info

COLORS = {"mse": "C0", "mae": "C1", "huber": "C2", "binary_cross_entropy": "C4", "hinge": "C3"}
LABELS = {"mse": "MSE", "mae": "MAE", "huber": "Huber", "binary_cross_entropy": "cross-entropy", "hinge": "hinge"}
INSTALL_HINT = "pip install 'jloss[plot]'"


def _label(name: str) -> str:
    return LABELS.get(name, name)


def _color(name: str, i: int = 0) -> str:
    return COLORS.get(name, f"C{(i + 5) % 10}")


def new_figure(*args, **kwargs):
    """A :class:`matplotlib.figure.Figure`; :class:`UserError` saying what to install if missing."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError(
            f"drawing figures needs matplotlib, which is not installed: {INSTALL_HINT} "
            "(or pass --no-plots)"
        ) from None
    return Figure(*args, **kwargs)


def save(fig, path: str | os.PathLike) -> Path:
    """Write ``fig`` as a PNG (creating the folder); returns the path."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110, format="png")
    except OSError as e:
        raise UserError(f"cannot write the figure {path}: {e.strerror or e}") from None
    return path


def loss_curves_figure(names: Sequence[str] = ("mse", "mae", "huber"), delta: float = 1.0, span: float = 3.0):
    """MSE, MAE and Huber against the residual, and their derivatives (the pull on the fit)."""
    fig = new_figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_slope = fig.subplots(1, 2)
    x = np.linspace(-span, span, 601)
    for i, (name, (xlabel, value, slope)) in enumerate(loss_curves(names, x, {"huber": delta}).items()):
        label = f"Huber (delta={delta:g})" if name == "huber" else _label(name)
        ax_loss.plot(x, value, color=_color(name, i), label=label)
        ax_slope.plot(x, slope, color=_color(name, i), label=label)
    for ax in (ax_loss, ax_slope):
        ax.axvline(-delta, color="0.8", lw=0.8, ls=":")
        ax.axvline(delta, color="0.8", lw=0.8, ls=":")
        ax.axhline(0, color="0.6", lw=0.6)
        ax.set_xlabel(xlabel)
        ax.legend(frameon=False)
    ax_loss.set_ylim(-0.2, min(span**2, 6.0))
    ax_loss.set_title("loss: MSE squares, MAE and Huber grow linearly")
    ax_slope.set_title("derivative d loss / d r: how hard one sample pulls")
    return fig


def losses_figure(names: Sequence[str], span: float = 3.0):
    """Every registered loss (top line) and its derivative (below) against residual or margin."""
    cols = 4
    rows = -(-len(names) // cols)
    fig = new_figure(figsize=(3.2 * cols, 2.8 * rows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    x = np.linspace(-span, span, 601)
    for i, (ax, (name, (xlabel, value, slope))) in enumerate(zip(axes, loss_curves(names, x).items())):
        ax.plot(x, value, color=_color(name, i), label="loss")
        ax.plot(x, slope, color=_color(name, i), ls="--", label="derivative")
        ax.axhline(0, color="0.7", lw=0.6)
        ax.set_ylim(-3, 5)
        hyper = info(name).hyperparameter
        ax.set_title(name + (f" ({hyper}={info(name).default:g})" if hyper else ""), fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        if i == 0:
            ax.legend(frameon=False, fontsize=8)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    fig.suptitle("jloss losses (solid) and their derivatives from jax.grad (dashed)")
    return fig


def fits_figure(videos: Any, fits: Mapping[str, Any], feature: int = 0):
    """One panel per loss: views against one feature, viral videos highlighted, the fit with the
    viral videos (solid), without them (dashed) and the generator's trend (dotted).

    ``fits`` maps a loss name to an object with ``fit`` and ``clean_fit`` (:class:`jloss.demo.LossFit`).
    Lines are the models' predictions with the other features at their mean.
    """
    fig = new_figure(figsize=(4.2 * len(fits), 4.2), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(fits), sharey=True))
    X, y, viral = videos.X, videos.views, videos.viral
    top = np.quantile(y[~viral], 0.999) * 1.6
    grid = np.linspace(X[:, feature].min(), X[:, feature].max(), 200)
    base = np.tile(X.mean(axis=0), (len(grid), 1))
    base[:, feature] = grid
    for i, (ax, (name, lf)) in enumerate(zip(axes, fits.items())):
        ax.scatter(X[~viral, feature], y[~viral], s=8, color="0.6", alpha=0.6, label="videos")
        shown = np.minimum(y[viral], top)
        ax.scatter(X[viral, feature], shown, s=40, color="red", marker="^", zorder=3,
                   label="viral videos (at the top edge: off the scale)")
        i_max = int(np.argmax(y[viral]))
        if y[viral][i_max] > top:
            ax.annotate(f"{y[viral][i_max]:.0f}k views", (X[viral, feature][i_max], top),
                        textcoords="offset points", xytext=(6, -12), fontsize=8, color="red")
        ax.plot(grid, videos.trend(base), color="k", ls=":", lw=1, label="true trend")
        ax.plot(grid, lf.clean_fit.predict(base), color=_color(name, i), ls="--", lw=1.2, label="fit without viral")
        ax.plot(grid, lf.fit.predict(base), color=_color(name, i), lw=2.2, label="fit with viral")
        before, after = lf.clean_fit.coef[feature], lf.fit.coef[feature]
        ax.set_title(f"{_label(name)}: slope {before:.4f} -> {after:.4f} ({(after - before) / before:+.0%})", fontsize=10)
        ax.set_xlabel(videos.features[feature])
        ax.set_ylim(0, top * 1.05)
    axes[0].set_ylabel("views (thousands)")
    axes[0].legend(frameon=False, fontsize=8, loc="lower right")
    fig.suptitle("Synthetic view counts: the same linear model fitted with each loss")
    return fig


def training_figure(fits: Mapping[str, Any]):
    """Loss per gradient-descent (Adam) step of every demo fit, one panel per loss, with the
    optimum each objective reaches (the dotted line: L-BFGS or the certified non-smooth fit)."""
    fig = new_figure(figsize=(4.2 * len(fits), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(fits)))
    for i, (ax, (name, lf)) in enumerate(zip(axes, fits.items())):
        runs = ((lf.descent, lf.fit, "-", "with viral"), (lf.clean_descent, lf.clean_fit, "--", "without viral"))
        for descent, optimum, style, label in runs:
            h = (descent or optimum).history
            ax.plot(np.arange(1, len(h) + 1), h, ls=style, color=_color(name, i), label=f"Adam, {label}")
            ax.axhline(optimum.final_loss, ls=":", lw=1, color="0.3")
        ax.plot([], [], ls=":", lw=1, color="0.3", label="optimum")
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_title(f"{_label(name)} training loss", fontsize=10)
        ax.legend(frameon=False, fontsize=8)
    return fig


def sweep_figure(result: Any):
    """Validation error and coefficients against the swept hyperparameter (log axis)."""
    fig = new_figure(figsize=(10, 4), layout="constrained")
    ax_err, ax_coef = fig.subplots(1, 2)
    grid = result.grid
    ax_err.plot(grid, result.val_mae, "o-", ms=3, label="validation MAE")
    ax_err.plot(grid, result.val_rmse, "s-", ms=3, label="validation RMSE")
    best = result.best
    ax_err.axvline(grid[best], color="0.5", ls=":", label=f"best {result.hyperparameter} = {grid[best]:.3g}")
    effect = result.coef * result.feature_scale  # per standard deviation of each feature
    for j, name in enumerate(result.features):
        ax_coef.plot(grid, effect[:, j], "o-", ms=3, label=name)
    for ax in (ax_err, ax_coef):
        if np.all(grid > 0) and grid.max() / grid.min() > 20:
            ax.set_xscale("log")
        ax.set_xlabel(f"{result.loss} {result.hyperparameter}")
        ax.legend(frameon=False, fontsize=8)
    ax_err.set_title("held-out error against " + result.hyperparameter, fontsize=10)
    ax_coef.set_title("coefficient x feature std (effect of one std)", fontsize=10)
    return fig


def classification_figure(result: Any):
    """Hit classifier: data with both decision boundaries and the hinge margins; the two losses
    against the margin."""
    fig = new_figure(figsize=(10, 4.2), layout="constrained")
    ax_data, ax_loss = fig.subplots(1, 2)
    X, hit = result.X, result.labels
    ax_data.scatter(X[~hit, 0], X[~hit, 1], s=8, color="0.6", label="not a hit")
    ax_data.scatter(X[hit, 0], X[hit, 1], s=10, color="C4", label="hit")
    xs = np.linspace(X[:, 0].min(), X[:, 0].max(), 100)
    for i, (name, cf) in enumerate(result.fits.items()):
        (w0, w1), b = cf.fit.coef, float(cf.fit.intercept)
        for level, style in ((0.0, "-"), (1.0, ":"), (-1.0, ":")):
            if name != "hinge" and level:
                continue
            label = f"{_label(name)} boundary" if not level else ("hinge margins (y s = 1)" if level > 0 else None)
            ax_data.plot(xs, (level - b - w0 * xs) / w1, ls=style, color=_color(name, i), label=label)
    ax_data.set_ylim(X[:, 1].min() - 0.05, X[:, 1].max() + 0.05)
    ax_data.set_xscale("log")
    ax_data.set_xlabel("subscribers_k")
    ax_data.set_ylabel("thumbnail_score")
    ax_data.legend(frameon=False, fontsize=8, loc="lower left")
    ax_data.set_title("is it a hit? two linear classifiers", fontsize=10)
    m = np.linspace(-3, 4, 400)
    for i, (name, (_, value, _)) in enumerate(loss_curves(list(result.fits), m).items()):
        ax_loss.plot(m, value, color=_color(name, i), label=_label(name))
    ax_loss.axvline(1.0, color="0.6", ls=":", lw=0.8)
    ax_loss.set_xlabel("margin y s (positive = correct side)")
    ax_loss.set_title("hinge is exactly 0 beyond margin 1; cross-entropy never is", fontsize=10)
    ax_loss.legend(frameon=False)
    return fig


def demo_figures(videos: Any, fits: Mapping[str, Any], classification: Any, sweep: Any,
                 out: str | os.PathLike) -> list[Path]:
    """Draw every demo figure into ``out`` (the parts of a :class:`jloss.demo.Demo`); returns the paths."""
    out = Path(out)
    return [
        save(fits_figure(videos, fits), out / "fits.png"),
        save(loss_curves_figure(), out / "loss_curves.png"),
        save(training_figure(fits), out / "training.png"),
        save(classification_figure(classification), out / "classification.png"),
        save(sweep_figure(sweep), out / "sweep.png"),
    ]
