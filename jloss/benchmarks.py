"""The jloss benchmark suite: ``jloss bench``, ``python -m jloss.benchmarks`` or :func:`main`.

Every workload is timed next to what a user would write instead (a ``@jax.jit`` step in a Python
loop, a hand-fused ``lax.scan``, PyTorch, scipy, scikit-learn) and next to the hardware floor
measured in the same run (the matrix-vector products alone; a streaming elementwise pass over the
same bytes). How the numbers are taken:

* every variant is called once untimed (trace and compile: the *first call* time; ``compile_s`` is
  that minus the median run) and warmed up once more, then timed ``repeats`` (>= 5) times, or
  more for a cheap row (up to ``Config.max_repeats``, filling its share of the case's budget);
* the timed calls are interleaved in one process, in a new (seeded) random order every round
  among the rows still repeating, with the garbage collector paused, and each ends with
  ``jax.block_until_ready`` (PyTorch and numpy results are read back to the host);
* the median and the spread (min, max) are reported; a row's ratio is its median over the median
  of the case's reference row (ratios in one run are the figures to quote on a shared machine);
* every solver returns its final loss, compared with the reference row's: a row that differs
  beyond the case's tolerance is flagged (``DIFF``) and cannot pass a target;
* the targets of the issue are evaluated on the measured ratios and printed as PASS/MISS.

Workloads are functions registered with :func:`workload`; each returns a list of :class:`Case`
(a set of :class:`Variant` rows timed together, their reference row and their :class:`Target`s).
Adding one is a local change::

    @workload("my_workload", "what it measures")
    def _my_workload(cfg: Config) -> list[Case]:
        n = cfg.size(full=100_000, quick=1_000)
        f = jax.jit(...)
        return [Case("my_workload", "title", {"n": n}, reference="floor",
                     variants=[Variant("jloss", lambda: f(x), loss=float, kind="jloss"),
                               Variant("floor", lambda: g(x), kind="floor")])]

The helpers :func:`fused_scan`, :func:`python_loop`, :func:`matvec_floor` and the problem builders
(:func:`huber_problem`) are there to be reused by such workloads.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import gc
import importlib
import importlib.util
import json
import math
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

import jloss

__all__ = [
    "Case",
    "Config",
    "Target",
    "Variant",
    "WORKLOADS",
    "workload",
    "run_suite",
    "run_case",
    "markdown",
    "plot",
    "environment",
    "fused_scan",
    "python_loop",
    "matvec_floor",
    "huber_problem",
    "main",
]

SCHEMA = "jloss-bench/1"


# ----------------------------------------------------------------------------------------------
# The data model: workloads -> cases -> variants (rows) and targets
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Variant:
    """One row of a case: a complete run of one implementation.

    ``run()`` does the whole job (all steps, the final loss) and returns its output; the harness
    blocks on it inside the timed region. ``loss(output)`` reads the final loss (untimed); ``None``
    for rows that do not solve the problem (floors). ``kind`` is ``"jloss"``, ``"peer"`` or
    ``"floor"``. ``loss_ref`` names the row whose final loss this one is compared with (default:
    the case's ``loss_reference``) and ``rtol`` overrides the case's tolerance for it. ``quiet``
    sends the row's stdout/stderr to ``os.devnull`` while it runs (progress bars). Rows with
    ``quick=False`` are left out of ``--quick`` runs (diagnostic rows whose compile time would
    dominate a smoke run).
    """

    name: str
    run: Callable[[], Any]
    loss: Callable[[Any], float] | None = None
    kind: str = "peer"
    note: str = ""
    loss_ref: str | None = None
    rtol: float | None = None
    quiet: bool = False
    quick: bool = True
    #: ``compiled() -> jax.stages.Compiled`` for a jitted row: its XLA memory analysis (temporary
    #: and output bytes) is recorded, untimed. Deterministic, unlike the timings: a loss whose
    #: value-and-grad needs a temporary as large as its gradient pays a second fresh buffer.
    compiled: Callable[[], Any] | None = None


@dataclasses.dataclass
class Target:
    """A goal from the issue: ``median(variant) <= max_ratio * median(baseline)``.

    A target also requires that neither row's final loss is flagged as different, plus
    ``extra(rows) -> (ok, detail)`` when given (``rows`` maps row names to their result dicts).
    """

    label: str
    variant: str
    baseline: str
    max_ratio: float
    extra: Callable[[dict[str, dict]], tuple[bool, str]] | None = None


@dataclasses.dataclass
class Case:
    """Rows timed together (interleaved) with one reference row for the ratios."""

    workload: str
    title: str
    params: dict
    variants: list[Variant]
    reference: str
    name: str | None = None  # defaults to the workload name
    loss_reference: str | None = None  # defaults to ``reference``
    rtol: float = 1e-3
    targets: list[Target] = dataclasses.field(default_factory=list)
    skipped: list[dict] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    warmup: int | None = None  # untimed calls after the first; None: the Config's

    def skip(self, variant: str, reason: str) -> None:
        self.skipped.append({"name": variant, "reason": reason})


@dataclasses.dataclass
class Workload:
    name: str
    description: str
    build: Callable[["Config"], list[Case]]


#: The registered workloads, in run order. Add one with :func:`workload`.
WORKLOADS: dict[str, Workload] = {}


def workload(name: str, description: str):
    """Register ``build(cfg: Config) -> list[Case]`` as the workload ``name``."""

    def register(build):
        if name in WORKLOADS:
            raise ValueError(f"a benchmark workload named {name!r} is already registered")
        WORKLOADS[name] = Workload(name, description, build)
        return build

    return register


@dataclasses.dataclass
class Config:
    """Options every workload reads: sizes (``quick``), repeats, and the optional peers."""

    quick: bool = False
    repeats: int = 5
    warmup: int = 1
    use_torch: bool = True
    seed: int = 0
    torch_threads: int | None = None  # torch.set_num_threads; None keeps PyTorch's default
    #: BLAS threads of numpy/scipy/scikit-learn while a case is timed (threadpoolctl, when it is
    #: installed; 0 leaves them alone). OpenBLAS's idle threads spin after a call: with its default
    #: 2 threads, the jloss call timed after a scipy L-BFGS-B run took 1.7x as long (51 vs 30 ms).
    blas_threads: int = 1
    #: Rows whose warm-up call is cheap get more repeats (up to ``max_repeats``) so that each row's
    #: timed calls fill about its share of ``case_budget_s``: a steadier median on a shared
    #: machine. Never fewer than ``repeats``; ``--quick`` always uses exactly ``repeats``.
    case_budget_s: float = 12.0
    max_repeats: int = 41
    #: The rows a target compares get at least this many repeats (if a call takes under
    #: ``target_row_max_s``): on a shared host a median of 5 calls of a second each moves by
    #: more than the targets' margins.
    target_repeats: int = 11
    target_row_max_s: float = 5.0

    def size(self, full: Any, quick: Any) -> Any:
        """``quick`` in ``--quick`` mode, else ``full``."""
        return quick if self.quick else full

    @property
    def torch(self):
        """The ``torch`` module, or ``None`` (see :attr:`torch_missing`)."""
        if not hasattr(self, "_torch"):
            self._torch = None
            self._torch_missing = ""
            if not self.use_torch:
                self._torch_missing = "PyTorch disabled (--no-torch)"
            elif importlib.util.find_spec("torch") is None:
                self._torch_missing = "PyTorch not installed (pip install 'jloss[torch]')"
            else:
                try:
                    self._torch = importlib.import_module("torch")
                except Exception as err:  # pragma: no cover - broken installs
                    self._torch_missing = f"PyTorch failed to import: {err}"
                else:
                    if self.torch_threads:
                        self._torch.set_num_threads(self.torch_threads)
        return self._torch

    @property
    def torch_missing(self) -> str:
        self.torch  # noqa: B018 - resolves the reason
        return self._torch_missing

    def optional(self, module: str):
        """Import an optional peer's module, or return ``None``."""
        if importlib.util.find_spec(module.split(".")[0]) is None:
            return None
        try:
            return importlib.import_module(module)
        except Exception:  # pragma: no cover - broken installs
            return None


# ----------------------------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------------------------


def _call(v: Variant) -> tuple[float, Any]:
    sink = open(os.devnull, "w") if v.quiet else None
    try:
        with contextlib.ExitStack() as stack:
            if sink is not None:
                stack.enter_context(contextlib.redirect_stdout(sink))
                stack.enter_context(contextlib.redirect_stderr(sink))
            t0 = time.perf_counter()
            out = v.run()
            jax.block_until_ready(out)
            elapsed = time.perf_counter() - t0
    finally:
        if sink is not None:
            sink.close()
    return elapsed, out


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1e-30)


def _blas_limit(cfg: Config) -> contextlib.AbstractContextManager:
    """A context with numpy/scipy's BLAS pools limited to ``cfg.blas_threads`` (a no-op without
    threadpoolctl, or with ``blas_threads=0``). Only libraries loaded by then are limited, so it is
    entered after a case's first calls."""
    threadpoolctl = cfg.optional("threadpoolctl") if cfg.blas_threads else None
    if threadpoolctl is None:
        return contextlib.nullcontext()
    return threadpoolctl.threadpool_limits(limits=cfg.blas_threads, user_api="blas")


