"""Smoke test of the benchmark suite: ``--quick`` in-process, then the JSON's fields.

No timed assertion: timings on a shared machine are not test material. What is checked is that
every workload builds and runs, that every row reports the fields the README and the charts rely
on, and that the environment (device, CPU, versions, date) is recorded.
"""

from __future__ import annotations

import contextlib
import json

import pytest

from jloss import benchmarks
from jloss.bench import harness

ROW_FIELDS = {
    "name", "kind", "note", "times_s", "median_s", "min_s", "max_s", "spread", "first_call_s",
    "compile_s", "ratio", "final_loss", "loss_ref", "loss_rel_diff", "loss_rtol", "loss_flag", "error",
    "temp_bytes", "output_bytes",
}
TARGET_FIELDS = {"label", "variant", "baseline", "max_ratio", "ratio", "passed", "status", "detail", "case"}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    path = out / "quick.json"
    md = out / "quick.md"
    code = benchmarks.main(["--quick", "--json", str(path), "--markdown", str(md)])
    return code, json.loads(path.read_text()), md.read_text()


def test_quick_run_exits_cleanly(quick_run):
    code, report, _ = quick_run
    assert code == 0
    assert report["schema"] == benchmarks.SCHEMA
    assert report["mode"] == "quick"
    assert report["repeats"] >= 5


def test_environment_is_recorded(quick_run):
    env = quick_run[1]["environment"]
    for key in ("platform", "device_kind", "device_count", "cpu_model", "threads", "versions", "date"):
        assert env[key] not in (None, ""), key
    assert env["versions"]["jax"] and env["versions"]["optax"]
    assert "cpu_count" in env["threads"] and "XLA_FLAGS" in env["threads"]


def test_every_workload_ran_with_complete_rows(quick_run):
    report = quick_run[1]
    ran = {r["workload"] for r in report["results"]}
    assert ran == set(benchmarks.WORKLOADS)
    for res in report["results"]:
        assert "error" not in res, res.get("error")
        assert res["rows"], res["case"]
        names = [row["name"] for row in res["rows"]]
        assert res["reference"] in names, res["case"]
        for row in res["rows"]:
            assert ROW_FIELDS <= set(row), (res["case"], row["name"], ROW_FIELDS - set(row))
            assert row["error"] is None, (res["case"], row["name"], row["error"])
            assert report["repeats"] <= len(row["times_s"]) <= res["repeats"]
            assert row["min_s"] <= row["median_s"] <= row["max_s"]
            assert row["compile_s"] >= 0
            if row["kind"] != "floor" and row["final_loss"] is not None:
                assert row["loss_flag"] is False, (res["case"], row["name"], row["loss_rel_diff"])
        ref = next(row for row in res["rows"] if row["name"] == res["reference"])
        assert ref["ratio"] == pytest.approx(1.0)


def test_jloss_rows_and_floors_are_present(quick_run):
    report = quick_run[1]
    kinds = {(r["workload"], row["kind"]) for r in report["results"] for row in r["rows"]}
    for w in benchmarks.WORKLOADS:
        assert (w, "jloss") in kinds, w
    assert ("small_huber", "floor") in kinds and ("loss_kernel", "floor") in kinds


def test_targets_are_evaluated(quick_run):
    targets = quick_run[1]["targets"]
    assert targets
    for t in targets:
        assert TARGET_FIELDS <= set(t)
        assert t["status"] in ("PASS", "MISS", "n/a")
        assert isinstance(t["passed"], bool)


def test_markdown_has_tables_device_and_targets(quick_run):
    md = quick_run[2]
    assert "**Device:**" in md and "| variant | median |" in md and "#### Targets" in md


def test_torch_is_skipped_with_a_note_when_disabled():
    cfg = benchmarks.Config(quick=True, use_torch=False)
    assert cfg.torch is None and "PyTorch" in cfg.torch_missing


def test_repeat_counts_and_blas_limit():
    # Rows fill their share of the budget (capped), and target rows get at least target_repeats.
    case = benchmarks.Case("w", "t", {}, variants=[], reference="a")
    case.targets.append(benchmarks.Target("a vs b", "a", "b", 1.0))
    cfg = benchmarks.Config(case_budget_s=8.0, max_repeats=41, target_repeats=11)
    counts = harness.repeat_counts(case, cfg, {"a": 0.01, "b": 1.0, "c": 1.0, "d": 0.5, "e": 9.0})
    assert counts == {"a": 41, "b": 11, "c": 5, "d": 5, "e": 5}
    # The BLAS limit: threadpoolctl's, applied while entered, or a no-op without it (or at 0).
    threadpoolctl = benchmarks.Config().optional("threadpoolctl")
    with harness.blas_limit(benchmarks.Config(blas_threads=1)):
        if threadpoolctl is not None:
            blas = [p for p in threadpoolctl.threadpool_info() if p["user_api"] == "blas"]
            assert all(p["num_threads"] == 1 for p in blas)
    assert isinstance(harness.blas_limit(benchmarks.Config(blas_threads=0)), contextlib.nullcontext)


def test_registry_rejects_duplicates_and_cli_rejects_few_repeats(capsys):
    with pytest.raises(ValueError):
        benchmarks.workload("small_huber", "again")(lambda cfg: [])
    assert benchmarks.main(["--repeats", "3"]) == 2
    assert benchmarks.main(["--only", "nope"]) == 2
    assert benchmarks.main(["--list"]) == 0
    assert "loss_kernel" in capsys.readouterr().out


def test_kernel_rows_record_xla_memory(quick_run):
    rows = [row for r in quick_run[1]["results"] if r["workload"] == "loss_kernel" for row in r["rows"]]
    jloss_rows = [row for row in rows if row["kind"] == "jloss"]
    assert jloss_rows and all(row["output_bytes"] and row["temp_bytes"] is not None for row in jloss_rows)


def test_table_renders_again_from_the_saved_json(quick_run, tmp_path, capsys):
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(quick_run[1]))
    assert benchmarks.main(["--from-json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "#### Targets" in out and "(of min)" in out
