"""Issue 18, item 8: a batch the store refuses in part says which items were written.

A real store fills up mid-batch: with `maxmemory` 200 KB above what it uses, the first script
call of a create_many is accepted (its 200 Flows with 400-byte ids are ~90 KB on the wire,
all the store holds of the batch when it starts) and leaves the store ~360 KB fuller, so the
next calls are refused with OOM. create_many then raises PartialBatch carrying a result per
item and the specs that were not written; sending exactly those again, once there is room,
completes the batch.
"""

from __future__ import annotations

from typing import Any

import pytest

from ferricflowd import FlowClient, QueueClient, StoreError
from ferricflowd.flow.client import BATCH_CALL_ITEMS
from ferricflowd.flow.errors import FlowAlreadyExists, PartialBatch
from ferricflowd.flow.wire import CreateSpec

HEADROOM = 200_000


def long_id(name: str) -> str:
    return name.ljust(400, ".")  # a Flow's id is in several of its keys: data >> wire


def leave_headroom(admin: Any) -> None:
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) + HEADROOM)


def test_create_many_refused_after_its_first_chunk_reports_per_item(
        make_redis_server: Any, namespace: str, closing: Any) -> None:
    server = make_redis_server("--maxmemory-policy", "noeviction")
    client = closing(FlowClient.from_url(server.url, namespace=namespace, partitions=1))
    client.create("existing", "q", "queued")  # connected, library loaded
    admin = closing(server.client())
    leave_headroom(admin)

    n = 3 * BATCH_CALL_ITEMS
    specs = [CreateSpec(long_id(f"f{i}"), "q", "queued") for i in range(n)]
    specs[5] = CreateSpec("existing", "q", "queued")  # an engine error inside the first chunk
    with pytest.raises(PartialBatch) as caught:
        client.create_many(specs)
    err = caught.value
    assert isinstance(err, StoreError)
    first = BATCH_CALL_ITEMS
    assert err.failed == list(range(first, n))
    assert err.failed_items == specs[first:]
    assert err.results[:5] == [True] * 5 and isinstance(err.results[5], FlowAlreadyExists)
    assert err.results[6:first] == [True] * (first - 6)
    assert all(isinstance(r, StoreError) and "maxmemory" in str(r) for r in err.results[first:])
    assert "400 of 600 items not written" in str(err)
    # What it says is what the store holds.
    written = {r.id for r in client.get_many([(0, s.id) for s in specs]) if r is not None}
    assert written == {s.id for s in specs[:first]}

    admin.config_set("maxmemory", 0)
    assert client.create_many(err.failed_items) == [True] * (n - first)
    assert client.stats("q").counts == {"queued": n}


def test_enqueue_many_raises_the_same_with_its_own_results(
        make_redis_server: Any, namespace: str, closing: Any) -> None:
    server = make_redis_server("--maxmemory-policy", "noeviction")
    queue = closing(QueueClient.from_url(server.url, namespace=namespace,
                                         partitions=1)).queue(type="q")
    queue.enqueue("warm")
    leave_headroom(closing(server.client()))
    with pytest.raises(PartialBatch) as caught:
        queue.enqueue_many([long_id(f"e{i}") for i in range(2 * BATCH_CALL_ITEMS)])
    assert caught.value.results[:BATCH_CALL_ITEMS] == [True] * BATCH_CALL_ITEMS
    assert [s.id for s in caught.value.failed_items] == [
        long_id(f"e{i}") for i in range(BATCH_CALL_ITEMS, 2 * BATCH_CALL_ITEMS)]
