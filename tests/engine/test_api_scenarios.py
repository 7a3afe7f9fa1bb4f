"""The public API end to end, one scenario per test (the seed scenarios of the engine issue),
on a single node and on a 3-master cluster.

Each scenario uses the public API exactly as the seed examples do (queue, state machine,
signal, retry with exhaustion, fanout, value refs, failure model, inspection) and asserts the
records and histories the engine leaves behind.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from ferricflowd import (
    ChildSpec,
    ExceptionPolicy,
    FlowClient,
    IdempotencyConflict,
    QueueClient,
    RetryPolicy,
    StaleLease,
    StateMismatch,
    WorkflowClient,
    complete,
    retry,
    transition,
)
from ferricflowd.flow.wire import LeaseRequest
from tests.helpers import assert_versions, events, running, terminal, wait_for

Opts = tuple[str, dict[str, Any]]
Opened = Callable[[Any], Any]

FAST = RetryPolicy(max_retries=5, backoff="exponential", base_ms=20, max_ms=200)


def test_queue(url_and_opts: Opts, closing: Opened) -> None:
    url, opts = url_and_opts
    client = closing(QueueClient.from_url(url, **opts))
    emails = client.queue(type="email")
    ids = [f"email-{i}" for i in range(40)]
    for i, flow_id in enumerate(ids):
        assert emails.enqueue(flow_id, payload=f"user-{i}".encode(), idempotent=True) is True
    assert emails.enqueue("email-1", payload=b"user-1", idempotent=True) is False

    sent: dict[str, bytes] = {}
    lock = threading.Lock()

    def send_email(job: Any) -> None:
        with lock:
            sent[job.id] = job.payload

    handled = emails.worker(state="queued", concurrency=100, batch_size=500).run_until_idle(
        send_email, timeout=30)
    assert handled == len(ids)
    assert sent == {f"email-{i}": f"user-{i}".encode() for i in range(40)}
    for flow_id in ids:
        record = emails.get(flow_id)
        assert record is not None and record.state == "completed"
        assert record.fencing_token == 1 and record.attempt == 1
        assert events(client.flow_client, flow_id) == ["created", "claimed", "completed"]
    stats = emails.stats()
    assert stats.counts == {"completed": 40}
    assert stats.running == 0 and stats.due_now == 0
    assert sorted(r.id for r in emails.terminals(state="completed", count=100)) == sorted(ids)

    # run() on a thread picks up work enqueued while it idles, until stop().
    worker = emails.worker(state="queued", concurrency=4, batch_size=10, block_ms=200)
    with running(worker, send_email):
        emails.enqueue("email-late", payload=b"late")
        wait_for(terminal(client.flow_client, "email-late"), what="email-late done")
    assert sent["email-late"] == b"late"


def _order_workflow(client: WorkflowClient, log: list[tuple[str, int]]) -> Any:
    order = client.workflow(type="order", initial_state="created", retry_policy=FAST)
    lock = threading.Lock()

    @order.state("created")
    def created(job: Any) -> Any:
        with lock:
            log.append(("created", job.attempt))
        return transition("charged")

    @order.state("charged", exception_policy=ExceptionPolicy.RETRY)
    def charged(job: Any) -> Any:
        with lock:
            log.append(("charged", job.attempt))
        if job.attempt == 1:
            return retry(error=b"rate limited")
        return transition("shipped", payload=job.payload + b"+charged")

    @order.state("shipped")
    def shipped(job: Any) -> Any:
        with lock:
            log.append(("shipped", job.attempt))
        return complete(b"delivered:" + job.payload)

    return order


def test_state_machine(url_and_opts: Opts, closing: Opened) -> None:
    url, opts = url_and_opts
    client = closing(WorkflowClient.from_url(url, **opts))
    log: list[tuple[str, int]] = []
    order = _order_workflow(client, log)
    assert order.start("order-1", payload=b"order payload", idempotent=True) is True
    assert order.start("order-1", payload=b"order payload", idempotent=True) is False

    with running(order.worker(states=["created", "charged", "shipped"], block_ms=100)):
        record = wait_for(terminal(client.flow_client, "order-1"), what="order-1 terminal")
    assert record.state == "completed"
    assert record.result == b"delivered:order payload+charged"
    assert log == [("created", 1), ("charged", 1), ("charged", 2), ("shipped", 1)]
    assert events(client.flow_client, "order-1") == [
        "created", "claimed", "transitioned", "claimed", "retry", "claimed", "transitioned",
        "claimed", "completed"]
    history = order.history("order-1")
    retried = [e for e in history if e.event == "retry"][0]
    assert retried.details["decision"] == "scheduled"
    assert retried.details["error"] == "rate limited"
    assert [e.details.get("to") for e in history if e.event == "transitioned"] == [
        "charged", "shipped"]
    assert record.fencing_token == 4
    assert all(e.at_ms > 0 for e in history)
    assert_versions(client.flow_client, "order-1")


def test_signal(url_and_opts: Opts, closing: Opened) -> None:
    url, opts = url_and_opts
    client = closing(WorkflowClient.from_url(url, **opts))
    approval = client.workflow(type="approval", initial_state="requested")

    @approval.state("requested")
    def requested(job: Any) -> Any:
        return transition("waiting")

    @approval.state("approved")
    def approved(job: Any) -> Any:
        return complete(b"approved by signal")

    approval.start("approval-1", payload=b"expense 42")
    assert approval.worker(states=["requested"]).run_until_idle(timeout=10) == 1
    waiting = approval.get("approval-1")
    assert waiting is not None and waiting.state == "waiting"

    # A passive signal is recorded and disturbs nothing.
    assert approval.signal("approval-1", signal="reminder") is True
    after = approval.get("approval-1")
    assert after is not None
    assert (after.state, after.next_run_at_ms, after.fencing_token) == (
        "waiting", waiting.next_run_at_ms, waiting.fencing_token)
    assert after.version == waiting.version + 1

    with pytest.raises(StateMismatch):
        approval.signal("approval-1", signal="approved", if_state="requested",
                        transition_to="approved")
    assert approval.signal("approval-1", signal="approved", if_state="waiting",
                           transition_to="approved",
                           idempotency_key="approve-approval-1") is True
    assert approval.signal("approval-1", signal="approved", if_state="waiting",
                           transition_to="approved",
                           idempotency_key="approve-approval-1") is False
    with pytest.raises(IdempotencyConflict):
        approval.signal("approval-1", signal="rejected", if_state="waiting",
                        transition_to="rejected", idempotency_key="approve-approval-1")
    moved = approval.get("approval-1")
    assert moved is not None and moved.state == "approved"

    assert approval.worker(states=["approved"]).run_until_idle(timeout=10) == 1
    done = approval.get("approval-1")
    assert done is not None and done.state == "completed" and done.result == b"approved by signal"
    history = approval.history("approval-1")
    signals = [e for e in history if e.event == "signaled"]
    assert [e.details["name"] for e in signals] == ["reminder", "approved"]
    assert signals[1].details["from"] == "waiting" and signals[1].details["to"] == "approved"
    assert_versions(client.flow_client, "approval-1")


def test_retry_after_failure_with_exhaustion(url_and_opts: Opts, closing: Opened) -> None:
    url, opts = url_and_opts
    client = closing(WorkflowClient.from_url(url, **opts))
    policy = RetryPolicy(max_retries=2, backoff="fixed", base_ms=10, jitter_pct=0)
    job_wf = client.workflow(type="flaky", initial_state="work", retry_policy=policy)
    calls: dict[str, int] = {}
    lock = threading.Lock()

    @job_wf.state("work")
    def work(job: Any) -> Any:
        with lock:
            calls[job.id] = calls.get(job.id, 0) + 1
        if job.payload == b"always" or job.attempt == 1:
            raise RuntimeError(f"boom {job.attempt}")
        return complete(b"ok on attempt %d" % job.attempt)

    job_wf.start("recovers", payload=b"once")
    job_wf.start("exhausts", payload=b"always")
    with running(job_wf.worker(states=["work"], block_ms=50)):
        recovered = wait_for(terminal(client.flow_client, "recovers"))
        exhausted = wait_for(terminal(client.flow_client, "exhausts"))

    assert recovered.state == "completed" and recovered.result == b"ok on attempt 2"
    assert calls["recovers"] == 2
    assert exhausted.state == "failed"
    assert calls["exhausts"] == 3  # the first run and max_retries = 2 retries
    assert exhausted.error == b"RuntimeError: boom 3"
    assert exhausted.attempts_total == 3
    decisions = [(e.details["decision"], e.details["error"])
                 for e in job_wf.history("exhausts") if e.event == "retry"]
    assert decisions == [("scheduled", "RuntimeError: boom 1"),
                         ("scheduled", "RuntimeError: boom 2"),
                         ("exhausted", "RuntimeError: boom 3")]
    assert [r.id for r in job_wf.terminals(state="failed")] == ["exhausts"]
    assert job_wf.stats().counts == {"completed": 1, "failed": 1}
    assert_versions(client.flow_client, "exhausts")


def test_fanout_with_50_children(url_and_opts: Opts, closing: Opened) -> None:
    url, opts = url_and_opts
    flows = closing(WorkflowClient.from_url(url, **opts))
    commands = QueueClient(flows.flow_client).queue(type="device-command")
    fanout = flows.workflow(type="device-fanout", initial_state="created")
    device_ids = [f"dev{i:02d}" for i in range(50)]

    @fanout.state("created")
    def created(job: Any) -> Any:
        job.flow.spawn_children([ChildSpec(id=f"device:{d}:cmd:{job.id}", type="device-command",
                                           payload=d.encode()) for d in device_ids],
                                wait_state="done")
        return transition("waiting_for_children")

    @fanout.state("done")
    def done(job: Any) -> Any:
        kids = job.flow.client.children(job.id)
        return complete(b"%d ok" % sum(k.state == "completed" for k in kids))

    fanout.start("rollout-1", payload=b"firmware 2.0")
    assert fanout.worker(states=["created"]).run_until_idle(timeout=10) == 1
    parked = fanout.get("rollout-1")
    assert parked is not None and parked.state == "waiting_for_children"
    assert parked.next_run_at_ms is None and parked.lease_owner is None

    def execute(job: Any) -> bytes:
        return b"ack:" + job.payload

    with running(fanout.worker(states=["done"], block_ms=100)), \
            running(commands.worker(state="queued", concurrency=8, batch_size=20, block_ms=100),
                    execute):
        record = wait_for(terminal(flows.flow_client, "rollout-1"), what="parent done")
    assert record.state == "completed" and record.result == b"50 ok"
    assert record.children_group.get("res") == "ok"

    children = fanout.children("rollout-1")
    assert sorted(c.id for c in children) == sorted(f"device:{d}:cmd:rollout-1"
                                                    for d in device_ids)
    parent_partition = flows.flow_client.partition_for("rollout-1")
    for child in children:
        assert child.state == "completed" and child.result == b"ack:" + child.payload
        assert child.type == "device-command" and child.parent_id == "rollout-1"
        # children land in the parent's partition and are addressed with its routing key
        assert flows.flow_client.partition_for(child.id, child.partition_key) == parent_partition
    assert events(flows.flow_client, "rollout-1") == [
        "created", "claimed", "children_spawned", "transitioned", "children_resolved",
        "claimed", "completed"]
    assert commands.stats().counts == {"completed": 50}
    assert_versions(flows.flow_client, "rollout-1")


def test_value_refs(url_and_opts: Opts, closing: Opened) -> None:
    url, opts = url_and_opts
    client = closing(QueueClient.from_url(url, **opts))
    orders = client.queue(type="order-doc")
    invoice_pdf_bytes = b"%PDF-1.7 " + bytes(range(256)) * 1024  # ~256 KiB
    customer_bytes = b'{"name": "Ada"}'
    orders.enqueue("order-1", payload=b"small routing bytes",
                   values={"invoice": invoice_pdf_bytes, "customer": customer_bytes})
    seen: dict[str, Any] = {}

    def handle_customer_step(job: Any) -> Any:
        seen["values"] = dict(job.values)
        seen["payload"] = job.payload
        job.flow.put_value("receipt", b"receipt for " + job.values["customer"])
        return complete(b"ok", values={"summary": b"1 invoice"})

    assert orders.worker(claim_values=["customer"]).run_until_idle(
        handle_customer_step, timeout=10) == 1
    assert seen == {"values": {"customer": customer_bytes}, "payload": b"small routing bytes"}
    record = orders.get("order-1", values=["invoice", "customer", "receipt", "summary", "none"])
    assert record is not None and record.state == "completed"
    assert record.values == {"invoice": invoice_pdf_bytes, "customer": customer_bytes,
                             "receipt": b"receipt for " + customer_bytes,
                             "summary": b"1 invoice"}
    assert orders.get("order-1").values == {}  # type: ignore[union-attr]

    # A value over value_max_bytes is left out of the claim and fetched beside it.
    orders.enqueue("order-2", values={"invoice": invoice_pdf_bytes, "customer": customer_bytes})
    got: dict[str, bytes] = {}
    worker = orders.worker(claim_values=["invoice", "customer"], value_max_bytes=1024)
    assert worker.run_until_idle(lambda job: got.update(job.values), timeout=10) == 1
    assert got == {"invoice": invoice_pdf_bytes, "customer": customer_bytes}


def test_failure_model(url_and_opts: Opts, closing: Opened) -> None:
    url, opts = url_and_opts
    client = closing(WorkflowClient.from_url(url, **opts))
    fc: FlowClient = client.flow_client
    payments = client.workflow(type="payment", initial_state="charge",
                               retry_policy=RetryPolicy(max_retries=3, base_ms=10))

    @payments.state("charge", exception_policy=ExceptionPolicy.FAIL)
    def charge(job: Any) -> Any:
        if job.payload == b"bad card":
            raise ValueError("card declined")
        return complete(b"charged")

    payments.start("pay-bad", payload=b"bad card")
    payments.start("pay-ok", payload=b"good card")
    assert payments.worker(states=["charge"]).run_until_idle(timeout=10) == 2
    bad = payments.get("pay-bad")
    assert bad is not None and bad.state == "failed" and bad.error == b"ValueError: card declined"
    assert "retry" not in events(fc, "pay-bad")  # FAIL does not consult the retry policy
    ok = payments.get("pay-ok")
    assert ok is not None and ok.state == "completed"

    # A worker that dies holding a lease: its Flow is reclaimed, re-run, and the dead worker's
    # late outcome is refused.
    fc.create("pay-crash", "payment", "charge", b"good card")
    dead = fc.claim("payment", LeaseRequest("dead-worker", ["charge"], 60_000), limit=1)
    assert [j.id for j in dead.jobs] == ["pay-crash"]
    assert fc.reclaim_worker("dead-worker", "process exited") == (1, 0)
    reclaimed = payments.get("pay-crash")
    assert reclaimed is not None and reclaimed.state == "charge" and reclaimed.crash_count == 1
    assert payments.worker(states=["charge"]).run_until_idle(timeout=10) == 1
    with pytest.raises(StaleLease):
        fc.apply_outcome(dead.jobs[0], complete(b"too late"))
    final = payments.get("pay-crash")
    assert final is not None and final.state == "completed" and final.result == b"charged"
    assert final.fencing_token == 2
    released = [e for e in payments.history("pay-crash") if e.event == "lease_released"]
    assert [e.details["cause"] for e in released] == ["process exited"]

    # A handler that hangs past its lease (RAISE leaves the Flow untouched): the lease expires
    # and the next claim takes the Flow over with a higher fencing token.
    hangs = client.workflow(type="hang", initial_state="step")

    @hangs.state("step", exception_policy=ExceptionPolicy.RAISE)
    def step(job: Any) -> Any:
        if job.attempt == 1 and job.fencing_token == 1:
            raise TimeoutError("handler hung")
        return complete(b"second run")

    hangs.start("hang-1")
    assert hangs.worker(states=["step"], lease_ms=200).run_until_idle(timeout=10) == 0
    untouched = hangs.get("hang-1")
    assert untouched is not None and untouched.state == "running"

    def rerun() -> Any:
        hangs.worker(states=["step"], lease_ms=200).run_until_idle(timeout=5)
        record = hangs.get("hang-1")
        return record if record is not None and record.terminal else None

    record = wait_for(rerun, timeout=10, what="expired lease taken over")
    assert record.state == "completed" and record.fencing_token == 2
    names = events(fc, "hang-1")
    assert names.count("claimed") == 2 and "lease_released" in names
    assert [e.details["cause"] for e in hangs.history("hang-1")
            if e.event == "lease_released"] == ["expired"]


def test_inspection(url_and_opts: Opts, closing: Opened) -> None:
    url, opts = url_and_opts
    client = closing(WorkflowClient.from_url(url, **opts))
    order = client.workflow(type="order", initial_state="created",
                            retry_policy=RetryPolicy(max_retries=0))
    assert order.get("order-404") is None
    assert order.history("order-404") == []
    assert order.children("order-404") == []

    @order.state("created")
    def created(job: Any) -> Any:
        if job.payload.startswith(b"fail"):
            raise RuntimeError(job.payload.decode())
        return complete(job.payload.upper())

    order.start("order-1", payload=b"order payload", correlation_id="req-7")
    for i in range(5):
        order.start(f"order-f{i}", payload=f"fail {i}".encode())
    before = order.stats()
    assert before.counts == {"created": 6}
    assert before.states["created"].count == 6 and before.states["created"].due_now == 6
    assert before.running == 0
    fresh = order.get("order-1")
    assert fresh is not None
    assert (fresh.id, fresh.type, fresh.state, fresh.payload) == (
        "order-1", "order", "created", b"order payload")
    assert (fresh.result, fresh.error, fresh.attempt, fresh.fencing_token, fresh.version) == (
        None, None, 1, 0, 1)
    assert fresh.parent_id is None and fresh.correlation_id == "req-7"
    assert fresh.next_run_at_ms is not None and fresh.created_at_ms > 0
    assert order.get("order-1", payload=False).payload == b""  # type: ignore[union-attr]

    assert order.worker(states=["created"]).run_until_idle(timeout=10) == 6
    record = order.get("order-1")
    assert record is not None and record.state == "completed"
    assert record.result == b"ORDER PAYLOAD" and record.version == 3
    assert record.terminal_until_ms is not None and record.terminal_until_ms > record.created_at_ms
    history = order.history("order-1")
    assert [(e.event, e.version) for e in history] == [
        ("created", 1), ("claimed", 2), ("completed", 3)]
    assert history[0].details["state"] == "created"
    assert history[1].details["fencing"] == 1
    assert [e.event for e in order.history("order-1", reverse=True)] == [
        "completed", "claimed", "created"]
    assert [e.event for e in order.history("order-1", count=2)] == ["created", "claimed"]

    failed = order.terminals(state="failed", count=100)
    assert sorted(r.id for r in failed) == [f"order-f{i}" for i in range(5)]
    assert all(r.error is not None and r.error.startswith(b"RuntimeError: fail") for r in failed)
    assert len(order.terminals(state="failed", count=3)) == 3
    assert [r.id for r in order.terminals(state="completed")] == ["order-1"]
    assert len(order.terminals()) == 6
    after = order.stats()
    assert after.counts == {"completed": 1, "failed": 5}
    assert after.running == 0 and after.due_now == 0
