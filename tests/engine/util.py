"""Helpers of the engine tests: polling with a deadline, workers in threads, key reads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ferricflowd import FlowClient
from tests.daemon.conftest import wait_for as wait_for  # one poller for every suite


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
