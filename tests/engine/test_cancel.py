"""Cancel: of a queued, running or terminal Flow, and its cascade to children and
grandchildren, across partitions through the outbox."""

from __future__ import annotations

import pytest

from ferricflowd import (
    ChildSpec,
    FlowClient,
    FlowNotFound,
    StaleLease,
    TerminalFlow,
    complete,
    fail,
    transition,
)
from tests.engine.calls import T, claim_jobs, claim_one, key_in_other_partition
from tests.helpers import events


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
    job = claim_one(fc)
    with pytest.raises(StaleLease):
        fc.cancel("r")  # a running Flow needs its lease
    assert fc.get("r").state == "running"  # type: ignore[union-attr]
    assert fc.cancel("r", "operator", job=job) is True
    with pytest.raises(StaleLease):
        fc.apply_outcome(job, complete())
    rec = fc.get("r")
    assert rec is not None and rec.state == "cancelled" and rec.lease_owner is None

    fc.create("c", T, "queued")
    fc.apply_outcome(claim_one(fc), complete())
    with pytest.raises(TerminalFlow):
        fc.cancel("c")
    fc.create("f", T, "queued")
    fc.apply_outcome(claim_one(fc), fail(b"x"))
    with pytest.raises(TerminalFlow):
        fc.cancel("f")
    with pytest.raises(FlowNotFound):
        fc.cancel("missing")
    assert fc.stats(T).counts == {"cancelled": 2, "completed": 1, "failed": 1}


def test_cancel_cascades_to_children_and_grandchildren(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("top", T, "split")
    top = claim_one(fc, "split")
    top.flow.spawn_children([ChildSpec(id=f"top-{i}", type=T, state="split") for i in range(3)],
                            wait_state="merge")
    assert fc.apply_outcome(top, transition("waiting")) == b"ok"
    kids = {j.id: j for j in claim_jobs(fc, ["split"], 3)}
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


def test_cross_partition_cancel_cascades_via_outbox(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("parent", T, "split")
    key = key_in_other_partition(fc, fc.partition_for("parent"), "far")
    job = claim_one(fc, "split")
    job.flow.spawn_children([ChildSpec(id="remote", type="kid", partition_key=key)],
                            wait_state="merge")
    fc.apply_outcome(job, transition("waiting"))
    assert fc.cancel("parent") is True  # delivers the parent's outbox itself
    child = fc.get("remote", partition_key=key)
    assert child is not None and child.state == "cancelled"
    fc.deliver_outbox()  # the child's own notice back to the cancelled parent is harmless
    assert fc.get("parent").state == "cancelled"  # type: ignore[union-attr]
