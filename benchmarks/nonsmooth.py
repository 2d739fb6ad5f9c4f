"""Exact non-smooth fits: jloss.nonsmooth.solve against the LP optimum and scikit-learn's HiGHS.

    python benchmarks/nonsmooth.py            # full grid, writes results/nonsmooth-<platform>.{md,json}
    python benchmarks/nonsmooth.py --quick    # tiny sizes, stdout only (what the test runs)

Linear quantile regression (tau = 0.1, 0.5, 0.9; tau = 0.5 is MAE up to a factor 2) on data with
gross outliers, in float64 (x64). For each problem, side by side in one process:

* ``jloss``: :func:`jloss.nonsmooth.solve` (compile time reported apart, then the median of
  repeated calls of the compiled program);
* ``sklearn``: ``QuantileRegressor(alpha=0, solver="highs")`` (the LP solved by HiGHS), when
  scikit-learn is installed (``pip install 'jloss[bench]'``);
* ``linprog``: ``scipy.optimize.linprog(method="highs")`` on the same LP, the reference optimum.

Reported: the status jloss returns, its objective's relative gap to the LP optimum and its
coefficients' relative distance (targets: 1e-7 and 1e-5), and the times. Progress on stderr.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout's jloss, installed or not

import jax  # noqa: E402

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402
from scipy.optimize import linprog  # noqa: E402

import jloss  # noqa: E402
from jloss import nonsmooth  # noqa: E402
from jloss.bench.env import script_parser, write_results  # noqa: E402

FULL = [(1_000, 5), (5_000, 10), (20_000, 20)]
QUICK = [(200, 3)]
TAUS = (0.1, 0.5, 0.9)


def problem(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = X @ rng.normal(size=d) + 0.5 + rng.standard_t(2, size=n)
    y[: max(1, n // 50)] += 50.0  # 2% gross outliers
    return X, y


def lp_quantile(X: np.ndarray, y: np.ndarray, tau: float) -> tuple[np.ndarray, float]:
    n, d = X.shape
    A = np.column_stack([X, np.ones(n)])
    cost = np.concatenate([np.zeros(d + 1), tau * np.ones(n) / n, (1 - tau) * np.ones(n) / n])
    res = linprog(cost, A_eq=np.hstack([A, np.eye(n), -np.eye(n)]) if n <= 2_000 else _sparse_eq(A),
                  b_eq=y, bounds=[(None, None)] * (d + 1) + [(0, None)] * (2 * n), method="highs")
    if res.status != 0:
        raise RuntimeError(f"linprog failed: {res.message}")
    return res.x[: d + 1], float(res.fun)


def _sparse_eq(A: np.ndarray):
    from scipy import sparse

    n = A.shape[0]
    eye = sparse.identity(n, format="csr")
    return sparse.hstack([sparse.csr_matrix(A), eye, -eye], format="csr")


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """(first call in s, median of the next ``repeats`` in s, last result)."""
    t0 = time.perf_counter()
    out = fn()
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), out


def run(sizes, repeats: int = 5) -> list[dict]:
    try:
        from sklearn.linear_model import QuantileRegressor
    except ImportError:  # pragma: no cover - optional peer
        QuantileRegressor = None
        print("scikit-learn not installed: its rows are skipped", file=sys.stderr)
    rows = []
    for n, d in sizes:
        X, y = problem(n, d)
        for tau in TAUS:
            print(f"n={n} d={d} tau={tau}", file=sys.stderr, flush=True)

            def ours():
                return jax.block_until_ready(nonsmooth.solve(X, y, "quantile", tau))

            first, t_jloss, res = timed(ours, repeats)
            t_lp0 = time.perf_counter()
            theta, best = lp_quantile(X, y, tau)
            t_lp = time.perf_counter() - t_lp0
            mine = np.concatenate([np.asarray(res.params["w"]), [float(res.params["b"])]])
            row = {
                "n": n, "d": d, "tau": tau, "status": jloss.Status(int(res.status)).name,
                "objective_gap": (float(res.loss) - best) / abs(best),
                "coef_distance": float(np.max(np.abs(mine - theta)) / np.max(np.abs(theta))),
                "lbfgs_steps": int(res.steps),
                "jloss_compile_s": first - t_jloss, "jloss_s": t_jloss, "linprog_s": t_lp,
            }
            if QuantileRegressor is not None:
                def theirs():
                    return QuantileRegressor(quantile=tau, alpha=0.0, solver="highs").fit(X, y)

                _, t_sk, model = timed(theirs, max(1, repeats // 2))
                sk = np.concatenate([model.coef_, [model.intercept_]])
                row["sklearn_s"] = t_sk
                row["sklearn_coef_distance"] = float(np.max(np.abs(sk - theta)) / np.max(np.abs(theta)))
                row["jloss_vs_sklearn"] = t_jloss / t_sk
            rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    head = ("| n | d | tau | jloss status | objective gap | coef distance | L-BFGS steps | jloss compile | "
            "jloss run | sklearn (HiGHS) | jloss / sklearn | linprog |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        sk = f"{r['sklearn_s'] * 1e3:.1f} ms" if "sklearn_s" in r else "n/a"
        ratio = f"{r['jloss_vs_sklearn']:.3f}x" if "jloss_vs_sklearn" in r else "n/a"
        lines.append(
            f"| {r['n']:,} | {r['d']} | {r['tau']} | {r['status']} | {r['objective_gap']:.1e} | "
            f"{r['coef_distance']:.1e} | {r['lbfgs_steps']} | {r['jloss_compile_s']:.2f} s | "
            f"{r['jloss_s'] * 1e3:.1f} ms | {sk} | {ratio} | {r['linprog_s'] * 1e3:.0f} ms |"
        )
    return "\n".join(lines)


def environment() -> dict:
    import optax

    return {"device": str(jax.devices()[0]), "platform": jax.default_backend(), "jax": jax.__version__,
            "optax": optax.__version__, "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "date": time.strftime("%Y-%m-%d")}


def main(argv=None) -> int:
    p = script_parser(__doc__)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    rows = run(QUICK if args.quick else FULL, 2 if args.quick else args.repeats)
    env = environment()
    text = (f"device: {env['device']}, jax {env['jax']}, optax {env['optax']}, {env['cpu_count']} cores, "
            f"{env['date']}\n\n" + markdown(rows))
    print(text)
    if not args.quick:
        stem = os.path.join(HERE, "results", f"nonsmooth-{env['platform']}")
        write_results(stem, text, {"environment": env, "rows": rows})
    bad = [r for r in rows if r["status"] != "OPTIMAL" or r["objective_gap"] > 1e-7 or r["coef_distance"] > 1e-5]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
