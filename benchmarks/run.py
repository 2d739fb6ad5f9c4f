"""Run the jloss benchmark suite from a checkout: ``python benchmarks/run.py [--quick] [...]``.

A thin wrapper around :func:`jloss.benchmarks.main` (the same as ``jloss bench`` and
``python -m jloss.benchmarks``). Unless ``--json``, ``--quick`` or ``--list`` is given it writes the
committed results next to this file: ``results/cpu.json``, ``results/cpu.md`` and the charts
``results/cpu-*.png`` (named after the JAX platform, so a GPU run writes ``results/gpu.*``);
other options (``--torch-threads 1``, ``--only ...``) pass through.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the checkout's jloss, installed or not

from jloss import benchmarks  # noqa: E402


def default_args() -> list[str]:
    import jax

    stem = os.path.join(HERE, "results", jax.default_backend())
    return ["--json", stem + ".json", "--markdown", stem + ".md", "--plot", stem]


if __name__ == "__main__":
    argv = sys.argv[1:]
    if not {"--json", "--quick", "--list", "-h", "--help"} & set(argv):
        argv = default_args() + argv
    sys.exit(benchmarks.main(argv))
