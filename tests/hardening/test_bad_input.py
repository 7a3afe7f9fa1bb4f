"""Scenario 8: bad input never gets in, and says clearly what was wrong.

Already covered elsewhere (not repeated here): create-time oversize payload/values and the
64 KiB claim cap, non-bytes enqueue payloads and odd ids through the Python API
(tests/engine/test_arguments.py), and the in-process fuzzed TOML corpus
(tests/config_corpus.py, 240 cases). Added here: the wrong-type table over every public
argument, oversize input through every entry point with the keys checked, unknown states,
odd ids through the CLI, and the fuzzed configs through `ferricflowd check`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ferricflowd import (
    ChildSpec,
    FlowClient,
    InvalidArgument,
    Job,
    Queue,
    QueueClient,
    RetryPolicy,
    Workflow,
    WorkflowClient,
    complete,
    fail,
    retry,
    transition,
)
from ferricflowd.config import ConfigError, load_config
from ferricflowd.flow.wire import LeaseRequest
from tests.config_corpus import EXAMPLE, FUZZ_SEEDS, make_case
from tests.daemons import daemon_env, run_many
from tests.helpers import flow_keys

T = "bad"


@dataclass
class Ctx:
    fc: FlowClient
    url: str
    queues: QueueClient
    workflows: WorkflowClient
    queue: Queue
    workflow: Workflow
    job: Job


@pytest.fixture
def ctx(redis_server: Any, namespace: str, closing: Any) -> Ctx:
    fc = closing(FlowClient.from_url(redis_server.url, namespace=namespace, partitions=2))
    queues, workflows = QueueClient(fc), WorkflowClient(fc)
    queue = queues.queue(type=T)
    workflow = workflows.workflow(type="wf", initial_state="a", states=["a", "b"])
    workflow.state("a")(lambda job: None)
    queue.enqueue("parent")
    job = fc.claim(T, LeaseRequest("w", ["queued"], 60_000), limit=1).jobs[0]
    return Ctx(fc, redis_server.url, queues, workflows, queue, workflow, job)


C = Callable[[Ctx], Any]

# (API, argument, call with a wrong value). Every call must raise TypeError or ValueError
# whose message names the argument - never an AttributeError from deep inside, never a
# store error, never silently accept it.
WRONG: list[tuple[str, str, C]] = [
    ("QueueClient", "client", lambda c: QueueClient("redis://x")),  # type: ignore[arg-type]
    ("QueueClient.from_url", "url", lambda c: QueueClient.from_url(6379)),  # type: ignore
    ("QueueClient.from_url", "namespace", lambda c: QueueClient.from_url(c.url, namespace=1)),
    ("QueueClient.from_url", "durability",
     lambda c: QueueClient.from_url(c.url, durability="sometimes")),
    ("QueueClient.from_url", "partitions", lambda c: QueueClient.from_url(c.url, partitions=0)),
    ("QueueClient.from_url", "socket_timeout_s",
     lambda c: QueueClient.from_url(c.url, socket_timeout_s="5")),
    ("QueueClient.from_url", "min_replicas",
     lambda c: QueueClient.from_url(c.url, min_replicas=-1)),
    ("QueueClient.from_url", "max_payload_bytes",
     lambda c: QueueClient.from_url(c.url, max_payload_bytes="1MiB")),
    ("QueueClient.from_url", "max_value_bytes",
     lambda c: QueueClient.from_url(c.url, max_value_bytes=0)),
    ("QueueClient.from_url", "history_cap", lambda c: QueueClient.from_url(c.url, history_cap=0)),
    ("WorkflowClient", "client", lambda c: WorkflowClient(None)),  # type: ignore[arg-type]
    ("WorkflowClient.from_url", "url", lambda c: WorkflowClient.from_url(b"redis://x")),  # type: ignore
    ("queue", "type", lambda c: c.queues.queue(type=5)),  # type: ignore[arg-type]
    ("queue", "type", lambda c: c.queues.queue(type="has space")),
    ("queue", "state", lambda c: c.queues.queue(type=T, state=["queued"])),  # type: ignore
    ("queue", "state", lambda c: c.queues.queue(type=T, state="running")),
    ("queue", "retry_policy", lambda c: c.queues.queue(type=T, retry_policy={"max": 1})),  # type: ignore
    ("Queue", "client", lambda c: Queue("not a client", T)),  # type: ignore[arg-type]
    ("workflow", "initial_state", lambda c: c.workflows.workflow(type="w", initial_state=1)),  # type: ignore
    ("workflow", "initial_state",
     lambda c: c.workflows.workflow(type="w", initial_state="completed")),
    ("workflow", "states",
     lambda c: c.workflows.workflow(type="w", initial_state="a", states="ab")),
    ("workflow", "states",
     lambda c: c.workflows.workflow(type="w", initial_state="a", states=3)),  # type: ignore
    ("workflow", "states",
     lambda c: c.workflows.workflow(type="w", initial_state="a", states=["a", "failed"])),
    ("workflow", "retry_policy",
     lambda c: c.workflows.workflow(type="w", initial_state="a", retry_policy=3)),  # type: ignore
    ("Workflow", "type", lambda c: Workflow(type=None, initial_state="a")),  # type: ignore
    ("Workflow", "client", lambda c: Workflow(type="w", initial_state="a", client="x")),  # type: ignore
    ("Workflow.state", "state", lambda c: c.workflow.state(7)),  # type: ignore[arg-type]
    ("Workflow.state", "exception_policy",
     lambda c: c.workflow.state("b", exception_policy="retry")),  # type: ignore[arg-type]
    ("Workflow.state", "retry_policy", lambda c: c.workflow.state("b", retry_policy=1)),  # type: ignore
    ("worker", "state", lambda c: c.queue.worker(state=1)),  # type: ignore[arg-type]
    ("worker", "states", lambda c: c.queue.worker(states="queued")),
    ("worker", "states", lambda c: c.queue.worker(states=[])),
    ("worker", "states", lambda c: c.queue.worker(states=["cancelled"])),
    ("worker", "states", lambda c: c.workflow.worker(states=["a", "nope"])),
    ("worker", "concurrency", lambda c: c.queue.worker(concurrency="8")),
    ("worker", "concurrency", lambda c: c.queue.worker(concurrency=0)),
    ("worker", "batch_size", lambda c: c.queue.worker(batch_size=1.5)),
    ("worker", "lease_ms", lambda c: c.queue.worker(lease_ms="30s")),
    ("worker", "block_ms", lambda c: c.queue.worker(block_ms=-1)),
    ("worker", "claim_values", lambda c: c.queue.worker(claim_values="v")),
    ("worker", "value_max_bytes", lambda c: c.queue.worker(value_max_bytes="1k")),
    ("worker", "exception_policy", lambda c: c.queue.worker(exception_policy="fail")),
    ("worker", "worker_id", lambda c: c.queue.worker(worker_id=12)),
    ("worker", "hooks", lambda c: c.queue.worker(hooks=print)),
    ("worker", "payload_cap", lambda c: c.queue.worker(payload_cap=0)),
    ("worker", "lease", lambda c: c.queue.worker(lease="30s")),
    ("enqueue", "id", lambda c: c.queue.enqueue(7)),  # type: ignore[arg-type]
    ("enqueue", "id", lambda c: c.queue.enqueue("")),
    ("enqueue", "id", lambda c: c.queue.enqueue("x" * 8193)),
    ("enqueue", "id", lambda c: c.queue.enqueue("lone \udcff surrogate")),
    ("enqueue", "payload", lambda c: c.queue.enqueue("i", payload=7)),  # type: ignore[arg-type]
    ("enqueue", "payload", lambda c: c.queue.enqueue("i", payload={"a": 1})),  # type: ignore
    ("enqueue", "idempotent", lambda c: c.queue.enqueue("i", idempotent="yes")),  # type: ignore
    ("enqueue", "values", lambda c: c.queue.enqueue("i", values=[b"v"])),  # type: ignore
    ("enqueue", "values", lambda c: c.queue.enqueue("i", values={"v": 1})),  # type: ignore
    ("enqueue", "values", lambda c: c.queue.enqueue("i", values={"": b"v"})),
    ("enqueue", "state", lambda c: c.queue.enqueue("i", state=1)),  # type: ignore[arg-type]
    ("enqueue", "state", lambda c: c.queue.enqueue("i", state="failed")),
    ("enqueue", "partition_key", lambda c: c.queue.enqueue("i", partition_key=1)),  # type: ignore
    ("enqueue", "run_at_ms", lambda c: c.queue.enqueue("i", run_at_ms="soon")),  # type: ignore
    ("enqueue", "run_at_ms", lambda c: c.queue.enqueue("i", run_at_ms=1.5)),  # type: ignore
    ("enqueue", "delay_ms", lambda c: c.queue.enqueue("i", delay_ms="5")),  # type: ignore
    ("enqueue", "delay_ms", lambda c: c.queue.enqueue("i", delay_ms=float("nan"))),
    ("enqueue", "priority", lambda c: c.queue.enqueue("i", priority=3)),
    ("enqueue", "priority", lambda c: c.queue.enqueue("i", priority=True)),
    ("enqueue", "priority", lambda c: c.queue.enqueue("i", priority=1.0)),  # type: ignore
    ("enqueue", "correlation_id", lambda c: c.queue.enqueue("i", correlation_id=5)),  # type: ignore
    ("enqueue_many", "items", lambda c: c.queue.enqueue_many([7])),
    ("enqueue_many", "id", lambda c: c.queue.enqueue_many([("i", b"p"), ("", b"p")])),
    ("enqueue_many", "id", lambda c: c.queue.enqueue_many([("i", b"p"), (7, b"p")])),
    ("enqueue_many", "payload", lambda c: c.queue.enqueue_many([("i", b"p"), ("j", 7)])),
    ("enqueue_many", "idempotent", lambda c: c.queue.enqueue_many([("i", b"p")],
                                                                   idempotent="yes")),
    ("start", "id", lambda c: c.workflow.start(["w1"])),  # type: ignore[arg-type]
    ("start", "payload", lambda c: c.workflow.start("w1", payload=1.5)),  # type: ignore
    ("start", "state", lambda c: c.workflow.start("w1", state="nowhere")),
    ("start", "state", lambda c: c.workflow.start_many([{"id": "w1", "state": "nowhere"}])),
    ("start", "priority", lambda c: c.workflow.start("w1", priority="high")),  # type: ignore
    ("signal", "flow_id", lambda c: c.queue.signal(1, "s")),  # type: ignore[arg-type]
    ("signal", "signal", lambda c: c.queue.signal("parent", None)),  # type: ignore[arg-type]
    ("signal", "signal", lambda c: c.queue.signal("parent", "two words")),
    ("signal", "values", lambda c: c.queue.signal("parent", "s", values=b"v")),
    ("signal", "if_state", lambda c: c.queue.signal("parent", "s", if_state=1,  # type: ignore
                                                     transition_to="queued")),
    ("signal", "if_state", lambda c: c.queue.signal("parent", "s", transition_to="queued")),
    ("signal", "transition_to", lambda c: c.queue.signal("parent", "s", if_state="queued",
                                                          transition_to="completed")),
    ("signal", "run_at_ms", lambda c: c.queue.signal("parent", "s", run_at_ms="now")),  # type: ignore
    ("signal", "idempotency_key", lambda c: c.queue.signal("parent", "s", idempotency_key=1)),  # type: ignore
    ("signal", "partition_key", lambda c: c.queue.signal("parent", "s", partition_key=b"k")),  # type: ignore
    ("cancel", "flow_id", lambda c: c.queue.cancel(None)),  # type: ignore[arg-type]
    ("cancel", "reason", lambda c: c.queue.cancel("parent", reason=["why"])),  # type: ignore
    ("cancel", "partition_key", lambda c: c.queue.cancel("parent", partition_key=3)),  # type: ignore
    ("cancel", "job", lambda c: c.fc.cancel("parent", job="token")),  # type: ignore[arg-type]
    ("spawn_children", "children", lambda c: c.job.flow.spawn_children(
        ChildSpec("c1", T), wait_state="queued")),  # type: ignore[arg-type]
    ("spawn_children", "children", lambda c: c.job.flow.spawn_children(
        ["c1"], wait_state="queued")),  # type: ignore[list-item]
    ("spawn_children", "wait_state", lambda c: c.job.flow.spawn_children(
        [ChildSpec("c1", T)], wait_state="running")),
    ("spawn_children", "wait", lambda c: c.job.flow.spawn_children(
        [ChildSpec("c1", T)], wait_state="queued", wait="some")),
    ("spawn_children", "on_child_failed", lambda c: c.job.flow.spawn_children(
        [ChildSpec("c1", T)], wait_state="queued", on_child_failed="retry")),
    ("spawn_children", "group", lambda c: c.job.flow.spawn_children(
        [ChildSpec("c1", T)], wait_state="queued", group="a group")),
    ("spawn_children", "job", lambda c: c.fc.spawn_children(
        "parent", [ChildSpec("c1", T)], wait_state="queued")),  # type: ignore[arg-type]
    ("ChildSpec", "id", lambda c: ChildSpec(1, T)),  # type: ignore[arg-type]
    ("ChildSpec", "type", lambda c: ChildSpec("c", "a/b")),
    ("ChildSpec", "payload", lambda c: ChildSpec("c", T, payload=3)),  # type: ignore[arg-type]
    ("ChildSpec", "state", lambda c: ChildSpec("c", T, state="completed")),
    ("ChildSpec", "values", lambda c: ChildSpec("c", T, values={"v": None})),  # type: ignore
    ("ChildSpec", "partition_key", lambda c: ChildSpec("c", T, partition_key=0)),  # type: ignore
    ("ChildSpec", "priority", lambda c: ChildSpec("c", T, priority=-1)),
    ("RetryPolicy", "max_retries", lambda c: RetryPolicy(max_retries="3")),  # type: ignore
    ("RetryPolicy", "backoff", lambda c: RetryPolicy(backoff="random")),
    ("RetryPolicy", "base_ms", lambda c: RetryPolicy(base_ms=-1)),
    ("RetryPolicy", "max_ms", lambda c: RetryPolicy(max_ms=1.5)),  # type: ignore[arg-type]
    ("RetryPolicy", "jitter_pct", lambda c: RetryPolicy(jitter_pct=101)),
    ("RetryPolicy", "exhausted_to", lambda c: RetryPolicy(exhausted_to="dead letter")),
    ("RetryPolicy", "exhausted_to", lambda c: RetryPolicy(exhausted_to="running")),
    ("RetryPolicy", "exhausted_to", lambda c: RetryPolicy(exhausted_to=None)),  # type: ignore
    ("RetryPolicy", "max_crashes", lambda c: RetryPolicy(max_crashes=True)),
    ("transition", "to_state", lambda c: transition(None)),  # type: ignore[arg-type]
    ("transition", "payload", lambda c: transition("b", payload=1)),  # type: ignore[arg-type]
    ("transition", "values", lambda c: transition("b", values={"v": 1})),  # type: ignore
    ("transition", "run_at_ms", lambda c: transition("b", run_at_ms="x")),  # type: ignore
    ("transition", "delay_ms", lambda c: transition("b", delay_ms=[1])),  # type: ignore
    ("transition", "priority", lambda c: transition("b", priority=7)),
    ("transition", "priority", lambda c: transition("b", priority=2.0)),  # type: ignore
    ("complete", "result", lambda c: complete(42)),  # type: ignore[arg-type]
    ("complete", "values", lambda c: complete(values="v")),  # type: ignore[arg-type]
    ("fail", "error", lambda c: fail(ValueError("x"))),  # type: ignore[arg-type]
    ("retry", "error", lambda c: retry(3)),  # type: ignore[arg-type]
    ("retry", "run_at_ms", lambda c: retry(run_at_ms="later")),  # type: ignore[arg-type]
    ("retry", "delay_ms", lambda c: retry(delay_ms=-5)),
    ("get", "flow_id", lambda c: c.queue.get(1)),  # type: ignore[arg-type]
    ("get", "values", lambda c: c.queue.get("parent", values="v")),
    ("get", "values", lambda c: c.queue.get("parent", values=[1])),  # type: ignore[list-item]
    ("get", "payload", lambda c: c.queue.get("parent", payload="no")),  # type: ignore
    ("get", "partition_key", lambda c: c.queue.get("parent", partition_key=1)),  # type: ignore
    ("history", "flow_id", lambda c: c.queue.history(b"parent")),  # type: ignore[arg-type]
    ("history", "count", lambda c: c.queue.history("parent", count="10")),  # type: ignore
    ("history", "count", lambda c: c.queue.history("parent", count=0)),
    ("history", "reverse", lambda c: c.queue.history("parent", reverse=1)),  # type: ignore
    ("history", "partition_key", lambda c: c.queue.history("parent", partition_key=[])),  # type: ignore
    ("terminals", "state", lambda c: c.queue.terminals(state="running")),
    ("terminals", "state", lambda c: c.queue.terminals(state="")),
    ("terminals", "count", lambda c: c.queue.terminals(count="all")),  # type: ignore[arg-type]
    ("terminals", "count", lambda c: c.queue.terminals(count=-1)),
    ("put_value", "values", lambda c: c.queue.put_value("parent", "v", 1)),  # type: ignore
    ("claim", "states", lambda c: c.fc.claim(T, LeaseRequest("w", "queued", 1000), limit=1)),
    ("claim", "lease_ms", lambda c: c.fc.claim(T, LeaseRequest("w", ["queued"], "1s"), limit=1)),  # type: ignore
    ("claim", "limit", lambda c: c.fc.claim(T, LeaseRequest("w", ["queued"], 1000), limit=0)),
]


def _label(case: tuple[str, str, C]) -> str:
    return f"{case[0]}-{case[1]}"


@pytest.mark.parametrize("case", WRONG, ids=[_label(c) for c in WRONG])
def test_wrong_argument_is_a_clear_error_naming_it(ctx: Ctx, case: tuple[str, str, C]) -> None:
    api, argument, call = case
    with pytest.raises((TypeError, ValueError)) as caught:
        call(ctx)
    text = str(caught.value)
    assert re.search(rf"(^|\W){re.escape(argument)}(\W|$)", text), (api, argument, text)
    # the error comes from a check, not from something tripping over the value later
    assert not isinstance(caught.value, (AttributeError, KeyError, IndexError))
    assert "object has no attribute" not in text and "not iterable" not in text, text


def test_the_table_covers_every_public_api() -> None:
    apis = {api.split(".")[0] for api, _, _ in WRONG}
    assert apis >= {"QueueClient", "WorkflowClient", "Queue", "Workflow", "worker", "enqueue",
                    "start", "signal", "cancel", "spawn_children", "ChildSpec", "RetryPolicy",
                    "transition", "complete", "fail", "retry", "get", "history", "terminals"}


def test_rejected_calls_write_nothing(ctx: Ctx, redis_server: Any, namespace: str) -> None:
    for _, _, call in WRONG:
        with pytest.raises((TypeError, ValueError)):
            call(ctx)
    with redis_server.client() as r:
        for flow_id in ("i", "w1", "c1", "c"):
            assert flow_keys(r, namespace, flow_id) == [], flow_id
        parent = [e.event for e in ctx.fc.history("parent")]
    assert parent == ["created", "claimed"]  # no signal, cancel or spawn went through


# -- oversize ---------------------------------------------------------------------------------

def test_oversize_input_is_refused_at_every_entry_point_and_nothing_is_written(
        redis_server: Any, namespace: str, closing: Any) -> None:
    fc = closing(FlowClient.from_url(redis_server.url, namespace=namespace, partitions=2,
                                     max_payload_bytes=1000, max_value_bytes=2000))
    q = QueueClient(fc).queue(type=T)
    big_payload, big_value = b"p" * 1001, b"v" * 2001

    def refused(argument: str, call: Callable[[], Any]) -> None:
        with pytest.raises(InvalidArgument) as caught:
            call()
        assert caught.value.argument == argument
        assert "over the limit" in str(caught.value) and argument in str(caught.value)

    refused("payload", lambda: q.enqueue("o1", payload=big_payload))
    refused("values['v']", lambda: q.enqueue("o2", values={"ok": b"1", "v": big_value}))
    refused("payload", lambda: q.enqueue_many([("o3", b"small"), ("o4", big_payload)]))
    refused("payload", lambda: WorkflowClient(fc).workflow(
        type="w", initial_state="a").start("o5", payload="é" * 501))  # 1002 bytes of UTF-8

    q.enqueue("host")
    refused("values['v']", lambda: q.signal("host", "s", values={"v": big_value}))
    refused("values['v']", lambda: q.put_value("host", "v", big_value))
    job = fc.claim(T, LeaseRequest("w", ["queued"], 60_000), limit=1).jobs[0]
    refused("payload", lambda: job.flow.spawn_children(
        [ChildSpec("o6", T), ChildSpec("o7", T, payload=big_payload)], wait_state="queued"))
    refused("values['v']", lambda: job.flow.put_value("v", big_value))
    refused("result", lambda: fc.apply_outcome(job, complete(big_payload)))
    refused("values['v']", lambda: fc.apply_outcome(job, transition("next",
                                                                    values={"v": big_value})))
    refused("payload", lambda: fc.apply_outcomes([(job, complete(b"fine")),
                                                  (job, transition("x", payload=big_payload))]))

    with redis_server.client() as r:
        for flow_id in ("o1", "o2", "o3", "o4", "o5", "o6", "o7"):
            assert flow_keys(r, namespace, flow_id) == [], flow_id
        assert r.hlen(fc.keys.values(job.partition, "host")) == 0
        assert r.hlen(fc.keys.children(job.partition, "host")) == 0
    host = fc.get("host")
    assert host is not None and host.state == "running"  # no outcome of the batch went in
    assert [e.event for e in fc.history("host")] == ["created", "claimed"]

    # exactly at the limits is fine
    assert q.enqueue("edge", payload=b"p" * 1000, values={"v": b"v" * 2000}) is True
    assert fc.apply_outcome(job, complete(b"r" * 1000, values={"v": b"v" * 2000})) == b"ok"


def test_non_bytes_data_is_refused_everywhere_bytes_like_is_accepted(ctx: Ctx) -> None:
    for bad in (1, 1.5, ["x"], {"a": b"b"}, object()):
        with pytest.raises(TypeError, match="payload"):
            transition("b", payload=bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="result"):
            complete(bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match=r"values\['v'\]"):
            ctx.queue.signal("parent", "s", values={"v": bad})  # type: ignore[dict-item]
        with pytest.raises(TypeError, match=r"values\['v'\]"):
            ctx.queue.put_value("parent", "v", bad)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="payload"):
            ChildSpec("c", T, payload=bad)  # type: ignore[arg-type]
    ctx.queue.enqueue("ba", payload=bytearray(b"\x00\xff"), values={"v": memoryview(b"mv")})
    record = ctx.fc.get("ba", values=["v"])
    assert record is not None and record.payload == b"\x00\xff" and record.values == {"v": b"mv"}


def test_a_transition_payload_of_one_nul_byte_is_stored(ctx: Ctx) -> None:
    """Regression: the wire format used b"\\0" for "keep the payload"."""
    fc = ctx.fc
    for flow_id, outcome, expect in (("n1", transition("a", payload=b"\0"), b"\0"),
                                     ("n2", transition("a", payload=b""), b""),
                                     ("n3", transition("a"), b"orig"),
                                     ("n4", transition("a", payload=b"\0\0x"), b"\0\0x")):
        fc.create(flow_id, "nul", "start", b"orig")
        job = fc.claim("nul", LeaseRequest("w", ["start"], 60_000), limit=1).jobs[0]
        assert job.id == flow_id
        assert fc.apply_outcome(job, outcome) == b"ok"
        assert fc.get(flow_id).payload == expect, flow_id  # type: ignore[union-attr]
        assert fc.apply_outcome(job, outcome) == b"replay"  # the replay rule still holds


# -- unknown states ---------------------------------------------------------------------------

def test_unknown_states_are_refused_before_anything_is_stuck(ctx: Ctx, redis_server: Any,
                                                             namespace: str) -> None:
    wf = ctx.workflow  # declares states a and b; handles a
    with pytest.raises(InvalidArgument, match="'nowhere' is not a state of workflow 'wf'"):
        wf.start("u1", state="nowhere")
    with pytest.raises(InvalidArgument, match="states: no handler for 'b'"):
        wf.worker(states=["b"])
    with pytest.raises(InvalidArgument, match="state: no handler for 'zz'"):
        wf.worker(state="zz")
    assert wf.start("u2", state="b") is True  # declared: a handler may exist elsewhere
    for reserved in ("running", "completed", "failed", "cancelled"):
        with pytest.raises(InvalidArgument, match="reserved"):
            ctx.queue.enqueue("u3", state=reserved)
        with pytest.raises(InvalidArgument, match="reserved"):
            ctx.queue.signal("parent", "s", if_state="queued", transition_to=reserved)
    with pytest.raises(InvalidArgument, match="states"):
        ctx.fc.claim(T, LeaseRequest("w", [], 1000), limit=1)
    with redis_server.client() as r:
        assert flow_keys(r, namespace, "u1") == [] and flow_keys(r, namespace, "u3") == []


# -- odd ids and bad input through the CLI ---------------------------------------------------

ODD_IDS = ["with spaces and\ttabs", "ünïcødé-订单-🚀", "€" * 1365 + "x", "-starts-with-dash"]


def test_odd_ids_through_the_cli(ctx: Ctx, tmp_path: Path) -> None:
    common = ["--url", ctx.url, "--namespace", ctx.fc.namespace]
    enqueued = run_many([["enqueue", T, "--payload", f"p{i}", *common, "--", flow_id]
                         for i, flow_id in enumerate(ODD_IDS)], cwd=tmp_path)
    for flow_id, result in zip(ODD_IDS, enqueued, strict=True):
        assert result.returncode == 0, (flow_id, result.stderr)
        assert f"created {T} {flow_id}" in result.stdout
    # claimed and completed by a worker, through the Python API
    assert ctx.queue.worker(block_ms=50).run_until_idle(lambda job: job.payload + b"!", 10) == 4
    got = run_many([c for flow_id in ODD_IDS for c in (
        ["get", "--json", *common, "--", flow_id],
        ["history", "--json", *common, "--", flow_id])], cwd=tmp_path)
    for i, flow_id in enumerate(ODD_IDS):
        record, history = got[2 * i], got[2 * i + 1]
        assert record.returncode == 0 and history.returncode == 0, (record.stderr, history.stderr)
        doc = json.loads(record.stdout)
        assert doc["id"] == flow_id and doc["state"] == "completed"
        assert doc["payload"] == f"p{i}" and doc["result"] == f"p{i}!"
        events = [e["event"] for e in json.loads(history.stdout)]
        assert events == ["created", "claimed", "completed"], events
    text = run_many([["get", *common, "--", ODD_IDS[0]]], cwd=tmp_path)[0]
    assert text.returncode == 0 and ODD_IDS[0] in text.stdout


@pytest.mark.parametrize(("args", "argument"), [
    (["enqueue", "bad type", "x"], "TYPE: "),
    (["enqueue", T, ""], "FLOW_ID: "),
    (["enqueue", T, "x" * 8193], "FLOW_ID: "),
    (["enqueue", T, "x", "--state", "running"], "--state: "),
    (["get", ""], "FLOW_ID: "),
    (["history", "x", "--count", "0"], "--count"),
    (["signal", "x", "not a name"], "NAME: "),
    (["signal", "x", "go", "--to", "completed", "--if-state", "queued"], "--to: "),
], ids=["type", "empty-id", "8KiB-id", "reserved-state", "get-empty", "count", "signal-name",
        "signal-to"])
def test_bad_input_through_the_cli_exits_2_naming_the_argument(
        ctx: Ctx, tmp_path: Path, args: list[str], argument: str) -> None:
    """Named as the person typed it: the flag or the argument's metavar (issue 17, item 11)."""
    result = run_many([[*args, "--url", ctx.url, "--namespace", ctx.fc.namespace]],
                      cwd=tmp_path)[0]
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert argument in result.stderr and "Traceback" not in result.stderr, result.stderr