def _repeat_counts(case: Case, cfg: Config, first_s: dict[str, float]) -> dict[str, int]:
    """Timed calls per row, from each row's first timed call: every row fills about its share of
    the case's budget (cheap rows, such as the jloss-vs-scan comparisons, get many repeats; a slow
    peer, such as a Python loop or PyTorch, the minimum), and the rows a target compares get at
    least ``cfg.target_repeats``."""
    share = cfg.case_budget_s / len(first_s)
    cap = max(cfg.max_repeats, cfg.repeats)
    judged = {name for t in case.targets for name in (t.variant, t.baseline)}
    counts = {}
    for name, first in first_s.items():
        n = max(cfg.repeats, int(share / max(first, 1e-9)))
        if name in judged and first < cfg.target_row_max_s:
            n = max(n, cfg.target_repeats)
        counts[name] = min(n, cap)
    return counts


def run_case(case: Case, cfg: Config, log: Callable[[str], None] = lambda s: None) -> dict:
    """Time every row of ``case`` (first call, warm-up, interleaved repeats); a result dict."""
    rows: dict[str, dict] = {}
    outputs: dict[str, Any] = {}
    live: list[Variant] = []
    if cfg.quick:
        for v in case.variants:
            if not v.quick:
                case.skip(v.name, "not in --quick")
        case.variants = [v for v in case.variants if v.quick]
    for v in case.variants:
        row = {"name": v.name, "kind": v.kind, "note": v.note, "times_s": [], "error": None}
        rows[v.name] = row
        try:
            row["first_call_s"], outputs[v.name] = _call(v)
            for _ in range(cfg.warmup if case.warmup is None else case.warmup):
                _call(v)
            live.append(v)
        except Exception as err:  # a broken row must not take the suite down; it is reported
            row["error"] = f"{type(err).__name__}: {err}".strip()[:500]
            log(f"    ! {v.name}: {row['error']}")
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        with _blas_limit(cfg):
            # A new random order every round (seeded): with a fixed cyclic order every row would
            # always follow the same neighbour, and a neighbour that leaves the machine busy (scipy's
            # L-BFGS-B row before jloss.minimize: up to 1.7x) would bias that one row.
            order = np.random.default_rng(cfg.seed)
            counts = {v.name: cfg.repeats for v in live}
            r = 0
            while r < max(counts.values(), default=0):
                this_round = [v for v in live if counts[v.name] > r]
                for i in order.permutation(len(this_round)):
                    v = this_round[i]
                    t, outputs[v.name] = _call(v)
                    rows[v.name]["times_s"].append(t)
                if r == 0 and not cfg.quick:
                    counts = _repeat_counts(case, cfg, {v.name: rows[v.name]["times_s"][0] for v in live})
                r += 1
        repeats = max(counts.values(), default=cfg.repeats)
    finally:
        if gc_was_enabled:
            gc.enable()

    ref_median = None
    for v in live:
        row = rows[v.name]
        ts = row["times_s"]
        row["median_s"] = statistics.median(ts)
        row["min_s"] = min(ts)
        row["max_s"] = max(ts)
        row["spread"] = (row["max_s"] - row["min_s"]) / row["median_s"] if row["median_s"] else 0.0
        row["compile_s"] = max(row["first_call_s"] - row["median_s"], 0.0)
        row["final_loss"] = float(v.loss(outputs[v.name])) if v.loss is not None else None
        row["temp_bytes"] = row["output_bytes"] = None
        if v.compiled is not None:
            try:
                mem = v.compiled().memory_analysis()
                row["temp_bytes"] = int(mem.temp_size_in_bytes)
                row["output_bytes"] = int(mem.output_size_in_bytes)
            except Exception:  # memory analysis is optional for a backend
                pass
    if case.reference in rows and rows[case.reference].get("median_s"):
        ref_median = rows[case.reference]["median_s"]
    loss_reference = case.loss_reference or case.reference
    for v in case.variants:
        row = rows[v.name]
        row["ratio"] = row["median_s"] / ref_median if (ref_median and "median_s" in row) else None
        row["loss_ref"] = None
        row["loss_rel_diff"] = None
        row["loss_rtol"] = None
        row["loss_flag"] = False
        if row.get("final_loss") is None:
            continue
        ref_name = v.loss_ref or loss_reference
        ref_loss = rows.get(ref_name, {}).get("final_loss")
        if ref_name == v.name or ref_loss is None:
            continue
        rtol = case.rtol if v.rtol is None else v.rtol
        diff = _rel(row["final_loss"], ref_loss)
        row.update(loss_ref=ref_name, loss_rel_diff=diff, loss_rtol=rtol)
        row["loss_flag"] = not diff <= rtol  # NaN is flagged too
    for v in case.variants:
        if not math.isfinite(rows[v.name].get("final_loss") or 0.0):
            rows[v.name]["loss_flag"] = True

    targets = [_evaluate(t, rows) for t in case.targets]
    return {
        "workload": case.workload,
        "case": case.name or case.workload,
        "title": case.title,
        "params": case.params,
        "reference": case.reference,
        "loss_reference": loss_reference,
        "rtol": case.rtol,
        "repeats": repeats,
        "rows": [rows[v.name] for v in case.variants],  # each with its own times_s (n per row)
        "skipped": case.skipped,
        "notes": case.notes,
        "targets": targets,
    }


def _evaluate(t: Target, rows: dict[str, dict]) -> dict:
    out = {
        "label": t.label,
        "variant": t.variant,
        "baseline": t.baseline,
        "max_ratio": t.max_ratio,
        "ratio": None,
        "ratio_of_min": None,
        "passed": False,
        "detail": "",
    }
    a, b = rows.get(t.variant), rows.get(t.baseline)
    if a is None or b is None or a.get("error") or b.get("error") or "median_s" not in a or "median_s" not in b:
        missing = [n for n, r in ((t.variant, a), (t.baseline, b)) if r is None or "median_s" not in r]
        out["detail"] = "not measured: " + ", ".join(missing)
        out["status"] = "n/a"
        return out
    ratio = a["median_s"] / b["median_s"]
    out["ratio"] = ratio
    out["ratio_of_min"] = a["min_s"] / b["min_s"]
    ok = ratio <= t.max_ratio
    details = []
    for r in (a, b):
        if r.get("loss_flag"):
            ok = False
            details.append(f"final loss of {r['name']} differs")
    if t.extra is not None:
        extra_ok, extra_detail = t.extra(rows)
        ok = ok and extra_ok
        if extra_detail:
            details.append(extra_detail)
    out["passed"] = bool(ok)
    out["status"] = "PASS" if ok else "MISS"
    out["detail"] = "; ".join(details)
    return out


# ----------------------------------------------------------------------------------------------
# Environment
# ----------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(module: str) -> str | None:
    try:
        from importlib import metadata

        return metadata.version(module)
    except Exception:
        return None


