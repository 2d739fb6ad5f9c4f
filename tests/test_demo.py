"""The demo's numbers against the mathematics they illustrate.

One demo computation is shared by every test here (module-scoped fixtures); the references are
independent: NumPy formulas, closed-form least squares, log2 of the probabilities.
"""

import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import linprog

import jloss
from jloss import demo
from jloss.data import UserError


@pytest.fixture(scope="module")
def videos():
    return demo.make_videos(seed=0)


@pytest.fixture(scope="module")
def board(videos):
    return demo.score_predictions(videos)


@pytest.fixture(scope="module")
def fits(videos):
    return demo.fit_losses(videos)


@pytest.fixture(scope="module")
def classes(videos):
    return demo.classify(videos)


def lstsq(X, y):
    A = np.column_stack([X, np.ones(len(X))])
    sol = np.linalg.lstsq(A, y, rcond=None)[0]
    return sol[:-1], sol[-1]


# --------------------------------------------------------------------------- data


def test_data_is_seeded_synthetic_and_has_a_handful_of_viral_videos(videos):
    again = demo.make_videos(seed=0)
    np.testing.assert_array_equal(videos.views, again.views)
    assert not np.array_equal(videos.views, demo.make_videos(seed=1).views)
    assert videos.viral.sum() == 6 and len(videos.views) == 300
    boost = videos.views - videos.clean_views
    assert np.all(boost[videos.viral] >= 20) and np.all(boost[~videos.viral] == 0)
    assert boost.max() == pytest.approx(100.0)
    # the clean data follow the documented trend: least squares recovers it
    coef, intercept = lstsq(videos.X, videos.clean_views)
    np.testing.assert_allclose(coef, demo.TRUE_COEF, rtol=0.15, atol=0.02)
    assert abs(intercept - demo.TRUE_INTERCEPT) < 0.5


def test_make_videos_rejects_too_many_viral_videos():
    with pytest.raises(UserError, match="n_viral"):
        demo.make_videos(n=10, n_viral=5)


# --------------------------------------------------------------------------- 1. scoring


def test_one_viral_video_dominates_mse_not_mae(videos, board):
    r = videos.trend(videos.X) - videos.views
    top = videos.top_viral
    refs = {
        "mse": r**2,
        "mae": np.abs(r),
        "huber": np.where(np.abs(r) <= 1.0, 0.5 * r**2, np.abs(r) - 0.5),
    }
    for name, per in refs.items():
        s = board.shares[name]
        assert s.mean == pytest.approx(per.mean(), rel=1e-5)
        assert s.top_share == pytest.approx(per[top] / per.sum(), rel=1e-5)
        assert s.viral_share == pytest.approx(per[videos.viral].sum() / per.sum(), rel=1e-5)
    mse, mae, huber = (board.shares[n] for n in ("mse", "mae", "huber"))
    assert mse.top_share > 0.5  # 1 video of 300 is most of the MSE
    assert mae.top_share < 0.25 and mae.top_share < mse.top_share / 2
    assert mae.top_share < huber.top_share < mse.top_share
    assert mse.viral_share > 0.95 and mae.viral_share < 0.6


def test_pull_is_the_derivative(videos, board):
    r = videos.trend(videos.X) - videos.views
    typical = np.abs(r[~videos.viral])
    top = abs(r[videos.top_viral])
    assert board.shares["mse"].pull_ratio == pytest.approx(top / np.median(typical), rel=1e-4)
    assert board.shares["mae"].pull_ratio == pytest.approx(1.0)
    # Huber's pull is capped at delta = 1: the viral video pulls like a residual of 1
    assert board.shares["huber"].top_pull == pytest.approx(1.0)
    assert board.shares["huber"].pull_ratio == pytest.approx(1.0 / np.median(np.minimum(typical, 1.0)), rel=1e-4)
    row = board.rows[0]
    assert row["viral"] and row["mse"] == pytest.approx(row["error"] ** 2, rel=1e-5)


# --------------------------------------------------------------------------- 2. fitting


def test_mse_fit_is_least_squares(videos, fits):
    for data, fit in ((videos.views, fits["mse"].fit), (videos.clean_views, fits["mse"].clean_fit)):
        coef, intercept = lstsq(videos.X, data)
        np.testing.assert_allclose(fit.coef, coef, rtol=2e-3, atol=2e-4)
        assert float(fit.intercept) == pytest.approx(intercept, abs=5e-3)


def test_outliers_move_the_mse_slope_most_then_huber_then_mae(fits):
    shift = {name: abs(lf.slope_shift) for name, lf in fits.items()}
    assert shift["mse"] > shift["huber"] > shift["mae"]
    assert shift["mse"] > 5 * shift["huber"]
    assert fits["mse"].slope_shift > 0  # the viral videos come from big channels: steeper


