"""The benchmark scripts must not rot: every ferricflowd workload once, at a tiny size.

These are not timed tests (bench/README.md has the numbers); they only check that each
workload runs end to end through the bench's Python API and reports its metrics. Peers run
only when their packages are installed (`pip install -e .[bench]`).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from bench import engine_ir, format_table, incr_threads, ops, run, split_cost

TINY = {"W1": 50, "W2": 50, "W3": 20, "W4": 50, "R1": 10, "D1": 20, "M1": 200,
        "S1_small": 200, "S1_big": 2_000}
# A short lease bounds R1 when the fallback runner (lease expiry) is in use.
FF_OPTIONS = {"ferricflowd": {"lease_ms": 2_000}}

EXPECTED = {
    "W1": ["jobs_per_s", "first_done_s", "total_s"],
    "W2": ["single_jobs_per_s", "batched_jobs_per_s"],
    "W3": ["p50_ms", "p99_ms"],
    "W4": ["flows_per_s", "steps_per_s"],
    "R1": ["recovery_s", "killed_flows"],
    "D1": ["exit_s", "lost", "completed"],
    "M1": ["queued_bytes_per_flow", "completed_bytes_per_flow"],
    "S1": ["small_claim_ms", "big_claim_ms", "ratio_big_to_small"],
}


def _run(workload: str, profile: str, tmp_path: Path, systems: tuple[str, ...] = ("ferricflowd",)
         ) -> dict:
    result = run([workload], systems=systems, profiles=[profile], reps=1, sizes=TINY,
                 system_options=FF_OPTIONS, work_dir=tmp_path)
    json.dumps(result, default=str)  # the result must be JSON-able
    assert workload in format_table(result)
    return result


@pytest.mark.parametrize("workload", list(EXPECTED))
def test_ferricflowd_workload(workload: str, tmp_path: Path) -> None:
    result = _run(workload, "fast", tmp_path)
    [cell] = result["cells"]
    assert cell["status"] == "ok", cell
    [rep] = cell["reps"]
    for metric in EXPECTED[workload]:
        assert metric in rep, (metric, rep)
    if workload == "D1":
        assert rep["lost"] == 0, rep
    if workload in ("W1", "W3", "W4", "R1", "D1"):
        assert rep["runner"], rep


def test_ferricflowd_durable_profile(tmp_path: Path) -> None:
    result = _run("W1", "durable", tmp_path)
    [cell] = result["cells"]
    assert cell["status"] == "ok", cell
    assert cell["reps"][0]["jobs_per_s"] > 0


@pytest.mark.parametrize("system,module", [("ferricflowd-async", "ferricflowd"),
                                           ("dramatiq-async", "dramatiq")])
def test_async_handler_variants(system: str, module: str, tmp_path: Path) -> None:
    """The `-async` variants run W1 with `async def` handlers (every job counted) and
    report the other workloads as not applying to them."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e .[bench])")
    [cell] = _run("W1", "fast", tmp_path, systems=(system,))["cells"]
    assert cell["status"] == "ok" and cell["system"] == system, cell
    assert cell["reps"][0]["jobs_per_s"] > 0
    [other] = _run("W4", "fast", tmp_path, systems=(system,))["cells"]
    assert other["status"].startswith("unavailable"), other


@pytest.mark.parametrize("peer,module", [("celery", "celery"), ("rq", "rq"),
                                         ("dramatiq", "dramatiq")])
def test_peer_drain(peer: str, module: str, tmp_path: Path) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (pip install -e .[bench])")
    result = _run("W1", "fast", tmp_path, systems=(peer,))
    [cell] = result["cells"]
    assert cell["status"] == "ok", cell
    assert cell["reps"][0]["jobs_per_s"] > 0


def test_engine_instruction_counts(tmp_path: Path) -> None:
    """bench.engine_ir: the store under callgrind, every step counted and split."""
    tools = ("valgrind", "callgrind_control", "callgrind_annotate")
    if any(shutil.which(t) is None for t in tools):
        pytest.skip("valgrind is not installed")
    report = engine_ir.measure(tmp_path, 20, 10, 5)
    assert list(report["steps"]) == ["create", "claim", "complete", "transition_kept"]
    for step, row in report["steps"].items():
        # Each step runs its script calls: the split must find them, and add up.
        assert row["ir_per_job"] > row["commands"] + row["lua_and_conversion"] > 0, (step, row)
        assert row["propagation"] > 0, (step, row)


def test_incr_threads(tmp_path: Path) -> None:
    """bench.incr_threads: a row per thread count, each call counted."""
    out = tmp_path / "rows.json"
    assert incr_threads.main(["--threads", "1,3", "--calls", "30", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert [(r["threads"], r["calls"]) for r in rows] == [(1, 30), (3, 30)]
    assert all(r["calls_per_s"] > 0 and r["client_cpu_us_per_call"] > 0 for r in rows)


def test_split_cost(tmp_path: Path) -> None:
    """bench.split_cost: both drains of both profiles handled every job, CPU split per job."""
    out = tmp_path / "split.json"
    assert split_cost.main(["--n", "40", "--reps", "1", "--threads", "2",
                            "--json", str(out)]) == 0
    reports = json.loads(out.read_text())
    assert [r["profile"] for r in reports] == ["fast", "durable"]
    for report in reports:
        assert set(report["median"]) == {"nothing", "incr", "incr_async"}
        for row in report["median"].values():
            assert row["jobs_per_s"] > 0 and row["worker_cpu_us"] > 0, report


@pytest.mark.parametrize("what,extra", [
    ("browse", ["--flows", "300", "--page", "50"]),
    ("purge", ["--flows", "200"]),
    ("requeue", ["--flows", "300", "--rate", "500", "--interrupt-at", "0.3", "--warmup", "1",
                 "--baseline", "2", "--backlog", "500"]),
])
def test_ops_bench(what: str, extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """bench.ops: the operator-command figures of issue 20, at a tiny size."""
    ops.main([what, *extra])
    report = json.loads(capsys.readouterr().out)
    assert report["bench"] == f"ops.{what}"
    if what == "browse":
        assert report["oldest"]["flows_seen"] == report["newest"]["flows_seen"] == 300
    elif what == "purge":
        assert report["purged"] == 200 and report["history_left"] == 0
    else:
        assert report["rewound_once"] == 300 and report["live_per_s_before"] > 0, report
        assert [r["interrupted"] for r in report["runs"]] == [True, False], report


@pytest.mark.slow
def test_schedules_bench_runs() -> None:
    from bench import schedules

    result = schedules.run(200, 2, idle_s=0.5)
    assert result["fire_same_second"]["created"] == 200, result
    assert len(result["idle"]["cpu_percent"]) == 2


def test_console_overview_bench_runs(redis_server, namespace: str, tmp_path: Path) -> None:
    import argparse

    from bench import console_overview

    args = argparse.Namespace(flows=1_000, types=4, states=3, requests=2)
    result = console_overview.run(args, tmp_path, redis_server.url, namespace)
    assert result["overview_rows"] > 4 * 3
    for key in ("overview_cold_ms", "overview_cached_ms", "browse_first_ms", "flow_ms"):
        assert result[key]["n"] == 2 and result[key]["max"] > 0
