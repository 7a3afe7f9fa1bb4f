"""apply_outcomes: a batch reports per item (a stale lease is that item's error)."""

from __future__ import annotations

from ferricflowd import FlowClient, StaleLease, complete, retry, transition
from tests.engine.calls import T, claim_jobs


def test_batch_outcomes_report_per_item(flow_client: FlowClient) -> None:
    fc = flow_client
    for i in range(4):
        fc.create(f"b{i}", T, "queued")
    jobs = sorted(claim_jobs(fc, ["queued"], 4), key=lambda j: j.id)
    fc.reclaim_worker("w", "gone")
    fresh = sorted(claim_jobs(fc, ["queued"], 2, worker="w2"), key=lambda j: j.id)
    results = fc.apply_outcomes([(fresh[0], complete()), (jobs[1], complete()),
                                 (fresh[1], transition("x")), (jobs[3], retry(b"r"))])
    assert results[0] == b"ok" and results[2] == b"ok"
    assert isinstance(results[1], StaleLease) and isinstance(results[3], StaleLease)
