"""Running a standalone script of ``benchmarks/`` in ``--quick`` mode, for the tests of its report."""

import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def run_quick(name: str, timeout: float = 120) -> str:
    """``python benchmarks/<name> --quick`` in a subprocess: its stdout, after checking that it
    exited cleanly, wrote no result file, and starts with the device and load-average lines."""
    out = subprocess.run([sys.executable, str(BENCHMARKS / name), "--quick"], capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "wrote" not in out.stderr  # stdout only: quick mode writes no result file
    text = out.stdout
    first, second = text.splitlines()[:2]
    assert first.startswith("device: ") and "jax " in first, text[:200]
    assert "load average" in second, text[:400]
    return text