def _git_state() -> dict | None:
    """The checkout's commit and whether jloss/ has uncommitted changes (None outside git)."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(jloss.__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "jloss"], cwd=root, capture_output=True,
                               text=True, timeout=10, check=True).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "modified": sorted(line[3:] for line in dirty if line.strip())}


def environment(cfg: Config | None = None) -> dict:
    """Device, CPU, thread settings, versions and date: what a timing means depends on them."""
    dev = jax.devices()[0]
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    threads = {
        "cpu_count": os.cpu_count(),
        "cpu_affinity": affinity,
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "MKL_NUM_THREADS": os.environ.get("MKL_NUM_THREADS"),
        "OPENBLAS_NUM_THREADS": os.environ.get("OPENBLAS_NUM_THREADS"),
    }
    if cfg is not None and cfg.blas_threads and importlib.util.find_spec("threadpoolctl") is not None:
        threads["blas_threads_while_timing"] = cfg.blas_threads
    torch = cfg.torch if cfg is not None else None
    if torch is not None:
        threads["torch_num_threads"] = torch.get_num_threads()
        threads["torch_num_interop_threads"] = torch.get_num_interop_threads()
    versions = {
        "python": platform.python_version(),
        "jloss": getattr(jloss, "__version__", None),
        "jax": jax.__version__,
        "jaxlib": _version("jaxlib"),
        "optax": _version("optax"),
        "numpy": np.__version__,
        "scipy": _version("scipy"),
        "torch": _version("torch") if torch is not None else None,
        "scikit-learn": _version("scikit-learn"),
    }
    return {
        "platform": dev.platform,
        "device_kind": dev.device_kind,
        "device_count": jax.device_count(),
        "devices": [str(d) for d in jax.devices()],
        "cpu_model": _cpu_model(),
        "machine": platform.machine(),
        "os": platform.platform(),
        "threads": threads,
        "versions": versions,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "git": _git_state(),
    }


def _device_line(env: dict) -> str:
    t = env["threads"]
    threads = f"{t['cpu_count']} CPUs ({t['cpu_affinity']} usable)"
    if "blas_threads_while_timing" in t:
        threads += f", BLAS {t['blas_threads_while_timing']} thread(s)"
    if "torch_num_threads" in t:
        threads += f", torch {t['torch_num_threads']} threads"
    if t.get("XLA_FLAGS"):
        threads += f", XLA_FLAGS={t['XLA_FLAGS']}"
    v = env["versions"]
    vers = ", ".join(f"{k} {v[k]}" for k in ("jax", "optax", "numpy", "torch", "scipy", "scikit-learn") if v.get(k))
    dev = f"{env['platform']} / {env['device_kind']} x{env['device_count']}"
    return f"{dev}; CPU {env['cpu_model']}; {threads}; {vers}; {env['date']}"


# ----------------------------------------------------------------------------------------------
# Reusable builders: problems, the Python-loop idiom, the hand-fused scan, the matvec floor
# ----------------------------------------------------------------------------------------------


def huber_problem(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Linear data with heavy-tailed (Student t, 2 dof) noise: float32 ``X (n, d)``, ``y (n,)``."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal(d) / np.sqrt(d)
    y = X @ w + 0.5 + 0.3 * rng.standard_t(2, size=n)
    return X, y.astype(np.float32)


def classification_problem(n: int, d: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian features and labels from a noisy linear softmax model: ``X (n, d)``, ``y (n,)`` int32."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32)
    W = rng.standard_normal((d, c)) / np.sqrt(d) * 2.0
    y = np.argmax(X @ W + rng.gumbel(size=(n, c)), axis=1).astype(np.int32)
    return X, y


def linear_params(d: int, c: int | None = None) -> dict:
    """Zero parameters ``{"w": (d,) or (d, c), "b": () or (c,)}``."""
    if c is None:
        return {"w": jnp.zeros((d,), jnp.float32), "b": jnp.zeros((), jnp.float32)}
    return {"w": jnp.zeros((d, c), jnp.float32), "b": jnp.zeros((c,), jnp.float32)}


def huber_objective(params, delta, X, y):
    """``mean jloss.huber(X @ w + b, y, delta)``, the objective of the regression workloads."""
    return jloss.huber(X @ params["w"] + params["b"], y, delta)


def fused_scan(fun: Callable, optimizer: optax.GradientTransformation, steps: int, *, history: bool = True):
    """The hand-fused loop: ``steps`` updates of ``optimizer`` in one ``lax.scan``.

    ``solve(params, *args) -> (params, final_loss, history)``. With ``history`` each step takes
    ``value_and_grad`` and the scan stacks the losses (what ``minimize`` returns by default);
    without, it takes ``grad`` only and ``history`` is ``None``. Not jitted: wrap it (or vmap it).
    """

    def solve(params, *args):
        def body(carry, _):
            p, s = carry
            if history:
                value, g = jax.value_and_grad(fun)(p, *args)
            else:
                value, g = None, jax.grad(fun)(p, *args)
            u, s = optimizer.update(g, s, p)
            return (optax.apply_updates(p, u), s), value

        (p, _), hist = lax.scan(body, (params, optimizer.init(params)), None, length=steps)
        return p, fun(p, *args), hist

    return solve


def python_loop(fun: Callable, optimizer: optax.GradientTransformation, steps: int):
    """The usual idiom: a ``@jax.jit`` step called ``steps`` times from Python.

    ``solve(params, *args) -> (params, final_loss)``; the loss of every step is kept (as device
    arrays, no host sync) like a user's loss curve.
    """

    @jax.jit
    def step(p, s, *args):
        value, g = jax.value_and_grad(fun)(p, *args)
        u, s = optimizer.update(g, s, p)
        return optax.apply_updates(p, u), s, value

    final = jax.jit(fun)

    def solve(params, *args):
        p, s = params, optimizer.init(params)
        losses = []
        for _ in range(steps):
            p, s, value = step(p, s, *args)
            losses.append(value)
        return p, final(p, *args)

    return solve


def _xt_dot(X, v):
    """``X.T @ v`` as one dot contracting axis 0: ``X.T @ v`` in jnp makes XLA CPU copy a
    transposed X every step (a 128 MB copy on the large problem), which no floor should pay."""
    return lax.dot_general(X, v, (((0,), (0,)), ((), ())))


def matvec_floor(X: jax.Array, steps: int, width: int | None = None):
    """The matrix products alone: ``steps`` times ``w <- s * X.T @ (X @ w)``, in one scan.

    ``width`` columns (``w`` of shape ``(d, width)``) for a batch of problems or classes, else a
    vector. ``s = 1 / lambda_max(X.T X)`` keeps the iterate bounded. ``X.T @ v`` is one
    ``dot_general`` contracting X's axis 0 (the same dot autodiff emits for the gradient), never a
    transposed copy. Returns ``run() -> w``.
    """
    Xn = np.asarray(X, np.float64)
    s = np.float32(1.0 / max(np.linalg.eigvalsh(Xn.T @ Xn)[-1], 1e-12))
    d = X.shape[1]
    w0 = jnp.ones((d,) if width is None else (d, width), X.dtype)

    @jax.jit
    def floor(X, w):
        def body(w, _):
            return _xt_dot(X, X @ w) * s, None

        return lax.scan(body, w, None, length=steps)[0]

    return lambda: floor(X, w0)


def _jloss_minimize():
    try:
        return importlib.import_module("jloss.minimize").minimize
    except Exception as err:
        return err


def _jloss_sweep():
    try:
        return importlib.import_module("jloss.sweep").sweep
    except Exception as err:
        return err


def _torch_device(torch) -> Any:
    if jax.default_backend() == "gpu" and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _torch_sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _torch_huber_regression(cfg, X, y, steps, lr, delta, batch_perms=None):
    """PyTorch: the same model, loss (``F.huber_loss``, same convention) and Adam, on ``device``."""
    torch = cfg.torch
    F = torch.nn.functional
    device = _torch_device(torch)
    Xt, yt = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
    d = X.shape[1]

    def run():
        w = torch.zeros(d, device=device, requires_grad=True)
        b = torch.zeros((), device=device, requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=lr)
        for i in range(steps):
            if batch_perms is None:
                xb, yb = Xt, yt
            else:
                idx = batch_perms(i)
                xb, yb = Xt[idx], yt[idx]
            opt.zero_grad(set_to_none=True)
            loss = F.huber_loss(xb @ w + b, yb, delta=delta)
            loss.backward()
            opt.step()
        with torch.no_grad():
            out = float(F.huber_loss(Xt @ w + b, yt, delta=delta))
        _torch_sync(torch, device)
        return out

    return run


def _result_loss(result) -> float:
    return float(result.loss)


def _total_loss(result) -> float:
    return float(jnp.mean(result.loss))


# ----------------------------------------------------------------------------------------------
# Workloads
# ----------------------------------------------------------------------------------------------


def _regression_case(cfg: Config, *, name: str, n: int, d: int, steps: int, lr: float, small: bool) -> Case:
    delta = 1.0
    X_np, y_np = huber_problem(n, d, cfg.seed)
    X, y = jnp.asarray(X_np), jnp.asarray(y_np)
    params0 = linear_params(d)

    def fun(params, X, y):
        return huber_objective(params, delta, X, y)

    adam = optax.adam(lr)
    title = f"Huber regression N={n:,}, d={d}, Adam(lr={lr}), {steps:,} steps"
    case = Case(
        name,
        title,
        {"n": n, "d": d, "steps": steps, "optimizer": f"adam({lr})", "delta": delta},
        variants=[],
        reference="lax.scan (hand-fused)",
        # seconds per call on the large problem: the first call is the only warm-up
        warmup=None if small else 0,
    )
    minimize = _jloss_minimize()
    V = case.variants
    if isinstance(minimize, Exception):
        case.skip("jloss.minimize", f"jloss.minimize unavailable: {minimize}")
    else:
        V.append(Variant("jloss.minimize", lambda: minimize(fun, params0, adam, args=(X, y), max_steps=steps),
                         _result_loss, "jloss", "defaults: history=True"))
        if small:
            V.append(Variant("jloss.minimize (history=False)",
                             lambda: minimize(fun, params0, adam, args=(X, y), max_steps=steps, history=False),
                             _result_loss, "jloss", quick=False))
        if small and cfg.optional("tqdm") is not None:
            V.append(Variant("jloss.minimize (progress=True)",
                             lambda: minimize(fun, params0, adam, args=(X, y), max_steps=steps, progress=True),
                             _result_loss, "jloss", "tqdm bar drawn to os.devnull", quiet=True,
                             quick=False))
    scan = jax.jit(fused_scan(fun, adam, steps))
    scan_grad = jax.jit(fused_scan(fun, adam, steps, history=False))
    V.append(Variant("lax.scan (hand-fused)", lambda: scan(params0, X, y), lambda o: o[1], "peer",
                     "value_and_grad per step, losses stacked (same outputs as minimize)"))
    if small:
        V.append(Variant("lax.scan (grad only)", lambda: scan_grad(params0, X, y), lambda o: o[1], "peer",
                         "no loss per step: the least work", quick=False))
    loop = python_loop(fun, adam, steps)
    V.append(Variant("Python loop of @jax.jit step", lambda: loop(params0, X, y), lambda o: o[1], "peer",
                     quick=small))
    if cfg.torch is not None:
        V.append(Variant("torch", _torch_huber_regression(cfg, X_np, y_np, steps, lr, delta), float, "peer",
                         "F.huber_loss + torch.optim.Adam, float32", quick=small))
    else:
        case.skip("torch", cfg.torch_missing)
    V.append(Variant("floor: matvecs alone", matvec_floor(X, steps), None, "floor",
                     "X @ w and X.T @ v per step, nothing else", quick=small))

    if small and not cfg.quick:  # optax.lbfgs compiles for seconds
        _add_lbfgs(cfg, case, fun, params0, X, y, minimize)

    if not isinstance(minimize, Exception):
        case.targets.append(Target("minimize (Adam) <= 1.0x hand-fused scan", "jloss.minimize",
                                   "lax.scan (hand-fused)", 1.0))
        if small:
            case.targets.append(Target("minimize >= 5x faster than the Python-loop idiom", "jloss.minimize",
                                       "Python loop of @jax.jit step", 0.2))
            if any(v.name == "jloss.minimize (progress=True)" for v in V):
                case.targets.append(Target("progress bar costs <= 5%", "jloss.minimize (progress=True)",
                                           "jloss.minimize", 1.05))
    return case


def _add_lbfgs(cfg, case, fun, params0, X, y, minimize):
    """scipy L-BFGS-B with a jitted value-and-grad, and minimize with optax.lbfgs, on ``case``."""
    from jax.flatten_util import ravel_pytree

    optimize = cfg.optional("scipy.optimize")
    flat0, unravel = ravel_pytree(params0)
    vg = jax.jit(jax.value_and_grad(lambda x, X, y: fun(unravel(x), X, y)))
    info = {}
    if optimize is None:
        case.skip("scipy L-BFGS-B", "scipy not installed")
    else:
        def scipy_run():
            def f(x):
                v, g = vg(jnp.asarray(x, jnp.float32), X, y)
                return float(v), np.asarray(g, np.float64)

            res = optimize.minimize(f, np.zeros(flat0.shape), jac=True, method="L-BFGS-B",
                                    options={"maxiter": 1000})
            info["scipy_iterations"] = int(res.nit)
            info["scipy_evaluations"] = int(res.nfev)
            return float(res.fun)

        case.variants.append(Variant("scipy L-BFGS-B", scipy_run, float, "peer",
                                     "jitted float32 value_and_grad, scipy defaults", rtol=1e-3))
    if isinstance(minimize, Exception):
        return
    lbfgs = optax.lbfgs()
    tol = 1e-5

    def jloss_run():
        return minimize(fun, params0, lbfgs, args=(X, y), max_steps=500, tol=tol)

    ref = "scipy L-BFGS-B" if optimize is not None else None
    case.variants.append(Variant("jloss.minimize (optax.lbfgs)", jloss_run, _result_loss, "jloss",
                                 f"tol={tol} on the gradient norm", loss_ref=ref, rtol=1e-6 if ref else None))
    case.notes.append("L-BFGS rows solve to optimality; Adam rows run a fixed number of steps.")
    if optimize is None:
        return

    def reached(rows):
        a, b = rows["jloss.minimize (optax.lbfgs)"], rows["scipy L-BFGS-B"]
        if a.get("final_loss") is None or b.get("final_loss") is None:
            return False, "no final loss"
        ok = a["final_loss"] <= b["final_loss"] * (1 + 1e-6)
        its = f" (scipy: {info.get('scipy_iterations')} iterations)" if info else ""
        return ok, f"loss {a['final_loss']:.7g} vs scipy {b['final_loss']:.7g}{its}"

    case.targets.append(Target("minimize(optax.lbfgs) reaches scipy's loss (1e-6 rel) in <= 0.5x its time",
                               "jloss.minimize (optax.lbfgs)", "scipy L-BFGS-B", 0.5, reached))


@workload("small_huber", "small Huber regression: loop overhead (N=2,000, d=16, Adam, 2,000 steps)")
def _small_huber(cfg: Config) -> list[Case]:
    n, d, steps = cfg.size((2000, 16, 2000), (200, 8, 50))
    return [_regression_case(cfg, name="small_huber", n=n, d=d, steps=steps, lr=0.05, small=True)]


@workload("large_huber", "large Huber regression: memory bound (N=500,000, d=64, Adam, 100 steps)")
def _large_huber(cfg: Config) -> list[Case]:
    n, d, steps = cfg.size((500_000, 64, 100), (2000, 16, 10))
    return [_regression_case(cfg, name="large_huber", n=n, d=d, steps=steps, lr=0.05, small=False)]


@workload("sweep", "64 Huber deltas x 1,000 Adam steps on the small problem; early stopping in a batch")
def _sweep_workload(cfg: Config) -> list[Case]:
    n, d, steps, k = cfg.size((2000, 16, 1000, 64), (200, 8, 20, 8))
    lr = 0.05
    X_np, y_np = huber_problem(n, d, cfg.seed)
    X, y = jnp.asarray(X_np), jnp.asarray(y_np)
    deltas_np = np.geomspace(0.05, 5.0, k).astype(np.float32)
    deltas = jnp.asarray(deltas_np)
    params0 = linear_params(d)
    adam = optax.adam(lr)
    fun = huber_objective  # fun(params, delta, X, y)
    case = Case(
        "sweep",
        f"{k} Huber deltas x {steps:,} Adam steps, N={n:,}, d={d}",
        {"n": n, "d": d, "steps": steps, "members": k, "optimizer": f"adam({lr})"},
        variants=[],
        reference="vmap of lax.scan (hand-fused)",
        warmup=0,  # the loop rows take seconds per call: the first call is the warm-up
    )
    V = case.variants
    sweep, minimize = _jloss_sweep(), _jloss_minimize()
    mean_of = lambda losses: float(np.mean(np.asarray(losses)))  # noqa: E731

    if isinstance(sweep, Exception):
        case.skip("jloss.sweep", f"jloss.sweep unavailable: {sweep}")
    else:
        V.append(Variant("jloss.sweep", lambda: sweep(fun, params0, adam, deltas, args=(X, y), max_steps=steps),
                         _total_loss, "jloss", "one vmapped while_loop"))
    if not isinstance(minimize, Exception):
        def minimize_loop():
            return [minimize(fun, params0, adam, args=(dl, X, y), max_steps=steps).loss for dl in deltas]

        V.append(Variant("loop of jloss.minimize", minimize_loop, mean_of, "jloss",
                         f"{k} calls, one compiled program"))
    else:
        case.skip("loop of jloss.minimize", f"jloss.minimize unavailable: {minimize}")
    solve = fused_scan(fun, adam, steps)
    vscan = jax.jit(jax.vmap(solve, in_axes=(None, 0, None, None)))
    V.append(Variant("vmap of lax.scan (hand-fused)", lambda: vscan(params0, deltas, X, y), lambda o: mean_of(o[1])))
    one = jax.jit(solve)
    V.append(Variant("loop of lax.scan (hand-fused)", lambda: [one(params0, dl, X, y)[1] for dl in deltas],
                     mean_of, quick=False))
    idiom = python_loop(fun, adam, steps)
    V.append(Variant("loop of Python-loop idiom", lambda: [idiom(params0, dl, X, y)[1] for dl in deltas_np],
                     mean_of, quick=False))
    case.skip("torch", "not in this comparison (the issue's sweep peers are the JAX loops and scikit-learn); "
              "see the small_huber row for PyTorch's per-step cost")
    linear_model = cfg.optional("sklearn.linear_model")
    if linear_model is not None:
        eps = np.linspace(1.05, 3.0, k)

        def sk_run():
            for e in eps:
                linear_model.HuberRegressor(epsilon=float(e), alpha=0.0, max_iter=100).fit(X_np, y_np)
            return None

        V.append(Variant(f"scikit-learn HuberRegressor x{k}", sk_run, None, "peer",
                         "different objective (joint scale estimate, epsilon in units of sigma): time only",
                         quick=False))
    else:
        case.skip("scikit-learn HuberRegressor", "scikit-learn not installed (optional)")
    V.append(Variant("floor: batched matvecs alone", matvec_floor(X, steps, width=k), None, "floor",
                     f"X @ W and X.T @ V with W of shape (d, {k})", quick=False))
    if not isinstance(sweep, Exception) and not isinstance(minimize, Exception):
        case.targets.append(Target(f"sweep of {k} deltas <= 0.25x a loop of minimize calls", "jloss.sweep",
                                   "loop of jloss.minimize", 0.25))
    cases = [case]
    if not isinstance(sweep, Exception) and not cfg.quick:  # its probe solve compiles at build time
        cases.append(_early_stop_case(cfg, sweep, X, y, params0, fun))
    return cases


def _early_stop_case(cfg, sweep, X, y, params0, fun) -> Case:
    """A sweep with tol whose members stop at different steps vs the same sweep run to the last."""
    k = cfg.size(64, 8)
    deltas = jnp.asarray(np.geomspace(0.05, 5.0, k).astype(np.float32))
    lr = 0.05
    sgd = optax.sgd(lr)
    tol = 1e-5
    cap = 50_000
    probe = sweep(fun, params0, sgd, deltas, args=(X, y), max_steps=cap, tol=tol, history=False)
    steps = np.asarray(probe.steps)
    slowest = int(steps.max())
    case = Case(
        "sweep",
        f"{k} Huber deltas, SGD({lr}), tol={tol:g}: members stop after {int(steps.min()):,} to {slowest:,} steps",
        {"members": k, "tol": tol, "optimizer": f"sgd({lr})", "min_steps": int(steps.min()),
         "median_steps": float(np.median(steps)), "max_steps": slowest, "converged": int(np.sum(probe.converged))},
        variants=[],
        reference="jloss.sweep (no tol, max_steps=slowest)",
        name="sweep_early_stop",
        rtol=1e-3,
    )
    case.variants.append(Variant("jloss.sweep (tol)",
                                 lambda: sweep(fun, params0, sgd, deltas, args=(X, y), max_steps=cap, tol=tol),
                                 _total_loss, "jloss", "members stop on their own gradient norm"))
    case.variants.append(Variant("jloss.sweep (no tol, max_steps=slowest)",
                                 lambda: sweep(fun, params0, sgd, deltas, args=(X, y), max_steps=slowest),
                                 _total_loss, "jloss", "every member runs as long as the slowest"))
    case.targets.append(Target("early-stopped members cost the batch no more than the slowest member (<= 1.05x)",
                               "jloss.sweep (tol)", "jloss.sweep (no tol, max_steps=slowest)", 1.05))
    if int(steps.min()) == slowest:
        case.notes.append("all members stopped at the same step: the case does not exercise early stopping")
    return case


@workload("cross_entropy", "softmax cross-entropy (N=20,000, d=64, 10 classes, Adam, 500 steps)")
def _cross_entropy(cfg: Config) -> list[Case]:
    n, d, c, steps = cfg.size((20_000, 64, 10, 500), (500, 8, 4, 20))
    lr = 0.05
    X_np, y_np = classification_problem(n, d, c, cfg.seed)
    X, y = jnp.asarray(X_np), jnp.asarray(y_np)
    params0 = linear_params(d, c)

    def fun(params, X, y):
        return jloss.cross_entropy(X @ params["w"] + params["b"], y)

    adam = optax.adam(lr)
    case = Case(
        "cross_entropy",
        f"softmax cross-entropy N={n:,}, d={d}, {c} classes, Adam(lr={lr}), {steps:,} steps",
        {"n": n, "d": d, "classes": c, "steps": steps, "optimizer": f"adam({lr})"},
        variants=[],
        reference="lax.scan (hand-fused)",
        warmup=0,  # seconds per call: the first call is the warm-up
    )
    V = case.variants
    minimize = _jloss_minimize()
    if isinstance(minimize, Exception):
        case.skip("jloss.minimize", f"jloss.minimize unavailable: {minimize}")
    else:
        V.append(Variant("jloss.minimize", lambda: minimize(fun, params0, adam, args=(X, y), max_steps=steps),
                         _result_loss, "jloss", "defaults: history=True"))
        V.append(Variant("jloss.minimize (history=False)",
                         lambda: minimize(fun, params0, adam, args=(X, y), max_steps=steps, history=False),
                         _result_loss, "jloss", quick=False))
    scan = jax.jit(fused_scan(fun, adam, steps))
    scan_grad = jax.jit(fused_scan(fun, adam, steps, history=False))
    V.append(Variant("lax.scan (hand-fused)", lambda: scan(params0, X, y), lambda o: o[1], "peer",
                     "value_and_grad per step, losses stacked"))
    V.append(Variant("lax.scan (grad only)", lambda: scan_grad(params0, X, y), lambda o: o[1], "peer",
                     quick=False))
    loop = python_loop(fun, adam, steps)
    V.append(Variant("Python loop of @jax.jit step", lambda: loop(params0, X, y), lambda o: o[1], "peer",
                     quick=False))
    if cfg.torch is not None:
        V.append(Variant("torch", _torch_cross_entropy(cfg, X_np, y_np, c, steps, lr), float, "peer",
                         "F.cross_entropy + torch.optim.Adam", quick=False))
    else:
        case.skip("torch", cfg.torch_missing)
    V.append(Variant("floor: matmuls alone", matvec_floor(X, steps, width=c), None, "floor",
                     f"X @ W and X.T @ G per step, W of shape (d, {c})", quick=False))
    if not isinstance(minimize, Exception):
        case.targets.append(Target("minimize (Adam) <= 1.0x hand-fused scan", "jloss.minimize",
                                   "lax.scan (hand-fused)", 1.0))
    return [case]


def _torch_cross_entropy(cfg, X_np, y_np, c, steps, lr):
    torch = cfg.torch
    F = torch.nn.functional
    device = _torch_device(torch)
    Xt, yt = torch.from_numpy(X_np).to(device), torch.from_numpy(y_np.astype(np.int64)).to(device)
    d = X_np.shape[1]

    def run():
        W = torch.zeros(d, c, device=device, requires_grad=True)
        b = torch.zeros(c, device=device, requires_grad=True)
        opt = torch.optim.Adam([W, b], lr=lr)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(Xt @ W + b, yt).backward()
            opt.step()
        with torch.no_grad():
            out = float(F.cross_entropy(Xt @ W + b, yt))
        _torch_sync(torch, device)
        return out

    return run


@workload("minibatch", "minibatch Huber regression (N=100,000, d=32, batch 500, Adam, 2,000 steps)")
def _minibatch(cfg: Config) -> list[Case]:
    n, d, bs, steps = cfg.size((100_000, 32, 500, 2000), (1000, 8, 100, 20))
    lr, delta = 0.01, 1.0
    nb = n // bs
    epochs = steps // nb
    assert epochs * nb == steps, "steps must be whole epochs"
    X_np, y_np = huber_problem(n, d, cfg.seed)
    X, y = jnp.asarray(X_np), jnp.asarray(y_np)
    params0 = linear_params(d)
    key = jax.random.key(cfg.seed)

    def fun(params, X, y):
        return huber_objective(params, delta, X, y)

    adam = optax.adam(lr)
    case = Case(
        "minibatch",
        f"minibatch Huber regression N={n:,}, d={d}, batch {bs}, Adam(lr={lr}), {steps:,} steps ({epochs} epochs)",
        {"n": n, "d": d, "batch_size": bs, "steps": steps, "optimizer": f"adam({lr})"},
        variants=[],
        reference="lax.scan (hand-fused)",
    )
    V = case.variants
    minimize = _jloss_minimize()
    if isinstance(minimize, Exception):
        case.skip("jloss.minimize", f"jloss.minimize unavailable: {minimize}")
    else:
        V.append(Variant("jloss.minimize (batch_size)",
                         lambda: minimize(fun, params0, adam, args=(X, y), max_steps=steps, batch_size=bs, key=key),
                         _result_loss, "jloss", "per-epoch shuffle, gather in the loop, full-data final loss"))

    def epoch_perm(e):
        return jax.random.permutation(jax.random.fold_in(key, e), n)

    @jax.jit
    def scan(params, X, y):
        def epoch(carry, e):
            perm = epoch_perm(e)

            def step(carry, i):
                p, s = carry
                idx = lax.dynamic_slice_in_dim(perm, i * bs, bs)
                value, g = jax.value_and_grad(fun)(p, jnp.take(X, idx, axis=0), jnp.take(y, idx, axis=0))
                u, s = adam.update(g, s, p)
                return (optax.apply_updates(p, u), s), value

            return lax.scan(step, carry, jnp.arange(nb))

        (p, _), hist = lax.scan(epoch, (params, adam.init(params)), jnp.arange(epochs))
        return p, fun(p, X, y), hist.reshape(-1)

    V.append(Variant("lax.scan (hand-fused)", lambda: scan(params0, X, y), lambda o: o[1], "peer",
                     "the same shuffles as minimize (fold_in(key, epoch))"))

    step_fn = jax.jit(lambda p, s, xb, yb: _adam_step(fun, adam, p, s, xb, yb))
    perm_fn = jax.jit(epoch_perm)
    final = jax.jit(fun)

    def idiom():
        p, s = params0, adam.init(params0)
        for e in range(epochs):
            perm = np.asarray(perm_fn(e))
            for i in range(nb):
                idx = perm[i * bs:(i + 1) * bs]
                p, s, _ = step_fn(p, s, X_np[idx], y_np[idx])
        return p, final(p, X, y)

    V.append(Variant("Python loop of @jax.jit step", idiom, lambda o: o[1], "peer",
                     "numpy batches from host memory, the same shuffles", quick=False))
    if cfg.torch is not None:
        torch = cfg.torch
        gen = torch.Generator()
        perm = [None]

        def batch_perms(i):
            if i == 0:
                gen.manual_seed(cfg.seed)  # every run sees the same shuffles
            j = i % nb
            if j == 0:
                perm[0] = torch.randperm(n, generator=gen)
            return perm[0][j * bs:(j + 1) * bs]

        V.append(Variant("torch", _torch_huber_regression(cfg, X_np, y_np, steps, lr, delta, batch_perms), float,
                         "torch.randperm per epoch (its own shuffles)", rtol=2e-2,
                         quick=False))
    else:
        case.skip("torch", cfg.torch_missing)

    @jax.jit
    def floor(X, w):
        def epoch(w, e):
            perm = epoch_perm(e)

            def step(w, i):
                idx = lax.dynamic_slice_in_dim(perm, i * bs, bs)
                xb = jnp.take(X, idx, axis=0)
                return _xt_dot(xb, xb @ w) * (1.0 / bs), None

            return lax.scan(step, w, jnp.arange(nb))[0], None

        return lax.scan(epoch, w, jnp.arange(epochs))[0]

    w0 = jnp.ones((d,), jnp.float32)
    V.append(Variant("floor: shuffle + gather + matvecs", lambda: floor(X, w0), None, "floor",
                     "the same permutations and row gathers, then X_b @ w and X_b.T @ v", quick=False))
    if not isinstance(minimize, Exception):
        case.targets.append(Target("minimize (minibatch) <= 1.0x hand-fused scan", "jloss.minimize (batch_size)",
                                   "lax.scan (hand-fused)", 1.0))
    return [case]


def _adam_step(fun, opt, p, s, *args):
    value, g = jax.value_and_grad(fun)(p, *args)
    u, s = opt.update(g, s, p)
    return optax.apply_updates(p, u), s, value


# The loss kernel workload -------------------------------------------------------------------


def _kernel_inputs(name: str, kind: str, n: int, rng: np.random.Generator):
    """Predictions and targets with ``n`` float32 prediction elements for a registered loss."""
    if kind == "multiclass":
        c = 10
        z = rng.standard_normal((n // c, c), dtype=np.float32) * 2
        labels = rng.integers(0, c, size=n // c).astype(np.int32)
        return z, labels
    p = rng.standard_normal(n, dtype=np.float32) * 2
    if kind == "binary":
        t = rng.integers(0, 2, size=n).astype(np.float32)
        if "hinge" in name:
            t = 2 * t - 1
        return p, t
    return p, rng.standard_normal(n, dtype=np.float32)


def _kernel_peers(name: str, info) -> dict[str, Callable]:
    """Hand-written and optax equivalents of a loss's mean (same convention as jloss)."""
    h = info.default
    peers: dict[str, Callable] = {}
    if name == "mse":
        peers["optax.squared_error"] = lambda p, t: jnp.mean(optax.squared_error(p, t))
    elif name == "mae":
        peers["hand-written jnp.abs"] = lambda p, t: jnp.mean(jnp.abs(p - t))
    elif name == "huber":
        peers["optax.huber_loss"] = lambda p, t: jnp.mean(optax.huber_loss(p, t, delta=h))

        def hand(p, t):
            r = p - t
            a = jnp.abs(r)
            return jnp.mean(jnp.where(a <= h, 0.5 * r * r, h * (a - 0.5 * h)))

        peers["hand-written jnp.where"] = hand
    elif name == "pseudo_huber":
        peers["hand-written formula"] = lambda p, t: jnp.mean(h * h * (jnp.sqrt(1 + ((p - t) / h) ** 2) - 1))
    elif name == "log_cosh":
        peers["optax.log_cosh"] = lambda p, t: jnp.mean(optax.log_cosh(p, t))
    elif name == "quantile":
        peers["hand-written max"] = lambda p, t: jnp.mean(jnp.maximum(h * (t - p), (h - 1) * (t - p)))
    elif name == "epsilon_insensitive":
        peers["hand-written relu"] = lambda p, t: jnp.mean(jax.nn.relu(jnp.abs(p - t) - h))
    elif name == "cross_entropy":
        peers["optax.softmax_cross_entropy_with_integer_labels"] = (
            lambda z, y: jnp.mean(optax.softmax_cross_entropy_with_integer_labels(z, y)))
    elif name == "binary_cross_entropy":
        peers["optax.sigmoid_binary_cross_entropy"] = lambda p, t: jnp.mean(optax.sigmoid_binary_cross_entropy(p, t))
    elif name == "hinge":
        peers["optax.hinge_loss"] = lambda p, t: jnp.mean(optax.hinge_loss(p, t))
    elif name == "squared_hinge":
        peers["hand-written relu^2"] = lambda p, t: jnp.mean(jnp.square(jax.nn.relu(1 - p * t)))
    elif name == "multiclass_hinge":
        peers["optax.losses.multiclass_hinge_loss"] = (
            lambda z, y: jnp.mean(optax.losses.multiclass_hinge_loss(z, y)))
    return peers


