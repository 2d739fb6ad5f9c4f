"""Running the suite, and its report: the markdown table, the targets, the plots."""

from __future__ import annotations

import math
import time
from typing import Callable, Sequence

import numpy as np

from jloss.bench.harness import Config, SCHEMA, WORKLOADS, run_case
from jloss.bench.env import device_line, environment


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
    log(f"jloss bench ({'quick' if cfg.quick else 'full'}): {device_line(env)}")
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
        f"**Device:** {device_line(env)}",
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
