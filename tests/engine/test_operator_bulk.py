"""Browse pages, stuck Flows, and bulk requeue / cancel / purge, on a single node and on the
3-master cluster (16 partitions each, via url_and_opts where the topology matters)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ferricflowd import (
    ChildSpec,
    FlowClient,
    FlowFilter,
    FlowLeased,
    InvalidArgument,
    StaleLease,
    complete,
    fail,
    transition,
)
from ferricflowd.flow.records import Job
from ferricflowd.flow.wire import CreateSpec, LeaseRequest
from tests.helpers import wait_for

T = "ops"


def _claim(fc: FlowClient, state: str = "queued", limit: int = 1000, lease_ms: int = 60_000,
           type: str = T) -> list[Job]:
    jobs: list[Job] = []
    while len(jobs) < limit:
        got = fc.claim(type, LeaseRequest("w", [state], lease_ms), limit=limit - len(jobs)).jobs
        if not got:
            return jobs
        jobs.extend(got)
    return jobs


def _fail_all(fc: FlowClient, ids: list[str], error: Callable[[str], bytes]) -> None:
    fc.create_many([CreateSpec(i, T, "queued", b"p") for i in ids])
    jobs = _claim(fc, limit=len(ids))
    assert len(jobs) == len(ids)
    assert all(r == b"ok" for r in fc.apply_outcomes([(j, fail(error(j.id))) for j in jobs]))
    _tick(fc)


def _tick(fc: FlowClient) -> None:
    """Let the store's clock move on: a bulk run takes the Flows updated before it starts."""
    now = fc.server_ms()
    wait_for(lambda: fc.server_ms() > now)


@pytest.fixture
def client(url_and_opts: tuple[str, dict[str, Any]],
           closing: Callable[[Any], Any]) -> FlowClient:
    url, opts = url_and_opts
    return closing(FlowClient.from_url(url, **opts))


def test_pages_cover_every_flow_once_in_order_across_partitions(client: FlowClient) -> None:
    fc = client
    now = fc.server_ms()
    # Ties: 300 Flows share one due time, 100 more have their own; ids cross partitions.
    specs = [CreateSpec(f"tie-{i:03}", T, "queued", run_at_ms=now - 10_000) for i in range(300)]
    specs += [CreateSpec(f"own-{i:03}", T, "queued", run_at_ms=now - 5_000 + i, priority=i % 3)
              for i in range(100)]
    fc.create_many(specs)
    for order in ("oldest", "newest"):
        seen: list[tuple[int, str]] = []
        cursor, pages = None, 0
        while pages == 0 or cursor is not None:
            page = fc.browse(T, FlowFilter(states=("queued",)), order=order, limit=37,
                             cursor=cursor)
            assert len(page.items) <= 37
            seen.extend((r.next_run_at_ms or 0, r.id) for r in page.records)
            cursor, pages = page.cursor, pages + 1
        assert pages >= 400 // 37
        assert len(seen) == 400 and len({i for _, i in seen}) == 400
        times = [t for t, _ in seen]
        assert times == sorted(times, reverse=order == "newest")


def test_the_cursor_does_not_shift_when_flows_leave(client: FlowClient) -> None:
    fc = client
    _fail_all(fc, [f"f{i:03}" for i in range(120)], lambda i: b"boom")
    first = fc.browse(T, FlowFilter(states=("failed",)), limit=50)
    # Someone else requeues the first page and 10 more before the second page is read.
    taken = [r.id for r in first.records] + [r.id for r in fc.browse(
        T, FlowFilter(states=("failed",)), limit=10, cursor=first.cursor).records]
    for fid in taken:
        fc.rewind(fid)
    rest: list[str] = []
    cursor = first.cursor
    while cursor is not None:
        page = fc.browse(T, FlowFilter(states=("failed",)), limit=50, cursor=cursor)
        rest.extend(r.id for r in page.records)
        cursor = page.cursor
    assert len(rest) == 60 and not set(rest) & set(taken)


