"""The supervisor's parts without processes: control-pipe parsing, backoff and crash loops,
readiness, the maintenance thread with a fake store, the HTTP endpoints."""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from ferricflowd.config import load_config
from ferricflowd.supervisor.groups import (
    BACKOFF_BASE_S,
    CRASH_LOOP_RETRY_S,
    STABLE_AFTER_S,
    GroupState,
)
from ferricflowd.supervisor.http import Health, HealthServer
from ferricflowd.supervisor.maintenance import Maintenance
from ferricflowd.supervisor.workers import Worker
from tests.daemons import free_port
from tests.fakes import FakeClient
from tests.helpers import wait_for


@pytest.fixture
def config(tmp_path: Path):
    path = tmp_path / "flows.toml"
    path.write_text('[groups.g]\ntype = "q"\nstates = ["a"]\nhandler = "m:f"\nprocesses = 2\n')
    return load_config(path, {})


def make_worker(now: float = 100.0) -> tuple[Worker, int]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    popen: Any = subprocess.Popen.__new__(subprocess.Popen)
    worker = Worker(pid=4242, group="g", worker_id="h:4242:g", generation=1, popen=popen,
                  control_fd=read_fd, spawned_at=now)  # fmt: skip
    return worker, write_fd


def test_control_lines_are_parsed_across_partial_writes() -> None:
    worker, w = make_worker()
    os.write(w, b'{"t": "ready"}\n{"t": "hb", "busy": 3, "conc": 8, "handled": 17, "rs')
    assert [m["t"] for m in worker.read_control(101.0)] == ["ready"]
    assert worker.ready and worker.ready_at == 101.0
    os.write(w, b's": 1000, "tick_age": 0.5}\nnot json\n')
    worker.read_control(102.0)
    assert (worker.busy, worker.concurrency, worker.handled, worker.rss) == (3, 8, 17, 1000)
    assert worker.last_tick == pytest.approx(101.5)
    os.close(w)
    assert worker.read_control(103.0) == []  # EOF is quiet
    os.close(worker.control_fd)


def test_backoff_doubles_and_crash_loop_is_marked_then_cleared(config) -> None:
    group = GroupState.of(config, config.groups[0])
    delays = [group.record_crash(10.0 + i, max_restarts=3, window_s=60) for i in range(3)]
    for n, delay in enumerate(delays):
        assert BACKOFF_BASE_S * 2**n * 0.75 <= delay <= BACKOFF_BASE_S * 2**n * 1.25
    assert not group.crash_looping
    delay = group.record_crash(13.0, max_restarts=3, window_s=60)
    assert group.crash_looping and delay >= CRASH_LOOP_RETRY_S * 0.75
    assert not group.note_stable(14.0, oldest_alive_since=13.5)  # not long enough
    assert group.note_stable(13.5 + STABLE_AFTER_S + 1, oldest_alive_since=13.5)
    assert not group.crash_looping and group.consecutive_crashes == 0


def test_crashes_outside_the_window_do_not_count(config) -> None:
    group = GroupState.of(config, config.groups[0])
    for t in (0.0, 100.0, 200.0, 300.0):
        group.record_crash(t, max_restarts=2, window_s=50)
    assert not group.crash_looping and len(group.crashes) == 1


def test_readiness_names_what_is_missing(config) -> None:
    group = GroupState.of(config, config.groups[0])
    worker, w = make_worker()
    assert group.readiness([worker])[1] == "0/2 workers ready"
    worker.ready_at = 1.0
    other, w2 = make_worker()
    other.ready_at = 1.0
    assert group.readiness([worker, other]) == ({"target": 2, "ready": 2}, None)
    other.retire_reason = "recycle: max_jobs"  # on its way out: no longer counts
    assert group.readiness([worker, other])[1] == "1/2 workers ready"
    group.boot_failure = "exit 3 (boot: handler import failed)"
    assert "failed at boot" in str(group.readiness([worker])[1])
    for fd in (w, w2, worker.control_fd, other.control_fd):
        os.close(fd)


def test_maintenance_retries_a_reclaim_until_the_store_is_back() -> None:
    client = FakeClient()
    maintenance = Maintenance(lambda: client, ["q"], interval_s=0.05)
    maintenance.start()
    try:
        maintenance.reclaim_worker("h:1:g", "worker h:1:g killed by SIGKILL", "signal")
        assert not maintenance.flush(0.3)  # store down: still pending
        assert not maintenance.store_ok(1.0)
        client.down = False
        assert maintenance.flush(5.0)
        assert client.reclaimed == [("h:1:g", "worker h:1:g killed by SIGKILL")]
        wait_for(lambda: "q" in client.expired and maintenance.store_ok(1.0), timeout=5)
    finally:
        maintenance.stop()
    assert not maintenance.is_alive()


def test_health_endpoints(tmp_path: Path) -> None:
    from ferricflowd.supervisor.promdir import PromDir

    health = {"now": Health(time.monotonic(), False, ("group g: 0/1 workers ready",), {})}
    server = HealthServer(f"127.0.0.1:{free_port()}", lambda: health["now"],
                          PromDir(tmp_path), alive_within_s=5)  # fmt: skip
    server.start()

    def get(path: str) -> tuple[int, dict[str, Any]]:
        try:
            with urllib.request.urlopen(f"http://{server.address}{path}", timeout=2) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    try:
        assert get("/healthz")[0] == 200
        status, doc = get("/readyz")
        assert status == 503 and doc["reasons"] == ["group g: 0/1 workers ready"]
        health["now"] = Health(time.monotonic(), True, (), {"g": {"target": 1, "ready": 1}})
        assert get("/readyz") == (200, {"status": "ready", "groups": {"g": {"target": 1,
                                                                             "ready": 1}}})
        health["now"] = Health(time.monotonic() - 60)  # the loop stopped turning
        assert get("/healthz")[0] == 503
        assert get("/nope")[0] == 404
    finally:
        server.stop()


def test_deaths_after_progress_do_not_mark_a_crash_loop(config) -> None:
    group = GroupState.of(config, config.group("g"))
    for i in range(20):  # a kill storm: each worker had booted and finished work
        delay = group.record_crash(100.0 + i * 0.3, 5, 60.0, was_ready=True, made_progress=True)
        assert delay <= BACKOFF_BASE_S * 1.25
    assert not group.crash_looping and len(group.crashes) == 0
    for i in range(6):  # deaths without progress still count
        group.record_crash(110.0 + i, 5, 60.0, was_ready=True)
    assert group.crash_looping


def test_a_worker_made_progress_once_ready_and_it_reported_stored_outcomes() -> None:
    worker, w = make_worker()
    os.write(w, b'{"t": "progress"}\n')  # (cannot come before ready; tested for the rule)
    worker.read_control(101.0)
    assert worker.progressed and not worker.made_progress
    os.write(w, b'{"t": "ready"}\n')
    worker.read_control(102.0)
    assert worker.made_progress
    os.close(w)
    os.close(worker.control_fd)
