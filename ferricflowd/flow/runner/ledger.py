"""The lease ledger of a Runner: which claimed Flows it holds, and who waits on that.

Every thread of a Runner touches it: the claim loop adds what it leased (hold), the handler
threads' outcomes leave through the flusher (done), the flusher renews the leases of long
handlers, and the claim loop sizes its next claim by what is still unfinished. One lock
(a Condition) guards the counts; waiters wake on every change.

A crash suspect (a Flow whose next worker crash would fail it) is held here too, set aside
to run alone: see Runner._split_suspects.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable

from ..records import Job


class Ledger:
    """Held leases, outstanding and flushing counts, the isolated crash suspect."""

    def __init__(self) -> None:
        self.held: dict[str, tuple[Job, float]] = {}  # id -> (job, monotonic claim time)
        self.cond = threading.Condition()
        self.outstanding = 0  # held: claimed or kept, until its outcome is acknowledged
        self.flushing = 0  # outcomes the flusher has taken and is sending
        self.isolated: Job | None = None  # a crash suspect, run once nothing else is held
        self.isolated_started = False

    def hold(self, jobs: list[Job], suspect: Job | None = None) -> None:
        """Count newly leased jobs (and a suspect to run alone) as held."""
        now = time.monotonic()
        held = jobs if suspect is None else [*jobs, suspect]
        with self.cond:
            self.outstanding += len(held)
            if suspect is not None:
                self.isolated, self.isolated_started = suspect, False
        for job in held:
            self.held[job.id] = (job, now)

    def flushing_now(self, n: int) -> None:
        """The flusher took `n` outcomes: they no longer count against the next claim."""
        with self.cond:
            self.flushing = n
            self.cond.notify_all()

    def done(self, jobs: Iterable[Job]) -> None:
        """Outcomes acknowledged (or leases handed back): these jobs are no longer held."""
        jobs = list(jobs)
        for job in jobs:
            self.held.pop(job.id, None)
        with self.cond:
            self.outstanding -= len(jobs)
            self.flushing = 0
            if self.isolated is not None and any(j is self.isolated for j in jobs):
                self.isolated = None
            self.cond.notify_all()

    def isolated_to_start(self) -> Job | None:
        """The set-aside suspect, once it is the only Flow still held (then only once)."""
        with self.cond:
            job = self.isolated
            if job is None or self.isolated_started or self.outstanding != 1:
                return None
            self.isolated_started = True
        return job

    def isolated_unstarted(self) -> Job | None:
        """Stopping: the suspect if it never started (it goes back with the unstarted)."""
        with self.cond:
            if self.isolated is None or self.isolated_started:
                return None
            self.isolated_started = True
            return self.isolated

    def wait(self, predicate: Callable[[], bool], timeout: float | None) -> bool:
        with self.cond:
            return self.cond.wait_for(predicate, timeout)

    def wait_change(self, timeout: float, stopping: threading.Event) -> None:
        """Until the outstanding count changes (or stopping, or `timeout`)."""
        with self.cond:
            start = self.outstanding
            self.cond.wait_for(lambda: self.outstanding != start or stopping.is_set(), timeout)

    def wait_empty(self, timeout: float | None) -> bool:
        """Until nothing is held; False if `timeout` passed first."""
        return self.wait(lambda: self.outstanding == 0, timeout)

    def jobs(self) -> list[Job]:
        return [job for job, _ in list(self.held.values())]

    def held_since(self, cutoff: float) -> list[Job]:
        """Jobs held (or last renewed) at or before the monotonic time `cutoff`."""
        return [job for job, since in list(self.held.values()) if since <= cutoff]

    def renewed(self, job: Job, now: float) -> None:
        if job.id in self.held:
            self.held[job.id] = (job, now)