def test_filters(client: FlowClient) -> None:
    fc = client
    _fail_all(fc, [f"f{i:02}" for i in range(40)],
              lambda i: b"Timeout talking to SMTP" if int(i[1:]) % 4 == 0 else b"bad address")
    now = fc.server_ms()
    fc.create_many([CreateSpec(f"later-{i}", T, "queued", run_at_ms=now + 60_000 + i)
                    for i in range(5)])
    fc.create_many([CreateSpec(f"due-{i}", T, "queued", run_at_ms=now - 60_000 - i)
                    for i in range(7)])

    def ids(**criteria: Any) -> set[str]:
        return {r.id for _, r in fc.browse_all(T, FlowFilter.of(**criteria), page=7)}

    assert len(ids(error_contains="timeout")) == 10
    assert ids(state="failed", error_contains="TIMEOUT") == {f"f{i:02}" for i in range(0, 40, 4)}
    assert ids(due_after_ms=now + 1) == {f"later-{i}" for i in range(5)}
    assert ids(state="queued", due_before_ms=now - 60_000) == {f"due-{i}" for i in range(1, 7)}
    assert len(ids(state="queued")) == 12 and len(ids()) == 52
    assert ids(state="failed", updated_after_ms=now + 1) == set()
    assert len(ids(state="failed", updated_before_ms=now + 1)) == 40
    assert ids(state="queued", updated_after_ms=now) == ids(state="queued")
    assert ids(min_attempts=2) == set()
    assert fc.count_matching(T, FlowFilter.of(state="failed")) == 40
    assert fc.count_matching(T, FlowFilter.of(error_contains="timeout")) == 10
    assert fc.count_matching(T, FlowFilter.of(due_after_ms=now + 1)) == 5


def test_running_parked_and_stuck(client: FlowClient) -> None:
    fc = client
    fc.create("parent", T, "split")
    [job] = _claim(fc, "split", 1)
    job.flow.spawn_children([ChildSpec(id="kid", type="kid")], wait_state="merge")
    fc.apply_outcome(job, transition("waiting"))
    # (Claims of the type come first: a claim releases the type's expired leases.)
    fc.create_many([CreateSpec(f"r{i}", T, "queued") for i in range(6)])
    live = _claim(fc, limit=3)
    expiring = fc.claim(T, LeaseRequest("w2", ["queued"], 30), limit=3).jobs
    fc.create("old", T, "queued", run_at_ms=fc.server_ms() - 3_600_000)
    running = {r.id for r in fc.browse(T, FlowFilter.of(state="running")).records}
    assert running == {j.id for j in live + expiring}
    assert [r.id for r in fc.browse(T, FlowFilter.of(state="waiting")).records] == ["parent"]
    wait_for(lambda: fc.server_ms() > max(j.lease_deadline_ms for j in expiring))
    stuck = fc.stuck(T, due_for_ms=60_000)
    assert {r.id for r in stuck.records} == {j.id for j in expiring} | {"old"}
    assert stuck.cursor is None
    parked = fc.stuck(T, due_for_ms=60_000, parked_for_ms=0)
    assert "parent" in {r.id for r in parked.records}


