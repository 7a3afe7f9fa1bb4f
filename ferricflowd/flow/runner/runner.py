"""Runner: claim a batch, run handlers, send outcomes in batches.

The in-process engine behind `queue.worker(...)`, `workflow.worker(...)` and each worker
process of the daemon (the OS process is the "worker"; this is what runs inside it).
Process-agnostic. Its threads:

- the caller's thread claims batches and, when idle, blocks on the wake lists (BLPOP);
- the handlers run on `concurrency` threads, or as tasks on one asyncio event loop thread
  for `async def` handlers (execution.py): an I/O-bound handler then costs no thread
  hand-offs, and every job of a run (the daemon's run lasts the process's life) shares the
  loop and what is bound to it (clients, sessions). Such a handler must not block the loop;
- one flusher thread sends outcomes (one pipeline per flush) and extends the leases of jobs
  held longer than a third of the lease (flusher.py).

What the threads share is the lease ledger (ledger.py). Handlers are never replayed: a
job's outcome is sent once (re-sent only after a store error, which the engine's replay
rules make safe).
"""

from __future__ import annotations

import logging
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import FerricflowdError, StoreError
from ..policy import ExceptionPolicy
from ..records import Job
from ..store import ReplicationWarnings
from ..wire import LeaseRequest
from .execution import RELEASE, STOP, Execution, Handler, HandlerBoard
from .flusher import Flusher, OutcomeEvent
from .ledger import Ledger

if TYPE_CHECKING:
    from ..client import FlowClient

log = logging.getLogger(__name__)

PREFETCH_WINDOW_S = 0.05  # claimed beyond the free handler slots: about this much work


@dataclass
class RunnerHooks:
    """Optional callbacks for metrics, heartbeats and error reporting; they must not block."""

    on_claimed: Callable[[str, str, int], None] | None = None
    on_outcome: Callable[[Job, str, float, str | None], None] | None = None
    on_released: Callable[[str, str, int], None] | None = None
    on_tick: Callable[[], None] | None = None
    on_handler_error: Callable[[Job, BaseException], None] | None = None
    # A handler thread passed its state's timeout and is abandoned: (its job, the limit s).
    on_hung: Callable[[Job, float], None] | None = None
    # Called instead of on_outcome, once per flushed batch: per-batch metric updates are
    # much cheaper than per-job ones when the handlers are short.
    on_outcomes: Callable[[list[OutcomeEvent]], None] | None = None
    # Told which job each handler slot runs, when it starts and ends (execution.py).
    board: HandlerBoard | None = None


@dataclass
class RunnerStatistics:
    handled: int = 0
    claimed: int = 0
    completed: int = 0
    transitioned: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    stale: int = 0
    in_flight: int = 0
    queued: int = 0
    concurrency: int = 0
    live_slots: int = 0  # handler slots still able to run a job (hung threads are not)
    timed_out: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


def _per_state(timeouts: float | Mapping[str, float | None] | None,
               states: Sequence[str]) -> dict[str, float]:
    """A time limit for every state (one number) or per state (a mapping); None: none."""
    if timeouts is None:
        return {}
    if isinstance(timeouts, Mapping):
        chosen = {s: t for s, t in timeouts.items() if s in states and t is not None}
    else:
        chosen = dict.fromkeys(states, timeouts)
    for state, limit in chosen.items():
        if isinstance(limit, bool) or not isinstance(limit, (int, float)) or not limit > 0:
            raise ValueError(f"timeout of state {state!r} must be a number of seconds > 0, "
                             f"got {limit!r}")
    return {s: float(t) for s, t in chosen.items()}


def default_worker_id(suffix: str = "") -> str:
    """A lease owner id for a runner outside the daemon: host, pid and a random part."""
    base = f"{socket.gethostname()}:{os.getpid()}:{random.randrange(1 << 32):08x}"
    return f"{base}:{suffix}" if suffix else base


