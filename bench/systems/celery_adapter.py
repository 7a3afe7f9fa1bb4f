"""Celery 5 with the redis broker: `celery worker -c 2` (prefork, 2 processes).

Two variants: "celery" (defaults: early ack, prefetch multiplier 4) and "celery-acks"
(`acks_late=True`, prefetch 1). Chains are Celery's `chain` of immutable signatures.
Celery has no batch enqueue: "batched" sends through one shared producer connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import REPO, Unavailable, bin_path
from bench.systems.base import ProcGroup, System

QUEUE = "bench"


def _arg(kind: str, job_id: str, payload: bytes) -> str:
    return job_id if kind == "sleep" else payload.decode()


class Adapter(System):
    workloads = ("W1", "W2", "W3", "W4", "R1", "D1", "M1")

    def __init__(self, acks_late: bool = False) -> None:
        super().__init__()
        self.acks_late = acks_late
        self.name = "celery-acks" if acks_late else "celery"
        self.app: Any = None

    def check(self) -> None:
        try:
            import celery  # noqa: F401
        except ImportError as exc:
            raise Unavailable(f"celery is not installed: {exc}") from exc
        if bin_path("celery") is None:
            raise Unavailable("no `celery` command in this environment")

    def info(self) -> dict[str, Any]:
        import celery

        return {"version": celery.__version__, "acks_late": self.acks_late,
                "prefetch_multiplier": 1 if self.acks_late else 4,
                "worker": "celery worker -P prefork -c 2"}

    def setup(self, store: Any, log_dir: Path) -> None:
        super().setup(store, log_dir)
        from bench.peer_tasks.celery_app import make_app

        self.app = make_app(store.url, self.acks_late)

    def teardown(self) -> None:
        if self.app is not None:
            self.app.close()
            self.app = None

    def enqueue(self, kind: str, job_id: str, payload: bytes) -> None:
        self.app.send_task(f"bench.{kind}", args=[_arg(kind, job_id, payload)], queue=QUEUE)

    def enqueue_many(self, kind: str, items: Sequence[tuple[str, bytes]]) -> None:
        with self.app.producer_or_acquire() as producer:
            for job_id, payload in items:
                self.app.send_task(f"bench.{kind}", args=[_arg(kind, job_id, payload)],
                                   queue=QUEUE, producer=producer)

    def enqueue_chains(self, ids: Sequence[str]) -> None:
        from celery import chain

        from bench.common import PAYLOAD

        arg = PAYLOAD.decode()
        with self.app.producer_or_acquire() as producer:
            for _ in ids:
                sigs = [self.app.signature(f"bench.chain_{s}", args=[arg], immutable=True,
                                           queue=QUEUE) for s in "abc"]
                chain(*sigs).apply_async(producer=producer)

    def start_workers(self, kind: str, *, concurrency: int | None = None,
                      env: dict[str, str] | None = None) -> ProcGroup:
        cmd = [bin_path("celery") or "celery", "-A", "bench.peer_tasks.celery_app", "worker",
               "-Q", QUEUE, "-P", "prefork", "-c", "2", "-l", "WARNING", "--without-gossip",
               "--without-mingle", "--without-heartbeat"]
        extra = {"BENCH_REDIS_URL": self.s.url,
                 "BENCH_CELERY_ACKS": "1" if self.acks_late else "0", **(env or {})}
        return ProcGroup.spawn([cmd], "celery worker -P prefork -c 2", self.log_dir,
                               env=extra, cwd=REPO)

    def pending(self) -> int:
        r = self.s.r
        return int(r.llen(QUEUE)) + int(r.hlen("unacked"))
