"""Scenario 7: handlers that raise, return garbage, transition nowhere, block past their lease
or return after their lease was taken away - in-process and under the real daemon.

tests/engine/test_handlers.py::test_handler_misbehaviour already covers the basic
in-process mapping (exception -> retry, dict/int -> failed, undeclared/reserved transition ->
failed); these tests add what it does not: outcomes that used to park or wedge a Flow,
two real workers racing for a long handler, the stale-lease log line, and the daemon.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from ferricflowd import (
    FlowClient,
    QueueClient,
    RetryPolicy,
    WorkflowClient,
    complete,
    fail,
    transition,
)
from ferricflowd.flow.outcomes import Retry, Transition
from tests.helpers import assert_failed_after_retries, assert_versions, flow_keys, wait_for

T = "hq"
HARDEN = "tests.hardening.handlers"  # imported by the daemon's workers


@pytest.fixture
def fc(redis_server: Any, namespace: str, closing: Any) -> FlowClient:
    return closing(FlowClient.from_url(redis_server.url, namespace=namespace, partitions=2,
                                       max_payload_bytes=1000, max_value_bytes=2000))


def _run_until_idle(worker: Any, handler: Any = None, timeout: float = 10.0) -> int:
    args = (handler,) if handler is not None else ()
    return worker.run_until_idle(*args, timeout=timeout)


# -- outcomes that used to park, wedge or silently drop --------------------------------------

def test_bad_outcomes_fail_the_flow_clearly_and_never_park_it(fc: FlowClient) -> None:
    """Before the fixes: run_at_ms="x" parked the Flow for good (no due time), priority=7
    put it in a due set no worker reads, and an oversize result was written anyway."""
    wf = WorkflowClient(fc).workflow(type=T, initial_state="start", states=["start", "next"],
                                     retry_policy=RetryPolicy(max_retries=0, backoff="none"))
    behaviours = {
        "run-at-text": lambda job: Transition("next", run_at_ms="x"),
        "priority-7": lambda job: Transition("next", priority=7),
        "retry-at-text": lambda job: Retry(b"later", run_at_ms="soon"),
        "big-result": lambda job: complete(b"r" * 1001),
        "big-value": lambda job: complete(values={"v": b"v" * 2001}),
        "big-payload": lambda job: transition("next", payload=b"p" * 1001),
        "big-error": lambda job: fail(b"e" * 5000),
        "bad-name": lambda job: transition("no such/state"),
        "nul-payload": lambda job: transition("next", payload=b"\0"),
        "fine": lambda job: transition("next"),
    }

    @wf.state("start")
    def start(job: Any) -> Any:
        return behaviours[job.id](job)

    @wf.state("next")
    def next_(job: Any) -> Any:
        return job.payload  # the result shows the payload the transition stored

    for flow_id in behaviours:
        wf.start(flow_id, payload=b"orig")
    worker = wf.worker(states=["start", "next"], block_ms=50)
    wait_for(lambda: _run_until_idle(worker) == 0 and all(
        fc.get(i).terminal for i in behaviours), timeout=15, what="every flow terminal")

    def failed_with(flow_id: str, *fragments: str) -> None:
        record = fc.get(flow_id)
        assert record is not None and record.state == "failed", record
        text = (record.error or b"").decode()
        assert all(f in text for f in fragments), (flow_id, text)

    failed_with("run-at-text", "TypeError", "run_at_ms must be int")
    failed_with("priority-7", "priority", "must be 0, 1 or 2")
    failed_with("retry-at-text", "TypeError", "run_at_ms must be int")
    failed_with("big-result", "cannot be stored", "result", "over the limit of 1000")
    failed_with("big-value", "cannot be stored", "values['v']", "over the limit of 2000")
    failed_with("big-payload", "cannot be stored", "payload", "over the limit of 1000")
    failed_with("big-error", "cannot be stored", "error", "over the limit of 1000")
    failed_with("bad-name", "invalid transition", "to_state", "'no such/state'")
    assert fc.get("big-value", values=["v"]).values == {}  # type: ignore[union-attr]
    assert fc.get("big-payload").payload == b"orig"  # type: ignore[union-attr]
    # a one-NUL payload is a payload like any other (it used to mean "keep the old one")
    assert fc.get("nul-payload").result == b"\0"  # type: ignore[union-attr]
    assert fc.get("fine").result == b"orig"  # type: ignore[union-attr]
    for flow_id in behaviours:
        assert_versions(fc, flow_id)
        assert fc.get(flow_id).next_run_at_ms is None  # type: ignore[union-attr]


# -- blocking past the lease: two real workers ------------------------------------------------

def test_lease_extension_keeps_a_long_handler_and_a_second_worker_never_runs_it(
        fc: FlowClient) -> None:
    q = QueueClient(fc).queue(type=T)
    ids = [f"long-{i}" for i in range(3)]
    for flow_id in ids:
        q.enqueue(flow_id, payload=b"1.6")  # 1.6 s of work under a 0.6 s lease
    lock = threading.Lock()
    active: Counter[str] = Counter()
    overlaps: list[str] = []
    runs: Counter[tuple[str, str, int]] = Counter()  # (flow, state, fencing) -> runs

    def handler(job: Any) -> bytes:
        with lock:
            active[job.id] += 1
            if active[job.id] > 1:
                overlaps.append(job.id)
            runs[(job.id, job.state, job.fencing_token)] += 1
        time.sleep(float(job.payload))
        with lock:
            active[job.id] -= 1
        return b"done"

    first = q.worker(worker_id="first", lease_ms=600, block_ms=50)
    second = q.worker(worker_id="second", lease_ms=600, block_ms=50)
    stop = threading.Event()

    def reclaimer() -> None:  # what the supervisor's maintenance does every interval
        while not stop.wait(0.05):
            fc.reclaim_expired(T)

    threads = [threading.Thread(target=first.run, args=(handler,), daemon=True),
               threading.Thread(target=reclaimer, daemon=True)]
    threads[0].start()
    wait_for(lambda: fc.stats(T).running == 3, timeout=5, what="the first worker holds all 3")
    threads[1].start()
    threads.append(threading.Thread(target=second.run, args=(handler,), daemon=True))
    threads[2].start()
    try:
        wait_for(lambda: all(fc.get(i).state == "completed" for i in ids), timeout=10,
                 what="the long flows completed")
    finally:
        stop.set()
        first.stop()
        second.stop()
        for t in threads:
            t.join(10)
    assert not any(t.is_alive() for t in threads)
    assert overlaps == []
    assert runs == Counter({(i, "queued", 1): 1 for i in ids})
    for flow_id in ids:
        record = fc.get(flow_id)
        assert record is not None and record.fencing_token == 1 and record.result == b"done"
        names = [e.event for e in fc.history(flow_id)]
        assert names.count("claimed") == 1 and names.count("completed") == 1, names
        assert names.count("lease_extended") >= 2 and "lease_released" not in names, names
        claimed = [e.details for e in fc.history(flow_id) if e.event == "claimed"]
        assert claimed[0]["worker"] == "first" and claimed[0]["fencing"] == 1
        assert_versions(fc, flow_id)
    assert second._runner is not None and second._runner.stats.claimed == 0


# -- returning after the lease was reclaimed (in-process: the log line) -----------------------

def test_stale_outcome_is_logged_with_the_flow_and_the_worker_goes_on(
        fc: FlowClient, caplog: pytest.LogCaptureFixture) -> None:
    q = QueueClient(fc).queue(type=T)
    q.enqueue("slow one", payload=b"wait")
    started, release = threading.Event(), threading.Event()

    def handler(job: Any) -> bytes:
        if job.payload == b"wait" and job.fencing_token == 1:
            started.set()
            assert release.wait(10)
            return b"late"
        return b"on time"

    worker = q.worker(worker_id="w-stale", block_ms=50, concurrency=4)
    thread = threading.Thread(target=worker.run, args=(handler,), daemon=True)
    with caplog.at_level(logging.WARNING, logger="ferricflowd.flow.runner"):
        thread.start()
        assert started.wait(10)
        assert fc.reclaim_worker("w-stale", "test: presumed dead") == (1, 0)
        wait_for(lambda: fc.get("slow one").state == "completed", timeout=10,
                 what="the re-run completed")
        release.set()
        wait_for(lambda: worker._runner is not None and worker._runner.stats.stale == 1,
                 timeout=10, what="the late outcome refused")
        q.enqueue_many([f"after-{i}" for i in range(10)])
        wait_for(lambda: fc.stats(T).counts.get("completed") == 11, timeout=10,
                 what="later flows completed by the same worker")
        assert thread.is_alive()
    worker.stop()
    thread.join(10)
    record = fc.get("slow one")
    assert record is not None and record.result == b"on time" and record.fencing_token == 2
    assert [e.event for e in fc.history("slow one")].count("completed") == 1
    lines = [r.getMessage() for r in caplog.records if "lease lost" in r.getMessage()]
    assert len(lines) == 1 and "slow one" in lines[0] and T in lines[0], lines


# -- under the daemon ------------------------------------------------------------------------

def _runs(r: redis.Redis, namespace: str, flow_id: str) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in r.hgetall(f"{namespace}:runs:{flow_id}").items()}


def test_misbehaving_handlers_under_the_daemon(start_daemon: Any, redis_server: Any,
                                               namespace: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    daemon = start_daemon(
        {"mis": {"type": "misbehave", "states": ["start", "done"],
                 "handler": f"{HARDEN}:misbehave", "processes": 2, "lease": "1s"}},
        env={"FF_HARDEN_REDIS": redis_server.url, "FF_HARDEN_PREFIX": namespace,
             "FF_HARDEN_MARKERS": str(markers)},
    )  # fmt: skip
    wait_for(lambda: daemon.group_ready("mis", 2), timeout=10, what="2 workers ready")
    pids = set(daemon.workers("mis"))
    fc = daemon.client
    wf = WorkflowClient(fc).workflow(type="misbehave", initial_state="start")
    odd = ["with spaces and\ttab", "ünïcødé-订单-🚀", "x" * 4096]
    blocks = [f"block-{i}" for i in range(3)]
    wf.start_many([("raise-1", b"raise"), ("object-1", b"object"),
                   ("undeclared-1", b"undeclared"), ("reserved-1", b"reserved")]
                  + [(b, b"block:2.6") for b in blocks]
                  + [(i, b"fine") for i in odd] + [(f"fine-{i}", b"fine") for i in range(20)])
    everything = ["raise-1", "object-1", "undeclared-1", "reserved-1", *blocks, *odd,
                  *[f"fine-{i}" for i in range(20)]]
    wait_for(lambda: all(fc.get(i).terminal for i in everything), timeout=20,
             what=f"every flow terminal; log:\n{daemon.log_tail()}")

    assert_failed_after_retries(fc, "raise-1", b"ValueError: bad input in raise-1")
    garbage = fc.get("object-1")
    assert garbage is not None and garbage.state == "failed"
    assert b"unsupported dict" in (garbage.error or b"")
    undeclared = fc.get("undeclared-1")
    assert undeclared is not None and undeclared.state == "failed"
    assert b"undeclared state 'nowhere'" in (undeclared.error or b"")
    reserved = fc.get("reserved-1")
    assert reserved is not None and reserved.state == "failed"
    assert b"invalid transition" in (reserved.error or b"") and b"reserved" in reserved.error

    r = redis_server.client()
    try:
        # A 1 s lease, 2.6 s of work, two processes polling the state and the supervisor
        # reclaiming expired leases every 200 ms: the extension kept every lease.
        assert r.get(f"{namespace}:overlap") is None
        for flow_id in blocks:
            assert _runs(r, namespace, flow_id) == {"start:1": 1, "done:2": 1}, flow_id
            names = [e.event for e in fc.history(flow_id)]
            assert names.count("claimed") == 2 and "lease_released" not in names, names
            assert names.count("lease_extended") >= 2, names
        for flow_id in [*odd, *blocks, *(f"fine-{i}" for i in range(20))]:
            record = fc.get(flow_id)
            assert record is not None and record.state == "completed" and record.result == b"ok"
        for flow_id in everything:
            assert_versions(fc, flow_id)
        assert flow_keys(r, namespace, odd[2]), "the 4 KiB id's keys"

        # Returning after the lease was taken away: the late outcome is refused and logged
        # naming the Flow; the worker keeps working.
        wf.start("stale-1", payload=b"stale")
        wait_for(lambda: fc.get("stale-1").state == "running", timeout=10, what="stale-1 runs")
        owner = fc.get("stale-1").lease_owner  # type: ignore[union-attr]
        assert owner is not None and int(owner.split(":")[-2]) in pids
        assert fc.reclaim_worker(owner, "test: presumed dead") == (1, 0)
        wait_for(lambda: fc.get("stale-1").state == "completed", timeout=10,
                 what="stale-1 re-run and completed")
        (markers / "stale-1").touch()
        wait_for(lambda: "misbehave/stale-1 start#1 outcome rejected (lease lost)"
                 in daemon.log(), timeout=10, what=f"the stale line; log:\n{daemon.log_tail()}")
        assert _runs(r, namespace, "stale-1") == {"start:1": 1, "start:2": 1, "done:3": 1}
        names = [e.event for e in fc.history("stale-1")]
        assert names.count("completed") == 1 and names.count("lease_released") == 1, names
        wf.start_many([f"later-{i}" for i in range(10)])
        wait_for(lambda: all(fc.get(f"later-{i}").state == "completed" for i in range(10)),
                 timeout=10, what="later flows completed")
    finally:
        r.close()
    assert set(daemon.workers("mis")) == pids  # nothing crashed or was restarted
    log = daemon.log()
    assert "misbehave/raise-1 start#1 retry scheduled" in log
    assert "ValueError: bad input in raise-1" in log
    assert "misbehave/object-1 start#1 failed" in log and "unsupported dict" in log
    assert not re.search(r"worker \S+ (crashed|died)", log)  # no worker process died
