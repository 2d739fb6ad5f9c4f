"""The benchmark harness: the data model (workloads, cases, variant rows, targets), the
configuration, and how a case is timed (:func:`run_case`) and its targets evaluated.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import importlib
import importlib.util
import math
import os
import statistics
import time
from typing import Any, Callable

import jax
import numpy as np


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


def blas_limit(cfg: Config) -> contextlib.AbstractContextManager:
    """A context with numpy/scipy's BLAS pools limited to ``cfg.blas_threads`` (a no-op without
    threadpoolctl, or with ``blas_threads=0``). Only libraries loaded by then are limited, so it is
    entered after a case's first calls."""
    threadpoolctl = cfg.optional("threadpoolctl") if cfg.blas_threads else None
    if threadpoolctl is None:
        return contextlib.nullcontext()
    return threadpoolctl.threadpool_limits(limits=cfg.blas_threads, user_api="blas")


def repeat_counts(case: Case, cfg: Config, first_s: dict[str, float]) -> dict[str, int]:
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
        with blas_limit(cfg):
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
                    counts = repeat_counts(case, cfg, {v.name: rows[v.name]["times_s"][0] for v in live})
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