class Runner:
    """Runs the handlers of some states of one type. See the module docstring."""

    def __init__(self, client: FlowClient, *, type: str, states: Sequence[str],
                 handlers: Mapping[str, Handler], concurrency: int = 8, batch_size: int = 100,
                 lease_ms: int = 30_000, block_ms: int = 5_000, claim_values: Sequence[str] = (),
                 value_max_bytes: int | None = None,
                 exception_policy: ExceptionPolicy | Mapping[str, ExceptionPolicy] | None = None,
                 declared_states: frozenset[str] | None = None, worker_id: str | None = None,
                 hooks: RunnerHooks | None = None, payload_cap: int = 64 << 10,
                 flush_interval_ms: int = 2,
                 timeouts: float | Mapping[str, float | None] | None = None) -> None:
        missing = [s for s in states if s not in handlers]
        if missing:
            raise FerricflowdError(f"no handler for state(s) {', '.join(missing)} of {type}")
        for name, value in (("concurrency", concurrency), ("batch_size", batch_size),
                            ("lease_ms", lease_ms)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.client = client
        if client.store.on_under_replicated is None:
            # A consumer goes on after an under-replicated write (it is applied; raising
            # would strand the leases just taken): warned about, not raised, for every
            # user of this client (README: Replicas and ACL users).
            client.store.on_under_replicated = ReplicationWarnings()
        self.type = type
        self.states = list(states)
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.lease_ms = lease_ms
        self.block_ms = block_ms
        self.worker_id = worker_id or default_worker_id(type)
        self.hooks = hooks or RunnerHooks()
        self.lease = LeaseRequest(self.worker_id, tuple(self.states), lease_ms,
                                  tuple(claim_values), payload_cap, value_max_bytes)
        self.stats = RunnerStatistics(concurrency=concurrency)
        self.stopping = threading.Event()
        self.deadline: float | None = None  # monotonic drain deadline, once draining
        self._drain_requested = False
        self.ledger = Ledger()
        outcomes: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._outcomes = outcomes
        self.execution = Execution(handlers, self.states, concurrency, outcomes, self.stopping,
                                   storable=client.storable, exception_policy=exception_policy,
                                   declared=declared_states,
                                   on_error=self.hooks.on_handler_error,
                                   timeouts=_per_state(timeouts, self.states),
                                   board=self.hooks.board)
        self.flusher = Flusher(self, self.ledger, outcomes, self.lease,
                               flush_interval_ms / 1000.0)
        self._threads: list[threading.Thread] = []
        self._blocking: Any = None
        self._rotate = random.randrange(1 << 16)

    # -- public API ---------------------------------------------------------------------------

    def run(self) -> int:
        """Claim and handle until stop() or drain(); returns the number of Flows handled.
        A drain() requested before run() starts makes it return at once."""
        if self._drain_requested:
            return 0
        self._start_threads()
        backoff = 0.05
        try:
            while not self.stopping.is_set():
                try:
                    self._turn()
                    backoff = 0.05
                except StoreError as exc:
                    log.warning("store unavailable for %s worker %s: %s; retrying in %.1fs",
                                self.type, self.worker_id, exc, backoff)
                    self.stopping.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            self._finish(self.deadline)
        return self.stats.handled

    def run_once(self) -> int:
        """Claim one batch (no blocking), handle it, flush outcomes; the number handled."""
        self._start_threads()
        before = self.stats.handled
        try:
            self._claim(self.batch_size)
            self.ledger.wait_empty(None)
        finally:
            self._finish(None)
        return self.stats.handled - before

    def run_until_idle(self, timeout: float = 30.0) -> int:
        """Handle Flows until nothing of these states is due (or `timeout` s); the count."""
        self._start_threads()
        before = self.stats.handled
        end = time.monotonic() + timeout
        try:
            while time.monotonic() < end:
                got = self._claim(self.batch_size)
                if got == 0 and self.ledger.outstanding == 0:
                    break
                if got == 0:
                    self.ledger.wait_change(0.05, self.stopping)
            self.ledger.wait_empty(max(0.0, end - time.monotonic()))
        finally:
            self._finish(None)
        return self.stats.handled - before

    def stop(self) -> None:
        """Stop claiming, release unstarted jobs, let running handlers finish."""
        self.drain(None)

    def drain(self, deadline_s: float | None) -> None:
        """Graceful stop from any thread: run() returns when running handlers finished or
        `deadline_s` seconds passed; handlers still running then are abandoned."""
        self.deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self._drain_requested = True
        self.stopping.set()
        waiter = self._blocking
        if waiter is not None:  # end a claim wait in progress: an idle runner stops at once
            waiter.interrupt()

    def statistics(self) -> RunnerStatistics:
        queued = self.execution.queued
        self.stats.in_flight = max(0, self.ledger.outstanding - queued)
        self.stats.queued = queued
        self.stats.live_slots = self.execution.live_slots()
        return self.stats

    def watch(self, now: float) -> None:
        """Time limits (called by the flusher): abandon handler threads past theirs."""
        for job, limit in self.execution.overdue(now):
            self.stats.timed_out += 1
            if self.hooks.on_hung:
                self.hooks.on_hung(job, limit)

    # -- the claim loop -----------------------------------------------------------------------

    def _turn(self) -> None:
        if self.hooks.on_tick:
            self.hooks.on_tick()
        if self.ledger.isolated is not None:  # no claims until the crash suspect ran alone
            self.ledger.wait_change(0.5, self.stopping)
            return
        free = self._room()
        if free <= 0:
            self.ledger.wait(lambda: self._room() > 0 or self.stopping.is_set(), 0.5)
            return
        result = self._claim(free, detail=True)
        if result is None or result.jobs or result.more:
            return
        if self.ledger.outstanding:
            self.ledger.wait_change(0.05, self.stopping)
            return
        timeout_ms = self.block_ms
        if result.next_due_ms is not None:
            timeout_ms = min(timeout_ms, max(1, result.next_due_ms - result.now_ms))
        if self._blocking is None:
            self._blocking = self.client.store.wake_wait(self.block_ms / 1000.0)
            if self.stopping.is_set():  # drain() ran before there was a waiter to interrupt
                return
        self._rotate += 1
        self.client.wait_for_work(self._blocking, self.type, self.states, timeout_ms,
                                  self._rotate)

    def _claim(self, limit: int, detail: bool = False) -> Any:
        if self.stopping.is_set() or limit <= 0:
            return None
        if self.ledger.isolated is not None:
            return None if detail else 0
        self._rotate += 1
        result = self.client.claim(self.type, self.lease, limit=limit, start=self._rotate)
        self.take(*self._split_suspects(result.jobs))
        return result if detail else len(result.jobs)

    def take(self, jobs: list[Job], suspect: Job | None = None) -> None:
        """Hold newly leased jobs (claimed, or kept by a transition) and hand them to the
        handlers; a crash suspect is held and started alone by _start_isolated."""
        self.ledger.hold(jobs, suspect)
        self.execution.dispatch(jobs)
        if suspect is not None:
            self._start_isolated()
        n = len(jobs) + (suspect is not None)
        self.stats.claimed += n
        if self.hooks.on_claimed:
            per_state: dict[str, int] = {}
            for job in jobs if suspect is None else [*jobs, suspect]:
                per_state[job.state] = per_state.get(job.state, 0) + 1
            for state, count in per_state.items():
                self.hooks.on_claimed(self.type, state, count)

    def done(self, jobs: list[Job]) -> None:
        """Jobs whose outcome was acknowledged (or that went back): no longer held."""
        self.ledger.done(jobs)
        self._start_isolated()

    def _split_suspects(self, jobs: list[Job]) -> tuple[list[Job], Job | None]:
        """Set aside one Flow that one more crash would fail, to run it alone.

        When a worker process dies, every lease it held counts a crash, so Flows that merely
        shared the process with a poison pill are blamed too; run beside it again they would
        reach max_crashes with it. A Flow whose next crash would fail it (crash_count >=
        max_crashes - 1, at least 1) therefore runs only once everything else this runner
        holds is finished, and nothing is claimed meanwhile: if it crashes the process
        again, it alone is blamed. Further such Flows of the batch are handed back at once
        (no attempt or crash counted) for another turn or worker. The claim script marks
        them (`crash_suspect`), so this costs no extra read."""
        suspects = [j for j in jobs if j.crash_suspect]
        if not suspects:
            return jobs, None
        first, rest = suspects[0], suspects[1:]
        if rest:
            try:
                self.client.release(rest, "crash suspect: runs alone")
            except StoreError:
                rest = []  # still ours: run them as usual
        skip = {first.id, *(j.id for j in rest)}
        log.info("flow %s %s state=%s crashed its worker before; running it alone",
                 first.type, first.id, first.state)
        return [j for j in jobs if j.id not in skip], first

    def _start_isolated(self) -> None:
        """Start the set-aside suspect once it is the only Flow this runner still holds."""
        job = self.ledger.isolated_to_start()
        if job is not None:
            self.execution.dispatch([job])

    def _room(self) -> int:
        """How many Flows to claim now: the free handler slots plus a prefetch of about
        PREFETCH_WINDOW_S of work, or 0 while that many are unfinished.

        A claim leases Flows in priority order, and a leased Flow waits its turn here, so a
        large claim (batch_size 100 with one thread of 50 ms jobs) ran a higher priority
        enqueued later after all of them. With at most PREFETCH_WINDOW_S of work waiting it
        overtakes them within about one handler duration (an expired lease the same); short
        jobs still claim whole batches, which a durable store needs (each claim is an
        fsync). Only Flows not yet finished by a handler count: a finished one whose outcome
        is queued or being flushed holds its lease for a few ms, and waiting for those
        acknowledgements left the handler threads idle. The leases held stay capped at two
        batches plus the threads'."""
        batch, threads, ledger = self.batch_size, self.concurrency, self.ledger
        mean = self.execution.mean_duration_s
        if mean is None:  # nothing measured yet: one round of work beyond the threads
            prefetch = min(batch, threads)
        else:
            prefetch = min(batch, int(threads * PREFETCH_WINDOW_S / max(mean, 1e-6)))
        unfinished = ledger.outstanding - self._outcomes.qsize() - ledger.flushing
        cap = threads + prefetch
        if unfinished >= max(threads, cap // 2):
            return 0
        return max(0, min(batch, cap - unfinished, 2 * batch + threads - ledger.outstanding))

    # -- threads ------------------------------------------------------------------------------

    def _start_threads(self) -> None:
        if self._threads:
            return
        if not self._drain_requested:
            self.stopping.clear()
        self._threads = [*self.execution.start(), self.flusher.start()]

    def _finish(self, deadline: float | None) -> None:
        """Release unstarted jobs, wait for running ones (until `deadline`), stop threads."""
        self.stopping.set()
        unstarted = self.execution.unstarted()
        suspect = self.ledger.isolated_unstarted()
        if suspect is not None:  # never started: hand it back with the rest
            unstarted.append(suspect)
        for job in unstarted:
            self._outcomes.put((job, RELEASE, 0.0))
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        finished = self.ledger.wait_empty(remaining)
        loop = self.execution.stop()
        self._outcomes.put(STOP)
        if finished:
            hung = self.execution.hung_threads()
            for t in self._threads:
                if t not in hung:
                    t.join(timeout=5.0)
            if loop is not None and not loop.is_running():
                loop.close()  # not when abandoned handlers are still on it
        else:
            log.warning("drain deadline passed with %d handler(s) still running; abandoning "
                        "them and releasing their leases", self.ledger.outstanding)
            self.flusher.release_abandoned()
        self._threads = []
        if self._blocking is not None:
            try:
                self._blocking.close()
            except Exception:  # noqa: BLE001
                pass
            self._blocking = None
