"""WakeWait: the blocking wait of an idle claim loop, interruptible from another thread.

Kept beside store.py (it is the store's, and the only other module that reads Redis
replies): the claim loop blocks here when nothing is due.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis.exceptions as rexc

from .errors import StoreError

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)


class WakeWait:
    """BLPOP on wake lists, on connections of its own, that another thread can interrupt.

    The claim loop blocks here when nothing is due; a drain calls interrupt() from another
    thread. Checking `interrupted` and sending BLPOP happen under one lock, and interrupt()
    shuts the sockets down under the same lock, so either BLPOP was never sent or its read
    ends at once. (redis-py's own blpop() cannot be interrupted reliably: after a disconnect it
    reconnects and, with a retry policy, sends BLPOP again, blocking for the whole timeout.)
    """

    def __init__(self, store: Store, client: Any) -> None:
        self._store = store
        self._client = client  # redis.Redis, or RedisCluster: one connection per node
        self._lock = threading.Lock()
        self._conns: dict[str, Any] = {}
        self.interrupted = False

    def wait(self, lists: Sequence[str], timeout_s: float) -> bool:
        """Block until one of `lists` gets a token (True) or `timeout_s` passed or the wait
        was interrupted (False). The lists must share a slot on a cluster."""
        conn = self._connection(lists[0])
        try:
            conn.connect()  # outside the lock: a connect may take a socket timeout
            with self._lock:
                if self.interrupted:
                    return False
                conn.send_command("BLPOP", *lists, timeout_s)
            return conn.read_response() is not None
        except Exception as exc:  # an interrupted read raises whatever the socket layer does
            if self.interrupted:
                return False
            conn.disconnect()
            if isinstance(exc, rexc.ResponseError) and self._store.cluster:
                self._reset_cluster()  # MOVED/ASK: the slot map is stale
            if isinstance(exc, rexc.RedisError):
                raise StoreError(f"{self._store.safe_url}: {exc}") from exc
            raise

    def interrupt(self) -> None:
        """End a wait in progress and every later one (from any thread)."""
        with self._lock:
            self.interrupted = True
            for conn in self._conns.values():
                conn.disconnect()  # shutdown(SHUT_RDWR) first: a blocked read returns

    def close(self) -> None:
        self.interrupt()
        self._client.close()

    def _connection(self, key: str) -> Any:
        if self._store.cluster:
            node = self._client.get_node_from_key(key)
            name, pool = node.name, node.redis_connection.connection_pool
        else:
            name, pool = "", self._client.connection_pool
        with self._lock:
            conn = self._conns.get(name)
            if conn is None:
                conn = self._conns[name] = pool.make_connection()
        return conn

    def _reset_cluster(self) -> None:
        with self._lock:
            for conn in self._conns.values():
                conn.disconnect()
            self._conns.clear()
        try:
            self._client.nodes_manager.initialize()
        except Exception as exc:  # noqa: BLE001 - the next wait retries; the loop backs off
            log.debug("cluster slot map refresh failed: %s", exc)
