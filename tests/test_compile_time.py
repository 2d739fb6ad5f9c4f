"""benchmarks/compile_time.py --quick runs, and its report is complete and consistent.

No timed assertion (timings on a shared machine are not test material): every workload's row
must be there with its compile parts adding up, the ratio must be jloss's compile over the scan's
and PASS/MISS must follow it, a repeated call must report 0 traces / 0 compiles, and the command
line part must have a cold and a warm run whose warm run loads every program from the cache.
"""

import re

from bench_scripts import run_quick

WORKLOADS = ["minimize (Adam)", "minimize (L-BFGS)", "sweep (Adam, K=2)", "sweep (L-BFGS, K=4)"]
PARTS = r"([\d.]+) \+ ([\d.]+) \+ ([\d.]+) = ([\d.]+) s"


def check_compile_row(line: str) -> bool:
    """The figures of one row agree with each other; returns whether it says PASS."""
    cols = [c.strip() for c in line.strip().strip("|").split("|")]
    parts = [re.fullmatch(PARTS, cols[i]) for i in (1, 2)]
    assert all(parts), line
    jloss, scan = ([float(x) for x in m.groups()] for m in parts)
    for trace, lower, backend, total in (jloss, scan):
        assert abs(trace + lower + backend - total) <= 0.002, line
        assert backend > 0 and total > 0, line
    ratio = float(cols[3].rstrip("x"))
    assert abs(ratio - jloss[3] / scan[3]) <= 0.005 + 0.001 * ratio / scan[3], line  # rounded to 2 decimals
    assert cols[4] in ("PASS", "MISS") and (cols[4] == "PASS") == (ratio <= 1.2), line
    assert cols[7] == "0 / 0", line  # the repeated call traced and compiled nothing
    programs = [int(x) for x in cols[6].split(", ")]
    assert len(programs) == 2 and min(programs) >= 1, line
    return cols[4] == "PASS"


def test_the_compile_time_script_runs_in_quick_mode():
    text = run_quick("compile_time.py")
    rows = {}
    for line in text.splitlines():
        for name in WORKLOADS:
            if line.startswith(f"| {name} |"):
                rows[name] = line
    assert list(rows) == WORKLOADS, text
    passed = [name for name, line in rows.items() if check_compile_row(line)]
    summary = re.search(r"target \(jloss ≤ 1.2x the hand-fused scan\) met by (\d) of 4 workloads", text)
    assert summary and int(summary.group(1)) == len(passed), text
    assert "zero recompiles on a repeated call (new arrays, same shapes): yes" in text, text

    fit = re.search(r"\| `jloss fit --no-progress` \| ([\d.]+) s \| ([\d.]+) s \| ([\d.]+)x \| n/a \| 1 / 0 \| "
                    r"(\d+) \|", text)
    assert fit, text
    cold, warm, ratio, entries = (float(x) for x in fit.groups())
    assert abs(ratio - warm / cold) <= 0.005 + 0.001 * ratio / cold and entries >= 1, fit.group(0)
    floor = r"\| `python -c \"import jloss.cli\"` \(floor: interpreter \+ imports\) \| [\d.]+ s \|"
    assert re.search(floor, text), text
    events = re.search(r"warm `jloss fit --no-progress` still traces (\d+) programs .* of (\d+) backend compiles "
                       r"(\d+) were loaded from the cache, (\d+) missed it and (\d+) compiled without a lookup", text)
    assert events, text
    traces, compiles, hits, misses, uncached = (int(x) for x in events.groups())
    assert traces >= 1 and compiles >= 1
    assert hits == compiles and misses == uncached == 0, events.group(0)  # the warm run compiled nothing itself
