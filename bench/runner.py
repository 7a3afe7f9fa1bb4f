"""The matrix: profiles x systems x workloads x repetitions, and its table."""

from __future__ import annotations

import tempfile
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import systems as registry
from bench.common import (
    DEFAULT_SIZES,
    PROFILES,
    BenchStore,
    Unavailable,
    fsync_probe,
    log,
    machine_info,
    precompile,
    summarize,
)
from bench.systems.base import System
from bench.workloads import d1_drain, r1_recovery, w1_drain, w2_enqueue, w3_latency, w4_workflow

ALL_WORKLOADS = ("W1", "W2", "W3", "W4", "R1", "D1", "M1", "S1")

# What the table shows per workload: (metric, label). The JSON has every metric.
TABLE_METRICS: dict[str, list[tuple[str, str]]] = {
    "W1": [("jobs_per_s", "drain jobs/s"), ("first_done_s", "first done s"),
           ("steady_jobs_per_s", "steady jobs/s")],
    "W2": [("single_jobs_per_s", "single jobs/s"), ("batched_jobs_per_s", "batched jobs/s")],
    "W3": [("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")],
    "W4": [("flows_per_s", "flows/s"), ("first_done_s", "first done s")],
    "R1": [("recovery_s", "recovery s"), ("killed_flows", "flows on the killed process")],
    "D1": [("exit_s", "exit s"), ("lost", "lost"), ("in_flight_at_term", "in flight at TERM")],
    "M1": [("queued_bytes_per_flow", "queued B/flow"),
           ("completed_bytes_per_flow", "completed B/flow")],
    "S1": [("small_claim_ms", "claim ms (small)"), ("big_claim_ms", "claim ms (big)"),
           ("ratio_big_to_small", "big/small"),
           ("small_claim_server_ms", "in-server ms (small)"),
           ("big_claim_server_ms", "in-server ms (big)"),
           ("server_ratio_big_to_small", "in-server big/small")],
}
# A metric may be replaced by a text when it could not be measured ("> 120 s").
TEXT_FALLBACK = {"recovery_s": "recovery", "exit_s": "exit"}


def _one(system: System, workload: str, sizes: dict[str, int],
         store: BenchStore) -> dict[str, Any]:
    def reset() -> None:
        system.teardown()
        store.reset()
        system.setup(store, system.log_dir)

    if workload == "W1":
        return w1_drain(system, sizes["W1"])
    if workload == "W2":
        return w2_enqueue(system, sizes["W2"], reset)
    if workload == "W3":
        return w3_latency(system, sizes["W3"])
    if workload == "W4":
        return w4_workflow(system, sizes["W4"])
    if workload == "R1":
        return r1_recovery(system, sizes["R1"])
    if workload == "D1":
        return d1_drain(system, sizes["D1"])
    if workload == "M1":
        return system.memory(sizes["M1"])
    if workload == "S1":
        return system.scale(sizes["S1_small"], sizes["S1_big"])
    raise ValueError(f"unknown workload {workload!r}")


def run_cell(system: System, workload: str, store: BenchStore, sizes: dict[str, int],
             reps: int, log_dir: Path) -> dict[str, Any]:
    cell: dict[str, Any] = {"system": system.name, "profile": store.profile,
                            "workload": workload, "reps": []}
    if workload not in system.workloads:
        cell["status"] = f"unavailable: {workload} does not apply to {system.name}"
        return cell
    sizes = {k: min(v, system.max_sizes.get(k, v)) for k, v in sizes.items()}
    for rep in range(reps):
        store.reset()
        system.setup(store, log_dir)
        t0 = time.perf_counter()
        try:
            metrics = _one(system, workload, sizes, store)
        except Unavailable as exc:
            cell["status"] = f"unavailable: {exc}"
            log(f"{system.name} {store.profile} {workload}: unavailable: {exc}")
            return cell
        except Exception as exc:  # noqa: BLE001 - a failing cell never ends the run
            cell["status"] = f"failed: {type(exc).__name__}: {exc}"[:500]
            log(f"{system.name} {store.profile} {workload} rep {rep + 1} failed:\n"
                f"{traceback.format_exc()}")
            break
        finally:
            system.teardown()
        metrics["wall_s"] = time.perf_counter() - t0
        if workload in sizes:
            metrics.setdefault("n", sizes[workload])
        cell["reps"].append(metrics)
        shown = ", ".join(f"{k}={_fmt(metrics[k])}" for k, _ in TABLE_METRICS[workload]
                          if k in metrics)
        shown += "".join(f" {t}: {metrics[t]}" for t in TEXT_FALLBACK.values() if t in metrics)
        log(f"{system.name} {store.profile} {workload} rep {rep + 1}/{reps}: {shown}")
    cell.setdefault("status", "ok")
    cell["summary"] = summarize(cell["reps"])
    texts = {r[t] for r in cell["reps"] for t in TEXT_FALLBACK.values() if t in r}
    if texts:
        cell["texts"] = sorted(texts)
    runners = {r["runner"] for r in cell["reps"] if "runner" in r}
    if runners:
        cell["runner"] = " / ".join(sorted(runners))
    return cell


