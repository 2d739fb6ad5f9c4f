"""Regenerate the committed demo figures in docs/figures/ (the PNGs the README shows).

    python scripts/make_figures.py [--out docs/figures]

Runs the demo's computations on the seeded synthetic data (no randomness beyond the seed) and
draws the same figures as ``jloss demo`` plus ``jloss losses --plot``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "figures"), help="folder (default: docs/figures)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data (default: 0)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from jloss import demo, plots, registry

    result = demo.run(seed=args.seed)
    paths = plots.demo_figures(result.videos, result.fits, result.classification, result.sweep, args.out)
    paths.append(plots.save(plots.losses_figure(registry.available()), Path(args.out) / "losses.png"))
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
