"""The seed workflows in examples/ run end to end against a real server."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ferricflowd import FlowClient, Workflow
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
MODULES = ["emails", "orders", "approvals", "fanout", "values"]


def _main(name: str) -> Any:
    return importlib.import_module(f"examples.{name}").main


@pytest.fixture
def fc(redis_server: Any, namespace: str, closing: Callable[[Any], Any]) -> FlowClient:
    """A client on the namespace the example ran in, to inspect what it left behind."""
    return closing(FlowClient.from_url(redis_server.url, namespace=namespace))


def test_emails(redis_server: Any, namespace: str) -> None:
    records = _main("emails")(url=redis_server.url, namespace=namespace)
    assert [(r.id, r.state) for r in records] == [
        (f"email-{i}", "completed") for i in (1, 2, 3)]
    # Running it again is harmless: the enqueues are idempotent and nothing is due.
    assert [r.version for r in _main("emails")(url=redis_server.url, namespace=namespace)] == [
        r.version for r in records]


def test_orders(redis_server: Any, namespace: str, fc: FlowClient) -> None:
    records = _main("orders")(url=redis_server.url, namespace=namespace)
    assert [(r.id, r.state) for r in records] == [
        (f"order-{i}", "completed") for i in (1, 2, 3)]
    assert records[0].result == b"parcel for order-1 payload"
    # each order's first charge is rate limited and retried after the backoff
    assert [e.event for e in fc.history("order-1")] == [
        "created", "claimed", "transitioned", "claimed", "retry", "claimed", "transitioned",
        "claimed", "completed"]
    assert fc.get("order-1", values=["payment"]).values == {  # type: ignore[union-attr]
        "payment": b"card-token"}


def test_approvals(redis_server: Any, namespace: str, fc: FlowClient) -> None:
    records = _main("approvals")(url=redis_server.url, namespace=namespace)
    assert [(r.id, r.state, r.result) for r in records] == [
        (f"approval-{i}", "completed", f"approved: expense report approval-{i}".encode())
        for i in (1, 2)]
    assert [e.event for e in fc.history("approval-1")] == [
        "created", "claimed", "transitioned", "signaled", "claimed", "completed"]


def test_fanout(redis_server: Any, namespace: str, fc: FlowClient) -> None:
    [record] = _main("fanout")(url=redis_server.url, namespace=namespace)
    assert record.state == "completed" and record.result == b"50/50 devices updated"
    children = fc.children("rollout-1")
    assert len(children) == 50 and {c.state for c in children} == {"completed"}
    assert fc.stats("device-command").counts == {"completed": 50}


def test_values(redis_server: Any, namespace: str) -> None:
    [record] = _main("values")(url=redis_server.url, namespace=namespace)
    assert record.state == "completed" and record.result == b"letter written"
    assert record.values["letter"].startswith(b"Dear Ada Lovelace")
    assert record.values["letter_lang"] == b"en"
    assert len(record.values["invoice"]) > 200_000


def test_daemon_config_names(redis_server: Any) -> None:
    """config/flows.toml names examples.emails:send_email and examples.orders:order."""
    emails = importlib.import_module("examples.emails")
    orders = importlib.import_module("examples.orders")
    assert callable(emails.send_email) and emails.emails.type == "email"
    assert emails.emails.default_state == "queued"
    assert isinstance(orders.order, Workflow)
    assert orders.order.type == "order" and orders.order.initial_state == "created"
    assert {"created", "charged", "shipped"} <= set(orders.order.handlers)
    assert orders.order.retry_policy is not None


def test_importing_examples_never_connects(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRICFLOWD_URL", f"redis://127.0.0.1:{free_port()}/0")  # nobody there
    modules = [importlib.reload(importlib.import_module(f"examples.{m}")) for m in MODULES]
    try:
        for module in modules:
            store = module.client.flow_client.store
            assert store.url == os.environ["FERRICFLOWD_URL"]
            assert store._client is None  # lazy: nothing connected yet
    finally:
        monkeypatch.undo()
        for module in modules:
            importlib.reload(module)


@pytest.mark.parametrize("name", MODULES)
def test_runnable_as_module(redis_server: Any, namespace: str, name: str) -> None:
    env = {**os.environ, "FERRICFLOWD_URL": redis_server.url, "FERRICFLOWD_NAMESPACE": namespace,
           "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", f"examples.{name}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    assert ": completed" in done.stdout
    assert "failed" not in done.stdout
