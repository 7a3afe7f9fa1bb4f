"""Crashes and drains, in fast tests (the chaos scenarios kill_storm, drain_under_load and
poison_pill found what they pin):

- supervisor: a worker that had reported ready is replaced at the base delay, not after an
  ever-doubling backoff (a kill storm emptied groups for up to 30 s);
- worker: past the drain deadline it hands back the leases of abandoned handlers (due at
  once, no crash counted; three deploys used to fail a long Flow as a poison pill);
- worker: a Flow one crash short of max_crashes runs alone, so bystanders of a poison pill
  are not failed with it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from ferricflowd.config import load_config
from ferricflowd.flow.client import FlowClient
from ferricflowd.flow.runner import FlowWorker
from ferricflowd.flow.wire import LeaseRequest
from ferricflowd.supervisor.groups import BACKOFF_BASE_S, CRASH_LOOP_RETRY_S, GroupState
from tests.helpers import wait_for


def test_a_ready_worker_killed_again_and_again_is_replaced_promptly(tmp_path: Path) -> None:
    path = tmp_path / "flows.toml"
    path.write_text('[groups.g]\ntype = "q"\nstates = ["a"]\nhandler = "m:f"\n')
    config = load_config(path, {})
    group = GroupState.of(config, config.groups[0])
    delays = [group.record_crash(float(i), 100, 60.0, was_ready=True) for i in range(8)]
    assert max(delays) <= BACKOFF_BASE_S * 1.25, delays  # no doubling (was up to 12.8 s)
    delays = [group.record_crash(10.0 + i, 100, 60.0) for i in range(4)]  # boot crashes
    assert delays[-1] > BACKOFF_BASE_S * 2, delays  # ...still back off
    looping = GroupState.of(config, config.groups[0])
    for i in range(4):
        delay = looping.record_crash(float(i), 3, 60.0, was_ready=True)
    assert looping.crash_looping and delay >= CRASH_LOOP_RETRY_S * 0.75  # the guard holds


def _history_causes(client: FlowClient, flow_id: str) -> list[str]:
    return [str(e.details.get("cause")) for e in client.history(flow_id)
            if e.event == "lease_released"]


def test_drain_deadline_hands_back_abandoned_leases_without_a_crash(
        redis_server: Any, namespace: str) -> None:
    client = FlowClient.from_url(redis_server.url, namespace=namespace)
    release = threading.Event()
    try:
        client.create("long", "q", "queued")
        worker = FlowWorker(client, type="q", states=["queued"],
                            handlers={"queued": lambda job: release.wait(10)},
                            block_ms=50, lease_ms=60_000)
        runner = threading.Thread(target=worker.run)
        runner.start()
        wait_for(lambda: worker.statistics().in_flight == 1, timeout=5, what="handler running")
        worker.drain(0.2)
        runner.join(5)
        assert not runner.is_alive()
        record = client.get("long")
        assert record is not None and record.state == "queued", record
        assert record.crash_count == 0 and record.next_run_at_ms is not None
        assert _history_causes(client, "long") == ["drain deadline"]
    finally:
        release.set()
        client.close()


def test_a_flow_one_crash_from_failing_runs_alone(redis_server: Any, namespace: str) -> None:
    client = FlowClient.from_url(redis_server.url, namespace=namespace)
    try:
        suspects = [f"s{i}" for i in range(3)]
        for fid in suspects:
            client.create(fid, "q", "queued")
        for n in range(2):  # two worker deaths while holding them: crash_count 2 of max 3
            claimed = client.claim("q", LeaseRequest(f"dead{n}", ["queued"], 60_000), limit=10)
            assert {j.id for j in claimed.jobs} == set(suspects)
            assert client.reclaim_worker(f"dead{n}", "killed") == (3, 0)
        for i in range(6):
            client.create(f"fresh{i}", "q", "queued")
        running: set[str] = set()
        overlaps: list[tuple[str, frozenset[str]]] = []
        lock = threading.Lock()

        def handler(job: Any) -> None:
            with lock:
                if job.id in suspects and running:
                    overlaps.append((job.id, frozenset(running)))
                if any(s in running for s in suspects):
                    overlaps.append((job.id, frozenset(running)))
                running.add(job.id)
            time.sleep(0.02)
            with lock:
                running.discard(job.id)

        worker = FlowWorker(client, type="q", states=["queued"], handlers={"queued": handler},
                            concurrency=4, batch_size=10, block_ms=50)
        worker.run_until_idle(timeout=20)
        assert overlaps == []  # no suspect ran beside anything, nothing beside a suspect
        for fid in [*suspects, *(f"fresh{i}" for i in range(6))]:
            record = client.get(fid)
            assert record is not None and record.state == "completed", record
        assert all(client.get(fid).crash_count == 2 for fid in suspects)
        assert any("crash suspect: runs alone" in _history_causes(client, fid)
                   for fid in suspects)
    finally:
        client.close()
