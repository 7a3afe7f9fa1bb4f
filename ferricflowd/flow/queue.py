"""QueueClient: one-state job queues on the Flow engine.

    client = QueueClient.from_url("redis://127.0.0.1:6379/0")
    emails = client.queue(type="email")
    emails.enqueue("email-1", payload=b"user-1", idempotent=True)
    emails.worker(state="queued", concurrency=100, batch_size=500).run(send_email)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .client import FlowClient
from .errors import FlowError
from .handles import TypeHandle, state_list, worker_options
from .policy import RetryPolicy
from .records import Job
from .runner import Runner


class QueueClient:
    """A lazy connection to a namespace; nothing connects until the first command."""

    def __init__(self, client: FlowClient) -> None:
        if not isinstance(client, FlowClient):
            raise TypeError(f"client must be a FlowClient, not {type(client).__name__} (use "
                            "QueueClient.from_url(url) to connect by URL)")
        self.flow_client = client

    @classmethod
    def from_url(cls, url: str, **options: Any) -> QueueClient:
        return cls(FlowClient.from_url(url, **options))

    def queue(self, type: str, *, state: str = "queued",
              retry_policy: RetryPolicy | None = None) -> Queue:
        return Queue(self.flow_client, type, state, retry_policy)

    def close(self) -> None:
        self.flow_client.close()


class Queue(TypeHandle):
    """Jobs of one type; they are created in `state` (default "queued")."""

    def __init__(self, client: FlowClient | None, type: str, state: str = "queued",
                 retry_policy: RetryPolicy | None = None) -> None:
        super().__init__(client, type, state, retry_policy)

    def bind(self, client: FlowClient) -> Queue:
        return Queue(client, self.type, self.default_state, self.retry_policy)

    def enqueue(self, flow_id: str, payload: bytes | str = b"", *, idempotent: bool = False,
                values: Mapping[str, bytes] | None = None, state: str | None = None,
                partition_key: str | None = None, run_at_ms: int | None = None,
                delay_ms: int | None = None, priority: int = 0,
                correlation_id: str | None = None) -> bool:
        """Create a job; True when created, False for an idempotent repeat."""
        return self._create(flow_id, payload, state, idempotent=idempotent, values=values,
                            partition_key=partition_key, run_at_ms=run_at_ms, delay_ms=delay_ms,
                            priority=priority, correlation_id=correlation_id)

    def enqueue_many(self, items: Iterable[Any], *,
                     idempotent: bool = False) -> list[bool | FlowError]:
        """Create many jobs in one round trip per partition; a result per item."""
        return self._create_many(items, idempotent)

    def worker(self, *, state: str | None = None, states: Sequence[str] | None = None,
               **options: Any) -> QueueRunner:
        """A Runner of this queue's state(s) in this process (the daemon runs them in its
        worker processes); `options` are Runner's (concurrency, batch_size, lease_ms, ...)."""
        return QueueRunner(self, state_list(state, states, [self.default_state]),
                           worker_options(options))


class QueueRunner:
    """Runs one handler function for the queue's state(s)."""

    def __init__(self, queue: Queue, states: list[str], options: dict[str, Any]) -> None:
        self.queue = queue
        self.states = states
        self.options = options
        self._runner: Runner | None = None

    def _make(self, handler: Callable[[Job], Any]) -> Runner:
        if not callable(handler):
            raise TypeError("handler must be callable")
        self.queue.register()
        options = dict(self.options)
        options["timeouts"] = options.pop("timeout", None)
        self._runner = Runner(self.queue.client, type=self.queue.type, states=self.states,
                              handlers={s: handler for s in self.states}, **options)
        return self._runner

    def run(self, handler: Callable[[Job], Any]) -> int:
        return self._make(handler).run()

    def run_once(self, handler: Callable[[Job], Any]) -> int:
        return self._make(handler).run_once()

    def run_until_idle(self, handler: Callable[[Job], Any], timeout: float = 30.0) -> int:
        return self._make(handler).run_until_idle(timeout)

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()


QueueWorker = QueueRunner  # the 0.x name
