"""Retention: cleanup deletes terminal Flows with their history and values; the history
cap drops the oldest events while versions go on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ferricflowd import FlowClient, complete, fail
from tests.engine.calls import FAR, T, claim_jobs


def test_cleanup_deletes_terminal_flows_and_their_history(flow_client: FlowClient) -> None:
    fc = flow_client
    for i in range(6):
        fc.create(f"t{i}", T, "queued", values={"blob": b"x" * 100})
    fc.create("alive", T, "queued", run_at_ms=FAR)
    jobs = claim_jobs(fc, ["queued"], 10)
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
