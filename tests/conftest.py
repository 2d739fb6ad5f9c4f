"""Test-wide settings: ``jloss.cli.main`` run in-process must not turn on the persistent
compilation cache in ``~/.cache`` for the whole test session (tests/test_cache.py sets its own)."""

import os

os.environ.setdefault("JLOSS_NO_CACHE", "1")
