"""benchmarks/size_grid.py --quick runs, and its report is complete and consistent.

No timed assertion (timings on a shared machine are not test material): every cell of the quick
grid must run, its three rows must reach the same final loss, and the table, the dispatch
overhead line and the crossover table must be there.
"""

import re
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "size_grid.py"


def test_the_size_grid_script_runs_in_quick_mode():
    out = subprocess.run([sys.executable, str(SCRIPT), "--quick"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    text = out.stdout
    assert text.startswith("device: "), text[:200]
    assert "jax " in text.splitlines()[0] and "load average" in text.splitlines()[1]
    cells = [line for line in text.splitlines() if re.match(r"\| (adam|sgd)\(1e-2\) \| [\d,]+ \| \d+ \|", line)]
    assert len(cells) == 2 * 2 * 2, text  # optimizers x N x d
    for line in cells:
        assert "| yes (" in line, line  # the three final losses agree (rel 1e-4)
        ratios = re.findall(r"\| ([\d.]+)x \|", line)
        assert len(ratios) == 3 and all(float(r) > 0 for r in ratios), line
    assert re.search(r"overhead o = [\d,.]+ µs per step", text), text
    crossings = [line for line in text.splitlines() if re.match(r"\| (adam|sgd) \| (N|d|N\*d) \|", line)]
    assert len(crossings) == 2 * (2 + 2 + 1), text
    # stdout only: quick mode writes no result file
    assert "wrote" not in out.stderr
