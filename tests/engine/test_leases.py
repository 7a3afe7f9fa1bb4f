"""Leases and fencing: stale holders are refused, replays are no-ops, tokens only grow."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from ferricflowd import (
    FlowClient,
    QueueClient,
    RetryPolicy,
    StaleLease,
    complete,
    fail,
    retry,
    transition,
)
from ferricflowd.flow.records import Job
from ferricflowd.flow.wire import LeaseRequest
from tests.helpers import events, wait_for

TYPE = "lease-test"


def _claim_one(fc: FlowClient, worker: str, lease_ms: int = 60_000,
               states: tuple[str, ...] = ("queued",)) -> Job:
    result = fc.claim(TYPE, LeaseRequest(worker, list(states), lease_ms), limit=1)
    assert len(result.jobs) == 1, f"{worker} claimed {len(result.jobs)} jobs"
    return result.jobs[0]


def _server_ms(fc: FlowClient) -> int:
    sec, usec = fc.store.execute(lambda r: r.time())
    return int(sec) * 1000 + int(usec) // 1000


STALE_OUTCOMES = [complete(b"late"), transition("next"), retry(b"late"), fail(b"late")]


@pytest.mark.parametrize("outcome", STALE_OUTCOMES, ids=["complete", "transition", "retry",
                                                          "fail"])
def test_stale_worker_after_reclaim_is_refused(flow_client: FlowClient, outcome: Any) -> None:
    fc = flow_client
    fc.create("f1", TYPE, "queued", b"p")
    old = _claim_one(fc, "w-old")
    assert fc.reclaim_worker("w-old", "process exited") == (1, 0)

    # refused while the Flow waits to be claimed again ...
    version = fc.get("f1").version  # type: ignore[union-attr]
    with pytest.raises(StaleLease):
        fc.apply_outcome(old, outcome)
    # ... while the new holder runs it ...
    new = _claim_one(fc, "w-new")
    assert new.fencing_token == old.fencing_token + 1
    with pytest.raises(StaleLease):
        fc.apply_outcome(old, outcome)
    # ... and after the new holder finished.
    assert fc.apply_outcome(new, complete(b"fresh")) == b"ok"
    with pytest.raises(StaleLease):
        fc.apply_outcome(old, outcome)
    record = fc.get("f1")
    assert record is not None and record.state == "completed" and record.result == b"fresh"
    assert record.version == version + 2  # claimed + completed; stale calls wrote nothing
    assert events(fc, "f1") == ["created", "claimed", "lease_released", "claimed", "completed"]


def test_stale_after_expired_lease_taken_over(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("f1", TYPE, "queued")
    old = _claim_one(fc, "w-old", lease_ms=30)
    wait_for(lambda: _server_ms(fc) > old.lease_deadline_ms, what="lease expiry")
    new = _claim_one(fc, "w-new")  # the claim reclaims the expired lease in the same call
    assert new.fencing_token == old.fencing_token + 1
    for outcome in STALE_OUTCOMES:
        with pytest.raises(StaleLease):
            fc.apply_outcome(old, outcome)
    with pytest.raises(StaleLease):
        fc.cancel("f1", job=old)
    with pytest.raises(StaleLease):
        old.flow.extend_lease(1000)
    assert fc.apply_outcome(new, transition("next")) == b"ok"
    causes = [e.details["cause"] for e in fc.history("f1") if e.event == "lease_released"]
    assert causes == ["expired"]


def test_signal_transition_takes_the_lease_away(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("f1", TYPE, "queued")
    job = _claim_one(fc, "w1")
    assert fc.signal("f1", "override", if_state="queued", transition_to="manual") is True
    with pytest.raises(StaleLease):
        fc.apply_outcome(job, complete())
    record = fc.get("f1")
    assert record is not None and record.state == "manual" and record.lease_owner is None


@pytest.mark.parametrize("outcome,reply,state", [
    (complete(b"r"), b"ok", "completed"),
    (fail(b"e"), b"ok", "failed"),
    (retry(b"e"), b"scheduled", "queued"),
    (transition("next"), b"ok", "next"),
], ids=["complete", "fail", "retry", "transition"])
def test_replayed_outcome_is_a_noop(flow_client: FlowClient, outcome: Any, reply: bytes,
                                    state: str) -> None:
    fc = flow_client
    fc.create("f1", TYPE, "queued")
    job = _claim_one(fc, "w1")
    assert fc.apply_outcome(job, outcome) == reply
    before = fc.get("f1")
    history = fc.history("f1")
    assert before is not None and before.state == state
    for _ in range(2):
        assert fc.apply_outcome(job, outcome) == b"replay"
        assert fc.apply_outcomes([(job, outcome)]) == [b"replay"]
    assert fc.get("f1") == before
    assert fc.history("f1") == history
    # A *different* outcome with the same old lease is not a replay.
    other = complete(b"other") if not isinstance(outcome, type(complete())) else fail(b"x")
    with pytest.raises(StaleLease):
        fc.apply_outcome(job, other)


def test_replayed_exhausted_retry_and_other_transition(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.register_policy(TYPE, RetryPolicy(max_retries=0))
    fc.create("f1", TYPE, "queued")
    job = _claim_one(fc, "w1")
    assert fc.apply_outcome(job, retry(b"nope")) == b"exhausted"
    assert fc.apply_outcome(job, retry(b"nope")) == b"replay"
    record = fc.get("f1")
    assert record is not None and record.state == "failed" and record.error == b"nope"

    fc.create("f2", TYPE, "queued")
    job2 = _claim_one(fc, "w1")
    assert fc.apply_outcome(job2, transition("a")) == b"ok"
    with pytest.raises(StaleLease):  # a transition elsewhere is not the same request
        fc.apply_outcome(job2, transition("b"))
    assert fc.get("f2").state == "a"  # type: ignore[union-attr]


def test_fencing_tokens_strictly_increase(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.register_policy(TYPE, RetryPolicy(max_retries=10, backoff="none", max_crashes=0))
    fc.create("f1", TYPE, "queued")
    seen: list[int] = []
    recorded: list[int] = []
    for i in range(8):
        job = _claim_one(fc, f"w{i}", lease_ms=60_000 if i % 4 != 3 else 20)
        seen.append(job.fencing_token)
        recorded.append(fc.get("f1").fencing_token)  # type: ignore[union-attr]
        kind = i % 4
        if kind == 0:
            fc.reclaim_worker(f"w{i}", "crash")
        elif kind == 1:
            assert fc.release([job], "drain") == [b"ok"]
        elif kind == 2:
            assert fc.apply_outcome(job, retry(b"again")) == b"scheduled"
        else:  # lease expires; the next claim takes it over
            wait_for(lambda job=job: _server_ms(fc) > job.lease_deadline_ms, what="expiry")
        recorded.append(fc.get("f1").fencing_token)  # type: ignore[union-attr]
    assert seen == list(range(1, 9))
    assert all(b > a for a, b in zip(seen, seen[1:], strict=False))
    assert recorded == sorted(recorded)  # never decreases between claims
    claimed = [e.details["fencing"] for e in fc.history("f1") if e.event == "claimed"]
    assert claimed == seen


def test_extend_lease_after_deadline_when_not_reclaimed(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("f1", TYPE, "queued")
    job = _claim_one(fc, "w1", lease_ms=20)
    wait_for(lambda: _server_ms(fc) > job.lease_deadline_ms, what="lease expiry")
    deadline = job.flow.extend_lease(60_000)
    assert deadline >= job.lease_deadline_ms + 60_000 - 20
    record = fc.get("f1")
    assert record is not None and record.state == "running"
    assert record.lease_deadline_ms == deadline
    assert fc.reclaim_expired(TYPE) == 0  # the extended lease is live again
    assert fc.extend_leases([job], 30_000)[0] > 0
    assert "lease_extended" in events(fc, "f1")
    assert fc.apply_outcome(job, complete()) == b"ok"

    # Once reclaimed, the old holder can no longer extend.
    fc.create("f2", TYPE, "queued")
    job2 = _claim_one(fc, "w2", lease_ms=20)
    wait_for(lambda: _server_ms(fc) > job2.lease_deadline_ms, what="lease expiry")
    assert fc.reclaim_expired(TYPE) == 1
    assert isinstance(fc.extend_leases([job2], 60_000)[0], StaleLease)
    with pytest.raises(StaleLease):
        job2.flow.extend_lease(60_000)


def test_release(flow_client: FlowClient) -> None:
    fc = flow_client
    for i in range(3):
        fc.create(f"f{i}", TYPE, "queued")
    jobs = fc.claim(TYPE, LeaseRequest("w1", ["queued"], 60_000), limit=3).jobs
    assert len(jobs) == 3
    keep, *back = sorted(jobs, key=lambda j: j.id)
    assert fc.release(back, "drain") == [b"ok", b"ok"]
    for job in back:
        record = fc.get(job.id)
        assert record is not None and record.state == "queued"
        assert record.lease_owner is None and record.next_run_at_ms is not None
        assert record.attempt == 1 and record.crash_count == 0
        assert [e.details.get("cause") for e in fc.history(job.id)][-1] == "drain"
    assert all(isinstance(r, StaleLease) for r in fc.release(back, "drain"))
    assert fc.get(keep.id).state == "running"  # type: ignore[union-attr]
    again = fc.claim(TYPE, LeaseRequest("w2", ["queued"], 60_000), limit=10).jobs
    assert sorted(j.id for j in again) == sorted(j.id for j in back)
    assert all(j.fencing_token == 2 for j in again)


def test_reclaim_worker_counts_crashes_and_fails_poison_pills(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("pill", TYPE, "queued")
    fc.create("other", TYPE, "queued", run_at_ms=_server_ms(fc) + 3_600_000)
    for crash in (1, 2):
        _claim_one(fc, f"w{crash}")
        assert fc.reclaim_worker(f"w{crash}", "segfault") == (1, 0)
        record = fc.get("pill")
        assert record is not None and record.state == "queued" and record.crash_count == crash
    _claim_one(fc, "w3")
    assert fc.reclaim_worker("w3", "segfault") == (0, 1)  # default max_crashes = 3
    record = fc.get("pill")
    assert record is not None and record.state == "failed" and record.crash_count == 3
    assert record.error is not None and b"crashed worker 3 times" in record.error
    assert [r.id for r in fc.terminals(TYPE, "failed")] == ["pill"]
    assert fc.reclaim_worker("w3", "segfault") == (0, 0)  # nothing left to reclaim
    assert fc.get("other").state == "queued"  # type: ignore[union-attr]

    fc.register_policy("strict", RetryPolicy(max_crashes=1))
    fc.create("once", "strict", "queued")
    fc.claim("strict", LeaseRequest("w9", ["queued"], 60_000), limit=1)
    assert fc.reclaim_worker("w9", "oom") == (0, 1)
    assert b"crashed worker 1 times" in fc.get("once").error  # type: ignore[operator,union-attr]


def test_worker_counts_stale_outcome_after_reclaim(queues: QueueClient) -> None:
    fc = queues.flow_client
    q = queues.queue(type=TYPE)
    q.enqueue("f1")
    started, release = threading.Event(), threading.Event()

    def handler(job: Any) -> bytes:
        started.set()
        assert release.wait(10)
        return b"late"

    worker = q.worker(worker_id="w-stale", block_ms=50)
    result: list[int] = []
    thread = threading.Thread(target=lambda: result.append(worker.run_until_idle(handler, 10)))
    thread.start()
    assert started.wait(10)
    assert fc.reclaim_worker("w-stale", "heartbeat lost") == (1, 0)
    release.set()
    thread.join(15)
    assert result == [2]  # the refused run and the re-run after the reclaim
    assert worker._runner is not None and worker._runner.stats.stale == 1
    record = fc.get("f1")
    assert record is not None and record.state == "completed" and record.crash_count == 1
    assert record.fencing_token == 2  # completed by the second claim, not the stale one
    assert events(fc, "f1").count("completed") == 1


def test_worker_extends_leases_of_long_handlers(queues: QueueClient) -> None:
    fc = queues.flow_client
    q = queues.queue(type=TYPE)
    q.enqueue("slow")
    done = threading.Event()

    def handler(job: Any) -> bytes:
        time.sleep(1.5)  # the work itself: runs past two and a half leases
        return b"finished"

    handled: list[int] = []

    def run() -> None:
        handled.append(q.worker(lease_ms=600, block_ms=50).run_until_idle(handler, 10))
        done.set()

    thread = threading.Thread(target=run)
    thread.start()
    stolen: list[Job] = []
    while not done.wait(0.05):  # a competitor that would take over any expired lease
        stolen.extend(fc.claim(TYPE, LeaseRequest("thief", ["queued"], 60_000), limit=1).jobs)
        fc.reclaim_expired(TYPE)
    thread.join(5)
    assert stolen == [] and handled == [1]
    record = fc.get("slow")
    assert record is not None and record.state == "completed" and record.result == b"finished"
    names = events(fc, "slow")
    assert names.count("claimed") == 1
    assert names.count("lease_extended") >= 2
    assert "lease_released" not in names


def test_worker_claims_on_while_outcomes_are_flushed_and_caps_its_leases(
        queues: QueueClient) -> None:
    """Finished jobs whose outcomes are still being sent do not hold back the next claim
    (the handler threads would idle between batches); the leases held stay capped at two
    batches plus the threads."""
    fc = queues.flow_client
    q = queues.queue(type=TYPE)
    assert q.enqueue_many([f"j{i}" for i in range(30)]) == [True] * 30
    release = threading.Event()
    send = fc.apply_outcomes

    def slow_send(*args: Any, **kwargs: Any) -> Any:
        assert release.wait(10)  # the first flush hangs until the test has seen enough
        return send(*args, **kwargs)

    fc.apply_outcomes = slow_send  # type: ignore[method-assign]
    handled: list[str] = []
    enough = threading.Event()
    batch, threads, cap = 4, 2, 2 * 4 + 2

    def handler(job: Job) -> None:
        handled.append(job.id)
        if len(handled) == cap:
            enough.set()

    worker = q.worker(batch_size=batch, concurrency=threads, block_ms=50)
    thread = threading.Thread(target=worker.run, args=(handler,))
    thread.start()
    try:
        assert enough.wait(10), f"only {len(handled)} handled while the first flush hangs"
        assert fc.stats(TYPE).counts == {"queued": 30 - cap, "running": cap}
    finally:
        release.set()
        assert worker._runner is not None
        worker._runner.stop()
        thread.join(10)
    assert not thread.is_alive()
