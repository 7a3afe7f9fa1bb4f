"""What a worker's death costs the Flows it held (issue 18, items 3 and 4), under the real
daemon: only Flows running in a handler at the death count a crash; the ones it held but had
not started are released without blame and their history says so; after a hang (a handler
holding the GIL), only the Flow past its time limit is blamed, and the other handler's Flow
is released without blame."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from ferricflowd import CreateSpec, FlowClient
from tests.helpers import wait_for

BLAME = "tests.hardening.blame_handlers"


def _releases(fc: FlowClient, flow_id: str) -> list[str]:
    return [str(e.details.get("cause")) for e in fc.history(flow_id)
            if e.event == "lease_released"]


def _started(markers: Path) -> set[str]:
    return {p.name for p in markers.iterdir()}


def test_a_killed_worker_blames_only_the_flows_in_its_handlers(start_daemon: Any,
                                                               tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    daemon = start_daemon(
        {"park": {"type": "parkq", "states": ["queued"], "handler": f"{BLAME}:park",
                  "processes": 1, "concurrency": 2, "batch_size": 4}},
        env={"FF_TEST_MARKERS": str(markers)},
    )  # fmt: skip
    (pid,) = daemon.workers("park")
    fc = daemon.client
    ids = [f"p{i}" for i in range(6)]
    fc.create_many([CreateSpec(i, "parkq", "queued") for i in ids])

    def held() -> list[str]:
        return [i for i in ids if (r := fc.get(i)) is not None and r.state == "running"]

    wait_for(lambda: len(_started(markers)) == 2 and len(held()) == 4, timeout=15,
             what=f"2 running and 2 prefetched; log:\n{daemon.log_tail()}")
    running, prefetched = _started(markers), set(held()) - _started(markers)
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: all(_releases(fc, i) for i in running | prefetched), timeout=15,
             what=f"the dead worker's leases released; log:\n{daemon.log_tail()}")
    for flow_id in running:
        record = fc.get(flow_id)
        assert record is not None and record.crash_count == 1, record
        (cause,) = _releases(fc, flow_id)
        assert "killed by SIGKILL" in cause and "not started" not in cause, cause
    for flow_id in prefetched:
        record = fc.get(flow_id)
        assert record is not None and record.crash_count == 0, record
        (cause,) = _releases(fc, flow_id)
        assert "killed by SIGKILL" in cause and cause.endswith(", not started"), cause


def test_a_hang_blames_the_flow_past_its_limit_not_its_neighbour(start_daemon: Any,
                                                                 tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    daemon = start_daemon(
        {"gil": {"type": "gil", "states": ["nap", "spin"], "handler": f"{BLAME}:gil",
                 "processes": 1, "concurrency": 2}},
        daemon={"heartbeat_timeout": "3s"}, env={"FF_TEST_MARKERS": str(markers)},
    )  # fmt: skip
    fc = daemon.client
    fc.create("nap-1", "gil", "nap", b"")
    wait_for(lambda: "nap-1" in _started(markers), timeout=15, what="nap-1 in its handler")
    fc.create("spin-1", "gil", "spin", b"")
    wait_for(lambda: _releases(fc, "spin-1") and _releases(fc, "nap-1"), timeout=30,
             what=f"the hung worker's leases released; log:\n{daemon.log_tail()}")
    spin, nap = fc.get("spin-1"), fc.get("nap-1")
    assert spin is not None and spin.crash_count == 1, spin
    (cause,) = _releases(fc, "spin-1")
    assert "after hanging" in cause and "not blamed" not in cause, cause
    assert nap is not None and nap.crash_count == 0, nap
    (cause,) = _releases(fc, "nap-1")
    assert "after hanging" in cause and cause.endswith(", handler interrupted, not blamed"), cause
