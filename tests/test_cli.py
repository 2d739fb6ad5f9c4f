"""The ``jloss`` command line, in-process through ``main(argv)`` and once as a subprocess.

The demo runs once for the module (``demo_run``); the sweep tests use the demo's grid size and
optimizer so that they reuse its compiled programs.
"""

import contextlib
import io
import json
import subprocess
import sys
import types

import numpy as np
import pytest

from jloss import cli, demo
from jloss.data import load_csv

PNG = b"\x89PNG\r\n\x1a\n"


def run(capsys, *argv):
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def assert_png(path):
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000, path


def write_csv(path, header, rows):
    path.write_text(",".join(header) + "\n" + "".join(",".join(str(c) for c in r) + "\n" for r in rows))
    return path


def linear_rows():
    """y = 2 x1 - 3 x2 + 1 + small noise, 60 rows; a 0/1 label column; a text column."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2))
    y = 2 * X[:, 0] - 3 * X[:, 1] + 1 + 0.01 * rng.normal(size=60)
    return [[f"{a:.6f}", f"{b:.6f}", f"{t:.6f}", int(a + b > 0), "x"] for (a, b), t in zip(X, y)]


HEADER = ["x1", "x2", "y", "label", "name"]


@pytest.fixture(scope="module")
def linear_csv(tmp_path_factory):
    return write_csv(tmp_path_factory.mktemp("csv") / "data.csv", HEADER, linear_rows())


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("demo")
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(["demo", "--out", str(out_dir), "--no-progress", "--save-csv", str(out_dir / "videos.csv")])
    return code, out.getvalue(), err.getvalue(), out_dir


@pytest.fixture
def no_matplotlib(monkeypatch):
    for name in list(sys.modules):
        if name == "matplotlib" or name.startswith("matplotlib."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError


# --------------------------------------------------------------------------- demo


def test_demo_prints_every_section_and_writes_figures(demo_run):
    code, out, err, out_dir = demo_run
    assert code == 0, err
    assert "Traceback" not in err
    assert "SYNTHETIC" in out
    for section in ("1. One set of predictions", "2. Fitting the model", "3. Entropy", "4. Classification",
                    "5. Huber's delta"):
        assert section in out
    for name in ("fits.png", "loss_curves.png", "training.png", "classification.png", "sweep.png"):
        assert_png(out_dir / name)
    assert "wrote the synthetic training videos" in err
    table = load_csv(out_dir / "videos.csv", "views_k")
    assert table.features == demo.FEATURES and len(table.y) == 300
    np.testing.assert_allclose(table.y, demo.make_videos().views, rtol=1e-5)


def test_demo_numbers_are_the_demo_functions(demo_run):
    _, out, _, _ = demo_run
    board = demo.score_predictions(demo.make_videos())
    assert cli.pct(board.shares["mse"].top_share) in out
    assert cli.pct(board.shares["mae"].top_share) in out
    assert "fair die                    6           2.585" in out
    assert "1.000" in out  # the coin's bit
    lines = [line.split() for line in out.splitlines()]
    hinge = next(parts for parts in lines if parts[:1] == ["hinge"] and len(parts) == 8)
    assert hinge[-3:] == ["0", "0", "0"]  # margins 1, 2, 4


def test_demo_without_matplotlib_says_what_to_install(capsys, no_matplotlib, tmp_path):
    code, out, err = run(capsys, "demo", "--out", str(tmp_path))
    assert code == 2
    assert "jloss: error:" in err and "pip install 'jloss[plot]'" in err and "--no-plots" in err
    assert out == "" and not any(tmp_path.iterdir())


# --------------------------------------------------------------------------- losses


def test_losses_table(capsys):
    code, out, _ = run(capsys, "losses")
    assert code == 0
    import jloss

    for name in jloss.available():
        assert name in out
        assert jloss.info(name).formula in out


def test_losses_plot(capsys, tmp_path):
    code, out, _ = run(capsys, "losses", "--plot", "--out", str(tmp_path))
    assert code == 0
    assert_png(tmp_path / "losses.png")


def test_losses_plot_without_matplotlib(capsys, no_matplotlib, tmp_path):
    code, _, err = run(capsys, "losses", "--plot", "--out", str(tmp_path))
    assert code == 2 and "pip install 'jloss[plot]'" in err
    code, out, _ = run(capsys, "losses")  # the table needs no matplotlib
    assert code == 0 and "huber" in out


# --------------------------------------------------------------------------- fit


def test_fit_mse_recovers_the_coefficients_and_writes_json(capsys, linear_csv, tmp_path):
    out_json = tmp_path / "fit.json"
    code, out, err = run(capsys, "fit", "--csv", str(linear_csv), "--target", "y", "--features", "x1", "x2",
                         "--loss", "mse", "--no-progress", "--json", str(out_json))
    assert code == 0, err
    assert "x1" in out and "(intercept)" in out and "status: converged" in out
    data = json.loads(out_json.read_text())
    assert data["coefficients"]["x1"] == pytest.approx(2.0, abs=0.01)
    assert data["coefficients"]["x2"] == pytest.approx(-3.0, abs=0.01)
    assert data["intercept"] == pytest.approx(1.0, abs=0.01)
    assert data["converged"] and data["steps"] >= 1 and data["rows"] == 60
    assert data["final_loss"] < 1e-3 and "training_metrics" in data


def test_fit_hinge_maps_01_labels_and_shows_progress(capsys, linear_csv):
    code, out, err = run(capsys, "fit", "--csv", str(linear_csv), "--target", "label", "--features", "x1", "x2",
                         "--loss", "hinge", "--optimizer", "adam", "--steps", "60", "--progress")
    assert code == 0, err
    assert "mapped 0 -> -1" in err
    assert "60/60" in err or "minimize" in err  # the tqdm bar
    accuracy = float(out.split("training accuracy:")[1].split()[0])
    assert accuracy > 0.9


def test_a_diverging_fit_exits_1(capsys, linear_csv):
    code, out, err = run(capsys, "fit", "--csv", str(linear_csv), "--target", "y", "--features", "x1", "x2",
                         "--optimizer", "sgd", "--lr", "1e6", "--steps", "5", "--no-progress")
    assert code == 1
    assert "status: stopped: non-finite" in out and "the fit diverged" in err


# --------------------------------------------------------------------------- sweep


def test_sweep_on_demo_data(capsys, tmp_path, no_matplotlib):
    code, out, err = run(capsys, "sweep", "--no-plots", "--no-progress", "--out", str(tmp_path))
    assert code == 0, err
    res = demo.demo_sweep(demo.make_videos())
    assert f"best delta by validation MAE: {res.grid[res.best]:.4g}" in out
    assert len([line for line in out.splitlines() if line.strip().endswith("*")]) == 1
    assert not any(tmp_path.iterdir())


def test_sweep_on_csv_with_json_and_figure(capsys, tmp_path):
    # the README's example (the same data and grid, so its compiled program serves both)
    demo.make_videos().to_csv(tmp_path / "videos.csv")
    code, out, err = run(capsys, "sweep", "--csv", str(tmp_path / "videos.csv"), "--target", "views_k",
                         "--deltas", "0.1,0.5,1,2,5", "--no-progress", "--out", str(tmp_path),
                         "--json", str(tmp_path / "sweep.json"))
    assert code == 0, err
    assert "225 rows for training, 75 for validation (seed 0)" in out
    data = json.loads((tmp_path / "sweep.json").read_text())
    assert data["grid"] == [0.1, 0.5, 1, 2, 5] and len(data["val_mae"]) == 5 and data["features"] == list(demo.FEATURES)
    assert data["best"]["delta"] == data["grid"][int(np.argmin(data["val_mae"]))]
    np.testing.assert_allclose(np.asarray(data["coefficients"])[:, 0], demo.TRUE_COEF[0], rtol=0.2)
    assert_png(tmp_path / "sweep.png")


# --------------------------------------------------------------------------- bench


def test_bench_passes_its_arguments_through(capsys, monkeypatch):
    seen = []
    fake = types.ModuleType("jloss.benchmarks")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "jloss.benchmarks", fake)
    code, _, _ = run(capsys, "bench", "--quick", "--json", "x.json", "--help")
    assert code == 0 and seen == [["--quick", "--json", "x.json", "--help"]]


def test_bench_missing_module(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "jloss.benchmarks", None)
    code, _, err = run(capsys, "bench", "--quick")
    assert code == 2 and "benchmark suite" in err


# --------------------------------------------------------------------------- bad input


@pytest.fixture(scope="module")
def bad_csvs(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    rows = linear_rows()  # with two rows made incomplete: what is left has the shapes of linear_csv
    rows.insert(1, ["", "1.0", "2.0", 1, "x"])
    rows.insert(3, ["1.0", "NaN", "2.0", 1, "x"])
    return {
        "text": write_csv(d / "text.csv", ["a", "b", "c"], [[1, 2, 3], [4, "five", 6]]),
        "nan": write_csv(d / "nan.csv", HEADER, rows),
        "empty": write_csv(d / "empty.csv", [""], []),
    }


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "--csv", "missing.csv", "--target", "y"], "no such file: missing.csv"),
        (["fit", "--csv", "{linear}", "--target", "nope"],
         "has no column 'nope' for the target; its columns are: x1, x2, y, label, name"),
        (["fit", "--csv", "{linear}", "--target", "y", "--features", "x1", "zz"], "no column 'zz'; its columns are"),
        (["fit", "--csv", "{text}", "--target", "a"], "row 3, column 'b': 'five' is not a number"),
        (["fit", "--csv", "{linear}", "--target", "y"], "row 2, column 'name': 'x' is not a number"),
        (["fit", "--csv", "{nan}", "--target", "y", "--features", "x1", "x2", "--nan", "error"],
         "2 of 62 rows have missing values (rows 3, 5)"),
        (["fit", "--csv", "{empty}", "--target", "a"], "is empty"),
        (["fit", "--csv", "{linear}", "--target", "y", "--loss", "hubber"],
         "unknown loss 'hubber'; known losses: binary_cross_entropy, cross_entropy"),
        (["fit", "--csv", "{linear}", "--target", "y", "--optimizer", "adamax"],
         "unknown optimizer 'adamax'; known optimizers: lbfgs, adam, sgd, auto, exact"),
        (["fit", "--csv", "{linear}", "--target", "y", "--features", "x1", "--loss", "mse", "--delta", "1"],
         "has no hyperparameter"),
        (["fit", "--csv", "{linear}", "--target", "y", "--features", "x1", "--loss", "huber", "--delta", "-1"],
         "delta must be > 0"),
        (["fit", "--csv", "{linear}", "--target", "y", "--features", "x1", "--loss", "hinge"],
         "targets must be labels in {-1, +1}"),
        (["fit", "--csv", "{linear}", "--target", "y", "--tol", "-1"], "--tol must be a number >= 0"),
        (["fit", "--csv", "{linear}", "--target", "y", "--l2", "-0.5"], "--l2 must be a number >= 0"),
        (["fit", "--csv", "{linear}", "--target", "y", "--steps", "0"], "--steps must be at least 1"),
        (["sweep", "--deltas", "1,two"], "cannot read the grid '1,two'"),
        (["sweep", "--deltas", "0,1"], "delta must be > 0"),
        (["sweep", "--loss", "mae"], "has no hyperparameter to sweep"),
        (["sweep", "--target", "y"], "--target and --features need --csv"),
        (["sweep", "--csv", "{linear}"], "--csv needs --target"),
    ],
)
def test_bad_input_is_one_line_on_stderr_and_exit_2(capsys, argv, message, linear_csv, bad_csvs):
    files = {"linear": linear_csv, **bad_csvs}
    argv = [a.format(**files) if a.startswith("{") else a for a in argv]
    code, out, err = run(capsys, *argv, "--no-progress")
    assert code == 2
    assert err.startswith("jloss: error: ") and message in err, err


def test_nan_rows_are_dropped_with_a_note_and_json_goes_to_stdout(capsys, bad_csvs):
    code, out, err = run(capsys, "fit", "--csv", str(bad_csvs["nan"]), "--target", "y", "--features", "x1", "x2",
                         "--no-progress", "--json", "-")
    assert code == 0
    assert "dropped 2 of 62 rows with missing values (rows 3, 5)" in err and "--nan error" in err
    assert "60 rows" in out
    data = json.loads(out[out.index("{"):])
    assert data["rows"] == 60 and data["dropped_rows"] == 2 and data["loss"] == "mse" and data["hyperparameter"] == {}
    assert data["coefficients"]["x2"] == pytest.approx(-3.0, abs=0.01)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "--target", "y"], "the following arguments are required: --csv"),
        (["fit", "--csv", "a.csv", "--target", "y", "--bogus"], "unrecognized arguments: --bogus"),
        (["fit", "--csv", "a.csv", "--target", "y", "--steps", "many"], "invalid int value: 'many'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_exit_2(capsys, argv, message):
    code, _, err = run(capsys, *argv)
    assert code == 2 and message in err


def test_help_on_every_command(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0
    for name in ("demo", "fit", "sweep", "losses", "bench"):
        assert name in out
    for name in ("demo", "fit", "sweep", "losses"):
        code, out, _ = run(capsys, name, "--help")
        assert code == 0 and f"usage: jloss {name}" in out


def test_register_command_adds_a_subcommand(capsys, monkeypatch):
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))
    cli.register_command(cli.Command("hello", "say hello", lambda p: p.add_argument("--name", default="you"),
                                     lambda a: print(f"hello {a.name}") or 0))
    code, out, _ = run(capsys, "hello", "--name", "delta")
    assert code == 0 and out == "hello delta\n"
    with pytest.raises(ValueError, match="already exists"):
        cli.register_command(cli.COMMANDS["hello"])


def test_table_aligns_numbers_right():
    text = cli.table(["name", "value"], [["a", 1.5], ["bbb", 10.25]])
    lines = text.splitlines()
    assert lines[2].endswith(" 1.500") and lines[3].endswith("10.25")
    assert len({len(line) for line in lines}) == 1


# --------------------------------------------------------------------------- subprocess


def test_python_m_jloss_as_a_subprocess_imports_no_matplotlib():
    # -X importtime lists every module imported; this path imports the CLI, demo, data and linear
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "jloss", "sweep", "--deltas", "1,x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    imported = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    assert {"jloss.cli", "jloss.demo", "jloss.data", "jloss.linear"} <= imported
    assert not any(name.startswith("matplotlib") for name in imported)
    errors = [line for line in lines if not line.startswith("import time:")]
    assert errors == ["jloss: error: cannot read the grid '1,x': give comma-separated numbers (0.1,0.5,1,2,5), "
                      "logspace:START:STOP:COUNT or linspace:START:STOP:COUNT"]
