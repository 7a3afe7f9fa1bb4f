"""rewind.lua through FlowClient.rewind: a Flow back into a state, its guards, and families.

Every test runs on the single node with 4 partitions (flow_client); the cluster runs the
bulk paths in test_operator_bulk.py.
"""

from __future__ import annotations

from typing import Any

import pytest

from ferricflowd import (
    ChildSpec,
    FamilyConflict,
    FlowClient,
    FlowLeased,
    FlowNotFound,
    InvalidArgument,
    StaleLease,
    StaleVersion,
    StateMismatch,
    WrongState,
    complete,
    fail,
    retry,
    transition,
)
from ferricflowd.flow.records import Job
from tests.engine.calls import claim_jobs, claim_one, parent_with_children
from tests.helpers import assert_versions, events, wait_for

T = "rw"


def _claim(fc: FlowClient, state: str = "queued", type: str = T, limit: int = 100,
           lease_ms: int = 60_000) -> list[Job]:
    return claim_jobs(fc, [state], limit, type, lease_ms=lease_ms)


def _one(fc: FlowClient, state: str = "queued", type: str = T, lease_ms: int = 60_000) -> Job:
    return claim_one(fc, state, type, lease_ms)


def _server_ms(fc: FlowClient) -> int:
    return fc.server_ms()


def _failed(fc: FlowClient, flow_id: str, **create: Any) -> Job:
    fc.create(flow_id, T, "queued", b"payload", values={"v": b"kept"}, **create)
    job = _one(fc)
    assert fc.apply_outcome(job, fail(b"boom")) == b"ok"
    return job


def test_a_failed_flow_goes_back_to_its_last_state(flow_client: FlowClient) -> None:
    fc = flow_client
    _failed(fc, "f1")
    before = fc.get("f1")
    assert before is not None and before.state == "failed" and before.terminal_until_ms
    assert fc.rewind("f1", reason="fixed the bug", by="ops@host") == "queued"
    after = fc.get("f1", values=["v"])
    assert after is not None and after.state == "queued"
    assert after.fencing_token == before.fencing_token + 1
    assert after.payload == b"payload" and after.values == {"v": b"kept"}
    assert after.error == b"boom"  # the last error stays visible until a new outcome
    assert after.terminal_until_ms is None and after.next_run_at_ms is not None
    last = fc.history("f1")[-1]
    assert last.event == "rewound" and last.details == {
        "from": "failed", "status": "failed", "to": "queued", "by": "ops@host",
        "reason": "fixed the bug", "fencing": after.fencing_token, "attempts": "reset"}
    assert_versions(fc, "f1")
    assert fc.terminals(T) == []  # out of the terminal index
    stats = fc.stats(T)
    assert stats.counts == {"queued": 1} and stats.states["queued"].due_now == 1
    job = _one(fc)  # due now and claimable again
    assert job.id == "f1" and job.attempt == 1 and job.fencing_token == after.fencing_token + 1


