"""RQ with `rq worker-pool -n 2` (each worker forks a work horse per job, RQ's default).

Batched enqueue is `Queue.enqueue_many` (one pipeline); chains are jobs with `depends_on`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.common import REPO, Unavailable, bin_path
from bench.systems.base import ProcGroup, System

QUEUE = "bench"
TASKS = "bench.peer_tasks.rq_tasks"


def _arg(kind: str, job_id: str, payload: bytes) -> str:
    return job_id if kind == "sleep" else payload.decode()


class Adapter(System):
    name = "rq"
    workloads = ("W1", "W2", "W3", "W4", "R1", "D1", "M1")
    max_sizes = {"W1": 2_000, "W4": 100}  # ~80 jobs/s: the full sizes take many minutes

    def __init__(self) -> None:
        super().__init__()
        self.q: Any = None
        self.conn: Any = None

    def check(self) -> None:
        try:
            import rq  # noqa: F401
        except ImportError as exc:
            raise Unavailable(f"rq is not installed: {exc}") from exc
        if bin_path("rq") is None:
            raise Unavailable("no `rq` command in this environment")

    def info(self) -> dict[str, Any]:
        import rq

        return {"version": rq.__version__, "worker": "rq worker-pool -n 2"}

    def setup(self, store: Any, log_dir: Path) -> None:
        super().setup(store, log_dir)
        import redis
        from rq import Queue

        self.conn = redis.Redis.from_url(store.url)
        self.q = Queue(QUEUE, connection=self.conn)

    def teardown(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def enqueue(self, kind: str, job_id: str, payload: bytes) -> None:
        self.q.enqueue(f"{TASKS}.{kind}", _arg(kind, job_id, payload))

    def enqueue_many(self, kind: str, items: Sequence[tuple[str, bytes]]) -> None:
        from rq import Queue

        self.q.enqueue_many([Queue.prepare_data(f"{TASKS}.{kind}", (_arg(kind, j, p),))
                             for j, p in items])

    def enqueue_chains(self, ids: Sequence[str]) -> None:
        from bench.common import PAYLOAD

        arg = PAYLOAD.decode()
        for _ in ids:
            a = self.q.enqueue(f"{TASKS}.chain_a", arg)
            b = self.q.enqueue(f"{TASKS}.chain_b", arg, depends_on=a)
            self.q.enqueue(f"{TASKS}.chain_c", arg, depends_on=b)

    def start_workers(self, kind: str, *, concurrency: int | None = None,
                      env: dict[str, str] | None = None) -> ProcGroup:
        cmd = [bin_path("rq") or "rq", "worker-pool", "-n", "2", "-u", self.s.url, "-q",
               "-w", f"{TASKS}.BenchWorker", QUEUE]
        extra = {"BENCH_REDIS_URL": self.s.url, **(env or {})}
        return ProcGroup.spawn([cmd], "rq worker-pool -n 2", self.log_dir, env=extra, cwd=REPO)

    def pending(self) -> int:
        return int(self.q.count)