def test_robust_fits_predict_clean_videos_better(fits):
    assert fits["mae"].test_mae < 0.5 * fits["mse"].test_mae
    assert fits["huber"].test_mae < 0.5 * fits["mse"].test_mae


def test_quoted_fits_reach_their_optimum_and_gradient_descent_approaches_it(fits):
    for lf in fits.values():
        for fit, descent in ((lf.fit, lf.descent), (lf.clean_fit, lf.clean_descent)):
            assert bool(fit.result.converged), (lf.loss, fit.message)
            assert fit.message.startswith("converged"), fit.message
            assert descent.steps >= 1 and descent.history.size == descent.steps
            # Adam descends towards the optimum and never goes below it (float32 round-off aside)
            assert descent.history[-1] < descent.history[0]
            assert fit.final_loss <= descent.final_loss * (1 + 1e-6)


def lad(X, y):
    """The exact least-absolute-deviations fit, as a linear program solved by HiGHS (float64)."""
    n, d = X.shape
    A = np.column_stack([X, np.ones(n)])
    cost = np.concatenate([np.zeros(d + 1), np.ones(2 * n) / n])
    res = linprog(cost, A_eq=np.hstack([A, np.eye(n), -np.eye(n)]), b_eq=y,
                  bounds=[(None, None)] * (d + 1) + [(0, None)] * (2 * n), method="highs")
    assert res.status == 0, res.message
    return res.x[:d], res.x[d], res.fun


def test_mae_fits_are_the_exact_lad_solution(videos, fits):
    # The certified fit is the LP optimum up to float32 round-off in its 4 x 4 active-set solve
    # (standardised features): coefficients to 1e-4 relative, the objective to 1e-6.
    for views, fit in ((videos.views, fits["mae"].fit), (videos.clean_views, fits["mae"].clean_fit)):
        coef, intercept, best = lad(videos.X, views)
        assert fit.result.status == jloss.Status.OPTIMAL
        np.testing.assert_allclose(fit.coef, coef, rtol=1e-4, atol=1e-6)
        assert float(fit.intercept) == pytest.approx(intercept, rel=1e-4)
        assert np.abs(fit.predict(videos.X) - views).mean() == pytest.approx(best, rel=1e-6)


# --------------------------------------------------------------------------- 3. entropy


def test_entropy_in_bits():
    ent = demo.entropy_examples()
    assert ent.entropies["fair coin"][1] == pytest.approx(1.0, abs=1e-6)
    assert ent.entropies["fair die"][1] == pytest.approx(math.log2(6), abs=1e-6)
    assert math.log2(6) == pytest.approx(2.585, abs=5e-4)
    assert ent.entropies["loaded coin (90/10)"][1] == pytest.approx(-0.9 * math.log2(0.9) - 0.1 * math.log2(0.1), abs=1e-6)
    ce = {k: v[1] for k, v in ent.predictions.items()}
    assert ce["confident and wrong"] == pytest.approx(-math.log2(0.05), abs=1e-5)
    assert ce["uncertain"] == pytest.approx(math.log2(3), abs=1e-5)
    assert ce["confident and right"] == pytest.approx(-math.log2(0.9), abs=1e-5)
    assert ce["confident and wrong"] > ce["uncertain"] > ce["confident and right"]


# --------------------------------------------------------------------------- 4. classification


def test_hinge_is_zero_beyond_the_margin_and_cross_entropy_never_is():
    m = np.array(demo.MARGINS)
    losses = demo.margin_losses()
    np.testing.assert_allclose(losses["hinge"], np.maximum(0.0, 1.0 - m), atol=1e-6)
    assert all(h == 0 for h, mm in zip(losses["hinge"], m) if mm >= 1)
    np.testing.assert_allclose(losses["binary_cross_entropy"], np.log1p(np.exp(-m)), rtol=1e-5)
    assert min(losses["binary_cross_entropy"]) > 0


def test_classifiers(videos, classes):
    assert classes.labels.mean() == pytest.approx(0.25, abs=0.01)
    for name, cf in classes.fits.items():
        assert cf.train_accuracy > 0.85 and cf.test_accuracy > 0.85, name
    hinge = classes.fits["hinge"]
    y = np.where(classes.labels, 1.0, -1.0)
    per = np.asarray(jloss.hinge(jnp.asarray(hinge.fit.predict(classes.X), jnp.float32), jnp.asarray(y), reduction="none"))
    # beyond the margin the loss is 0; the few samples on it (loss 0 too) are support vectors
    assert np.mean(per == 0) - 0.02 <= hinge.beyond_margin <= np.mean(per == 0)
    assert 0.5 < hinge.beyond_margin < 1.0  # most videos stop pulling; the rest are support vectors
    for cf in classes.fits.values():
        assert bool(cf.fit.result.converged), cf.fit.message


