"""benchmarks/lbfgs_sweep.py --quick runs, and its report is complete and consistent.

No timed assertion (timings on a shared machine are not test material): every K of the quick
grid must run, every member must converge, the three rows must reach the same final losses, and
the table and the summary line must be there.
"""

import re

from bench_scripts import run_quick


def test_the_lbfgs_sweep_script_runs_in_quick_mode():
    text = run_quick("lbfgs_sweep.py")
    rows = [line for line in text.splitlines() if re.match(r"\| \d+ \| \d+-\d+ \| ", line)]
    assert [int(r.split("|")[1]) for r in rows] == [2, 4], text
    for line in rows:
        k = int(line.split("|")[1])
        assert f"| {k}/{k} |" in line, line  # every member converged
        assert "| yes (" in line, line  # the final losses agree (rel 1e-4)
        ratios = re.findall(r"\| ([\d.]+)x \|", line)
        assert len(ratios) == 2 and all(float(r) > 0 for r in ratios), line
    assert re.search(r"target \(sweep ≤ 0.5x the loop\) met at \d of 2 K; every member converged: yes", text), text
