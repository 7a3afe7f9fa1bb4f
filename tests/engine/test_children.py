"""Children: wait all or any, a child's failure failing or not failing its parent,
children finishing first, across partitions through the outbox, and their create digest."""

from __future__ import annotations

import pytest

from ferricflowd import ChildSpec, FlowClient, StaleLease, complete, fail, transition
from tests.engine.calls import (
    T,
    claim_jobs,
    claim_one,
    key_in_other_partition,
    parent_with_children,
)
from tests.helpers import events


def test_spawn_wait_any(flow_client: FlowClient) -> None:
    fc = flow_client
    kids = parent_with_children(fc, 3, wait="any")
    assert fc.apply_outcome(kids[1], complete(b"first")) == b"ok"
    parent = fc.get("parent")
    assert parent is not None and parent.state == "merge" and parent.next_run_at_ms is not None
    assert [j.id for j in claim_jobs(fc, ["merge"])] == ["parent"]
    assert fc.apply_outcome(kids[0], complete()) == b"ok"  # later children change nothing
    assert fc.get("parent").state == "running"  # type: ignore[union-attr]
    assert {c.id: c.state for c in fc.children("parent")} == {
        "kid-0": "completed", "kid-1": "completed", "kid-2": "running"}


def test_spawn_any_all_failed_fails_parent(flow_client: FlowClient) -> None:
    fc = flow_client
    kids = parent_with_children(fc, 2, wait="any")
    fc.apply_outcome(kids[0], fail(b"x"))
    assert fc.get("parent").state == "waiting"  # type: ignore[union-attr]
    fc.apply_outcome(kids[1], fail(b"y"))
    parent = fc.get("parent")
    assert parent is not None and parent.state == "failed"
    assert parent.error is not None and b"kid-1" in parent.error


def test_child_failure_fails_parent_and_cancels_siblings(flow_client: FlowClient) -> None:
    fc = flow_client
    kids = parent_with_children(fc, 3)
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
    kids = parent_with_children(fc, 3, on_child_failed="ignore")
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
    job = claim_one(fc, "split")
    job.flow.spawn_children([ChildSpec(id="k", type="kid")], wait_state="merge")
    kid = claim_one(fc, type="kid")
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
    keys = [key_in_other_partition(fc, home, f"pk{i}-") for i in range(2)]
    job = claim_one(fc, "split")
    job.flow.spawn_children([ChildSpec(id="local", type="kid"),
                             *[ChildSpec(id=f"remote-{i}", type="kid", partition_key=k)
                               for i, k in enumerate(keys)]], wait_state="merge")
    fc.apply_outcome(job, transition("waiting"))
    for i, k in enumerate(keys):
        child = fc.get(f"remote-{i}", partition_key=k)
        assert child is not None and child.parent_id == "parent" and child.state == "queued"
        assert fc.partition_for(child.id, k) != home
    for kid in claim_jobs(fc, ["queued"], 10, "kid"):
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


def test_a_spawned_child_keeps_the_digest_a_create_of_it_would_have(
        flow_client: FlowClient) -> None:
    """spawn.lua stores each local child's create digest (an idempotent re-create of the
    child compares against it); the client computes it as create does."""
    from ferricflowd.flow.records import record_fields
    from ferricflowd.flow.wire import create_digest

    flow_client.create("dp", T, "queued")
    job = claim_one(flow_client)
    child = ChildSpec("dk", T, payload=b"x", values={"v": b"1"})
    assert job.flow.spawn_children([child], wait_state="queued")
    raw = flow_client.store.execute(
        lambda r: r.get(flow_client.keys.flow(job.partition, "dk")))
    stored = record_fields(raw)[b"digest"].decode()
    assert stored == create_digest(flow_client._child_spec(job, child))
    assert len(stored) == 16