def _torch_kernel(cfg, name: str, p_np, t_np):
    torch = cfg.torch
    F = torch.nn.functional
    fns = {
        "mse": F.mse_loss,
        "mae": F.l1_loss,
        "huber": lambda p, t: F.huber_loss(p, t, delta=1.0),
        "cross_entropy": F.cross_entropy,
        "binary_cross_entropy": F.binary_cross_entropy_with_logits,
    }
    if name not in fns:
        return None
    fn = fns[name]
    device = _torch_device(torch)
    p = torch.from_numpy(p_np).to(device).requires_grad_(True)
    t = torch.from_numpy(t_np.astype(np.int64) if t_np.dtype == np.int32 else t_np).to(device)

    def run():
        p.grad = None
        loss = fn(p, t)
        loss.backward()
        _torch_sync(torch, device)
        return loss.item()

    return run


@workload("loss_kernel", "value-and-grad of every registered loss on 10^7 float32 elements vs a streaming pass")
def _loss_kernel(cfg: Config) -> list[Case]:
    n = cfg.size(10_000_000, 100_000)
    rng = np.random.default_rng(cfg.seed)
    cases = []
    sub = jax.jit(lambda a, b: a - b)
    sub_cls = jax.jit(lambda z, y: z - y[:, None].astype(z.dtype))
    names = jloss.available()
    if cfg.quick:  # one loss of each kind: the smoke run checks the harness, not every kernel
        names = [n for n in ("huber", "binary_cross_entropy", "cross_entropy") if n in names] or names[:1]
    for name in names:
        info = jloss.info(name)
        p_np, t_np = _kernel_inputs(name, info.kind, n, rng)
        p, t = jnp.asarray(p_np), jnp.asarray(t_np)
        fn = info.fn
        vg = jax.jit(jax.value_and_grad(lambda p, t, fn=fn: fn(p, t)))
        case = Case(
            "loss_kernel",
            f"{name}: value-and-grad of the mean, {p_np.size:,} float32 elements {tuple(p_np.shape)}",
            {"loss": name, "elements": int(p_np.size), "shape": list(p_np.shape), "kind": info.kind},
            variants=[],
            reference="floor: jit stream",
            name=f"loss_kernel/{name}",
            loss_reference="jloss",
            rtol=1e-4,
        )
        V = case.variants
        V.append(Variant("jloss", lambda vg=vg, p=p, t=t: vg(p, t), lambda o: o[0], "jloss",
                         f"jax.jit(jax.value_and_grad(jloss.{name}))",
                         compiled=lambda vg=vg, p=p, t=t: vg.lower(p, t).compile()))
        for peer, f in _kernel_peers(name, info).items():
            g = jax.jit(jax.value_and_grad(f))
            V.append(Variant(peer, lambda g=g, p=p, t=t: g(p, t), lambda o: o[0], "peer", quick=False,
                             compiled=lambda g=g, p=p, t=t: g.lower(p, t).compile()))
        if cfg.torch is not None:
            run = _torch_kernel(cfg, name, p_np, t_np)
            if run is not None:
                V.append(Variant("torch", run, float, "peer", "loss.backward() into a fresh .grad", quick=False))
        else:
            case.skip("torch", cfg.torch_missing)
        if info.kind == "multiclass":
            floor = lambda p=p, t=t: sub_cls(p, t)  # noqa: E731
            out = np.empty_like(p_np)
            t_col = t_np[:, None]
            np_floor = lambda p_np=p_np, t_col=t_col, out=out: np.subtract(p_np, t_col, out=out)  # noqa: E731
        else:
            floor = lambda p=p, t=t: sub(p, t)  # noqa: E731
            out = np.empty_like(p_np)
            np_floor = lambda p_np=p_np, t_np=t_np, out=out: np.subtract(p_np, t_np, out=out)  # noqa: E731
        jit_floor = sub_cls if info.kind == "multiclass" else sub
        V.append(Variant("floor: jit stream", floor, None, "floor",
                         "jax.jit(a - b): reads both inputs, allocates and writes a gradient-sized output",
                         compiled=lambda f=jit_floor, p=p, t=t: f.lower(p, t).compile()))
        V.append(Variant("floor: numpy in-place", lambda f=np_floor: (f(), None)[1], None, "floor",
                         "np.subtract(a, b, out=c): the same bytes, no allocation"))
        case.targets.append(Target(f"{name} value-and-grad <= 1.5x the jit stream", "jloss",
                                   "floor: jit stream", 1.5))
        cases.append(case)
    return cases



