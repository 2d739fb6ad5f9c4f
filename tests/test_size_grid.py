"""benchmarks/size_grid.py --quick runs, and its report is complete and consistent.

No timed assertion (timings on a shared machine are not test material): every cell of the quick
grid must run, its three rows must reach the same final loss, and the table, the dispatch
overhead line and the crossover table must be there.
"""

import re

from bench_scripts import run_quick


def test_the_size_grid_script_runs_in_quick_mode():
    text = run_quick("size_grid.py")
    cells = [line for line in text.splitlines() if re.match(r"\| (adam|sgd)\(1e-2\) \| [\d,]+ \| \d+ \|", line)]
    assert len(cells) == 2 * 2 * 2, text  # optimizers x N x d
    for line in cells:
        assert "| yes (" in line, line  # the three final losses agree (rel 1e-4)
        ratios = re.findall(r"\| ([\d.]+)x \|", line)
        assert len(ratios) == 3 and all(float(r) > 0 for r in ratios), line
    assert re.search(r"overhead o = [\d,.]+ µs per step", text), text
    crossings = [line for line in text.splitlines() if re.match(r"\| (adam|sgd) \| (N|d|N\*d) \|", line)]
    assert len(crossings) == 2 * (2 + 2 + 1), text
