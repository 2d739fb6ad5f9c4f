"""The README runs as written: its ```python blocks, its `$ jloss ...` examples, its demo numbers."""

import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from jloss import cli, demo

README = Path(__file__).resolve().parents[1] / "README.md"
TEXT = README.read_text()
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:e[-+]?\d+)?%?")


def python_blocks():
    """(first line number, code) of every ```python block."""
    return [(TEXT.count("\n", 0, m.start(1)) + 1, m.group(1))
            for m in re.finditer(r"^```python\n(.*?)^```", TEXT, re.S | re.M)]


def shell_examples():
    """(command, expected output) of every indented `$ jloss ...` example."""
    examples = []
    for block in re.findall(r"(?:^    .*\n|^\n)+", TEXT, re.M):
        lines = [line[4:] for line in block.splitlines()]
        command = None
        for line in lines:
            if line.startswith("$ "):
                command = [line[2:], []]
                examples.append(command)
            elif command is not None:
                command[1].append(line)
    return [(c, "\n".join(out).strip("\n")) for c, out in examples if c.startswith("jloss ")]


def test_readme_has_the_tour():
    assert len(python_blocks()) >= 4
    assert [c for c, _ in shell_examples()][:2] == [
        "jloss demo --no-plots --save-csv videos.csv > /dev/null",
        "jloss fit --csv videos.csv --target views_k --loss huber --delta 1",
    ]
    for figure in re.findall(r"\]\((docs/figures/[^)]+\.png)\)", TEXT):
        assert (README.parent / figure).stat().st_size > 5000, figure


def test_python_blocks_run_in_order(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    for line, code in python_blocks():
        try:
            exec(compile("\n" * line + code, str(README), "exec"), namespace)
        except Exception as e:  # pragma: no cover - the message is the point
            pytest.fail(f"the README's python block at line {line + 1} fails: {type(e).__name__}: {e}")
    out = capsys.readouterr().out
    assert "converged" in out and "best delta: 0.1" in out


def same_up_to_rounding(actual: str, expected: str) -> bool:
    """Equal text; numbers equal within 2% (the gradient norm, a round-off, is not compared)."""
    a_lines, e_lines = actual.strip("\n").splitlines(), expected.splitlines()
    if len(a_lines) != len(e_lines):
        return False
    for a, e in zip(a_lines, e_lines):
        a, e = re.sub(r"gradient norm: \S+", "gradient norm: G", a), re.sub(r"gradient norm: \S+", "gradient norm: G", e)
        if NUMBER.sub("#", a) != NUMBER.sub("#", e):
            return False
        for x, y in zip(NUMBER.findall(a), NUMBER.findall(e)):
            x, y = float(x.rstrip("%")), float(y.rstrip("%"))
            if abs(x - y) > 0.02 * max(abs(x), abs(y)) + 1e-9:
                return False
    return True


@pytest.fixture(scope="module")
def videos_csv(tmp_path_factory):
    folder = tmp_path_factory.mktemp("readme")
    demo.make_videos(seed=0).to_csv(folder / "videos.csv")  # what the README's demo command writes
    return folder


@pytest.mark.parametrize("command, expected", [e for e in shell_examples() if not e[0].startswith("jloss demo")])
def test_shell_examples_print_what_the_readme_shows(command, expected, videos_csv, monkeypatch):
    monkeypatch.chdir(videos_csv)
    argv = shlex.split(command)[1:]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(argv + ["--no-progress"])
    shown = out.getvalue() + err.getvalue()
    assert code == (2 if expected.startswith("jloss: error:") else 0), shown
    assert same_up_to_rounding(shown, expected), f"`{command}` now prints:\n{shown}"


def test_demo_numbers_quoted_in_the_readme():
    board = demo.score_predictions(demo.make_videos(seed=0))
    mse, mae, huber = (board.shares[n] for n in ("mse", "mae", "huber"))
    assert (f"is {cli.pct(mse.top_share)} of the MSE but {cli.pct(mae.top_share)} of the MAE "
            f"({cli.pct(huber.top_share)} of Huber's)") in " ".join(TEXT.split())
    assert f"is {mse.pull_ratio:.0f} times a typical video's under MSE" in TEXT


def test_fit_and_classification_numbers_quoted_in_the_readme():
    videos = demo.make_videos(seed=0)
    fits = demo.fit_losses(videos)
    text = " ".join(TEXT.split())
    moved = {n: f"{lf.slope_shift / lf.clean_fit.coef[0]:+.0%}" for n, lf in fits.items()}
    assert (f"move the MSE slope by {moved['mse']}, the Huber slope by {moved['huber']} and the MAE slope by "
            f"{moved['mae']}") in text
    assert (f"MAE and Huber err by {fits['mae'].test_mae:.2f}k views on average, MSE by "
            f"{fits['mse'].test_mae:.2f}k") in text
    assert abs(fits["huber"].test_mae - fits["mae"].test_mae) < 0.005
    ent = demo.entropy_examples()
    assert f"costs {ent.predictions['confident and wrong'][1]:.2f} bits" in text
    classes = demo.classify(videos)
    hinge, bce = classes.fits["hinge"], classes.fits["binary_cross_entropy"]
    assert f"({hinge.beyond_margin:.0%} of the videos there stop pulling" in text
    assert f"similar accuracy ({bce.test_accuracy:.2f} on held-out videos)" in text
    assert abs(hinge.test_accuracy - bce.test_accuracy) < 0.01
