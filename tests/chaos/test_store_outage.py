"""A dead, stalled or restarted store, in fast tests (the chaos scenarios store_crash and
store_stall found what they pin):

- store: a command against a dead or stalled store fails within about one socket timeout
  (redis-py's default retries made it ~3.5 s dead and 4 timeouts + backoff stalled);
- store: a restarted store is used again without an error (one reconnect);
- maintenance: /readyz turns false at the first failed ping, not 5 s later.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ferricflowd.flow.client import FlowClient
from ferricflowd.flow.errors import StoreError
from ferricflowd.flow.store import Store
from ferricflowd.supervisor.maintenance import Maintenance
from tests.fakes import FakeClient
from tests.helpers import wait_for


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a SIGSTOPped server)."""
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(16)
        yield int(srv.getsockname()[1])


def test_store_calls_against_a_stalled_store_fail_within_one_timeout(silent_port: int) -> None:
    store = Store(f"redis://127.0.0.1:{silent_port}/0", socket_timeout_s=0.5)
    started = time.monotonic()
    assert store.ping() is False
    with pytest.raises(StoreError):
        store.execute(lambda r: r.get("x"))
    assert time.monotonic() - started < 2.5  # two calls, ~0.5 s each (default: ~14 s)


def test_store_calls_against_a_dead_store_fail_fast() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    store = Store(f"redis://127.0.0.1:{port}/0", socket_timeout_s=1.0)
    started = time.monotonic()
    with pytest.raises(StoreError):
        store.execute(lambda r: r.get("x"))
    assert time.monotonic() - started < 0.5  # connection refused (default: ~3.5 s)


def test_a_restarted_store_is_used_again_without_an_error(redis_server: Any,
                                                          namespace: str) -> None:
    client = FlowClient.from_url(redis_server.url, namespace=namespace, socket_timeout_s=2.0)
    try:
        client.create("before", "q", "queued")
        redis_server.restart()  # the pooled connection is now dead; scripts are gone
        client.create("after", "q", "queued")  # one reconnect (the library reloaded if lost)
        assert client.get("after") is not None and client.get("before") is not None
    finally:
        client.close()


class _Pings(FakeClient):
    """A maintenance client whose pings follow `up` (the store itself is not under test)."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False

    @property
    def up(self) -> bool:
        return not self.down

    @up.setter
    def up(self, value: bool) -> None:
        self.down = not value


def test_readiness_follows_the_first_failed_ping() -> None:
    client = _Pings()
    maintenance = Maintenance(lambda: client, ["q"], interval_s=0.02)
    maintenance.start()
    try:
        wait_for(lambda: maintenance.store_ok(60.0), timeout=5, what="store ok")
        client.up = False
        wait_for(lambda: not maintenance.store_ok(60.0), timeout=1, what="unready at once")
        client.up = True
        wait_for(lambda: maintenance.store_ok(60.0), timeout=1, what="ready again")
    finally:
        maintenance.stop()