def test_hinge_fit_satisfies_the_svm_optimality_conditions(classes):
    # Independent of jloss's certificate: in float64, find multipliers u_i in [0, 1] for the
    # samples on the margin (u = 1 inside it, 0 beyond) that make the subgradient of
    # mean(hinge) + l2/2 |w|^2 vanish, by a least-L1 linear program; its residual must be ~0.
    fit = classes.fits["hinge"].fit
    y = np.where(classes.labels, 1.0, -1.0)
    Z = fit.scaler.transform(classes.X)  # the features the fit penalised
    w = fit.coef * fit.scaler.scale  # back in the standardised units
    margin = y * fit.predict(classes.X)
    on = np.abs(margin - 1) <= 1e-4
    inside = (margin < 1) & ~on
    n, d = Z.shape
    A = np.column_stack([Z, np.ones(n)]) * y[:, None]  # d margin_i / d (w, b)
    target = np.concatenate([0.01 * w, [0.0]]) - A[inside].sum(0) / n  # l2 = 0.01, the demo's
    k = int(on.sum())
    assert 1 <= k <= d + 1
    # minimise |A_on^T u / n - target|_1 over u in [0, 1]^k: variables u, slack t >= |.|
    M = A[on].T / n
    cost = np.concatenate([np.zeros(k), np.ones(d + 1)])
    A_ub = np.block([[M, -np.eye(d + 1)], [-M, -np.eye(d + 1)]])
    res = linprog(cost, A_ub=A_ub, b_ub=np.concatenate([target, -target]),
                  bounds=[(0, 1)] * k + [(0, None)] * (d + 1), method="highs")
    assert res.status == 0
    assert res.fun <= 1e-5 * np.abs(A).sum(0).max() / n


# --------------------------------------------------------------------------- 5. sweep


def test_parse_grid():
    np.testing.assert_allclose(demo.parse_grid("0.1,0.5,1,2,5"), [0.1, 0.5, 1, 2, 5])
    np.testing.assert_allclose(demo.parse_grid("logspace:0.01:10:4"), [0.01, 0.1, 1, 10])
    np.testing.assert_allclose(demo.parse_grid("linspace:1:2:3"), [1, 1.5, 2])
    for bad in ("", "1,x", "logspace:0:1:3", "logspace:1:2", "linspace:1:2:0", "1,inf"):
        with pytest.raises(UserError):
            demo.parse_grid(bad)


def test_delta_sweep_spans_mae_to_mse(videos):
    # Huber with delta beyond every residual is 0.5 * MSE: the least-squares solution. (The demo's
    # grid size, so the demo's compiled program serves.)
    grid = np.geomspace(0.1, 30.0, 12)
    grid[-1] = 1000.0
    res = demo.delta_sweep(videos.X, videos.views, videos.X_test, videos.views_test, grid,
                           features=videos.features, steps=500)
    coef, _ = lstsq(videos.X, videos.views)
    np.testing.assert_allclose(res.coef[-1], coef, rtol=2e-3, atol=2e-4)
    assert res.val_mae[0] < res.val_mae[-1]  # small delta resists the viral videos
    assert np.all(np.diff(res.coef[:, 0]) > -1e-4)  # the slope grows as delta lets the viral videos pull
    assert res.grid[res.best] < 3 and res.hyperparameter == "delta"
    assert res.coef.shape == (12, 3) and len(res.messages) == 12
    with pytest.raises(UserError, match="no hyperparameter"):
        demo.delta_sweep(videos.X, videos.views, videos.X_test, videos.views_test, [1.0], loss="mse")
    with pytest.raises(UserError, match="delta"):
        demo.delta_sweep(videos.X, videos.views, videos.X_test, videos.views_test, [0.0, 1.0])


def test_loss_curve_derivatives_come_from_jax_grad():
    x = np.array([-2.0, -0.5, 0.5, 2.0])
    _, value, slope = demo.loss_curve("huber", x, 1.0)
    np.testing.assert_allclose(value, np.where(np.abs(x) <= 1, 0.5 * x**2, np.abs(x) - 0.5), rtol=1e-6)
    np.testing.assert_allclose(slope, np.clip(x, -1, 1), rtol=1e-6)
    _, value, slope = demo.loss_curve("cross_entropy", x)
    np.testing.assert_allclose(value, np.log1p(np.exp(-x)), rtol=1e-5)
    np.testing.assert_allclose(slope, -1 / (1 + np.exp(x)), rtol=1e-5)
