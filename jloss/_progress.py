"""The progress bar of ``minimize`` and ``sweep``: tqdm on the host, fed by callbacks from the loop.

:class:`ProgressBar` is the host side and the schedule of the callbacks; :data:`RATES` remembers
the measured speed of each compiled program, so that :func:`quick_on_host` can tell a solve that
is over before the bar would draw (``minimize`` then runs it without callbacks and draws the
final line from the host, but only when that program was already compiled by an eager call
without a bar: :data:`COMPILED`; compiling it for the switch would be a second compilation of
the whole solve on a repeated call). tqdm is an optional dependency, imported on first use, and used
through its public API only.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jloss._result import Status

__all__ = ["ProgressBar", "RATES", "COMPILED", "record_rate", "record_compiled", "quick_on_host", "import_tqdm", "progress_every", "alive"]


def import_tqdm(name: str = "minimize"):
    """``tqdm.auto.tqdm``, or an ImportError that says how to install it."""
    try:
        from tqdm.auto import tqdm
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"{name}(progress=True) needs tqdm, which is not installed. Install it with "
            "`pip install jloss[progress]` (or `pip install tqdm`)."
        ) from err
    return tqdm


def progress_every(max_steps: int, updates: int) -> int:
    """Steps between two progress callbacks: ``updates`` bar updates over ``max_steps``."""
    return max(1, -(-max_steps // updates))


#: Steps per second of each compiled solve with a progress bar, keyed like its compilation
#: (``fun``, ``optimizer``, options): measured by the bar's callbacks and by host-drawn runs.
#: Bounded (see :func:`record_rate`): a forgotten entry only means one more run with callbacks.
RATES: dict = {}
MAX_RATES = 256


def _remember(store: dict, key: Any, value: Any) -> None:
    """``store[key] = value``, dropping the oldest entry when ``store`` holds :data:`MAX_RATES`."""
    if key not in store and len(store) >= MAX_RATES:
        store.pop(next(iter(store)))  # the oldest entry (dicts keep insertion order)
    store[key] = value


def record_rate(key: Any, rate: float) -> None:
    """Remember the speed of the program ``key`` (dropping the oldest entry when full)."""
    _remember(RATES, key, rate)


#: Call signatures (program key, argument tree, shapes and dtypes) of the eager solves run
#: without a bar, whose compiled program therefore exists. Bounded like :data:`RATES`.
COMPILED: dict = {}


def call_signature(key: Any, arrays: tuple) -> tuple | None:
    """What ``jax.jit``'s cache tells the call of program ``key`` on ``arrays`` apart by (the
    argument tree, shapes, dtypes and weak types); None under tracing (no eager call)."""
    leaves, tree = jax.tree_util.tree_flatten(arrays)
    if any(isinstance(x, jax.core.Tracer) for x in leaves):
        return None
    # Every eager minimize call without a bar records this: a jax.Array's stored aval (shape,
    # dtype, weak type) is the cheap key (record_compiled of minimize's arguments: 5.5 us, where
    # tuples of shapes, dtypes and weak types built per leaf took 14 us).
    return key, tree, tuple(_leaf_key(x) for x in leaves)


def _leaf_key(x: Any) -> Any:
    aval = getattr(x, "aval", None)
    return aval if aval is not None else (np.shape(x), getattr(x, "dtype", type(x)))


def record_compiled(key: Any, arrays: tuple) -> None:
    """Remember that the program ``key`` (without a bar) was called eagerly on such ``arrays``."""
    signature = call_signature(key, arrays)
    if signature is not None:
        _remember(COMPILED, signature, True)


def quick_on_host(key: Any, max_steps: int, arrays: tuple, plain_key: Any) -> bool:
    """True for an eager call of the program ``key`` whose solve is known to take less than the
    bar's refresh interval (such a run would only draw its final line, so the host can draw it)
    and whose program without a bar, ``plain_key``, is already compiled for such ``arrays``: the
    switch must never compile a second program on a repeated call."""
    rate = RATES.get(key)
    if rate is None or max_steps >= rate * ProgressBar.interval:
        return False
    return call_signature(plain_key, arrays) in COMPILED


def alive(next_report: jax.Array) -> jax.Array:
    """Always True; read by a loop's condition to keep the progress callback's result live."""
    return next_report >= 0


class ProgressBar:
    """Host side of a loop's progress bar (tqdm), and the schedule of its callbacks.

    One object lives in each compiled program and serves every run of it. The loop calls
    :meth:`report` (a ``jax.pure_callback``) at the start, at the step it was told to, and when
    it stops; each call returns the step of the next one. A callback costs about 0.15 ms of
    host round trip on CPU, so the schedule adapts to the measured speed: at most one update
    per ``interval`` seconds (tqdm's own refresh rate) and at most one per ``every`` steps
    (``progress=N`` gives N updates over ``max_steps``). A quick solve therefore calls back
    twice (start and stop) once the speed is known (from the previous run of the same program,
    or from this run's first update), and a long one every ``every`` steps.

    The argument is one int32 array ``(step, running, status, start)`` (leading axes under
    ``jax.vmap``, one row per member): ``start`` opens a bar, ``step`` moves it, and it closes
    once ``running`` (the number of members still running) is 0; ``status`` names the final
    state of a single run (unused in a sweep, which passes -1).
    """

    interval = 0.1  # seconds between updates at most

    def __init__(
        self, total: int, desc: str = "minimize", members: int | None = None, every: int = 1, key: Any = None
    ):
        self.key = key  # the entry of RATES this program's measured speed goes to (None: none)
        self.total = total
        self.desc = desc
        self.members = members  # K in a sweep (shown as "r/K running"), None for minimize
        self.every = max(1, int(every))
        self.bar = None
        self.rate = None  # steps per second, measured
        self.t0 = self.s0 = None

    def report(self, step, running, status, start: bool) -> jax.Array:
        """The device side: call back with the packed state; returns the next step to report."""
        packed = jnp.stack([jnp.asarray(x, jnp.int32) for x in (step, running, status, jnp.int32(start))])
        # A pure_callback (an io_callback could not sit in a cond under vmap). Its result only
        # feeds the next guard, so the loop's condition must read it (see ``alive``), or JAX's
        # while-loop DCE would drop the callback as dead code.
        return jax.pure_callback(
            self, jax.ShapeDtypeStruct((), jnp.int32), packed, vmap_method="expand_dims"
        )

    def __call__(self, packed) -> np.ndarray:
        packed = np.asarray(packed)
        rows = packed.reshape(-1, 4)
        step = int(rows[:, 0].max())
        running = int(rows[:, 1].sum())
        status = int(rows[0, 2])
        start = bool(rows[:, 3].any())
        now = time.perf_counter()
        if start or self.t0 is None:
            self.t0, self.s0 = now, step
        elif step > self.s0 and now > self.t0:
            self.rate = (step - self.s0) / (now - self.t0)
            if self.key is not None:
                record_rate(self.key, self.rate)
        self._draw(step, running, status, start)
        gap = self.every
        if self.rate is not None:
            gap = max(gap, int(self.rate * self.interval))
        return np.full(packed.shape[:-1], min(step + gap, np.iinfo(np.int32).max), np.int32)

    def final_line(self, steps: int, status: int, elapsed: float) -> None:
        """Write the line a closed bar leaves behind, for a run of ``steps`` steps that took
        ``elapsed`` seconds, with tqdm's own formatter (0.1 ms; a tqdm object costs 0.5 ms to
        make and close)."""
        tqdm = import_tqdm(self.desc)
        out = sys.stderr
        ncols = shutil.get_terminal_size().columns if out.isatty() else None
        postfix = Status(status).name.lower()
        line = tqdm.format_meter(steps, self.total, elapsed, ncols=ncols, prefix=self.desc, unit="step", postfix=postfix)
        out.write("\r" + line + "\n")
        out.flush()

    def _draw(self, step: int, running: int, status: int, start: bool) -> None:
        if start:
            if self.bar is not None:  # a run that never reported its stop (an error)
                self.bar.close()
            # Made at the start, so tqdm's clock is the run's; drawn from ``interval`` seconds
            # into the run (tqdm's delay): a quick run draws its final line only.
            tqdm = import_tqdm(self.desc)
            self.bar = tqdm(total=self.total, desc=self.desc, unit="step", leave=True, delay=self.interval)
            if step > 0:
                self.bar.update(step)
            return
        bar = self.bar
        if bar is None:
            return
        if self.members is not None and running > 0:
            bar.set_postfix_str(f"{running}/{self.members} running", refresh=False)
        if step > bar.n:
            bar.update(step - bar.n)
        if running == 0:
            final = Status(status).name.lower() if status >= 0 else "done"
            bar.set_postfix_str(final, refresh=False)
            bar.delay = 0  # tqdm skips the closing line of a bar never drawn; draw it once
            bar.close()
            self.bar = None
