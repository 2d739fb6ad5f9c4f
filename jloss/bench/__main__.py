"""``python -m jloss.bench``: the same as ``jloss bench``."""

import sys

from jloss.bench.cli import main

if __name__ == "__main__":
    sys.exit(main())
