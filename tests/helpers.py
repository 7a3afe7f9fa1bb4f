"""Helpers shared by the suites: polling with a deadline (one poller for every suite),
workers in threads, reads of a Flow's history and keys."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from ferricflowd import FlowClient

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 15.0, interval: float = 0.02,
             what: str = "") -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


@contextmanager
def running(worker: Any, *args: Any) -> Iterator[threading.Thread]:
    """Run `worker.run(*args)` on a thread for the duration of the block, then stop it."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run(*args)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    wait_for(lambda: getattr(worker, "_worker", worker) is not None or not thread.is_alive(), 5.0,
             what="the worker to start")
    try:
        yield thread
    finally:
        worker.stop()
        thread.join(15.0)
    assert not thread.is_alive(), "worker did not stop"
    assert not errors, f"worker raised {errors[0]!r}"


def terminal(client: FlowClient, flow_id: str, **kw: Any) -> Callable[[], Any]:
    """A condition: the Flow's record once it is terminal."""

    def check() -> Any:
        record = client.get(flow_id, **kw)
        return record if record is not None and record.terminal else None

    return check


def events(client: FlowClient, flow_id: str, **kw: Any) -> list[str]:
    return [e.event for e in client.history(flow_id, **kw)]


def assert_versions(client: FlowClient, flow_id: str, **kw: Any) -> None:
    """Versions are 1..n, one history event each, and the record's version is n."""
    history = client.history(flow_id, count=100_000, **kw)
    assert [e.version for e in history] == list(range(1, len(history) + 1)), flow_id
    record = client.get(flow_id, **kw)
    assert record is not None and record.version == len(history), flow_id


def assert_failed_after_retries(client: FlowClient, flow_id: str, error: bytes) -> None:
    """A handler that kept raising: retried once, then failed with the exception's text."""
    record = client.get(flow_id)
    assert record is not None and record.state == "failed"
    assert record.error == error
    retries = [e.details for e in client.history(flow_id) if e.event == "retry"]
    assert [d["decision"] for d in retries] == ["scheduled", "exhausted"]
    assert all(d["error"] == error.decode() for d in retries)


def flow_keys(redis_client: Any, namespace: str, flow_id: str) -> list[bytes]:
    """Every key of the namespace whose name ends in `:<flow_id>` (record, history, values,
    children); read with SCAN so ids with glob characters need no escaping."""
    suffix = f":{flow_id}".encode()
    return [k for k in redis_client.scan_iter(match=f"{{{namespace}:*", count=1000)
            if k.endswith(suffix)]
