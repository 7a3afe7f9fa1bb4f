"""Stats: exact counts per state, due now, the oldest due age."""

from __future__ import annotations

from ferricflowd import FlowClient, complete, fail, transition
from tests.engine.calls import FAR, T, claim_jobs, server_ms


def test_stats_are_exact(flow_client: FlowClient) -> None:
    fc = flow_client
    now = server_ms(fc)
    for i in range(10):
        fc.create(f"q{i}", T, "queued", run_at_ms=now - 1000 - i)
    for i in range(4):
        fc.create(f"s{i}", T, "shipping")
    fc.create("future", T, "queued", run_at_ms=FAR)
    jobs = claim_jobs(fc, ["queued"], 5)
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
