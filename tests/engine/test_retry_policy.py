"""Retry policies: backoff kinds with deterministic jitter, exhaustion to a non-terminal
state, a state's own policy."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ferricflowd import FlowClient, RetryPolicy, WorkflowClient, complete, retry, transition
from tests.engine.calls import T, claim_jobs, claim_one, server_ms
from tests.helpers import wait_for


def _retry_delays(fc: FlowClient, type: str, flow_id: str, n: int) -> list[int]:
    """Retry a Flow n times as fast as its schedule allows; the delays the engine chose."""
    fc.create(flow_id, type, "queued")
    for _ in range(n):
        job = wait_for(lambda: claim_jobs(fc, ["queued"], 1, type), timeout=10, what="due again")[0]
        assert fc.apply_outcome(job, retry(b"again")) == b"scheduled"
    return [e.details["due"] - e.at_ms for e in fc.history(flow_id) if e.event == "retry"]


@pytest.mark.parametrize("backoff,expected", [
    ("fixed", [40, 40, 40, 40]),
    ("linear", [40, 80, 120, 150]),
    ("exponential", [40, 80, 150, 150]),
    ("none", [0, 0, 0, 0]),
])
def test_retry_backoff_with_jitter_bounds(flow_client: FlowClient, redis_server: Any,
                                          namespace: str, closing: Callable[[Any], Any],
                                          backoff: str, expected: list[int]) -> None:
    pct = 25
    policy = RetryPolicy(max_retries=10, backoff=backoff, base_ms=40, max_ms=150,
                         jitter_pct=pct)
    flow_client.register_policy(T, policy)
    delays = _retry_delays(flow_client, T, "r1", 4)
    for got, want in zip(delays, expected, strict=True):
        assert want * (1 - pct / 100) - 1 <= got <= want * (1 + pct / 100), (delays, expected)
    # Jitter is deterministic: the same id and retry number give the same delay anywhere.
    other_ns: FlowClient = closing(FlowClient.from_url(redis_server.url, namespace=namespace + "b",
                                                      partitions=2))
    other_ns.register_policy(T, policy)
    assert _retry_delays(other_ns, T, "r1", 4) == delays
    if backoff != "none":  # ... and differs between ids
        assert _retry_delays(flow_client, T, "r2", 4) != delays


def test_retry_without_jitter_is_exact(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.register_policy(T, RetryPolicy(max_retries=5, backoff="exponential", base_ms=10,
                                      max_ms=50, jitter_pct=0))
    assert _retry_delays(fc, T, "e1", 4) == [10, 20, 40, 50]


def test_retry_exhausted_to_a_non_terminal_state(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.register_policy(T, RetryPolicy(max_retries=1, backoff="none", exhausted_to="dead_letter"))
    fc.create("x", T, "queued")
    assert fc.apply_outcome(claim_one(fc), retry(b"e1")) == b"scheduled"
    assert fc.apply_outcome(claim_one(fc), retry(b"e2")) == b"exhausted"
    record = fc.get("x")
    assert record is not None and record.state == "dead_letter" and record.error == b"e2"
    assert record.attempt == 1 and record.attempts_total == 2
    assert record.next_run_at_ms is not None and record.next_run_at_ms <= server_ms(fc)
    last = fc.history("x")[-1]
    assert (last.event, last.details["decision"], last.details["to"]) == (
        "retry", "exhausted", "dead_letter")
    job = claim_one(fc, "dead_letter")
    assert fc.apply_outcome(job, complete(b"parked")) == b"ok"


def test_per_state_retry_policy(workflows: WorkflowClient) -> None:
    wf = workflows.workflow(type=T, initial_state="a", retry_policy=RetryPolicy(max_retries=0))
    runs: list[tuple[str, int]] = []

    @wf.state("a")
    def a(job: Any) -> Any:
        runs.append(("a", job.attempt))
        return transition("b") if job.payload == b"go" else retry(b"no")

    @wf.state("b", retry_policy=RetryPolicy(max_retries=2, backoff="none"))
    def b(job: Any) -> Any:
        runs.append(("b", job.attempt))
        return retry(b"b fails")

    wf.start("go", payload=b"go")
    wf.start("stop", payload=b"stop")
    fc = workflows.flow_client
    wait_for(lambda: wf.worker(states=["a", "b"]).run_until_idle(timeout=5) == 0
             and fc.get("go").terminal, timeout=10)  # type: ignore[union-attr]
    assert fc.get("stop").state == "failed"  # type: ignore[union-attr]
    assert fc.get("go").state == "failed"  # type: ignore[union-attr]
    assert sorted(runs) == [("a", 1), ("a", 1), ("b", 1), ("b", 2), ("b", 3)]