# The scaling workload (jloss.sharding) ------------------------------------------------------


@workload("scaling", "minimize with rows sharded, and sweep with members sharded, over 1, 2, 4, ... devices")
def _scaling(cfg: Config) -> list[Case]:
    """One row per device count D that this process sees (powers of two and all of them): the
    same call on the first D devices (``jloss.sharding``), each compared with the 1-device row.
    The number of CPU host devices is fixed when JAX starts: ``python -m jloss.scaling`` runs one
    process per count instead (and adds minibatch mode)."""
    from jloss.sharding import make_mesh, replicate, shard_data, shard_grid

    n, d, steps = cfg.size((262_144, 32, 100), (2048, 8, 20))
    k, n_sweep = cfg.size((64, 16_384), (8, 1024))
    total = jax.device_count()
    counts = sorted({c for c in (1, 2, 4, 8, 16, 32, 64, total) if c <= total and n % c == 0 and k % c == 0})
    X_np, y_np = huber_problem(n, d, cfg.seed)
    params0 = linear_params(d)
    adam = optax.adam(0.05)
    grid = np.geomspace(0.05, 20.0, k).astype(np.float32)

    def fun(params, X, y):
        return huber_objective(params, 1.0, X, y)

    data = Case("scaling", f"full-batch Huber regression N={n:,}, d={d}, Adam, {steps} steps; rows over D devices",
                {"n": n, "d": d, "steps": steps, "device_counts": counts}, variants=[],
                reference="1 device", name="scaling_data", rtol=1e-4)
    members = Case("scaling", f"sweep of K={k} Huber deltas, N={n_sweep:,}, d={d}, {steps} steps; members over D devices",
                   {"k": k, "n": n_sweep, "d": d, "steps": steps, "device_counts": counts}, variants=[],
                   reference="1 device", name="scaling_sweep", rtol=1e-4)
    for c in counts:
        mesh = make_mesh(devices=jax.devices()[:c])
        label = f"{c} device" + ("s" if c > 1 else "")
        Xs, ys = shard_data((X_np, y_np), mesh)
        p0 = replicate(params0, mesh)
        data.variants.append(Variant(
            label, lambda Xs=Xs, ys=ys, p0=p0: jloss.minimize(fun, p0, adam, args=(Xs, ys), max_steps=steps),
            _result_loss, "jloss", f"{n // c:,} rows per device"))
        gs, (Xr, yr) = shard_grid(grid, mesh), replicate((X_np[:n_sweep], y_np[:n_sweep]), mesh)
        members.variants.append(Variant(
            label, lambda gs=gs, Xr=Xr, yr=yr: jloss.sweep(huber_objective, params0, adam, gs, args=(Xr, yr),
                                                            max_steps=steps),
            _total_loss, "jloss", f"{k // c} members per device"))
    if total == 1:
        for case in (data, members):
            case.notes.append("this process sees one device; `python -m jloss.scaling --devices 1,2,4` "
                              "makes CPU host devices, one process per count")
    return [data, members]