def test_a_cursor_of_another_query_is_refused(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create_many([CreateSpec(f"f{i}", T, "queued") for i in range(5)])
    page = fc.browse(T, FlowFilter.of(state="queued"), limit=2)
    assert page.cursor is not None
    with pytest.raises(InvalidArgument, match="another query"):
        fc.browse(T, FlowFilter.of(state="queued"), order="newest", cursor=page.cursor)
    with pytest.raises(InvalidArgument, match="not a browse cursor"):
        fc.browse(T, cursor="garbage!")


# -- bulk operations ---------------------------------------------------------------------------


def _rewound(fc: FlowClient, flow_id: str) -> int:
    return sum(e.event == "rewound" for e in fc.history(flow_id))


def test_bulk_requeue_is_exactly_once_and_resumes_after_a_stop(client: FlowClient) -> None:
    fc = client
    ids = [f"f{i:03}" for i in range(450)]
    _fail_all(fc, ids, lambda i: b"boom")
    pages = 0

    def stop_after_two_pages() -> bool:
        return pages >= 2

    def count_page(handled: int, done: int) -> None:
        nonlocal pages
        pages += 1

    first = fc.requeue(T, FlowFilter.of(state="failed"), reason="deploy fixed it", by="test",
                       batch=100, rate=None, progress=count_page,
                       should_stop=stop_after_two_pages)
    assert first.interrupted and 50 <= first.done <= 200 and first.skipped == 0
    # No half-done Flow: each is either still failed, or queued with one rewound event.
    states = {fid: fc.get(fid).state for fid in ids}  # type: ignore[union-attr]
    assert sum(s == "queued" for s in states.values()) == first.done
    assert all(_rewound(fc, f) == (states[f] == "queued") for f in ids)
    # Workers finish some of the requeued ones; they fail again *after* the snapshot.
    again = _claim(fc, limit=50)
    fc.apply_outcomes([(j, fail(b"again")) for j in again])
    second = fc.requeue(T, FlowFilter.of(state="failed"), reason="resume", by="test",
                        batch=100, rate=None, snapshot_ms=first.snapshot_ms)
    assert not second.interrupted and second.done == 450 - first.done
    assert fc.count_matching(T, FlowFilter.of(state="failed")) == 50  # the re-failed ones
    assert all(_rewound(fc, f) == 1 for f in ids)
    assert fc.stats(T).counts == {"queued": 400, "failed": 50}


def test_bulk_refusals_and_skips_are_counted(client: FlowClient) -> None:
    fc = client
    _fail_all(fc, [f"f{i}" for i in range(10)], lambda i: b"boom")
    fc.create("live", T, "queued")
    [job] = _claim(fc, limit=1)
    _tick(fc)
    res = fc.requeue(T, FlowFilter.of(states=["failed", "running"]), rate=None)
    assert res.done == 10 and res.refused == {"FlowLeased": 1} and res.errors[0][0] == "live"
    # A page's items carry the version it saw: a Flow changed since is skipped.
    page = fc.browse(T, FlowFilter.of(state="queued"), limit=3)
    fc.rewind(page.records[0].id, to_state="queued")
    from ferricflowd.flow.admin import _Tally

    tally = _Tally("cancel", 0)
    fc._apply("cancel_matching", page.items,
              lambda r: [r.id, b"stop", r.state, r.version], tally)
    assert (tally.done, tally.skipped) == (2, 1)
    fc.apply_outcome(job, complete())


def test_bulk_cancel_takes_expired_leases_and_cascades(client: FlowClient) -> None:
    fc = client
    fc.create_many([CreateSpec(f"q{i}", T, "queued") for i in range(30)])
    old = fc.claim(T, LeaseRequest("w", ["queued"], 30), limit=5).jobs
    wait_for(lambda: fc.server_ms() > max(j.lease_deadline_ms for j in old))
    res = fc.cancel_matching(T, FlowFilter.of(states=["queued", "running"]),
                             reason="test data", rate=None, batch=8)
    assert res.done == 30 and res.refused == {}
    assert fc.stats(T).counts == {"cancelled": 30}
    with pytest.raises(StaleLease):
        fc.apply_outcome(old[0], complete())


def test_purge_deletes_flows_history_and_values_now(client: FlowClient) -> None:
    fc = client
    fc.create_many([CreateSpec(f"c{i:03}", T, "queued", b"x" * 300, values={"v": b"1"})
                    for i in range(250)])
    fc.apply_outcomes([(j, complete(b"r")) for j in _claim(fc, limit=250)])
    fc.create("keep", T, "queued")
    _tick(fc)
    with pytest.raises(InvalidArgument):
        fc.purge(T, FlowFilter.of(state="queued"))
    res = fc.purge(T, FlowFilter.of(state="completed"), batch=64, rate=None)
    assert res.done == 250
    assert fc.stats(T).counts == {"queued": 1}
    assert fc.get("c000") is None and fc.history("c000") == []
    assert fc.get_values("c000", ["v"]) == {}
    keys = fc.keys
    for fid in ("c000", "c123", "c249"):
        p = fc.partition_for(fid)
        names = [keys.flow(p, fid), keys.history(p, fid), keys.values(p, fid),
                 keys.payload(p, fid)]
        assert fc.store.execute(lambda r, names=names: r.exists(*names)) == 0


def test_longest_running_and_recent_ends(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create_many([CreateSpec(f"r{i}", T, "queued") for i in range(4)])
    first = fc.claim(T, LeaseRequest("host:1:g", ["queued"], 60_000), limit=2).jobs
    _tick(fc)
    later = fc.claim(T, LeaseRequest("host:2:g", ["queued"], 60_000), limit=2).jobs
    top = fc.running(T, limit=3)
    assert [f.id for f in top[:2]] == sorted(j.id for j in first)
    assert len(top) == 3 and top[2].id in {j.id for j in later}
    assert top[0].worker == "host:1:g" and top[0].state == "queued"
    assert top[0].claimed_at_ms < top[2].claimed_at_ms
    since = fc.server_ms()
    fc.apply_outcomes([(first[0], complete()), (first[1], fail(b"x"))])
    assert fc.finished_since(T, since) == {"completed": 1, "failed": 1, "cancelled": 0}
    assert fc.finished_since(T, fc.server_ms() + 1) == {"completed": 0, "failed": 0,
                                                         "cancelled": 0}


def test_rewind_guards_on_either_topology(client: FlowClient) -> None:
    fc = client
    fc.create("f1", T, "queued")
    old = fc.claim(T, LeaseRequest("w", ["queued"], 30), limit=1).jobs[0]
    with pytest.raises(FlowLeased):
        fc.rewind("f1")
    wait_for(lambda: fc.server_ms() > old.lease_deadline_ms)
    assert fc.rewind("f1", to_state="again", reason="stuck") == "again"
    with pytest.raises(StaleLease):
        fc.apply_outcome(old, complete())
    assert [r.id for r in fc.browse(T, FlowFilter.of(state="again")).records] == ["f1"]
    top = fc.running(T)
    assert top == []


def test_queue_and_workflow_handles(queues: Any, workflows: Any) -> None:
    q = queues.queue(type="hq")
    q.enqueue_many([f"h{i}" for i in range(5)])
    fc = q.client
    jobs = fc.claim("hq", LeaseRequest("w", ["queued"], 60_000), limit=5).jobs
    fc.apply_outcomes([(j, fail(b"boom")) for j in jobs])
    _tick(fc)
    assert q.browse(state="failed", error_contains="BOOM").records[0].error == b"boom"
    assert q.requeue(state="failed", reason="fixed", rate=None).done == 5
    page = q.browse(state="queued", limit=3)
    assert len(page.records) == 3 and page.cursor is not None
    assert q.rewind("h0", to_state="parked-by-hand") == "parked-by-hand"
    _tick(fc)
    assert q.cancel_matching(state="queued", reason="test", rate=None).done == 4
    _tick(fc)
    assert q.purge(states=["cancelled"], rate=None).done == 4
    assert fc.stats("hq").counts == {"parked-by-hand": 1}
    with pytest.raises(TypeError, match="unknown filter"):
        q.browse(stat="queued")
    wf = workflows.workflow(type="hw", initial_state="created")
    wf.start("w1")
    assert [r.id for r in wf.browse(state="created").records] == ["w1"]
    _tick(fc)
    assert [r.id for r in wf.stuck(due_for_ms=0).records] == ["w1"]