def run(workloads: Sequence[str] = ALL_WORKLOADS, *, systems: Sequence[str] = ("ferricflowd",),
        profiles: Sequence[str] = PROFILES, reps: int = 3, sizes: dict[str, int] | None = None,
        system_options: dict[str, dict[str, Any]] | None = None,
        work_dir: Path | None = None) -> dict[str, Any]:
    """Run the matrix; returns the JSON-able result (meta, cells)."""
    all_sizes = {**DEFAULT_SIZES, **(sizes or {})}
    precompile()
    work = Path(work_dir or tempfile.mkdtemp(prefix="ffbench-"))
    result: dict[str, Any] = {
        "meta": {**machine_info(), "reps": reps, "sizes": all_sizes,
                 "workloads": list(workloads), "profiles": list(profiles), "work_dir": str(work)},
        "systems": {}, "cells": [],
    }
    loaded: dict[str, System | str] = {}
    for name in systems:
        try:
            loaded[name] = registry.load(name, **(system_options or {}).get(name, {}))
        except Unavailable as exc:
            loaded[name] = f"unavailable: {exc}"
            log(f"{name}: unavailable: {exc}")
    for profile in profiles:
        with BenchStore(profile, work / "redis") as store:
            result["meta"][f"redis_{profile}"] = store.version()
            if store.durable:
                result["meta"]["fsync_before_durable"] = fsync_probe(store.server.dir)
            log(f"profile {profile}: redis-server {store.version()} at {store.url}")
            for name, system in loaded.items():
                for workload in workloads:
                    if isinstance(system, str):
                        result["cells"].append({"system": name, "profile": profile,
                                                "workload": workload, "status": system})
                        continue
                    log(f"{name} {profile} {workload}: {reps} rep(s)")
                    result["cells"].append(run_cell(system, workload, store, all_sizes, reps,
                                                    work / "logs" / name))
    for name, system in loaded.items():
        result["systems"][name] = system if isinstance(system, str) else system.info()
    return result


# --------------------------------------------------------------------------- the table


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if not isinstance(value, (int, float)):
        return str(value)
    v = float(value)
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _cell_text(cell: dict[str, Any], metric: str) -> str:
    status = cell.get("status", "ok")
    if status != "ok":
        return status[:60]
    stats = cell.get("summary", {}).get(metric)
    if stats is None:
        texts = cell.get("texts")
        return ", ".join(texts) if texts and metric in TEXT_FALLBACK else "-"
    if stats["n"] == 1 or stats["min"] == stats["max"]:
        text = _fmt(stats["median"])
    else:
        text = f"{_fmt(stats['median'])} ({_fmt(stats['min'])}–{_fmt(stats['max'])})"
    if metric in TEXT_FALLBACK and cell.get("texts"):
        text += " / " + ", ".join(cell["texts"])
    return text


def merge(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Several runs' results as one (cells appended in order; meta of the first)."""
    out: dict[str, Any] = {"meta": dict(results[0]["meta"]), "systems": {}, "cells": []}
    for res in results:
        out["systems"].update(res.get("systems", {}))
        out["cells"].extend(res["cells"])
    return out


def format_table(result: dict[str, Any], profile: str | None = None) -> str:
    """A Markdown table: a row per (workload, metric), a column per system x profile
    (only `profile`'s columns when given)."""
    cells = [c for c in result["cells"] if profile is None or c["profile"] == profile]
    columns: list[tuple[str, str]] = []
    for c in cells:
        key = (c["system"], c["profile"])
        if key not in columns:
            columns.append(key)
    index = {(c["system"], c["profile"], c["workload"]): c for c in cells}
    workloads = [w for w in ALL_WORKLOADS if any(c["workload"] == w for c in cells)]
    head = ["workload", "metric"] + [f"{s} {p}" for s, p in columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for w in workloads:
        for metric, label in TABLE_METRICS[w]:
            row = [w, label]
            for s, p in columns:
                cell = index.get((s, p, w))
                row.append(_cell_text(cell, metric) if cell else "")
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)