# The hypergradient workload (jloss.differentiation) -----------------------------------------


@workload("hypergradient", "d(validation loss)/d(Huber delta) through minimize, against one solve (N=100,000, d=32)")
def _hypergradient(cfg: Config) -> list[Case]:
    """What one hypergradient costs relative to the solve it differentiates: implicit (one
    conjugate-gradient solve on Hessian-vector products after the solve, forward or reverse) after
    L-BFGS to a tolerance, and unrolled (reverse mode through a ``lax.scan`` of the steps, with and
    without ``jax.checkpoint``) against implicit after a fixed number of Adam steps."""
    from jloss.differentiation import Unrolled

    n, d, steps = cfg.size((100_000, 32, 200), (1000, 8, 20))
    X, y = map(jnp.asarray, huber_problem(n, d, cfg.seed))
    Xv, yv = map(jnp.asarray, huber_problem(n // 5, d, cfg.seed + 1))
    params0 = linear_params(d)
    lbfgs, adam = optax.lbfgs(), optax.adam(0.05)

    def validation(optimizer, max_steps, tol, diff):
        def val(delta, X, y, Xv, yv):
            res = jloss.minimize(huber_objective, params0, optimizer, args=(delta, X, y), max_steps=max_steps,
                                 tol=tol, diff=diff, history=False)
            return jnp.mean(jnp.square(Xv @ res.params["w"] + res.params["b"] - yv))
        return val

    def rows(case, optimizer, max_steps, tol, grads):
        solve = jax.jit(validation(optimizer, max_steps, tol, None))
        case.variants.append(Variant("solve", lambda: solve(1.0, X, y, Xv, yv), float, "jloss",
                                     "the validation loss, no derivative"))
        for i, (name, diff, mode, note) in enumerate(grads):
            f = validation(optimizer, max_steps, tol, diff)
            if mode == "grad":
                run = jax.jit(jax.value_and_grad(f))
            else:
                run = jax.jit(lambda h, *data, f=f: jax.jvp(lambda h: f(h, *data), (h,), (1.0,)))
            case.variants.append(Variant(name, lambda run=run: run(1.0, X, y, Xv, yv), lambda o: float(o[0]),
                                         "jloss", note, quick=i == 0))
        return case

    implicit = rows(Case("hypergradient", f"Huber regression N={n:,}, d={d}: L-BFGS to tol 1e-5, then d val / d delta",
                         {"n": n, "d": d, "optimizer": "lbfgs", "tol": 1e-5}, variants=[], reference="solve",
                         name="hypergradient_implicit", rtol=1e-5),
                    lbfgs, 500, 1e-5,
                    [("implicit, jax.grad", "implicit", "grad", "solve + CG on Hessian-vector products (transposed)"),
                     ("implicit, jax.jvp", "implicit", "jvp", "solve + CG, forward mode")])
    unrolled = rows(Case("hypergradient", f"Huber regression N={n:,}, d={d}: {steps} Adam steps, then d val / d delta",
                         {"n": n, "d": d, "optimizer": "adam(0.05)", "steps": steps}, variants=[], reference="solve",
                         name="hypergradient_unrolled", rtol=1e-5, warmup=None if cfg.quick else 0),
                    adam, steps, 0.0,
                    [("unrolled, jax.grad", "unrolled", "grad", "reverse mode through a lax.scan of the steps"),
                     ("unrolled + checkpoint, jax.grad", Unrolled(checkpoint=True), "grad", "each step recomputed on the way back"),
                     ("implicit, jax.grad", "implicit", "grad", "at a run that is not converged: biased")])
    implicit.targets.append(Target("implicit hypergradient <= 3x one solve", "implicit, jax.grad", "solve", 3.0))
    return [implicit, unrolled]

# ----------------------------------------------------------------------------------------------
# The suite, the table, the plots
# ----------------------------------------------------------------------------------------------


def run_suite(cfg: Config, names: Sequence[str] | None = None, log: Callable[[str], None] = print) -> dict:
    """Build and time the workloads ``names`` (default: all); the JSON-ready result."""
    names = list(WORKLOADS) if not names else list(names)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; known: {', '.join(WORKLOADS)}")
    env = environment(cfg)
    log(f"jloss bench ({'quick' if cfg.quick else 'full'}): {_device_line(env)}")
    started = time.perf_counter()
    results = []
    for i, name in enumerate(names, 1):
        w = WORKLOADS[name]
        t0 = time.perf_counter()
        log(f"[{i}/{len(names)}] {name}: {w.description}")
        try:
            cases = w.build(cfg)
        except Exception as err:
            log(f"    ! building {name} failed: {type(err).__name__}: {err}")
            results.append({"workload": name, "case": name, "title": w.description, "params": {},
                            "reference": None, "loss_reference": None, "rtol": None, "rows": [],
                            "skipped": [], "notes": [], "targets": [],
                            "error": f"{type(err).__name__}: {err}"[:500]})
            continue
        for case in cases:
            res = run_case(case, cfg, log)
            results.append(res)
            parts = []
            for row in res["rows"]:
                if row.get("median_s") is not None:
                    parts.append(f"{row['name']} {_fmt_time(row['median_s'])}")
            log(f"    {res['case']}: " + "; ".join(parts))
        log(f"    ({time.perf_counter() - t0:.1f} s)")
    targets = [dict(t, case=r["case"]) for r in results for t in r["targets"]]
    return {
        "schema": SCHEMA,
        "mode": "quick" if cfg.quick else "full",
        "repeats": cfg.repeats,
        "warmup": cfg.warmup,
        "environment": env,
        "workloads": {n: WORKLOADS[n].description for n in names},
        "results": results,
        "targets": targets,
        "wall_s": time.perf_counter() - started,
    }


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s >= 1:
        return f"{s:.3g} s"
    if s >= 1e-3:
        return f"{s * 1e3:.3g} ms"
    return f"{s * 1e6:.3g} µs"


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def _fmt_loss(x: float | None) -> str:
    return "-" if x is None else f"{x:.7g}"


def markdown(report: dict) -> str:
    """The report as markdown: device line, one table per case, then the targets."""
    env = report["environment"]
    lines = [
        f"**Device:** {_device_line(env)}",
        "",
        f"Mode: {report['mode']}; per case, the median of n >= {report['repeats']} interleaved repeats "
        f"(n in the heading; cheap rows get more) after the first call and {report['warmup']} warm-up "
        "call(s); spread = ±half of (max - min) / median; ratio = median / median of the case's (ref) row; "
        "compile = first call - median; final losses are compared with the row named in 'loss check'.",
        "",
    ]
    for r in report["results"]:
        ns = sorted({len(row["times_s"]) for row in r["rows"] if row.get("times_s")})
        n = f" (n={ns[0]})" if len(ns) == 1 else (f" (n={ns[0]} to {ns[-1]} per row)" if ns else "")
        lines.append(f"#### {r['case']}: {r['title']}{n}")
        lines.append("")
        if r.get("error"):
            lines += [f"Not run: {r['error']}", ""]
            continue
        mem = any(row.get("temp_bytes") is not None for row in r["rows"])
        extra_h, extra_s = (" XLA temp / output |", "---:|") if mem else ("", "")
        lines.append(f"| variant | median | spread | ratio (of min) | compile | final loss |{extra_h} loss check |")
        lines.append(f"|---|---:|---:|---:|---:|---:|{extra_s}---|")
        for row in r["rows"]:
            name = row["name"] + (" (ref)" if row["name"] == r["reference"] else "")
            if row.get("error"):
                lines.append(f"| {name} | error | | | | |{' |' if mem else ''} {row['error'][:120]} |")
                continue
            check = ""
            if row.get("loss_rel_diff") is not None:
                mark = "DIFF" if row["loss_flag"] else "ok"
                check = f"{mark} ({row['loss_rel_diff']:.1e} vs {row['loss_ref']}, tol {row['loss_rtol']:g})"
            elif row.get("final_loss") is not None and row["name"] == r["loss_reference"]:
                check = "loss reference"
            ratio = "-"
            if row.get("ratio") is not None:
                ref = next(x for x in r["rows"] if x["name"] == r["reference"])
                ratio = f"{row['ratio']:.2f}x ({row['min_s'] / ref['min_s']:.2f}x)"
            extra = ""
            if mem:
                extra = " - |" if row.get("temp_bytes") is None else (
                    f" {_fmt_bytes(row['temp_bytes'])} / {_fmt_bytes(row['output_bytes'])} |")
            lines.append(
                f"| {name} | {_fmt_time(row['median_s'])} | ±{row['spread'] * 50:.0f}% | {ratio} | "
                f"{row['compile_s']:.2f} s | {_fmt_loss(row['final_loss'])} |{extra} {check} |"
            )
        for s in r["skipped"]:
            lines.append(f"| {s['name']} | skipped | | | | |{' |' if mem else ''} {s['reason']} |")
        lines.append("")
        for note in r["notes"] + [f"{row['name']}: {row['note']}" for row in r["rows"] if row.get("note")]:
            lines.append(f"- {note}")
        lines.append("")
    lines += _targets_markdown(report)
    return "\n".join(lines)


def _targets_markdown(report: dict) -> list[str]:
    lines = ["#### Targets", "", "Pass/miss is judged on the ratio of medians; the ratio of the fastest runs is in "
             "parentheses (less sensitive to other processes on a shared machine).", "",
             "| target | case | measured | goal | result |", "|---|---|---:|---:|---|"]
    for t in report["targets"]:
        measured = "-"
        if t["ratio"] is not None:
            of_min = t.get("ratio_of_min")
            if of_min is None:
                rows = {x["name"]: x for r in report["results"] if r["case"] == t["case"] for x in r["rows"]}
                of_min = rows[t["variant"]]["min_s"] / rows[t["baseline"]]["min_s"]
            measured = f"{t['ratio']:.2f}x ({of_min:.2f}x)"
        detail = f" ({t['detail']})" if t["detail"] else ""
        lines.append(f"| {t['label']} | {t['case']} | {measured} | <= {t['max_ratio']:g}x | "
                     f"{t.get('status', 'MISS')}{detail} |")
    passed = sum(t["passed"] for t in report["targets"])
    lines += ["", f"{passed} of {len(report['targets'])} targets pass.", ""]
    return lines


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def plot(report: dict, prefix: str) -> list[str]:
    """PNG bar charts of every case's ratios (log scale) plus the targets; the paths written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    colors = {"jloss": "#1f77b4", "peer": "#aaaaaa", "floor": "#2ca02c"}
    paths = []
    by_workload: dict[str, list[dict]] = {}
    for r in report["results"]:
        if r["rows"]:
            by_workload.setdefault(r["workload"], []).append(r)
    env = report["environment"]
    subtitle = f"{env['platform']} {env['device_kind']} ({env['cpu_model']}), {env['date'][:10]}"
    for wname, cases in by_workload.items():
        ncol = 1 if len(cases) == 1 else (2 if len(cases) <= 4 else 3)
        nrow = math.ceil(len(cases) / ncol)
        heights = [max(len([x for x in c["rows"] if x.get("ratio")]) for c in cases[i * ncol:(i + 1) * ncol])
                   for i in range(nrow)]
        fig = Figure(figsize=(6.5 * ncol, sum(0.32 * h + 1.0 for h in heights) + 0.6))
        FigureCanvasAgg(fig)
        axes = fig.subplots(nrow, ncol, squeeze=False, gridspec_kw={"height_ratios": heights})
        for ax, r in zip(axes.flat, cases):
            rows = [x for x in r["rows"] if x.get("ratio")]
            ypos = np.arange(len(rows))[::-1]
            ref = next(x for x in r["rows"] if x["name"] == r["reference"])["median_s"]
            med = np.array([x["ratio"] for x in rows])
            lo = med - np.array([x["min_s"] / ref for x in rows])
            hi = np.array([x["max_s"] / ref for x in rows]) - med
            ax.barh(ypos, med, xerr=[lo, hi], color=[colors.get(x["kind"], "#999") for x in rows],
                    ecolor="#333", capsize=2)
            ax.set_yticks(ypos)
            ax.set_yticklabels([x["name"] + (" [DIFF]" if x["loss_flag"] else "") for x in rows], fontsize=8)
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.axvline(1.0, color="k", lw=0.8)
            for y0, m in zip(ypos, med):
                ax.text(m, y0, f" {m:.2f}x", va="center", fontsize=7)
            ax.set_title(f"{r['case']}: ratio to {r['reference']}", fontsize=9)
            ax.tick_params(axis="x", labelsize=8)
        for ax in list(axes.flat)[len(cases):]:
            ax.set_visible(False)
        fig.suptitle(f"{WORKLOADS[wname].description if wname in WORKLOADS else wname}\n{subtitle}", fontsize=10)
        fig.tight_layout()
        path = f"{prefix}-{wname}.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    targets = [t for t in report["targets"] if t["ratio"] is not None]
    if targets:
        fig = Figure(figsize=(12, 0.35 * len(targets) + 1.4))
        FigureCanvasAgg(fig)
        ax = fig.subplots()
        ypos = np.arange(len(targets))[::-1]
        rel = [t["ratio"] / t["max_ratio"] for t in targets]
        ax.barh(ypos, rel, color=["#2ca02c" if t["passed"] else "#d62728" for t in targets])
        ax.set_yticks(ypos)
        ax.set_yticklabels([_short(f"{t['case']}: {t['label']}", 72) for t in targets], fontsize=7)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlim(right=max(rel) * 2.2)
        ax.set_xlabel("measured ratio / goal (<= 1 passes)", fontsize=8)
        for y0, t, x in zip(ypos, targets, rel):
            ax.text(x, y0, f" {t['ratio']:.2f}x (goal {t['max_ratio']:g}x)", va="center", fontsize=7)
        ax.set_title(f"Targets: green pass, red miss. {subtitle}", fontsize=9)
        fig.tight_layout()
        path = f"{prefix}-targets.png"
        fig.savefig(path, dpi=110)
        paths.append(path)
    return paths


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jloss bench",
        description="Time jloss's losses, minimize and sweep against the Python-loop idiom, a hand-fused "
        "lax.scan, PyTorch/scipy/scikit-learn when installed, and the hardware floor, in one process.",
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (seconds; what the smoke test runs)")
    p.add_argument("--json", metavar="FILE", help="write every raw timing and the environment to FILE")
    p.add_argument("--markdown", metavar="FILE", help="also write the markdown table to FILE")
    p.add_argument("--plot", metavar="PREFIX", nargs="?", const="",
                   help="write PNG bar charts PREFIX-<workload>.png (default prefix: the --json path "
                   "without .json, else 'bench')")
    p.add_argument("--only", metavar="NAMES", help="comma-separated workloads to run (see --list)")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.add_argument("--from-json", metavar="FILE",
                   help="run nothing: render the table (and --markdown/--plot) from a saved --json report")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats per row (>= 5; default 5)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even if installed")
    p.add_argument("--seed", type=int, default=0, help="data seed (default 0)")
    p.add_argument("--torch-threads", type=int, metavar="N",
                   help="torch.set_num_threads(N) (default: PyTorch's own choice, recorded in the JSON)")
    p.add_argument("--blas-threads", type=int, default=1, metavar="N",
                   help="BLAS threads of numpy/scipy/scikit-learn while timing, via threadpoolctl if "
                        "installed (default 1: idle OpenBLAS threads spin and slow the next row; 0: leave them)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``jloss bench``: run the suite, print the markdown table; 0 on success (misses included)."""
    args = _parser().parse_args(argv)
    if args.list:
        for name, w in WORKLOADS.items():
            print(f"{name:16s} {w.description}")
        return 0
    if args.repeats < 5:
        print("jloss bench: --repeats must be at least 5 (median and spread of >= 5 runs)", file=sys.stderr)
        return 2
    if args.from_json:
        with open(args.from_json) as f:
            report = json.load(f)
        return _emit(report, args, lambda msg: print(msg, file=sys.stderr, flush=True), write_json=False)
    names = [s.strip() for s in args.only.split(",") if s.strip()] if args.only else None
    if names:
        unknown = [n for n in names if n not in WORKLOADS]
        if unknown:
            print(f"jloss bench: unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}",
                  file=sys.stderr)
            return 2
    cfg = Config(quick=args.quick, repeats=args.repeats, warmup=0 if args.quick else 1,
                 use_torch=not args.no_torch, seed=args.seed, torch_threads=args.torch_threads,
                 blas_threads=args.blas_threads)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    report = run_suite(cfg, names, log)
    code = _emit(report, args, log, write_json=True)
    log(f"done in {report['wall_s']:.1f} s")
    return code


def _emit(report: dict, args: argparse.Namespace, log: Callable[[str], None], *, write_json: bool) -> int:
    table = markdown(report)
    print(table)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    if args.json and write_json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1, default=_json_default)
            f.write("\n")
        log(f"wrote {args.json}")
    if args.plot is not None:
        source = args.json or args.from_json
        prefix = args.plot or (os.path.splitext(source)[0] if source else "bench")
        try:
            for path in plot(report, prefix):
                log(f"wrote {path}")
        except ImportError as err:
            log(f"--plot needs matplotlib (pip install 'jloss[plot]'): {err}")
            return 1
    return 0


def _json_default(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


if __name__ == "__main__":
    sys.exit(main())
