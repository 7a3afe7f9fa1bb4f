"""Idempotent creates and signals: a repeat writes nothing, a different request conflicts."""

from __future__ import annotations

from typing import Any

import pytest

from ferricflowd import (
    ChildSpec,
    CreateSpec,
    FlowAlreadyExists,
    FlowClient,
    FlowNotFound,
    IdempotencyConflict,
    QueueClient,
    complete,
    transition,
)
from ferricflowd.flow.wire import LeaseRequest


def _snapshot(fc: FlowClient, flow_id: str) -> tuple[Any, Any, Any]:
    return fc.get(flow_id, values=["v"]), fc.history(flow_id), fc.stats("mail")


def test_idempotent_create_after_completion_changes_nothing(queues: QueueClient) -> None:
    fc = queues.flow_client
    mail = queues.queue(type="mail")
    assert mail.enqueue("m1", payload=b"hello", values={"v": b"1"}, idempotent=True) is True
    assert mail.worker().run_until_idle(lambda job: b"sent", timeout=10) == 1
    before = _snapshot(fc, "m1")
    assert before[0].state == "completed"

    assert mail.enqueue("m1", payload=b"hello", values={"v": b"1"}, idempotent=True) is False
    assert _snapshot(fc, "m1") == before
    assert mail.worker().run_until_idle(lambda job: b"again", timeout=5) == 0
    assert fc.get("m1").result == b"sent"  # type: ignore[union-attr]

    for change in ({"payload": b"other"}, {"payload": b"hello", "values": {"v": b"2"}},
                   {"payload": b"hello", "values": {"v": b"1"}, "priority": 2},
                   {"payload": b"hello", "values": {"v": b"1"}, "state": "urgent"}):
        with pytest.raises(IdempotencyConflict):
            mail.enqueue("m1", idempotent=True, **change)
    assert _snapshot(fc, "m1") == before


def test_idempotent_create_compares_with_the_original_not_the_current_record(
        queues: QueueClient) -> None:
    fc = queues.flow_client
    mail = queues.queue(type="mail")
    mail.enqueue("m1", payload=b"v1", idempotent=True)
    job = fc.claim("mail", LeaseRequest("w", ["queued"], 60_000), limit=1).jobs[0]
    fc.apply_outcome(job, transition("sending", payload=b"v2"))
    assert mail.enqueue("m1", payload=b"v1", idempotent=True) is False
    with pytest.raises(IdempotencyConflict):
        mail.enqueue("m1", payload=b"v2", idempotent=True)
    record = fc.get("m1")
    assert record is not None and record.state == "sending" and record.payload == b"v2"


def test_duplicate_without_idempotency_raises(queues: QueueClient) -> None:
    fc = queues.flow_client
    mail = queues.queue(type="mail")
    mail.enqueue("m1", payload=b"x")
    before = _snapshot(fc, "m1")
    with pytest.raises(FlowAlreadyExists):
        mail.enqueue("m1", payload=b"x")
    with pytest.raises(FlowAlreadyExists):
        mail.enqueue("m1", payload=b"y")
    mail.enqueue("m2", payload=b"x", idempotent=True)
    with pytest.raises(FlowAlreadyExists):
        mail.enqueue("m2", payload=b"x")
    assert _snapshot(fc, "m1")[:2] == before[:2]
    assert fc.stats("mail").counts == {"queued": 2}


def test_batch_create_reports_per_item(queues: QueueClient) -> None:
    fc = queues.flow_client
    mail = queues.queue(type="mail")
    mail.enqueue("m1", payload=b"a", idempotent=True)
    results = fc.create_many([
        CreateSpec("m1", "mail", "queued", b"a", idempotent=True),
        CreateSpec("m1", "mail", "queued", b"b", idempotent=True),
        CreateSpec("m1", "mail", "queued", b"a"),
        *[CreateSpec(f"n{i}", "mail", "queued", b"n") for i in range(10)],
    ])
    assert results[0] is False
    assert isinstance(results[1], IdempotencyConflict)
    assert isinstance(results[2], FlowAlreadyExists)
    assert results[3:] == [True] * 10
    again = mail.enqueue_many([f"n{i}" for i in range(12)])
    assert all(isinstance(r, FlowAlreadyExists) for r in again[:10])
    assert again[10:] == [True, True]
    assert fc.stats("mail").counts == {"queued": 13}


def test_enqueue_many_idempotent_repeat(queues: QueueClient) -> None:
    mail = queues.queue(type="mail")
    items = [(f"b{i}", f"payload {i}".encode()) for i in range(20)]
    assert mail.enqueue_many(items, idempotent=True) == [True] * 20
    assert mail.enqueue_many(items, idempotent=True) == [False] * 20
    again = mail.enqueue_many([("b0", b"changed"), ("b1", b"payload 1")], idempotent=True)
    assert isinstance(again[0], IdempotencyConflict) and again[1] is False
    assert mail.stats().counts == {"queued": 20}