# -- the fuzzed config corpus through `ferricflowd check` ------------------------------------

def _bad_cases(tmp_path: Path, want: int) -> list[tuple[int, Path, dict[str, str], str]]:
    """The first `want` corpus cases (tests/config_corpus.py) that a subprocess can be
    given (no CLI overrides, no NUL in env) and that fail with a ConfigError: (seed, file,
    env, the error's dotted key - "" for file-level errors such as TOML syntax)."""
    example = EXAMPLE.read_text()
    out = []
    for seed in FUZZ_SEEDS:
        kind, data, env, overrides = make_case(seed, example)
        if overrides or any("\0" in k + v for k, v in env.items()):
            continue
        path = tmp_path / f"case-{seed}.toml"
        path.write_bytes(data)
        try:
            load_config(path, env=env)
        except ConfigError as err:
            out.append((seed, path, env, err.key))
        if len(out) == want:
            break
    return out


def test_fuzzed_bad_configs_exit_2_through_check_naming_the_key(tmp_path: Path) -> None:
    cases = _bad_cases(tmp_path, 20)
    assert len(cases) == 20 and sum(1 for *_, key in cases if key) >= 12
    done = run_many([["check", "--config", str(path)] for _, path, _, _ in cases],
                    cwd=tmp_path, env=[daemon_env(env) for _, _, env, _ in cases])
    for (seed, path, _, key), result in zip(cases, done, strict=True):
        output = result.stdout + result.stderr
        assert result.returncode == 2, (seed, result.returncode, output)
        assert "Traceback" not in output, (seed, output)
        assert str(path) in result.stderr, (seed, result.stderr)
        assert f"{path}: {key}: " in result.stderr if key else True, (seed, key, result.stderr)
