"""Argument checks: payload and value caps, non-bytes payloads, odd ids that round-trip,
bad ids, states and type names (nothing is written when a call is refused)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ferricflowd import FlowClient, InvalidArgument, QueueClient, complete
from tests.engine.calls import T, claim_one


def _nothing_written(fc: FlowClient, flow_id: str) -> None:
    assert fc.get(flow_id) is None and fc.history(flow_id) == []
    assert fc.stats(T).counts == {}


def test_payload_cap_and_oversize_payload(redis_server: Any, namespace: str,
                                          closing: Callable[[Any], Any]) -> None:
    fc: FlowClient = closing(FlowClient.from_url(redis_server.url, namespace=namespace,
                                                partitions=2, max_payload_bytes=200_000,
                                                max_value_bytes=1000))
    with pytest.raises(InvalidArgument, match="payload"):
        fc.create("big", T, "queued", b"x" * 200_001)
    _nothing_written(fc, "big")
    with pytest.raises(InvalidArgument, match="values"):
        fc.create("bigv", T, "queued", b"", values={"v": b"x" * 1001})
    _nothing_written(fc, "bigv")

    payload = bytes(range(256)) * 400  # 100 KiB: stored, but over the 64 KiB claim cap
    fc.create("wide", T, "queued", payload)
    job = claim_one(fc)
    assert job.payload == payload
    got = QueueClient(fc).queue(type=T)
    got.enqueue("wide2", payload=payload)
    seen: list[bytes] = []
    assert got.worker(payload_cap=1024).run_until_idle(lambda j: seen.append(j.payload),
                                                       timeout=5) == 1
    assert seen == [payload]


def test_non_bytes_payload_is_a_type_error(queues: QueueClient) -> None:
    fc = queues.flow_client
    q = queues.queue(type=T)
    for bad in (123, 1.5, ["x"], {"a": b"b"}):
        with pytest.raises(TypeError):
            q.enqueue("bad", payload=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        q.enqueue("bad", values={"v": 1})  # type: ignore[dict-item]
    with pytest.raises(TypeError):
        q.enqueue(42)  # type: ignore[arg-type]
    _nothing_written(fc, "bad")
    q.enqueue("text", payload="héllo")
    assert fc.get("text").payload == "héllo".encode()  # type: ignore[union-attr]
    job = claim_one(fc)
    with pytest.raises(TypeError):
        complete(123)  # type: ignore[arg-type]
    assert fc.apply_outcome(job, complete("rësult")) == b"ok"
    assert fc.get("text").result == "rësult".encode()  # type: ignore[union-attr]


@pytest.mark.parametrize("flow_id", [
    "with spaces  and\ttabs", "ünïcødé-订单-🚀", "x" * 4096, "braces{1}:colons|pipes",
    "line\nbreak", "€" * 1365,
], ids=["spaces", "unicode", "4KiB", "braces", "newline", "4KiB-multibyte"])
def test_odd_ids_round_trip(flow_client: FlowClient, flow_id: str) -> None:
    fc = flow_client
    assert fc.create(flow_id, T, "queued", b"p", values={"v": b"1"}) is True
    job = claim_one(fc)
    assert job.id == flow_id
    job.flow.put_value("w", b"2")
    assert fc.apply_outcome(job, complete(b"r")) == b"ok"
    record = fc.get(flow_id, values=["v", "w"])
    assert record is not None and record.id == flow_id and record.state == "completed"
    assert record.values == {"v": b"1", "w": b"2"}
    assert [e.event for e in fc.history(flow_id)] == ["created", "claimed", "values_put",
                                                      "completed"]
    assert [r.id for r in fc.terminals(T)] == [flow_id]
    assert fc.create(flow_id, T, "queued", b"p", values={"v": b"1"}, idempotent=True) is False


def test_bad_ids_and_names(flow_client: FlowClient) -> None:
    fc = flow_client
    for bad_id in ("", "x" * 8193):
        with pytest.raises(InvalidArgument, match="id"):
            fc.create(bad_id, T, "queued")
    with pytest.raises(InvalidArgument, match="state"):
        fc.create("a", T, "running")
    with pytest.raises(InvalidArgument, match="state"):
        fc.create("a", T, "completed")
    with pytest.raises(InvalidArgument, match="type"):
        fc.create("a", "bad type", "queued")
    assert fc.get("a") is None
