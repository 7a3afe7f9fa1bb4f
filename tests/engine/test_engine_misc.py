"""Engine behaviour beyond the seeds: ordering, scheduling, retry policy, cancel, children,
outbox, retention, stats, argument checks, odd ids, durability, handler misbehaviour, wake-ups.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from ferricflowd import (
    ChildSpec,
    DurabilityError,
    ExceptionPolicy,
    FlowClient,
    FlowNotFound,
    InvalidArgument,
    QueueClient,
    RetryPolicy,
    StaleLease,
    TerminalFlow,
    ValueConflict,
    WorkflowClient,
    complete,
    fail,
    retry,
    transition,
)
from ferricflowd.flow import store as store_module
from ferricflowd.flow.client import CreateSpec
from ferricflowd.flow.records import Job
from ferricflowd.flow.wire import LeaseRequest
from tests.engine.util import assert_failed_after_retries, events, running, wait_for

T = "misc"
FAR = 10 ** 13  # a now_ms far in the future (year 2286)


def _server_ms(fc: FlowClient) -> int:
    sec, usec = fc.store.execute(lambda r: r.time())
    return int(sec) * 1000 + int(usec) // 1000


def _claim(fc: FlowClient, states: list[str], limit: int = 100, type: str = T,
           worker: str = "w", lease_ms: int = 60_000) -> list[Job]:
    return fc.claim(type, LeaseRequest(worker, states, lease_ms), limit=limit).jobs


def _one(fc: FlowClient, state: str = "queued", type: str = T) -> Job:
    jobs = _claim(fc, [state], 1, type)
    assert len(jobs) == 1
    return jobs[0]


def _key_in_other_partition(fc: FlowClient, than: int, stem: str) -> str:
    for i in range(1000):
        if fc.partition_for(f"{stem}{i}") != than:
            return f"{stem}{i}"
    raise AssertionError("no key in another partition")


# -- ordering and scheduling --------------------------------------------------------------------

def test_priorities_2_before_1_before_0(flow_client: FlowClient) -> None:
    fc = flow_client
    for i, prio in enumerate([0, 1, 2, 0, 1, 2]):
        fc.create(f"f{i}-p{prio}", T, "queued", priority=prio, partition_key="same")
    order = [_one(fc).id for _ in range(6)]
    assert order == ["f2-p2", "f5-p2", "f1-p1", "f4-p1", "f0-p0", "f3-p0"]
    for i, prio in enumerate([0, 2, 1]):
        fc.create(f"g{i}-p{prio}", T, "queued", priority=prio, partition_key="same")
    assert [j.priority for j in _claim(fc, ["queued"], 3)] == [2, 1, 0]
    with pytest.raises(InvalidArgument, match="priority"):
        fc.create("bad", T, "queued", priority=3)


def test_priorities_across_partitions(flow_client: FlowClient) -> None:
    fc = flow_client
    first: dict[int, str] = {}
    for i in range(200):
        first.setdefault(fc.partition_for(f"x{i}"), f"x{i}")
    fc.create(first[0], T, "queued", priority=0)
    fc.create(first[1], T, "queued", priority=2)
    jobs = fc.claim(T, LeaseRequest("w", ["queued"], 60_000), limit=1, start=0).jobs
    assert [j.priority for j in jobs] == [2]


def test_multi_state_claim_is_earliest_due_first(flow_client: FlowClient) -> None:
    fc = flow_client
    now = _server_ms(fc)
    plan = [("b1", "b", 400), ("a1", "a", 300), ("b2", "b", 200), ("a2", "a", 100),
            ("c1", "c", 500)]
    for flow_id, state, ago in plan:
        fc.create(flow_id, T, state, run_at_ms=now - ago, partition_key="same")
    jobs = _claim(fc, ["a", "b"], 10)
    assert [(j.id, j.state) for j in jobs] == [("b1", "b"), ("a1", "a"), ("b2", "b"),
                                               ("a2", "a")]
    assert fc.get("c1", partition_key="same").state == "c"  # type: ignore[union-attr]


def test_run_at_scheduling(flow_client: FlowClient) -> None:
    fc = flow_client
    run_at = _server_ms(fc) + 400
    fc.create("later", T, "queued", run_at_ms=run_at)
    fc.create("now", T, "queued")
    first = fc.claim(T, LeaseRequest("w", ["queued"], 60_000), limit=10)
    assert [j.id for j in first.jobs] == ["now"]
    assert first.next_due_ms is not None and first.next_due_ms <= run_at
    assert fc.get("later").next_run_at_ms == run_at  # type: ignore[union-attr]
    assert fc.stats(T).states["queued"].due_now == 0

    def claim_later() -> list[Job]:
        return _claim(fc, ["queued"], 10)

    jobs = wait_for(claim_later, timeout=5, what="the scheduled flow to become due")
    assert [j.id for j in jobs] == ["later"]
    claimed_at = fc.history("later")[-1].at_ms
    assert claimed_at >= run_at


def test_delay_ms_and_retry_run_at(queues: QueueClient) -> None:
    fc = queues.flow_client
    q = queues.queue(type=T)
    before = int(time.time() * 1000)
    q.enqueue("d1", delay_ms=60_000)
    due = fc.get("d1").next_run_at_ms  # type: ignore[union-attr]
    assert due is not None and before + 60_000 <= due <= int(time.time() * 1000) + 60_000
    q.enqueue("d2")
    job = _one(fc)
    run_at = _server_ms(fc) + 3_600_000
    assert fc.apply_outcome(job, retry(b"later", run_at_ms=run_at)) == b"scheduled"
    assert fc.get("d2").next_run_at_ms == run_at  # type: ignore[union-attr]


# -- retry policy -------------------------------------------------------------------------------

def _retry_delays(fc: FlowClient, type: str, flow_id: str, n: int) -> list[int]:
    """Retry a Flow n times as fast as its schedule allows; the delays the engine chose."""
    fc.create(flow_id, type, "queued")
    for _ in range(n):
        job = wait_for(lambda: _claim(fc, ["queued"], 1, type), timeout=10, what="due again")[0]
        assert fc.apply_outcome(job, retry(b"again")) == b"scheduled"
    return [e.details["due"] - e.at_ms for e in fc.history(flow_id) if e.event == "retry"]


@pytest.mark.parametrize("backoff,expected", [
    ("fixed", [40, 40, 40, 40]),
    ("linear", [40, 80, 120, 150]),
    ("exponential", [40, 80, 150, 150]),
    ("none", [0, 0, 0, 0]),
])
def test_retry_backoff_with_jitter_bounds(flow_client: FlowClient, redis_server: Any,
                                          namespace: str, closing: Callable[[Any], Any],
                                          backoff: str, expected: list[int]) -> None:
    pct = 25
    policy = RetryPolicy(max_retries=10, backoff=backoff, base_ms=40, max_ms=150,
                         jitter_pct=pct)
    flow_client.register_policy(T, policy)
    delays = _retry_delays(flow_client, T, "r1", 4)
    for got, want in zip(delays, expected, strict=True):
        assert want * (1 - pct / 100) - 1 <= got <= want * (1 + pct / 100), (delays, expected)
    # Jitter is deterministic: the same id and retry number give the same delay anywhere.
    other_ns: FlowClient = closing(FlowClient.from_url(redis_server.url, namespace=namespace + "b",
                                                      partitions=2))
    other_ns.register_policy(T, policy)
    assert _retry_delays(other_ns, T, "r1", 4) == delays
    if backoff != "none":  # ... and differs between ids
        assert _retry_delays(flow_client, T, "r2", 4) != delays


def test_retry_without_jitter_is_exact(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.register_policy(T, RetryPolicy(max_retries=5, backoff="exponential", base_ms=10,
                                      max_ms=50, jitter_pct=0))
    assert _retry_delays(fc, T, "e1", 4) == [10, 20, 40, 50]


def test_retry_exhausted_to_a_non_terminal_state(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.register_policy(T, RetryPolicy(max_retries=1, backoff="none", exhausted_to="dead_letter"))
    fc.create("x", T, "queued")
    assert fc.apply_outcome(_one(fc), retry(b"e1")) == b"scheduled"
    assert fc.apply_outcome(_one(fc), retry(b"e2")) == b"exhausted"
    record = fc.get("x")
    assert record is not None and record.state == "dead_letter" and record.error == b"e2"
    assert record.attempt == 1 and record.attempts_total == 2
    assert record.next_run_at_ms is not None and record.next_run_at_ms <= _server_ms(fc)
    last = fc.history("x")[-1]
    assert (last.event, last.details["decision"], last.details["to"]) == (
        "retry", "exhausted", "dead_letter")
    job = _one(fc, "dead_letter")
    assert fc.apply_outcome(job, complete(b"parked")) == b"ok"


def test_per_state_retry_policy(workflows: WorkflowClient) -> None:
    wf = workflows.workflow(type=T, initial_state="a", retry_policy=RetryPolicy(max_retries=0))
    runs: list[tuple[str, int]] = []

    @wf.state("a")
    def a(job: Any) -> Any:
        runs.append(("a", job.attempt))
        return transition("b") if job.payload == b"go" else retry(b"no")

    @wf.state("b", retry_policy=RetryPolicy(max_retries=2, backoff="none"))
    def b(job: Any) -> Any:
        runs.append(("b", job.attempt))
        return retry(b"b fails")

    wf.start("go", payload=b"go")
    wf.start("stop", payload=b"stop")
    fc = workflows.flow_client
    wait_for(lambda: wf.worker(states=["a", "b"]).run_until_idle(timeout=5) == 0
             and fc.get("go").terminal, timeout=10)  # type: ignore[union-attr]
    assert fc.get("stop").state == "failed"  # type: ignore[union-attr]
    assert fc.get("go").state == "failed"  # type: ignore[union-attr]
    assert sorted(runs) == [("a", 1), ("a", 1), ("b", 1), ("b", 2), ("b", 3)]


# -- cancel -------------------------------------------------------------------------------------

def test_cancel(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("q", T, "queued")
    assert fc.cancel("q", "no longer needed") is True
    record = fc.get("q")
    assert record is not None and record.state == "cancelled"
    assert record.error == b"no longer needed" and record.next_run_at_ms is None
    assert fc.cancel("q") is False  # twice is OK
    assert [r.id for r in fc.terminals(T, "cancelled")] == ["q"]
    assert events(fc, "q") == ["created", "cancelled"]

    fc.create("r", T, "queued")
    job = _one(fc)
    with pytest.raises(StaleLease):
        fc.cancel("r")  # a running Flow needs its lease
    assert fc.get("r").state == "running"  # type: ignore[union-attr]
    assert fc.cancel("r", "operator", job=job) is True
    with pytest.raises(StaleLease):
        fc.apply_outcome(job, complete())
    rec = fc.get("r")
    assert rec is not None and rec.state == "cancelled" and rec.lease_owner is None

    fc.create("c", T, "queued")
    fc.apply_outcome(_one(fc), complete())
    with pytest.raises(TerminalFlow):
        fc.cancel("c")
    fc.create("f", T, "queued")
    fc.apply_outcome(_one(fc), fail(b"x"))
    with pytest.raises(TerminalFlow):
        fc.cancel("f")
    with pytest.raises(FlowNotFound):
        fc.cancel("missing")
    assert fc.stats(T).counts == {"cancelled": 2, "completed": 1, "failed": 1}


def test_cancel_cascades_to_children_and_grandchildren(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("top", T, "split")
    top = _one(fc, "split")
    top.flow.spawn_children([ChildSpec(id=f"top-{i}", type=T, state="split") for i in range(3)],
                            wait_state="merge")
    assert fc.apply_outcome(top, transition("waiting")) == b"ok"
    kids = {j.id: j for j in _claim(fc, ["split"], 3)}
    assert sorted(kids) == ["top-0", "top-1", "top-2"]
    kids["top-0"].flow.spawn_children([ChildSpec(id="top-0-a", type=T)], wait_state="merge")
    assert fc.apply_outcome(kids["top-0"], transition("waiting")) == b"ok"
    assert fc.apply_outcome(kids["top-1"], complete(b"done")) == b"ok"
    # top-2 stays running under its worker

    assert fc.cancel("top", "abort", partition_key="top") is True
    states = {c.id: c.state for c in fc.children("top")}
    assert states == {"top-0": "cancelled", "top-1": "completed", "top-2": "cancelled"}
    assert fc.get("top-0-a", partition_key="top").state == "cancelled"  # type: ignore
    with pytest.raises(StaleLease):
        fc.apply_outcome(kids["top-2"], complete())
    assert fc.stats(T).counts == {"cancelled": 4, "completed": 1}


# -- children -----------------------------------------------------------------------------------

def _parent_with_children(fc: FlowClient, n: int, **spawn: Any) -> list[Job]:
    fc.create("parent", T, "split")
    job = _one(fc, "split")
    job.flow.spawn_children([ChildSpec(id=f"kid-{i}", type="kid") for i in range(n)],
                            wait_state="merge", **spawn)
    assert fc.apply_outcome(job, transition("waiting")) == b"ok"
    kids = sorted(_claim(fc, ["queued"], n, "kid"), key=lambda j: j.id)
    assert len(kids) == n
    return kids


def test_spawn_wait_any(flow_client: FlowClient) -> None:
    fc = flow_client
    kids = _parent_with_children(fc, 3, wait="any")
    assert fc.apply_outcome(kids[1], complete(b"first")) == b"ok"
    parent = fc.get("parent")
    assert parent is not None and parent.state == "merge" and parent.next_run_at_ms is not None
    assert [j.id for j in _claim(fc, ["merge"])] == ["parent"]
    assert fc.apply_outcome(kids[0], complete()) == b"ok"  # later children change nothing
    assert fc.get("parent").state == "running"  # type: ignore[union-attr]
    assert {c.id: c.state for c in fc.children("parent")} == {
        "kid-0": "completed", "kid-1": "completed", "kid-2": "running"}


def test_spawn_any_all_failed_fails_parent(flow_client: FlowClient) -> None:
    fc = flow_client
    kids = _parent_with_children(fc, 2, wait="any")
    fc.apply_outcome(kids[0], fail(b"x"))
    assert fc.get("parent").state == "waiting"  # type: ignore[union-attr]
    fc.apply_outcome(kids[1], fail(b"y"))
    parent = fc.get("parent")
    assert parent is not None and parent.state == "failed"
    assert parent.error is not None and b"kid-1" in parent.error


def test_child_failure_fails_parent_and_cancels_siblings(flow_client: FlowClient) -> None:
    fc = flow_client
    kids = _parent_with_children(fc, 3)
    assert fc.apply_outcome(kids[0], complete()) == b"ok"
    assert fc.apply_outcome(kids[1], fail(b"broken")) == b"ok"
    parent = fc.get("parent")
    assert parent is not None and parent.state == "failed"
    assert parent.error is not None and b"kid-1" in parent.error
    assert {c.id: c.state for c in fc.children("parent")} == {
        "kid-0": "completed", "kid-1": "failed", "kid-2": "cancelled"}
    with pytest.raises(StaleLease):
        fc.apply_outcome(kids[2], complete())


def test_child_failure_ignored(flow_client: FlowClient) -> None:
    fc = flow_client
    kids = _parent_with_children(fc, 3, on_child_failed="ignore")
    fc.apply_outcome(kids[0], fail(b"broken"))
    fc.apply_outcome(kids[1], complete(b"ok"))
    assert fc.get("parent").state == "waiting"  # type: ignore[union-attr]
    fc.cancel("kid-2", partition_key="parent", job=kids[2])
    parent = fc.get("parent")
    assert parent is not None and parent.state == "merge" and parent.next_run_at_ms is not None
    assert parent.children_group["res"] == "ok"
    assert {c.id: (c.state, c.result, c.error) for c in fc.children("parent")} == {
        "kid-0": ("failed", None, b"broken"), "kid-1": ("completed", b"ok", None),
        "kid-2": ("cancelled", None, b"cancelled")}


def test_children_finishing_before_the_parent_transitions(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("parent", T, "split")
    job = _one(fc, "split")
    job.flow.spawn_children([ChildSpec(id="k", type="kid")], wait_state="merge")
    kid = _one(fc, type="kid")
    fc.apply_outcome(kid, complete())
    assert fc.get("parent").state == "running"  # type: ignore[union-attr]
    assert fc.apply_outcome(job, transition("waiting")) == b"ok"
    parent = fc.get("parent")
    assert parent is not None and parent.state == "merge" and parent.next_run_at_ms is not None
    assert events(fc, "parent")[-2:] == ["transitioned", "children_resolved"]


def test_cross_partition_children_via_outbox(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("parent", T, "split")
    home = fc.partition_for("parent")
    keys = [_key_in_other_partition(fc, home, f"pk{i}-") for i in range(2)]
    job = _one(fc, "split")
    job.flow.spawn_children([ChildSpec(id="local", type="kid"),
                             *[ChildSpec(id=f"remote-{i}", type="kid", partition_key=k)
                               for i, k in enumerate(keys)]], wait_state="merge")
    fc.apply_outcome(job, transition("waiting"))
    for i, k in enumerate(keys):
        child = fc.get(f"remote-{i}", partition_key=k)
        assert child is not None and child.parent_id == "parent" and child.state == "queued"
        assert fc.partition_for(child.id, k) != home
    for kid in _claim(fc, ["queued"], 10, "kid"):
        assert fc.apply_outcome(kid, complete(kid.id.encode())) == b"ok"
    assert fc.get("parent").state == "waiting"  # type: ignore[union-attr]

    outboxes = {p: fc.store.execute(lambda r, p=p: r.lrange(fc.keys.outbox(p), 0, -1))
                for p in range(fc.keys.partitions)}
    assert sum(len(v) for v in outboxes.values()) == 2
    assert fc.deliver_outbox() == 2
    parent = fc.get("parent")
    assert parent is not None and parent.state == "merge" and parent.next_run_at_ms is not None
    assert fc.deliver_outbox() == 0
    # Delivering the same notices again changes nothing (exactly-once effect).
    for p, entries in outboxes.items():
        for raw in entries:
            fc.store.execute(lambda r, p=p, raw=raw: r.rpush(fc.keys.outbox(p), raw))
    version = parent.version
    fc.deliver_outbox()
    assert fc.get("parent").version == version  # type: ignore[union-attr]
    assert {c.id: c.state for c in fc.children("parent")} == {
        "local": "completed", "remote-0": "completed", "remote-1": "completed"}


def test_cross_partition_cancel_cascades_via_outbox(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("parent", T, "split")
    key = _key_in_other_partition(fc, fc.partition_for("parent"), "far")
    job = _one(fc, "split")
    job.flow.spawn_children([ChildSpec(id="remote", type="kid", partition_key=key)],
                            wait_state="merge")
    fc.apply_outcome(job, transition("waiting"))
    assert fc.cancel("parent") is True  # delivers the parent's outbox itself
    child = fc.get("remote", partition_key=key)
    assert child is not None and child.state == "cancelled"
    fc.deliver_outbox()  # the child's own notice back to the cancelled parent is harmless
    assert fc.get("parent").state == "cancelled"  # type: ignore[union-attr]


# -- retention, stats ---------------------------------------------------------------------------

def test_cleanup_deletes_terminal_flows_and_their_history(flow_client: FlowClient) -> None:
    fc = flow_client
    for i in range(6):
        fc.create(f"t{i}", T, "queued", values={"blob": b"x" * 100})
    fc.create("alive", T, "queued", run_at_ms=FAR)
    jobs = _claim(fc, ["queued"], 10)
    assert len(jobs) == 6
    for job in jobs[:3]:
        fc.apply_outcome(job, complete())
    fc.apply_outcome(jobs[3], fail(b"x"))
    fc.cancel(jobs[4].id, job=jobs[4])
    assert fc.cleanup() == 0  # within the retention
    assert fc.cleanup(now_ms=FAR) == 5
    for job in jobs[:5]:
        assert fc.get(job.id) is None and fc.history(job.id) == []
        p = fc.partition_for(job.id)
        assert fc.store.execute(lambda r, p=p, job=job: r.exists(
            fc.keys.flow(p, job.id), fc.keys.history(p, job.id), fc.keys.values(p, job.id))) == 0
    assert fc.get(jobs[5].id).state == "running"  # type: ignore[union-attr]
    assert fc.get("alive").state == "queued"  # type: ignore[union-attr]
    assert fc.terminals(T) == []
    assert fc.stats(T).counts == {"queued": 1, "running": 1}
    assert fc.cleanup(now_ms=FAR) == 0


def test_stats_are_exact(flow_client: FlowClient) -> None:
    fc = flow_client
    now = _server_ms(fc)
    for i in range(10):
        fc.create(f"q{i}", T, "queued", run_at_ms=now - 1000 - i)
    for i in range(4):
        fc.create(f"s{i}", T, "shipping")
    fc.create("future", T, "queued", run_at_ms=FAR)
    jobs = _claim(fc, ["queued"], 5)
    fc.apply_outcome(jobs[0], complete())
    fc.apply_outcome(jobs[1], fail(b"x"))
    fc.apply_outcome(jobs[2], transition("shipping"))
    stats = fc.stats(T)
    assert stats.counts == {"queued": 6, "running": 2, "shipping": 5, "completed": 1,
                            "failed": 1}
    assert stats.running == 2
    assert stats.states["queued"].count == 6 and stats.states["queued"].due_now == 5
    assert stats.states["shipping"].count == 5 and stats.states["shipping"].due_now == 5
    assert stats.due_now == 10
    oldest = stats.states["queued"].oldest_due_age_ms
    assert oldest is not None and 1000 <= oldest < 60_000
    assert fc.stats("unknown-type").counts == {}


# -- arguments ----------------------------------------------------------------------------------

def _nothing_written(fc: FlowClient, flow_id: str) -> None:
    assert fc.get(flow_id) is None and fc.history(flow_id) == []
    assert fc.stats(T).counts == {}


def test_payload_cap_and_oversize_payload(redis_server: Any, namespace: str,
                                          closing: Callable[[Any], Any]) -> None:
    fc: FlowClient = closing(FlowClient.from_url(redis_server.url, namespace=namespace,
                                                partitions=2, max_payload_bytes=200_000,
                                                max_value_bytes=1000))
    with pytest.raises(InvalidArgument, match="payload"):
        fc.create("big", T, "queued", b"x" * 200_001)
    _nothing_written(fc, "big")
    with pytest.raises(InvalidArgument, match="values"):
        fc.create("bigv", T, "queued", b"", values={"v": b"x" * 1001})
    _nothing_written(fc, "bigv")

    payload = bytes(range(256)) * 400  # 100 KiB: stored, but over the 64 KiB claim cap
    fc.create("wide", T, "queued", payload)
    job = _one(fc)
    assert job.payload == payload
    got = QueueClient(fc).queue(type=T)
    got.enqueue("wide2", payload=payload)
    seen: list[bytes] = []
    assert got.worker(payload_cap=1024).run_until_idle(lambda j: seen.append(j.payload),
                                                       timeout=5) == 1
    assert seen == [payload]


def test_non_bytes_payload_is_a_type_error(queues: QueueClient) -> None:
    fc = queues.flow_client
    q = queues.queue(type=T)
    for bad in (123, 1.5, ["x"], {"a": b"b"}):
        with pytest.raises(TypeError):
            q.enqueue("bad", payload=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        q.enqueue("bad", values={"v": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        q.enqueue(42)  # type: ignore[arg-type]
    _nothing_written(fc, "bad")
    q.enqueue("text", payload="héllo")
    assert fc.get("text").payload == "héllo".encode()  # type: ignore[union-attr]
    job = _one(fc)
    with pytest.raises(TypeError):
        complete(123)  # type: ignore[arg-type]
    assert fc.apply_outcome(job, complete("rësult")) == b"ok"
    assert fc.get("text").result == "rësult".encode()  # type: ignore[union-attr]


@pytest.mark.parametrize("flow_id", [
    "with spaces  and\ttabs", "ünïcødé-订单-🚀", "x" * 4096, "braces{1}:colons|pipes",
    "line\nbreak", "€" * 1365,
], ids=["spaces", "unicode", "4KiB", "braces", "newline", "4KiB-multibyte"])
def test_odd_ids_round_trip(flow_client: FlowClient, flow_id: str) -> None:
    fc = flow_client
    assert fc.create(flow_id, T, "queued", b"p", values={"v": b"1"}) is True
    job = _one(fc)
    assert job.id == flow_id
    job.flow.put_value("w", b"2")
    assert fc.apply_outcome(job, complete(b"r")) == b"ok"
    record = fc.get(flow_id, values=["v", "w"])
    assert record is not None and record.id == flow_id and record.state == "completed"
    assert record.values == {"v": b"1", "w": b"2"}
    assert [e.event for e in fc.history(flow_id)] == ["created", "claimed", "values_put",
                                                      "completed"]
    assert [r.id for r in fc.terminals(T)] == [flow_id]
    assert fc.create(flow_id, T, "queued", b"p", values={"v": b"1"}, idempotent=True) is False


def test_bad_ids_and_names(flow_client: FlowClient) -> None:
    fc = flow_client
    for bad_id in ("", "x" * 8193):
        with pytest.raises(InvalidArgument, match="id"):
            fc.create(bad_id, T, "queued")
    with pytest.raises(InvalidArgument, match="state"):
        fc.create("a", T, "running")
    with pytest.raises(InvalidArgument, match="state"):
        fc.create("a", T, "completed")
    with pytest.raises(InvalidArgument, match="type"):
        fc.create("a", "bad type", "queued")
    assert fc.get("a") is None


# -- durability ---------------------------------------------------------------------------------

def test_strict_durability_refuses_a_non_durable_store(make_redis_server: Any,
                                                       namespace: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    server = make_redis_server("--appendonly", "no")
    strict = FlowClient.from_url(server.url, namespace=namespace, durability="strict")
    with pytest.raises(DurabilityError) as err:
        strict.create("x", T, "queued")
    text = str(err.value)
    assert "appendonly" in text and "appendfsync" in text and "relaxed" in text

    everysec = make_redis_server("--appendfsync", "everysec")
    with pytest.raises(DurabilityError, match="appendfsync"):
        FlowClient.from_url(everysec.url, namespace=namespace).connect()

    relaxed = FlowClient.from_url(server.url, namespace=namespace, durability="relaxed")
    with caplog.at_level(logging.WARNING, logger="ferricflowd.flow.store"):
        assert relaxed.create("x", T, "queued") is True
    assert any("appendonly" in r.getMessage() for r in caplog.records)
    assert relaxed.get("x").state == "queued"  # type: ignore[union-attr]
    relaxed.close()


# -- handlers -----------------------------------------------------------------------------------

def test_handler_misbehaviour(workflows: WorkflowClient) -> None:
    fc = workflows.flow_client
    wf = workflows.workflow(type=T, initial_state="start", states=["start", "next"],
                            retry_policy=RetryPolicy(max_retries=1, backoff="none"))

    @wf.state("start")
    def start(job: Any) -> Any:
        if job.payload == b"raise":
            raise KeyError("missing thing")
        if job.payload == b"object":
            return {"not": "storable"}
        if job.payload == b"number":
            return 42
        if job.payload == b"undeclared":
            return transition("nowhere")
        if job.payload == b"reserved":
            return transition("running")
        return transition("next")

    @wf.state("next")
    def next_(job: Any) -> Any:
        return None

    for kind in ("raise", "object", "number", "undeclared", "reserved", "fine"):
        wf.start(kind, payload=kind.encode())
    wait_for(lambda: wf.worker(states=["start", "next"]).run_until_idle(timeout=5) == 0
             and all(fc.get(k).terminal for k in ("raise", "fine")),  # type: ignore
             timeout=10, what="all flows handled")

    assert_failed_after_retries(fc, "raise", b"KeyError: 'missing thing'")

    for kind, name in (("object", b"dict"), ("number", b"int")):
        record = fc.get(kind)
        assert record is not None and record.state == "failed"
        assert record.error is not None and b"unsupported " + name in record.error
        assert b"return an outcome" in record.error
    undeclared = fc.get("undeclared")
    assert undeclared is not None and undeclared.state == "failed"
    assert undeclared.error is not None and b"undeclared state 'nowhere'" in undeclared.error
    reserved = fc.get("reserved")
    assert reserved is not None and reserved.state == "failed"
    assert reserved.error is not None and b"invalid transition" in reserved.error
    fine = fc.get("fine")
    assert fine is not None and fine.state == "completed" and fine.result == b""


def test_batch_outcomes_report_per_item(flow_client: FlowClient) -> None:
    fc = flow_client
    for i in range(4):
        fc.create(f"b{i}", T, "queued")
    jobs = sorted(_claim(fc, ["queued"], 4), key=lambda j: j.id)
    fc.reclaim_worker("w", "gone")
    fresh = sorted(_claim(fc, ["queued"], 2, worker="w2"), key=lambda j: j.id)
    results = fc.apply_outcomes([(fresh[0], complete()), (jobs[1], complete()),
                                 (fresh[1], transition("x")), (jobs[3], retry(b"r"))])
    assert results[0] == b"ok" and results[2] == b"ok"
    assert isinstance(results[1], StaleLease) and isinstance(results[3], StaleLease)


# -- wake-ups -----------------------------------------------------------------------------------

def _blocked_clients(redis_server: Any) -> int:
    with redis_server.client() as conn:
        return sum(c.get("cmd") == "blpop" for c in conn.client_list())


def test_idle_worker_wakes_up_for_new_work(redis_server: Any, queues: QueueClient) -> None:
    q = queues.queue(type=T)
    started: dict[str, float] = {}

    def handler(job: Any) -> None:
        started[job.id] = time.monotonic()

    worker = q.worker(block_ms=5000, batch_size=10)
    baseline = _blocked_clients(redis_server)
    with running(worker, handler):
        wait_for(lambda: _blocked_clients(redis_server) > baseline, timeout=5,
                 what="the worker to block on its wake lists")
        enqueued = time.monotonic()
        q.enqueue("wake-me")
        wait_for(lambda: "wake-me" in started, timeout=5, what="the handler to start")
        assert started["wake-me"] - enqueued < 1.0

        # A Flow scheduled for later is picked up when it becomes due, not block_ms later.
        wait_for(lambda: _blocked_clients(redis_server) > baseline, timeout=5)
        due_in = 0.3
        enqueued = time.monotonic()
        q.enqueue("scheduled", delay_ms=int(due_in * 1000))
        wait_for(lambda: "scheduled" in started, timeout=8, what="the scheduled flow")
        assert due_in - 0.05 <= started["scheduled"] - enqueued < due_in + 1.0


def test_worker_threads_handle_concurrently(queues: QueueClient) -> None:
    q = queues.queue(type=T)
    for i in range(8):
        q.enqueue(f"c{i}")
    barrier = threading.Barrier(8, timeout=10)

    def handler(job: Any) -> None:
        barrier.wait()  # only passes when 8 handlers run at the same time

    assert q.worker(concurrency=8, batch_size=8).run_until_idle(handler, timeout=15) == 8
    assert queues.flow_client.stats(T).counts == {"completed": 8}


# -- values, history cap, async handlers --------------------------------------------------------

def test_values_are_write_once(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("v", T, "queued", values={"doc": b"1"})
    fc.put_value("v", "doc", b"1")  # the same bytes: a no-op
    assert events(fc, "v") == ["created"]
    with pytest.raises(ValueConflict, match="doc already exists with different digest"):
        fc.put_value("v", "doc", b"2")
    assert fc.get("v", values=["doc"]).values == {"doc": b"1"}  # type: ignore[union-attr]
    fc.put_value("v", "doc", b"2", override=True)
    fc.put_value("v", "extra", b"x")
    assert fc.get("v", values=["doc", "extra"]).values == {  # type: ignore[union-attr]
        "doc": b"2", "extra": b"x"}
    assert events(fc, "v") == ["created", "values_put", "values_put"]
    job = _one(fc)
    with pytest.raises(ValueConflict):
        fc.apply_outcome(job, complete(b"r", values={"doc": b"3"}))
    assert fc.get("v").state == "running"  # type: ignore[union-attr]
    assert fc.apply_outcome(job, complete(b"r", values={"doc": b"2", "out": b"o"})) == b"ok"
    with pytest.raises(FlowNotFound):
        fc.put_value("missing", "doc", b"1")


def test_history_is_capped_and_versions_go_on(redis_server: Any, namespace: str,
                                               closing: Callable[[Any], Any]) -> None:
    fc: FlowClient = closing(FlowClient.from_url(redis_server.url, namespace=namespace,
                                                history_cap=5))
    fc.create("h", T, "queued")
    for _ in range(10):
        fc.signal("h", "ping")
    history = fc.history("h")
    assert [e.version for e in history] == [7, 8, 9, 10, 11]
    assert fc.get("h").version == 11  # type: ignore[union-attr]


def test_async_handlers_share_one_loop_up_to_concurrency(queues: QueueClient) -> None:
    """`async def` handlers run as tasks of one event loop on one thread, at most
    `concurrency` at once; the same loop serves every job of the run."""
    q = queues.queue(type=T)
    q.enqueue_many([(f"a{i}", f"{i}".encode()) for i in range(12)])
    loops: set[int] = set()
    threads: set[int] = set()
    running_now = [0, 0]  # now, most at once

    async def handler(job: Any) -> bytes:
        loops.add(id(asyncio.get_running_loop()))
        threads.add(threading.get_ident())
        running_now[0] += 1
        running_now[1] = max(running_now)
        await asyncio.sleep(0.02)  # the others start meanwhile, up to the bound
        running_now[0] -= 1
        return b"async " + job.payload

    assert q.worker(concurrency=3, batch_size=12).run_until_idle(handler, timeout=10) == 12
    assert [q.get(f"a{i}").result for i in range(12)] == [  # type: ignore[union-attr]
        f"async {i}".encode() for i in range(12)]
    assert len(loops) == 1 and len(threads) == 1
    assert running_now[1] == 3


def test_async_handler_errors_follow_the_exception_policy(queues: QueueClient) -> None:
    q = queues.queue(type=T)
    q.enqueue("bad", payload=b"x")

    async def handler(job: Any) -> None:
        await asyncio.sleep(0)
        raise ValueError("async boom")

    worker = q.worker(exception_policy=ExceptionPolicy.FAIL)
    assert worker.run_until_idle(handler, timeout=10) == 1
    record = q.get("bad")
    assert record is not None and record.state == "failed"
    assert record.error == b"ValueError: async boom"


def test_async_drain_finishes_running_and_releases_unstarted(queues: QueueClient) -> None:
    """stop() with async handlers: the running ones finish and complete; the ones waiting
    for a slot go back to the queue unstarted, due again at once."""
    q = queues.queue(type=T)
    q.enqueue_many([f"d{i}" for i in range(6)])
    started: list[str] = []
    go = threading.Event()

    async def handler(job: Any) -> None:
        started.append(job.id)
        while not go.is_set():  # held until the drain has begun
            await asyncio.sleep(0.005)

    worker = q.worker(concurrency=2, batch_size=6)
    with running(worker, handler):
        wait_for(lambda: len(started) == 2, 5.0, what="two handlers running")
        worker.stop()
        go.set()
    records = {f"d{i}": q.get(f"d{i}") for i in range(6)}
    done = sorted(i for i, r in records.items() if r is not None and r.state == "completed")
    assert done == sorted(started) and len(started) == 2
    released = 0
    for flow_id, record in records.items():
        if flow_id in started:
            continue
        assert record is not None and record.state == "queued", record
        assert record.lease_owner is None, record
        history = events(queues.flow_client, flow_id)
        # claimed as prefetch and handed back, or never claimed (the claim takes the free
        # slots plus a prefetch, not the whole batch: see Runner._room)
        assert history in (["created", "claimed", "lease_released"], ["created"]), history
        released += history != ["created"]
    assert released >= 1


def test_strict_durability_checks_every_cluster_node(redis_cluster: Any,
                                                      namespace: str) -> None:
    for node in redis_cluster.nodes:
        with node.client() as conn:
            conn.config_set("appendfsync", "everysec")
            try:
                fc = FlowClient.from_url(redis_cluster.url, namespace=namespace, partitions=16)
                with pytest.raises(DurabilityError, match="appendfsync"):
                    fc.connect()
                fc.close()
            finally:
                conn.config_set("appendfsync", "always")
    fc = FlowClient.from_url(redis_cluster.url, namespace=namespace, partitions=16)
    try:
        assert fc.create("ok", T, "queued") is True
    finally:
        fc.close()


def test_scripts_are_reloaded_after_a_flush(url_and_opts: tuple[str, dict[str, Any]],
                                            closing: Callable[[Any], Any]) -> None:
    """A store without the library (new, restarted without AOF, FUNCTION FLUSHed) answers
    "Function not found"; the client loads the library again and runs the calls."""
    url, opts = url_and_opts
    fc: FlowClient = closing(FlowClient.from_url(url, **opts))
    fc.create("before", T, "queued")
    fc.store.client.function_flush()  # on a cluster: every primary
    with pytest.raises(redis.ResponseError, match="Function not found"):
        fc.store.client.execute_command("FCALL", store_module.FUNCTIONS["stats"], 1,
                                        fc.keys.prefix(0), "", T)
    assert fc.create_many([]) == []
    results = QueueClient(fc).queue(type=T).enqueue_many([f"after-{i}" for i in range(20)])
    assert results == [True] * 20
    assert fc.stats(T).counts == {"queued": 21}


def test_cluster_pipelines_route_scripts_without_asking_the_server(
        redis_cluster: Any, namespace: str, closing: Callable[[Any], Any]) -> None:
    """A batch over 16 partitions is one pipeline with no COMMAND GETKEYS round trips."""
    fc: FlowClient = closing(FlowClient.from_url(redis_cluster.url, namespace=namespace,
                                                 partitions=16))
    fc.create("warm", T, "queued")
    for node in redis_cluster.nodes:
        with node.client() as conn:
            conn.config_resetstat()
    assert fc.create_many([CreateSpec(f"j{i}", T, "queued") for i in range(200)]) == [True] * 200
    calls = 0
    for node in redis_cluster.nodes:
        with node.client() as conn:
            stats = conn.info("commandstats")
        assert "cmdstat_command|getkeys" not in stats, stats
        calls += stats.get("cmdstat_fcall", {}).get("calls", 0)
    assert calls == 16  # one script call per partition


def test_a_claimed_job_has_every_field_of_job(flow_client: FlowClient) -> None:
    """_job builds a Job without its __init__ (speed): it must still set exactly its fields."""
    import dataclasses

    flow_client.create("jf", T, "queued", b"p", priority=1)
    job = _one(flow_client)
    names = {f.name for f in dataclasses.fields(Job)}
    assert set(vars(job)) == names
    assert job == Job(**{n: getattr(job, n) for n in names})
    assert (job.id, job.state, job.payload, job.priority) == ("jf", "queued", b"p", 1)


def test_plain_spec_equals_the_dataclass_built_one() -> None:
    from ferricflowd.flow.wire import plain_spec

    spec = plain_spec("i", "t", "queued", b"p", True)
    assert spec == CreateSpec("i", "t", "queued", b"p", idempotent=True)
    assert set(vars(spec)) == set(vars(CreateSpec("i", "t", "queued")))
    assert spec.values == {} and spec.values is not plain_spec("j", "t", "q", b"", False).values


def test_a_spawned_child_keeps_the_digest_a_create_of_it_would_have(
        flow_client: FlowClient) -> None:
    """spawn.lua stores each local child's create digest (an idempotent re-create of the
    child compares against it); the client computes it as create does."""
    from ferricflowd.flow.records import record_fields
    from ferricflowd.flow.wire import create_digest

    flow_client.create("dp", T, "queued")
    job = _one(flow_client)
    child = ChildSpec("dk", T, payload=b"x", values={"v": b"1"})
    assert job.flow.spawn_children([child], wait_state="queued")
    raw = flow_client.store.execute(
        lambda r: r.get(flow_client.keys.flow(job.partition, "dk")))
    stored = record_fields(raw)[b"digest"].decode()
    assert stored == create_digest(flow_client._child_spec(job, child))
    assert len(stored) == 16


def test_a_client_connecting_to_a_set_up_namespace_writes_nothing(
        redis_server: Any, namespace: str, closing: Callable[[Any], Any]) -> None:
    """Every worker process connects at boot: when the partition count, the partition
    settings and the library are in place, it only reads them (a write costs an fsync,
    FUNCTION LOAD a compile of the library)."""
    first: FlowClient = closing(FlowClient.from_url(redis_server.url, namespace=namespace))
    first.connect()

    def calls() -> dict[str, int]:
        stats = first.store.client.info("commandstats")
        return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0)
                for name in ("function|load", "hset", "hsetnx", "hmget")}

    before = calls()
    closing(FlowClient.from_url(redis_server.url, namespace=namespace)).connect()
    after = calls()
    assert after["function|load"] == before["function|load"]
    assert after["hset"] == before["hset"]
    assert after["hmget"] == before["hmget"] + 1  # it did look
    changed: FlowClient = closing(FlowClient.from_url(redis_server.url, namespace=namespace,
                                                      history_cap=7))
    changed.connect()
    assert calls()["hset"] == after["hset"] + 1  # a changed setting is published
    assert changed.store.client.hget(changed.keys.config(0), "history_cap") == b"7"