def test_signal_idempotency(queues: QueueClient) -> None:
    fc = queues.flow_client
    fc.create("a1", "approval", "waiting")
    assert fc.signal("a1", "approved", if_state="waiting", transition_to="approved",
                     idempotency_key="k1", values={"by": b"ann"}) is True
    record, history = fc.get("a1", values=["by"]), fc.history("a1")
    assert record is not None and record.state == "approved"

    # Same key, same request: OK, nothing written (though the guard would now mismatch).
    assert fc.signal("a1", "approved", if_state="waiting", transition_to="approved",
                     idempotency_key="k1", values={"by": b"ann"}) is False
    assert fc.get("a1", values=["by"]) == record and fc.history("a1") == history

    for other in ({"signal": "rejected", "if_state": "waiting", "transition_to": "rejected"},
                  {"signal": "approved", "if_state": "waiting", "transition_to": "approved",
                   "values": {"by": b"bob"}},
                  {"signal": "approved"}):
        with pytest.raises(IdempotencyConflict):
            fc.signal("a1", idempotency_key="k1", **other)
    assert fc.get("a1", values=["by"]) == record and fc.history("a1") == history

    # Passive signals with keys; a key repeated after the Flow finished is still OK.
    assert fc.signal("a1", "note", idempotency_key="k2") is True
    assert fc.signal("a1", "note", idempotency_key="k2") is False
    job = fc.claim("approval", LeaseRequest("w", ["approved"], 60_000), limit=1).jobs[0]
    fc.apply_outcome(job, complete())
    done = fc.history("a1")
    assert fc.signal("a1", "note", idempotency_key="k2") is False
    assert fc.history("a1") == done
    with pytest.raises(FlowNotFound):
        fc.signal("nope", "note", idempotency_key="k2")


def test_respawning_the_same_children_is_ok(queues: QueueClient) -> None:
    fc = queues.flow_client
    fc.create("parent", "batch", "split")
    job = fc.claim("batch", LeaseRequest("w", ["split"], 60_000), limit=1).jobs[0]
    kids = [ChildSpec(id=f"kid-{i}", type="part", payload=b"%d" % i) for i in range(3)]
    assert job.flow.spawn_children(kids, wait_state="merge") is True
    history = fc.history("parent")
    assert job.flow.spawn_children(kids, wait_state="merge") is False
    assert fc.history("parent") == history
    with pytest.raises(IdempotencyConflict):
        job.flow.spawn_children(kids[:2], wait_state="merge")
    assert fc.apply_outcome(job, transition("waiting")) == b"ok"
    assert sorted(c.id for c in fc.children("parent")) == ["kid-0", "kid-1", "kid-2"]
    assert fc.stats("part").counts == {"queued": 3}


def test_batch_create_mixes_plain_and_full_items(queues: QueueClient) -> None:
    """create.lua reads a plain item as 7 fields and one with options as 14: a batch mixing
    them must line every item up."""
    fc = queues.flow_client
    results = fc.create_many([
        CreateSpec("p1", "mail", "queued", b"a"),
        CreateSpec("f1", "mail", "queued", b"b", values={"v": b"1"}, run_at_ms=10 ** 13,
                   correlation_id="c1", idempotent=True),
        CreateSpec("p2", "mail", "queued", b"c", priority=2, idempotent=True),
        CreateSpec("f2", "mail", "queued", b"d", correlation_id="c2"),
        CreateSpec("p3", "mail", "queued", b"e"),
    ])
    assert results == [True] * 5
    f1 = fc.get("f1", values=["v"])
    assert f1 is not None and f1.payload == b"b" and f1.next_run_at_ms == 10 ** 13
    assert f1.values == {"v": b"1"}
    p2 = fc.get("p2")
    assert p2 is not None and p2.priority == 2 and p2.payload == b"c"
    assert [fc.get(i).payload for i in ("p1", "f2", "p3")] == [b"a", b"d", b"e"]  # type: ignore[union-attr]
    again = fc.create_many([
        CreateSpec("f1", "mail", "queued", b"b", values={"v": b"1"}, run_at_ms=10 ** 13,
                   correlation_id="c1", idempotent=True),
        CreateSpec("p2", "mail", "queued", b"c", priority=2, idempotent=True),
        CreateSpec("p1", "mail", "queued", b"a"),
    ])
    assert again[:2] == [False, False] and isinstance(again[2], FlowAlreadyExists)
