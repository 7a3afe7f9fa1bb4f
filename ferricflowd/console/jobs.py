"""Bulk runs on a filter, in the background of the console process.

A requeue of 100,000 Flows runs for a minute at the bulk commands' rate limit: longer than a
browser should wait on one request. The action starts a `BulkJob` in a thread and redirects
to its page, which shows its progress (reloading itself while it runs, no JavaScript needed)
and offers to stop it. The bulk commands are resumable: a stopped run leaves no half-done
Flow, and starting it again carries on. Jobs live in this process only; the newest
MAX_JOBS are kept for their pages.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["BulkJob", "Jobs"]

log = logging.getLogger(__name__)

MAX_JOBS = 50


@dataclass
class BulkJob:
    id: str
    action: str
    type: str
    state: str
    matched: int  # the count the operator confirmed
    started: float = field(default_factory=time.time)
    handled: int = 0
    done: int = 0
    finished: float | None = None
    result: Any = None  # flow.admin.BulkResult once finished
    error: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def running(self) -> bool:
        return self.finished is None


class Jobs:
    def __init__(self) -> None:
        self._jobs: OrderedDict[str, BulkJob] = OrderedDict()
        self._lock = threading.Lock()

    def start(self, job: BulkJob, run: Callable[[BulkJob], Any]) -> BulkJob:
        """Run `run(job)` in a thread; its return value becomes job.result."""
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > MAX_JOBS:
                self._jobs.popitem(last=False)

        def body() -> None:
            try:
                job.result = run(job)
            except Exception as exc:  # any failure is shown on the job's page, and logged
                log.exception("console: bulk %s of %s/%s failed", job.action, job.type,
                              job.state)
                job.error = str(exc)
            finally:
                job.finished = time.time()

        threading.Thread(target=body, name=f"ff-console-bulk-{job.id}", daemon=True).start()
        return job

    def get(self, job_id: str) -> BulkJob | None:
        return self._jobs.get(job_id)

    @staticmethod
    def new_id() -> str:
        return secrets.token_hex(6)