def test_attempts_reset_or_kept(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("f1", T, "queued")
    fc.create("f2", T, "queued")
    for job in _claim(fc):  # a retry bumps the attempt; then fail it
        fc.apply_outcome(job, retry(b"again", run_at_ms=0))
    for job in _claim(fc):
        assert job.attempt == 2
        fc.apply_outcome(job, fail(b"x"))
    fc.rewind("f1")
    fc.rewind("f2", keep_attempts=True)
    assert fc.get("f1").attempt == 1  # type: ignore[union-attr]
    assert fc.get("f2").attempt == 2  # type: ignore[union-attr]
    assert fc.history("f2")[-1].details["attempts"] == "kept"


def test_to_a_named_state_at_a_time_and_to_a_history_point(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("w1", T, "created")
    job = _one(fc, "created")
    fc.apply_outcome(job, transition("charged"))
    fc.apply_outcome(_one(fc, "charged"), complete(b"done"))
    assert fc.get("w1").result == b"done"  # type: ignore[union-attr]
    later = _server_ms(fc) + 3_600_000
    assert fc.rewind("w1", to_state="shipping", run_at_ms=later) == "shipping"
    rec = fc.get("w1")
    assert rec is not None and rec.state == "shipping" and rec.next_run_at_ms == later
    assert rec.result is None
    assert _claim(fc, "shipping") == []  # not due yet
    assert fc.rewind("w1", to_version=1) == "created"  # version 1 is the created event
    assert fc.rewind("w1") == "created"  # the last state-bearing event is that rewind
    with pytest.raises(InvalidArgument):
        fc.rewind("w1", to_state="completed")  # reserved states are refused client-side


def test_guards_and_refusals(flow_client: FlowClient) -> None:
    fc = flow_client
    with pytest.raises(FlowNotFound):
        fc.rewind("nope")
    _failed(fc, "f1")
    version = fc.get("f1").version  # type: ignore[union-attr]
    with pytest.raises(StaleVersion):
        fc.rewind("f1", if_version=version - 1)
    with pytest.raises(StateMismatch):
        fc.rewind("f1", if_state="completed")
    assert fc.rewind("f1", if_state=["completed", "failed"], if_version=version) == "queued"
    with pytest.raises(StaleVersion):  # the same guarded request again: the Flow moved on
        fc.rewind("f1", if_version=version)
    # A Flow whose history lost every state-bearing event needs a named state.
    fc.store.execute(lambda r: r.delete(fc.keys.history(fc.partition_for("f1"), "f1")))
    with pytest.raises(WrongState):
        fc.rewind("f1")
    assert fc.rewind("f1", to_state="queued") == "queued"


def test_a_leased_flow_is_refused_and_an_expired_one_taken_away(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("f1", T, "queued")
    live = _one(fc)
    with pytest.raises(FlowLeased):
        fc.rewind("f1")
    assert fc.get("f1").state == "running"  # type: ignore[union-attr]
    fc.apply_outcome(live, complete())
    fc.rewind("f1")
    old = _one(fc, lease_ms=30)
    wait_for(lambda: _server_ms(fc) > old.lease_deadline_ms, what="lease expiry")
    assert fc.rewind("f1", if_state="running", reason="stuck") == "queued"
    rec = fc.get("f1")
    assert rec is not None and rec.state == "queued" and rec.lease_owner is None
    assert rec.fencing_token == old.fencing_token + 1
    assert fc.history("f1")[-1].details["from"] == "queued"
    assert fc.history("f1")[-1].details["status"] == "running"
    # The worker still holding the old lease gets the stale-lease error, not an overwrite.
    for outcome in (complete(b"late"), fail(b"late"), transition("other")):
        with pytest.raises(StaleLease):
            fc.apply_outcome(old, outcome)
    with pytest.raises(StaleLease):
        old.flow.extend_lease(1000)
    assert fc.get("f1").state == "queued"  # type: ignore[union-attr]
    assert fc.stats(T).running == 0


def test_a_parked_or_due_flow_can_be_moved(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("f1", T, "queued", run_at_ms=_server_ms(fc) + 3_600_000)
    assert fc.rewind("f1", to_state="other") == "other"
    assert [j.id for j in _claim(fc, "other")] == ["f1"]
    stats = fc.stats(T)
    assert stats.counts == {"running": 1} and stats.running == 1


# -- parents and children --------------------------------------------------------------------


def test_a_parent_with_open_children_is_refused(flow_client: FlowClient) -> None:
    fc = flow_client
    parent_with_children(fc, 2, T)
    with pytest.raises(FamilyConflict, match="children open"):
        fc.rewind("parent", to_state="split")
    assert fc.get("parent").state == "waiting"  # type: ignore[union-attr]


def test_a_failed_child_of_an_open_group_is_requeued_and_the_group_re_resolves(
        flow_client: FlowClient) -> None:
    fc = flow_client
    kids = parent_with_children(fc, 3, T, on_child_failed="ignore")
    fc.apply_outcome(kids[0], fail(b"broken"))
    fc.apply_outcome(kids[1], complete())
    parent = fc.get("parent")
    assert parent is not None and parent.state == "waiting"
    assert fc.rewind("kid-0", partition_key="parent", reason="retry the broken one") == "queued"
    fc.apply_outcome(kids[2], complete())
    # Without the rewind the group would have resolved here (3 of 3 done).
    assert fc.get("parent").state == "waiting"  # type: ignore[union-attr]
    [again] = _claim(fc, "queued", "kid")
    assert again.id == "kid-0" and again.attempt == 1
    fc.apply_outcome(again, complete(b"now fine"))
    parent = fc.get("parent")
    assert parent is not None and parent.state == "merge" and parent.children_group["res"] == "ok"
    assert {c.id: c.state for c in fc.children("parent")} == {
        "kid-0": "completed", "kid-1": "completed", "kid-2": "completed"}
    assert events(fc, "parent")[-1] == "children_resolved"


def test_a_completed_child_of_an_open_group_counts_again_when_requeued(
        flow_client: FlowClient) -> None:
    fc = flow_client
    kids = parent_with_children(fc, 2, T, wait="all")
    fc.apply_outcome(kids[0], complete())
    fc.rewind("kid-0", partition_key="parent")
    fc.apply_outcome(kids[1], complete())
    assert fc.get("parent").state == "waiting"  # type: ignore[union-attr]
    fc.apply_outcome(_one(fc, type="kid"), complete())
    assert fc.get("parent").state == "merge"  # type: ignore[union-attr]


def test_a_child_whose_group_resolved_is_refused(flow_client: FlowClient) -> None:
    fc = flow_client
    kids = parent_with_children(fc, 2, T)
    fc.apply_outcome(kids[0], fail(b"broken"))  # fail_parent: the group fails at once
    assert fc.get("parent").state == "failed"  # type: ignore[union-attr]
    with pytest.raises(FamilyConflict, match="group resolved"):
        fc.rewind("kid-0", partition_key="parent")
    # The failed parent spawned children that ran: rewinding it is refused too (its handler
    # would spawn the same ids again, and existing children are not run twice).
    with pytest.raises(FamilyConflict, match="has children"):
        fc.rewind("parent", to_state="split")


def test_a_child_still_running_or_due_may_be_moved(flow_client: FlowClient) -> None:
    fc = flow_client
    kids = parent_with_children(fc, 2, T)
    fc.apply_outcome(kids[0], complete())
    # kid-1 is running (live lease): refused; once its lease is taken away it may move.
    with pytest.raises(FlowLeased):
        fc.rewind("kid-1", partition_key="parent")
    fc.reclaim_worker("w", "test")
    assert fc.rewind("kid-1", partition_key="parent", to_state="queued") == "queued"
    fc.apply_outcome(_one(fc, type="kid"), complete())
    assert fc.get("parent").state == "merge"  # type: ignore[union-attr]


def test_a_finished_child_in_another_partition_is_refused(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("parent", T, "split")
    home = fc.partition_for("parent")
    key = next(f"k{i}" for i in range(1000) if fc.partition_for(f"k{i}") != home)
    job = _one(fc, "split")
    job.flow.spawn_children([ChildSpec(id="far", type="kid", partition_key=key)],
                            wait_state="merge", on_child_failed="ignore")
    fc.apply_outcome(job, transition("waiting"))
    fc.apply_outcome(_one(fc, type="kid"), fail(b"x"))
    with pytest.raises(FamilyConflict, match="another partition"):
        fc.rewind("far", partition_key=key)


def test_a_parent_whose_empty_group_resolved_starts_over(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("p0", T, "split")
    job = _one(fc, "split")
    job.flow.spawn_children([], wait_state="merge")
    fc.apply_outcome(job, transition("waiting"))
    fc.apply_outcome(_one(fc, "merge"), complete())
    assert fc.rewind("p0", to_state="split") == "split"
    rec = fc.get("p0")
    assert rec is not None and rec.children_group == {}
    job = _one(fc, "split")
    job.flow.spawn_children([ChildSpec(id="c", type="kid")], wait_state="merge")
    fc.apply_outcome(job, transition("waiting"))
    assert fc.get("p0").state == "waiting"  # type: ignore[union-attr]
