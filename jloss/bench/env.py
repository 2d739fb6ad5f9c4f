"""The environment a benchmark run records: platform, devices, CPU, threads, versions, git state."""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib
import importlib.util
import os
import platform
import sys

import jax
import numpy as np

import jloss
from jloss import cache
from jloss.bench.harness import Config


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
        "compilation_cache": cache.enabled_dir(),
    }


def device_line(env: dict) -> str:
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


def run_header(env: dict, load0: tuple, load1: tuple, wall_s: float) -> str:
    """The first two lines of a standalone benchmark's report: the device line and the host's load
    average at the start and the end of the run (also recorded in ``env``)."""
    env["load_average"] = {"start": list(load0), "end": list(load1)}
    return (f"device: {device_line(env)}\nload average (1, 5, 15 min): start "
            f"{' '.join(f'{x:.2f}' for x in load0)}, end {' '.join(f'{x:.2f}' for x in load1)}; "
            f"run took {wall_s:.0f} s\n\n")


def write_results(stem: str, text: str, data: dict) -> None:
    """A standalone benchmark's committed results: ``stem.md`` (the report) and ``stem.json``."""
    import json

    with open(stem + ".md", "w") as f:
        f.write(text + "\n")
    with open(stem + ".json", "w") as f:
        json.dump(data, f, indent=1)


def script_parser(doc: str, case_budget: float | None = None, per: str = "case") -> argparse.ArgumentParser:
    """The argument parser of a standalone benchmark in ``benchmarks/``: described by the first
    line of its docstring ``doc``, with ``--quick`` and, given a default, ``--case-budget``."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny sizes, stdout only")
    if case_budget is not None:
        p.add_argument("--case-budget", type=float, default=case_budget,
                       help=f"seconds of timed calls per {per} (full mode)")
    return p


def log(msg: str) -> None:
    """A standalone benchmark's progress line, on stderr (stdout is the report)."""
    print(msg, file=sys.stderr, flush=True)
