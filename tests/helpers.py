"""Helpers shared by the suites: polling with a deadline (one poller for every suite),
workers in threads, reads of a Flow's history and keys, a CLI run's JSON output."""

from __future__ import annotations

import json
import re
import subprocess
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


def out_json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.stdout, (done.returncode, done.stderr)
    return json.loads(done.stdout)


def flow_ids(client: FlowClient, prefix: str) -> list[str]:
    """Every Flow id of the namespace that starts with `prefix:` (a SCAN per node)."""
    pattern = f"{{{client.namespace}:*}}:f:{prefix}:*"

    def scan(r: Any) -> list[str]:
        return [k.decode().split(":f:", 1)[1] for k in r.scan_iter(match=pattern, count=1000)]

    return sorted(set(client.store.execute(scan)), key=lambda i: int(i.rsplit(":", 1)[1]))


def dues(client: FlowClient, prefix: str) -> list[int]:
    return [int(i.rsplit(":", 1)[1]) for i in flow_ids(client, prefix)]


_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def seconds(value: str | int | float) -> float:
    """'45s', '1m', '500ms' or a bare number of seconds (systemd's and our own style)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|min|m|h)?\s*", str(value))
    assert match, f"not a duration: {value!r}"
    return float(match.group(1)) * _UNITS[match.group(2) or "s"]
