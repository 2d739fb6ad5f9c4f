"""JAX's persistent compilation cache for the ``jloss`` command line and ``jloss bench``.

``import jloss`` changes no JAX setting: a library must not. The command line calls
:func:`enable` before anything compiles, so that a second ``jloss fit`` or ``jloss demo`` loads
its programs from disk instead of compiling them again. Where the cache lives:

1. ``$JLOSS_CACHE_DIR``, else
2. ``$XDG_CACHE_HOME/jloss/xla``, else
3. ``~/.cache/jloss/xla``.

Off switches: ``jloss --no-cache COMMAND ...`` or ``JLOSS_NO_CACHE=1`` in the environment. In
your own program, call ``jloss.cache.enable()`` yourself (or set ``jax_compilation_cache_dir``).

JAX writes a program to the cache only when its compile took at least
``jax_persistent_cache_min_compile_time_secs`` (default 1 s); :func:`enable` lowers that to
:data:`MIN_COMPILE_TIME_S` (0: every program) so that the CLI's sub-second programs are kept too.
A threshold above 0 made what is cached depend on the machine's load: with 0.05 s, a loaded host
compiled a small ``jit(mean)`` over the threshold in a second ``jloss fit`` run only, which then
wrote a new entry (seen in tests/test_cache.py on a clean-clone CI run, 2026-12-07). Programs with host
callbacks (the progress bar's) are never written by JAX: ``jloss fit --no-progress`` is the run
that the cache makes fastest.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Mapping

import jax
from jax.experimental.compilation_cache import compilation_cache as _jax_cache

__all__ = ["MIN_COMPILE_TIME_S", "cache_dir", "disabled_by_env", "enable", "enabled_dir", "bypassed"]

#: Programs that compile faster than this are not written to the cache (JAX's default is 1 s).
MIN_COMPILE_TIME_S = 0.0


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the cache lives: ``$JLOSS_CACHE_DIR``, ``$XDG_CACHE_HOME/jloss/xla`` or ``~/.cache/jloss/xla``."""
    env = os.environ if environ is None else environ
    if env.get("JLOSS_CACHE_DIR"):
        return Path(env["JLOSS_CACHE_DIR"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "jloss" / "xla"
    return Path.home() / ".cache" / "jloss" / "xla"


def disabled_by_env(environ: Mapping[str, str] | None = None) -> bool:
    """True when ``JLOSS_NO_CACHE`` is set to anything but ``''``, ``0``, ``false`` or ``no``."""
    env = os.environ if environ is None else environ
    return env.get("JLOSS_NO_CACHE", "").strip().lower() not in ("", "0", "false", "no")


def enable(directory: str | os.PathLike | None = None) -> Path | None:
    """Turn on JAX's persistent compilation cache in ``directory`` (default: :func:`cache_dir`).

    Returns the directory, or ``None`` when ``JLOSS_NO_CACHE`` is set (then nothing changes).
    Call it before the first compile: JAX opens the cache once per process.
    """
    if disabled_by_env():
        return None
    path = Path(directory).expanduser() if directory is not None else cache_dir()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # an unwritable cache must not stop the command
    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)  # no size floor
    return path


def enabled_dir() -> str | None:
    """The persistent cache's directory if it is on in this process, else ``None``."""
    if not jax.config.jax_enable_compilation_cache:
        return None
    return jax.config.jax_compilation_cache_dir or None


@contextlib.contextmanager
def bypassed() -> Iterator[None]:
    """Compile without the persistent cache inside the block (for timing compiles), and reopen it after."""
    was = jax.config.jax_enable_compilation_cache
    _jax_cache.reset_cache()
    jax.config.update("jax_enable_compilation_cache", False)
    try:
        yield
    finally:
        jax.config.update("jax_enable_compilation_cache", was)
        _jax_cache.reset_cache()
