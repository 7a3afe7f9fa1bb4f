"""Kept transitions: a worker that handles the next state gets the Flow leased straight on
(apply_outcomes(..., keep=LeaseRequest(...))), with the same record, history and counts as a
transition followed by a claim."""

from __future__ import annotations

from ferricflowd import ChildSpec, FlowClient, complete, transition
from ferricflowd.flow.records import Job
from ferricflowd.flow.wire import LeaseRequest
from tests.helpers import assert_versions, events

TYPE = "keep-test"
WORKER = "keeper-1"


def _start(fc: FlowClient, flow_id: str = "k1", state: str = "a") -> Job:
    fc.create(flow_id, TYPE, state, b"payload")
    jobs = fc.claim(TYPE, LeaseRequest(WORKER, [state], 60_000), limit=1).jobs
    assert [j.id for j in jobs] == [flow_id]
    return jobs[0]


def _keep(*states: str) -> LeaseRequest:
    return LeaseRequest(worker=WORKER, states=states, lease_ms=60_000)


def test_transition_to_a_handled_state_is_leased_on(flow_client: FlowClient) -> None:
    fc = flow_client
    job = _start(fc)
    (nxt,) = fc.apply_outcomes([(job, transition("b", payload=b"next"))], keep=_keep("a", "b"))
    assert isinstance(nxt, Job)
    assert (nxt.id, nxt.state, nxt.payload, nxt.attempt) == ("k1", "b", b"next", 1)
    assert nxt.fencing_token == job.fencing_token + 1
    record = fc.get("k1")
    assert record is not None and record.state == "running" and record.run_state == "b"
    assert record.lease_owner == WORKER and record.lease_token == nxt.lease_token
    assert events(fc, "k1") == ["created", "claimed", "transitioned", "claimed"]
    assert_versions(fc, "k1")
    stats = fc.stats(TYPE)
    assert stats.running == 1 and stats.counts.get("running") == 1
    assert not stats.counts.get("a") and not stats.counts.get("b") and stats.due_now == 0
    # Nobody else can claim it, and the kept Job completes like a claimed one.
    assert fc.claim(TYPE, LeaseRequest("other", ["b"], 60_000), limit=10).jobs == []
    assert fc.apply_outcome(nxt, complete(b"done")) == b"ok"
    assert fc.get("k1").state == "completed"  # type: ignore[union-attr]
    assert fc.stats(TYPE).counts.get("completed") == 1


def test_a_lost_reply_resent_is_a_replay(flow_client: FlowClient) -> None:
    fc = flow_client
    job = _start(fc)
    (nxt,) = fc.apply_outcomes([(job, transition("b"))], keep=_keep("b"))
    assert isinstance(nxt, Job)
    assert fc.apply_outcomes([(job, transition("b"))], keep=_keep("b")) == [b"replay"]
    record = fc.get("k1")
    assert record is not None and record.lease_token == nxt.lease_token
    assert events(fc, "k1") == ["created", "claimed", "transitioned", "claimed"]


def test_not_kept_when_the_worker_does_not_handle_it_or_it_is_not_due(
        flow_client: FlowClient) -> None:
    fc = flow_client
    job = _start(fc)
    assert fc.apply_outcomes([(job, transition("c"))], keep=_keep("b")) == [b"ok"]
    assert fc.get("k1").state == "c"  # type: ignore[union-attr]
    later = _start(fc, "k2")
    run_at = fc.claim(TYPE, LeaseRequest(WORKER, ["a"], 1), limit=1).now_ms + 60_000
    assert fc.apply_outcomes([(later, transition("b", run_at_ms=run_at))],
                             keep=_keep("b")) == [b"ok"]
    record = fc.get("k2")
    assert record is not None and record.state == "b" and record.next_run_at_ms == run_at
    plain = _start(fc, "k3")
    assert fc.apply_outcomes([(plain, transition("b"))]) == [b"ok"]
    assert fc.get("k3").state == "b"  # type: ignore[union-attr]


def test_a_parent_waiting_for_children_is_not_kept(flow_client: FlowClient) -> None:
    fc = flow_client
    job = _start(fc, "parent")
    fc.spawn_children(job, [ChildSpec(id="kid", type=TYPE, state="kid")], wait_state="joined")
    assert fc.apply_outcomes([(job, transition("waiting"))],
                             keep=_keep("waiting", "joined")) == [b"ok"]
    record = fc.get("parent")
    assert record is not None and record.state == "waiting" and record.next_run_at_ms is None
