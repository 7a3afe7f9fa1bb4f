"""Dramatiq with the redis broker: `dramatiq ... -p 2 -t 8` (2 processes, 8 threads
each, or `--threads`; R1/D1 raise the threads so every job can be in flight). No batch
enqueue API exists: "batched" is a loop of `broker.enqueue`. Chains are
`dramatiq.pipeline` with pipe_ignore.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import REPO, Unavailable, bin_path
from bench.systems.base import THREADS, ProcGroup, System

QUEUE = "default"


def _arg(kind: str, job_id: str, payload: bytes) -> str:
    return job_id if kind == "sleep" else payload.decode()


class Adapter(System):
    name = "dramatiq"
    workloads = ("W1", "W2", "W3", "W4", "R1", "D1", "M1")

    def __init__(self, threads: int = THREADS, handlers: str = "sync") -> None:
        super().__init__(handlers)
        self.threads = threads
        self.broker: Any = None

    def check(self) -> None:
        try:
            import dramatiq  # noqa: F401
            from dramatiq.brokers.redis import RedisBroker  # noqa: F401
        except ImportError as exc:
            raise Unavailable(f"dramatiq[redis] is not installed: {exc}") from exc
        if bin_path("dramatiq") is None:
            raise Unavailable("no `dramatiq` command in this environment")

    def info(self) -> dict[str, Any]:
        import dramatiq

        return {"version": dramatiq.__version__, "worker": f"dramatiq -p 2 -t {self.threads}"}

    def setup(self, store: Any, log_dir: Path) -> None:
        super().setup(store, log_dir)
        from dramatiq.brokers.redis import RedisBroker

        self.broker = RedisBroker(url=store.url)

    def teardown(self) -> None:
        if self.broker is not None:
            self.broker.close()
            self.broker = None

    def _message(self, actor: str, arg: str, options: dict[str, Any] | None = None) -> Any:
        from dramatiq import Message

        return Message(queue_name=QUEUE, actor_name=actor, args=(arg,), kwargs={},
                       options=options or {})

    def enqueue(self, kind: str, job_id: str, payload: bytes) -> None:
        self.broker.enqueue(self._message(self.handler_name(kind), _arg(kind, job_id, payload)))

    def enqueue_many(self, kind: str, items: Sequence[tuple[str, bytes]]) -> None:
        actor = self.handler_name(kind)
        for job_id, payload in items:
            self.broker.enqueue(self._message(actor, _arg(kind, job_id, payload)))

    def enqueue_chains(self, ids: Sequence[str]) -> None:
        from dramatiq import pipeline

        from bench.common import PAYLOAD

        arg = PAYLOAD.decode()
        for _ in ids:
            msgs = [self._message(f"chain_{s}", arg, {"pipe_ignore": True}) for s in "abc"]
            pipeline(msgs, broker=self.broker).run()

    def start_workers(self, kind: str, *, concurrency: int | None = None,
                      env: dict[str, str] | None = None) -> ProcGroup:
        threads = concurrency or self.threads
        cmd = [bin_path("dramatiq") or "dramatiq", "bench.peer_tasks.dramatiq_tasks",
               "-p", "2", "-t", str(threads)]
        extra = {"BENCH_REDIS_URL": self.s.url, **(env or {})}
        if self.asynchronous:
            extra["BENCH_DRAMATIQ_ASYNCIO"] = "1"
        return ProcGroup.spawn([cmd], f"dramatiq -p 2 -t {threads}", self.log_dir,
                               env=extra, cwd=REPO)

    def pending(self) -> int:
        return int(self.s.r.llen(f"dramatiq:{QUEUE}"))
