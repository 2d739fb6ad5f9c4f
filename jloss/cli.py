"""The ``jloss`` command line: ``jloss demo | fit | sweep | losses | bench`` (also ``python -m jloss``).

Subcommands live in one table, :data:`COMMANDS`; :func:`register_command` adds one. Each has
``--help``. Mistakes in the input (a missing file or column, a value that is not a number, an
unknown loss or optimizer, matplotlib missing for figures) print ``jloss: error: ...`` to stderr
and exit with status 2, without a traceback. The numbers come from :mod:`jloss.demo` and
:mod:`jloss.linear`; this module only parses, prints and writes files. Figures are drawn by
:mod:`jloss.plots`, which imports matplotlib only when a figure is asked for. What the commands
share with the modules that add their own (:mod:`jloss.tuning`) is in :mod:`jloss._cli_common`.
Before a command runs, :func:`main` turns on JAX's persistent compilation cache
(:func:`jloss.cache.enable`; ``--no-cache`` or ``JLOSS_NO_CACHE=1`` leave it off).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from jloss import __version__, cache, demo, plots, registry, tuning
from jloss._cli_common import (  # noqa: F401  (fmt, pct, table, heading, note, write_json: jloss.cli's own)
    DEFAULT_OUT,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    add_csv,
    add_optimizer,
    add_plots,
    add_progress,
    fmt,
    heading,
    load,
    note,
    pct,
    table,
    write_json,
)
from jloss.data import UserError, split
from jloss.linear import check_options, fit_linear, loss_info, make_optimizer, resolve_method
from jloss.minimize import Status


# --------------------------------------------------------------------------- output helpers


def _plots():
    """:mod:`jloss.plots`, or a UserError naming the extra to install when matplotlib is missing."""
    plots.new_figure()  # fails early, with the install hint, when matplotlib is missing
    return plots


# --------------------------------------------------------------------------- subcommand table


@dataclasses.dataclass(frozen=True)
class Command:
    """One subcommand: its help line, how it adds its arguments, and what it runs.

    ``passthrough`` commands get the arguments argparse did not recognise in ``args.rest``
    (``jloss bench`` hands them to the benchmark suite's own parser).
    """

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None
    passthrough: bool = False


COMMANDS: dict[str, Command] = {}


def register_command(command: Command) -> Command:
    """Add a subcommand to ``jloss`` (ValueError if the name is taken)."""
    if command.name in COMMANDS:
        raise ValueError(f"a jloss subcommand named {command.name!r} already exists")
    COMMANDS[command.name] = command
    return command


# --------------------------------------------------------------------------- jloss demo


def _demo_arguments(p: argparse.ArgumentParser) -> None:
    add_plots(p, "the figures")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data set (default: 0)")
    p.add_argument("--steps", type=int, default=500, help="optimizer steps per fit (default: 500)")
    p.add_argument("--save-csv", metavar="FILE",
                   help="also write the synthetic training videos to FILE, to try `jloss fit` and `jloss sweep` on")
    add_progress(p)


def _print_data(videos) -> None:
    terms = " ".join(f"{c:+g} {f}" for c, f in zip(demo.TRUE_COEF, demo.FEATURES))
    print(f"SYNTHETIC data (seed {videos.seed}, jloss.demo.make_videos): {len(videos.views)} training "
          f"videos, {int(videos.viral.sum())} of them viral,")
    print(f"and {len(videos.views_test)} held-out videos without viral ones. Views are in thousands:")
    print(f"  views_k = {demo.TRUE_INTERCEPT:g} {terms} + noise (sd {demo.NOISE_SD:g})")
    print("The viral videos get 20k to 100k extra views: far above what the features predict.")


def _print_scoreboard(board) -> None:
    heading("1. One set of predictions, three losses")
    print("Predictions: the generator's own trend (the best a linear model can do). Per-video loss:")
    names = list(board.shares)
    rows = [[r["video"], "viral" if r["viral"] else "", r["actual"], r["predicted"], r["error"]]
            + [r[n] for n in names] for r in board.rows]
    print(table(["video", "", "actual", "predicted", "error"] + names, rows))
    print(f"\nOver all {board.n} videos (Huber delta = {board.delta:g}):")
    rows = [[s.loss, s.mean, s.mean_without_viral, pct(s.top_share), pct(s.viral_share), f"{s.pull_ratio:.1f}x"]
            for s in board.shares.values()]
    print(table(["loss", "mean", "mean w/o viral", "top video's share", f"{board.n_viral} virals' share",
                 "top video's pull"], rows))
    mse, mae = board.shares.get("mse"), board.shares.get("mae")
    if mse and mae:
        print(f"\nOne viral video, 1 of {board.n}, is {pct(mse.top_share)} of the MSE but {pct(mae.top_share)} of "
              f"the MAE. Its pull on the fit (|d loss / d prediction|)\nis {mse.pull_ratio:.0f}x a typical "
              "video's under MSE, and the same as any other video under MAE: squaring lets one video dominate.")


def _print_fits(videos, fits) -> None:
    feats = list(videos.features)
    rows = [["true trend"] + list(demo.TRUE_COEF) + [demo.TRUE_INTERCEPT, "", "", "", ""]]
    for name, lf in fits.items():
        f = lf.fit
        rows.append([name] + list(f.coef) + [float(f.intercept), f"{lf.slope_shift / lf.clean_fit.coef[0]:+.1%}",
                                            lf.test_mae, lf.test_rmse, f.steps])
    print(table(["loss"] + feats + ["intercept", "slope moved", "test MAE", "test RMSE", "steps"], rows))
    print("(fitted with the viral videos; 'slope moved': change of the subscribers_k coefficient against "
          "the same fit\nwithout them; test error on held-out videos without viral ones)")
    for name, lf in fits.items():
        print(f"  {name}: {lf.fit.message}")
    order = sorted(fits.values(), key=lambda lf: abs(lf.slope_shift), reverse=True)
    print("\nThe viral videos moved the slope most under " + ", then ".join(lf.loss for lf in order)
          + "; MAE and Huber predict the typical video better.")


def _print_entropy(ent) -> None:
    heading("3. Entropy and cross-entropy, in bits")
    rows = [[name, len(p), bits] for name, (p, bits) in ent.entropies.items()]
    print(table(["distribution", "outcomes", "entropy (bits)"], rows))
    truth = ent.classes[ent.true_class]
    print(f"\nA video turned out '{truth}'. Cross-entropy of three predictions over "
          f"({', '.join(ent.classes)}):")
    rows = [[name] + list(p) + [bits] for name, (p, bits) in ent.predictions.items()]
    print(table(["prediction"] + [f"p({c})" for c in ent.classes] + ["cross-entropy (bits)"], rows))
    print("Confident and wrong costs more than uncertain; cross-entropy is -log2 p(what happened).")


def _print_classification(res) -> None:
    rows = [[name, cf.train_accuracy, cf.test_accuracy, pct(cf.beyond_margin), cf.fit.steps]
            for name, cf in res.fits.items()]
    print(table(["loss", "train accuracy", "test accuracy", "beyond margin (y s >= 1)", "steps"], rows))
    print("\nThe loss of one positive example at each margin y s:")
    rows = [[name] + list(values) for name, values in res.margin_losses.items()]
    print(table(["loss"] + [f"{m:g}" for m in res.margins], rows))
    print("Hinge is exactly 0 once y s >= 1 (those videos stop pulling: only the support vectors matter);\n"
          "cross-entropy keeps rewarding more confidence, and punishes confident mistakes without bound.")


def _print_sweep(res) -> None:
    best = res.best
    feats = list(res.features)
    rows = []
    for i, h in enumerate(res.grid):
        rows.append([h, res.val_mae[i], res.val_rmse[i]] + list(res.coef[i])
                    + [float(res.intercept[i]), int(res.steps[i]), "*" if i == best else ""])
    print(table([res.hyperparameter, "val MAE", "val RMSE"] + feats + ["intercept", "steps", "best"], rows))
    print(f"* best {res.hyperparameter} by validation {res.metric.upper()}: {res.grid[best]:.4g}")
    stopped = sorted(set(res.messages))
    print("status: " + "; ".join(f"{m} ({res.messages.count(m)})" for m in stopped))


def _figures(draw: Callable[[Any], list], out: str) -> None:
    plots = _plots()
    paths = draw(plots)
    print(f"\nFigures written to {out}/: " + ", ".join(Path(p).name for p in paths))


def run_demo(args: argparse.Namespace) -> int:
    if args.plots:
        _plots()  # say what to install before any work
    videos = demo.make_videos(seed=args.seed)
    if args.save_csv:
        videos.to_csv(args.save_csv)
        note(f"wrote the synthetic training videos to {args.save_csv} (target column: views_k)")
    print("jloss demo: choosing a loss, told with (synthetic) video view counts")
    print("=" * 70)
    _print_data(videos)
    _print_scoreboard(demo.score_predictions(videos))
    heading("2. Fitting the model with each loss (jloss.sweep of jloss.minimize, Adam)")
    fits = demo.fit_losses(videos, steps=args.steps, progress=args.progress)
    _print_fits(videos, fits)
    _print_entropy(demo.entropy_examples())
    heading("4. Classification: is it a hit? (top quarter of views)")
    classes = demo.classify(videos, steps=args.steps, progress=args.progress)
    _print_classification(classes)
    heading("5. Huber's delta, swept in one vmapped program (jloss.sweep)")
    swept = demo.demo_sweep(videos, steps=args.steps, progress=args.progress)
    _print_sweep(swept)
    print("Small deltas act like MAE and resist the viral videos; large ones act like MSE.")
    if args.plots:
        _figures(lambda plots: plots.demo_figures(videos, fits, classes, swept, args.out), args.out)
    return EXIT_OK


# --------------------------------------------------------------------------- jloss fit


def _fit_arguments(p: argparse.ArgumentParser) -> None:
    add_csv(p, required=True)
    g = p.add_argument_group("model")
    g.add_argument("--loss", default="mse", help="a registered loss (see `jloss losses`; default: mse)")
    g.add_argument("--delta", "--tau", "--epsilon", "--label-smoothing", "--hyperparameter", dest="hyper",
                   type=float, default=None, metavar="VALUE",
                   help="the loss's hyperparameter (Huber/pseudo-Huber delta, quantile tau, ...; "
                        "default: the loss's own)")
    g.add_argument("--l2", type=float, default=0.0, help="L2 penalty 0.5 * l2 * |w|^2 (default: 0)")
    add_optimizer(p, "auto", 500, methods=True)
    add_progress(p)
    p.add_argument("--json", metavar="OUT", help="also write the results as JSON to OUT ('-' for stdout)")


def _fit_metrics(kind: str, fit, X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    pred = fit.predict(X)
    if kind == "regression":
        return {"MAE": float(np.abs(pred - y).mean()), "RMSE": float(np.sqrt(np.square(pred - y).mean()))}
    if kind == "multiclass":
        return {"accuracy": float(np.mean(pred.argmax(axis=1) == y))}
    positive = y > 0  # labels {0, 1} or {-1, +1}
    return {"accuracy": float(np.mean((pred > 0) == positive))}


def _binary_labels(info, y: np.ndarray) -> np.ndarray:
    """Labels in the domain a binary loss wants: 0/1 and -1/+1 are mapped onto each other (with
    a note) when the loss rejects the given ones; anything else is left for the loss to report."""
    import jax.numpy as jnp

    if info.kind != "binary":
        return y
    try:
        info.fn(jnp.zeros(y.shape, jnp.float32), jnp.asarray(y, jnp.float32))
        return y
    except ValueError:
        pass
    values = set(np.unique(y).tolist())
    if values <= {0.0, 1.0}:
        note(f"{info.name} wants labels -1/+1: mapped 0 -> -1 and 1 -> +1")
        return 2.0 * y - 1.0
    if values <= {-1.0, 1.0}:
        note(f"{info.name} wants labels in [0, 1]: mapped -1 -> 0 and +1 -> 1")
        return (y + 1.0) / 2.0
    return y


def run_fit(args: argparse.Namespace) -> int:
    info = loss_info(args.loss)  # mistakes in the options fail before the data is read
    check_options(args.steps, args.tol, args.l2)
    method = resolve_method(args.optimizer, info.name)
    if method != "exact":
        make_optimizer(method, args.lr, args.steps)
    data = load(args)
    y = _binary_labels(info, data.y)
    fit = fit_linear(
        data.X, y, info.name, args.hyper, optimizer=args.optimizer, learning_rate=args.lr,
        steps=args.steps, tol=args.tol, standardize=args.standardize, l2=args.l2, progress=args.progress,
    )
    hyper = f" ({info.hyperparameter}={fit.hyperparameter:g})" if info.hyperparameter else ""
    print(f"jloss fit: {info.name}{hyper} on {data.source}: {len(data.y)} rows, {len(data.features)} "
          f"features -> {data.target!r}; optimizer {fit.optimizer}")
    coef = np.atleast_2d(fit.coef.T).T  # (d, outputs)
    intercept = np.atleast_1d(fit.intercept)
    outputs = ["coefficient"] if coef.shape[1] == 1 else [f"class {k}" for k in range(coef.shape[1])]
    rows = [[f] + list(c) for f, c in zip(data.features, coef)] + [["(intercept)"] + list(intercept)]
    print(table(["feature"] + outputs, rows))
    metrics = _fit_metrics(info.kind, fit, data.X, y)
    r = fit.result
    print(f"\nfinal loss: {fmt(fit.final_loss)}   gradient norm: {fmt(float(r.grad_norm))}   "
          + "   ".join(f"training {k}: {fmt(v)}" for k, v in metrics.items()))
    print(f"status: {fit.message} after {fit.steps} steps")
    failed = not np.isfinite(fit.final_loss) or int(r.status) == Status.NONFINITE
    if failed:
        note("the fit diverged; try a smaller --lr, --standardize, or --optimizer lbfgs")
    if args.json:
        write_json({
            "loss": info.name, "hyperparameter": {info.hyperparameter: fit.hyperparameter} if info.hyperparameter else {},
            "optimizer": fit.optimizer, "csv": data.source, "target": data.target, "features": list(data.features),
            "rows": len(data.y), "dropped_rows": data.dropped, "standardized": args.standardize,
            "coefficients": {f: c.tolist() if c.size > 1 else float(c[0]) for f, c in zip(data.features, coef)},
            "intercept": intercept.tolist() if intercept.size > 1 else float(intercept[0]),
            "final_loss": fit.final_loss, "grad_norm": float(r.grad_norm), "steps": fit.steps,
            "converged": bool(r.converged), "status": int(r.status), "message": fit.message,
            "training_metrics": metrics,
        }, args.json)
    return EXIT_FAILED if failed else EXIT_OK


# --------------------------------------------------------------------------- jloss sweep


def _sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--deltas", "--grid", dest="grid", default="logspace:0.1:30:12", metavar="GRID",
                   help="values of the hyperparameter: 0.1,0.5,1,2,5 or logspace:START:STOP:COUNT or "
                        "linspace:START:STOP:COUNT (default: logspace:0.1:30:12)")
    p.add_argument("--loss", default="huber",
                   help="a regression loss with a hyperparameter (default: huber; also pseudo_huber, quantile, "
                        "epsilon_insensitive)")
    add_csv(p, required=False)
    p.add_argument("--val-fraction", type=float, default=0.25,
                   help="share of the CSV rows held out for validation (default: 0.25)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, or of the demo data (default: 0)")
    p.add_argument("--metric", choices=("mae", "rmse"), default="mae",
                   help="validation error that picks the best value (default: mae)")
    add_optimizer(p, "adam", 500)
    add_plots(p, "sweep.png")
    add_progress(p)
    p.add_argument("--json", metavar="OUT", help="also write the table as JSON to OUT ('-' for stdout)")


def run_sweep(args: argparse.Namespace) -> int:

    grid = demo.parse_grid(args.grid)
    check_options(args.steps, args.tol)
    make_optimizer(args.optimizer, args.lr, args.steps)
    if args.plots:
        _plots()
    if args.csv is None:
        if args.target or args.features:
            raise UserError("--target and --features need --csv FILE")
        videos = demo.make_videos(seed=args.seed)
        X, y, X_val, y_val, features = videos.X, videos.views, videos.X_test, videos.views_test, videos.features
        source = (f"the demo's synthetic videos (seed {args.seed}): {len(y)} for training (with viral ones), "
                  f"{len(y_val)} held out without")
    else:
        if not args.target:
            raise UserError("--csv needs --target COLUMN")
        data = load(args)
        train, val = split(len(data.y), args.val_fraction, args.seed)
        X, y, X_val, y_val, features = data.X[train], data.y[train], data.X[val], data.y[val], data.features
        source = f"{data.source}: {len(train)} rows for training, {len(val)} for validation (seed {args.seed})"
    res = demo.delta_sweep(X, y, X_val, y_val, grid, loss=args.loss, features=features, optimizer=args.optimizer,
                           learning_rate=args.lr, steps=args.steps, tol=args.tol, metric=args.metric,
                           progress=args.progress)
    print(f"jloss sweep: {res.loss} {res.hyperparameter} over {len(grid)} values in one jloss.sweep program")
    print(f"data: {source}")
    _print_sweep(res)
    if args.json:
        write_json({
            "loss": res.loss, "hyperparameter": res.hyperparameter, "grid": res.grid, "features": list(features),
            "val_mae": res.val_mae, "val_rmse": res.val_rmse, "coefficients": res.coef, "intercept": res.intercept,
            "train_loss": res.train_loss, "steps": res.steps, "messages": res.messages, "metric": res.metric,
            "best": {"index": res.best, res.hyperparameter: float(res.grid[res.best])},
        }, args.json)
    if args.plots:
        _figures(lambda plots: [plots.save(plots.sweep_figure(res), Path(args.out) / "sweep.png")], args.out)
    return EXIT_OK


# --------------------------------------------------------------------------- jloss losses


def _losses_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plot", action="store_true", help="draw each loss and its derivative into DIR/losses.png")
    p.add_argument("--out", metavar="DIR", default=DEFAULT_OUT, help=f"folder for --plot (default: {DEFAULT_OUT}/)")


def run_losses(args: argparse.Namespace) -> int:
    plots = _plots() if args.plot else None
    rows = []
    for name in registry.available():
        i = registry.info(name)
        hyper = f"{i.hyperparameter}={i.default:g}" if i.hyperparameter else ""
        rows.append([name, i.kind, hyper, i.formula])
    print(table(["loss", "kind", "hyperparameter", "formula (r = prediction - target; y s = margin)"], rows))
    print("\nEvery loss: jloss.<name>(predictions, targets, [hyperparameter], *, weights=None, where=None, "
          'reduction="mean")')
    if plots is not None:
        path = plots.save(plots.losses_figure(registry.available()), Path(args.out) / "losses.png")
        print(f"\nFigure written to {path}")
    return EXIT_OK


# --------------------------------------------------------------------------- jloss bench


def run_bench(args: argparse.Namespace) -> int:
    try:
        bench = importlib.import_module("jloss.benchmarks")
    except ModuleNotFoundError as e:
        if e.name not in ("jloss.benchmarks",):
            raise UserError(f"the benchmark suite needs {e.name}, which is not installed: "
                            "pip install 'jloss[bench]'") from None
        raise UserError("the benchmark suite (jloss.benchmarks) is not part of this installation") from None
    try:
        rest = list(args.rest) + (["--no-cache"] if args.no_cache and "--no-cache" not in args.rest else [])
        code = bench.main(rest)
    except SystemExit as e:  # its own argparse: --help, or a usage error it already printed
        code = e.code if isinstance(e.code, int) or e.code is None else EXIT_USAGE
    return EXIT_OK if code is None else int(code)


for _command in (
    Command("demo", "the view-count story: MSE, MAE, Huber, entropy, hinge, with numbers and figures",
            _demo_arguments, run_demo,
            description="Tell the view-count story on a seeded SYNTHETIC data set: how one viral video "
                        "dominates MSE, fits with MSE/MAE/Huber, entropy in bits, cross-entropy vs hinge, "
                        "and a Huber delta sweep. Prints tables; writes PNG figures into --out."),
    Command("fit", "fit a linear model to your CSV with any registered loss and optimizer",
            _fit_arguments, run_fit,
            description="Fit predictions = X w + b to a CSV file by minimizing a registered loss with "
                        "jloss.minimize. Regression losses predict the target; binary losses (hinge: "
                        "labels -1/+1, binary_cross_entropy: 0/1) and multi-class losses (class ids 0..C-1) "
                        "classify. Prints coefficients, final loss and status."),
    Command("sweep", "sweep Huber's delta (or another hyperparameter) in one vmapped program",
            _sweep_arguments, run_sweep,
            description="Fit the linear model once per value of a loss hyperparameter in one jloss.sweep "
                        "program, on the demo's synthetic data or on a CSV (with a validation split); "
                        "print validation error and coefficients against the value and draw sweep.png."),
    Command("losses", "list the registered losses with their formulas (--plot draws them)",
            _losses_arguments, run_losses),
    Command("bench", "run the benchmark suite (arguments go to it; try `jloss bench --help`)",
            lambda p: None, run_bench, passthrough=True),
    Command("tune", "tune Huber's delta by gradient descent on a validation error, against a grid sweep",
            tuning.add_arguments, tuning.run,
            description="Bilevel tuning (jloss.tuning): gradient descent on log(delta) with implicit "
                        "hypergradients through jloss.minimize, one inner solve per step, next to a "
                        "jloss.sweep over a grid of deltas; prints both and the inner solves each needed."),
):
    register_command(_command)
del _command


# --------------------------------------------------------------------------- main


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    """The top-level parser and each subcommand's parser, from :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="jloss: losses, a compiled Optax minimize loop and vmap sweeps for JAX.",
        epilog="Exit status: 0 success, 1 the fit failed (non-finite loss), 2 a mistake in the input. "
               "Run `jloss COMMAND --help` for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--no-cache", action="store_true",
                        help="do not use JAX's persistent compilation cache (default: on, in $JLOSS_CACHE_DIR, "
                             "else $XDG_CACHE_HOME/jloss/xla or ~/.cache/jloss/xla; JLOSS_NO_CACHE=1 also turns it off)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    parsers = {}
    for command in COMMANDS.values():
        p = sub.add_parser(command.name, help=command.help, description=command.description or command.help,
                           add_help=not command.passthrough)
        command.add_arguments(p)
        p.set_defaults(_command=command)
        parsers[command.name] = p
    return parser, parsers


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``jloss`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser, parsers = build_parser()
    try:
        args, rest = parser.parse_known_args(argv)
        command = getattr(args, "_command", None)
        if command is None:
            parser.print_help()
            return EXIT_USAGE
        if rest and not command.passthrough:
            parsers[command.name].error(f"unrecognized arguments: {' '.join(rest)}")
        args.rest = rest
    except SystemExit as e:  # --help, --version and argparse's own usage errors
        return e.code if isinstance(e.code, int) else EXIT_USAGE
    if not args.no_cache:
        cache.enable()  # before anything compiles: a second run loads its programs from disk
    try:
        return command.run(args)
    except UserError as e:
        print(f"{PROG}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `jloss losses | head`
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
        return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
