"""``python -m jloss``: the same as the ``jloss`` command."""

import sys

from jloss.cli import main

if __name__ == "__main__":
    sys.exit(main())
