"""FlowWorker: claim a batch, run handlers on threads, send outcomes in batches.

Process-agnostic: the same class runs inside a script (`queue.worker(...).run(fn)`) and inside
a daemon worker process. Threads:

- the caller's thread claims batches and, when idle, blocks on the wake lists (BLPOP);
- `concurrency` handler threads take jobs of plain-function states from a local queue;
- `async def` handlers run on one asyncio event loop thread instead, up to `concurrency` at
  a time: an I/O-bound handler then costs no thread hand-offs, and every job of a run (the
  daemon's run lasts the process's life) shares the loop and what is bound to it (clients,
  sessions). Such a handler must not block the loop;
- one flusher thread sends outcomes (one pipeline per flush) and extends the leases of jobs
  held longer than a third of the lease.

Handlers are never replayed: a job's outcome is sent once (re-sent only after a store error,
which the engine's replay rules make safe).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import logging
import os
import queue
import random
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .client import FlowClient, KeepLease, check_state
from .errors import FerricflowdError, FlowError, StaleLease, StoreError
from .outcomes import COMPLETE, KINDS, Complete, Fail, Outcome, Retry, Transition, kind_of
from .policy import ExceptionPolicy
from .records import Job

log = logging.getLogger("ferricflowd.worker")

Handler = Callable[[Job], Any]
_STOP = object()
_RELEASE = object()  # in place of an outcome: hand the job back unstarted
_STATS_ATTR = {"complete": "completed", "transition": "transitioned", "retry": "retried",
               "fail": "failed", "exhausted": "failed"}
# What a handler did, for hooks and statistics: (job, kind, duration_s, error text or None).
OutcomeEvent = tuple[Job, str, float, "str | None"]


@dataclass
class WorkerHooks:
    """Optional callbacks for metrics, heartbeats and error reporting; they must not block."""

    on_claimed: Callable[[str, str, int], None] | None = None
    on_outcome: Callable[[Job, str, float, str | None], None] | None = None
    on_released: Callable[[str, str, int], None] | None = None
    on_tick: Callable[[], None] | None = None
    on_handler_error: Callable[[Job, BaseException], None] | None = None
    # Called instead of on_outcome, once per flushed batch: per-batch metric updates are
    # much cheaper than per-job ones when the handlers are short.
    on_outcomes: Callable[[list[OutcomeEvent]], None] | None = None


@dataclass
class WorkerStatistics:
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
    by_kind: dict[str, int] = field(default_factory=dict)


def default_worker_id(suffix: str = "") -> str:
    base = f"{socket.gethostname()}:{os.getpid()}:{random.randrange(1 << 32):08x}"
    return f"{base}:{suffix}" if suffix else base


def to_outcome(value: Any, declared: frozenset[str] | None = None) -> Outcome:
    """Map a handler's return value to an outcome; garbage becomes a Fail with the reason."""
    if isinstance(value, Transition):
        try:
            check_state("to_state", value.to_state)
        except (TypeError, ValueError) as exc:
            return Fail(f"handler returned an invalid transition: {exc}".encode())
        if declared is not None and value.to_state not in declared:
            return Fail(f"handler returned a transition to undeclared state "
                        f"{value.to_state!r}".encode())
        return value
    if isinstance(value, (Complete, Fail, Retry)):
        return value
    if value is None:
        return COMPLETE
    if isinstance(value, (bytes, bytearray, memoryview)):
        return Complete(bytes(value))
    if isinstance(value, str):
        return Complete(value.encode("utf-8"))
    return Fail(f"handler returned an unsupported {type(value).__name__}; return an outcome, "
                f"bytes, str or None".encode())


def exception_outcome(exc: BaseException, policy: ExceptionPolicy) -> Outcome | None:
    text = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:4096]
    if policy is ExceptionPolicy.FAIL:
        return Fail(text)
    if policy is ExceptionPolicy.RAISE:
        return None
    return Retry(text)


class FlowWorker:
    """Runs the handlers of some states of one type. See the module docstring."""

    def __init__(self, client: FlowClient, *, type: str, states: Sequence[str],
                 handlers: Mapping[str, Handler], concurrency: int = 8, batch_size: int = 100,
                 lease_ms: int = 30_000, block_ms: int = 5_000, claim_values: Sequence[str] = (),
                 value_max_bytes: int | None = None,
                 exception_policy: ExceptionPolicy | Mapping[str, ExceptionPolicy] | None = None,
                 declared_states: frozenset[str] | None = None, worker_id: str | None = None,
                 hooks: WorkerHooks | None = None, payload_cap: int = 64 << 10,
                 flush_interval_ms: int = 2) -> None:
        missing = [s for s in states if s not in handlers]
        if missing:
            raise FerricflowdError(f"no handler for state(s) {', '.join(missing)} of {type}")
        for name, value in (("concurrency", concurrency), ("batch_size", batch_size),
                            ("lease_ms", lease_ms)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        self.client = client
        self.type = type
        self.states = list(states)
        self.handlers = dict(handlers)
        self.concurrency = concurrency
        self.batch_size = batch_size
        self.lease_ms = lease_ms
        self.block_ms = block_ms
        self.claim_values = list(claim_values)
        self.value_max_bytes = value_max_bytes
        self.payload_cap = payload_cap
        self.flush_interval_s = flush_interval_ms / 1000.0
        self.declared = declared_states
        self.worker_id = worker_id or default_worker_id(type)
        self.hooks = hooks or WorkerHooks()
        self._policy = exception_policy
        self._keep = KeepLease(self.worker_id, tuple(self.states), lease_ms,
                               tuple(self.claim_values), payload_cap, value_max_bytes)
        self.stats = WorkerStatistics(concurrency=concurrency)
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._held: dict[str, tuple[Job, float]] = {}  # id -> (job, monotonic claim time)
        self._cond = threading.Condition()
        self._outstanding = 0  # held: claimed or kept, until its outcome is acknowledged
        self._flushing = 0  # outcomes the flusher has taken and is sending
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._blocking: Any = None
        self._async_states = frozenset(s for s in self.states
                                       if inspect.iscoroutinefunction(self.handlers[s]))
        self._loop: asyncio.AbstractEventLoop | None = None
        # Owned by the loop thread: async jobs not started yet, and the tasks running.
        self._waiting: collections.deque[Job] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        self._rotate = random.randrange(1 << 16)
        # A claimed Flow that crashed a worker before runs alone (see _split_suspects).
        self._isolated: Job | None = None
        self._isolated_started = False

    # -- public API ---------------------------------------------------------------------------

    def run(self) -> int:
        """Claim and handle until stop() or drain(); returns the number of Flows handled.
        A drain() requested before run() starts makes it return at once."""
        if self._drain_requested:
            return 0
        self._start_threads()
        backoff = 0.05
        try:
            while not self._stopping.is_set():
                try:
                    self._turn()
                    backoff = 0.05
                except StoreError as exc:
                    log.warning("store unavailable for %s worker %s: %s; retrying in %.1fs",
                                self.type, self.worker_id, exc, backoff)
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            self._finish(self._deadline)
        return self.stats.handled

    def run_once(self) -> int:
        """Claim one batch (no blocking), handle it, flush outcomes; the number handled."""
        self._start_threads()
        before = self.stats.handled
        try:
            self._claim(self.batch_size)
            self._wait_outstanding(None)
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
                if got == 0 and self._outstanding == 0:
                    break
                if got == 0:
                    self._wait_outstanding_change(0.05)
            self._wait_outstanding(max(0.0, end - time.monotonic()))
        finally:
            self._finish(None)
        return self.stats.handled - before

    def stop(self) -> None:
        """Stop claiming, release unstarted jobs, let running handlers finish."""
        self.drain(None)

    def drain(self, deadline_s: float | None) -> None:
        """Graceful stop from any thread: run() returns when running handlers finished or
        `deadline_s` seconds passed; handlers still running then are abandoned."""
        self._deadline = None if deadline_s is None else time.monotonic() + deadline_s
        self._drain_requested = True
        self._stopping.set()
        conn = self._blocking
        if conn is not None:  # interrupt a BLPOP in progress
            try:
                conn.connection_pool.disconnect()
            except Exception:  # noqa: BLE001 - best effort wake-up
                pass

    _deadline: float | None = None
    _drain_requested = False

    def statistics(self) -> WorkerStatistics:
        queued = self._jobs.qsize() + len(self._waiting)
        self.stats.in_flight = max(0, self._outstanding - queued)
        self.stats.queued = queued
        return self.stats

    # -- the claim loop -----------------------------------------------------------------------

    def _turn(self) -> None:
        if self.hooks.on_tick:
            self.hooks.on_tick()
        if self._isolated is not None:  # no claims until the crash suspect has run alone
            self._wait_outstanding_change(0.5)
            return
        free = self._room()
        if free <= 0:
            self._wait_for_room(0.5)
            return
        result = self._claim(free, detail=True)
        if result is None or result.jobs or result.more:
            return
        if self._outstanding:
            self._wait_outstanding_change(0.05)
            return
        timeout_ms = self.block_ms
        if result.next_due_ms is not None:
            timeout_ms = min(timeout_ms, max(1, result.next_due_ms - result.now_ms))
        if self._blocking is None:
            self._blocking = self.client.store.blocking_client(self.block_ms / 1000.0)
        self._rotate += 1
        try:
            self.client.wait_for_work(self._blocking, self.type, self.states, timeout_ms,
                                      self._rotate)
        except Exception:
            # drain() disconnects this connection from another thread to end the BLPOP; the
            # interrupted read then fails with whatever the socket layer raises (a RedisError,
            # or a TypeError once the socket is gone), which is expected while stopping.
            if not self._stopping.is_set():
                raise

    def _claim(self, limit: int, detail: bool = False) -> Any:
        if self._stopping.is_set() or limit <= 0:
            return None
        if self._isolated is not None:
            return None if detail else 0
        self._rotate += 1
        result = self.client.claim(self.type, self.states, self.worker_id,
                                   lease_ms=self.lease_ms, limit=limit,
                                   claim_values=self.claim_values, payload_cap=self.payload_cap,
                                   value_max_bytes=self.value_max_bytes, start=self._rotate)
        self._take(*self._split_suspects(result.jobs))
        return result if detail else len(result.jobs)

    def _take(self, jobs: list[Job], suspect: Job | None = None) -> None:
        """Hold newly leased jobs (claimed, or kept by a transition) and queue them for the
        handler threads; a crash suspect is held and started alone by _start_isolated."""
        now = time.monotonic()
        held = jobs if suspect is None else [*jobs, suspect]
        with self._cond:
            self._outstanding += len(held)
            if suspect is not None:
                self._isolated, self._isolated_started = suspect, False
        per_state: dict[str, int] = {}
        for job in held:
            self._held[job.id] = (job, now)
            per_state[job.state] = per_state.get(job.state, 0) + 1
        self._dispatch(jobs)
        if suspect is not None:
            self._start_isolated()
        self.stats.claimed += len(held)
        if self.hooks.on_claimed:
            for state, n in per_state.items():
                self.hooks.on_claimed(self.type, state, n)

    def _split_suspects(self, jobs: list[Job]) -> tuple[list[Job], Job | None]:
        """Set aside one Flow that one more crash would fail, to run it alone.

        When a worker process dies, every lease it held counts a crash, so Flows that merely
        shared the process with a poison pill are blamed too; run beside it again they would
        reach max_crashes with it. A Flow whose next crash would fail it (crash_count >=
        max_crashes - 1, at least 1) therefore runs only once everything else this worker
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
        """Start the set-aside suspect once it is the only Flow this worker still holds."""
        with self._cond:
            job = self._isolated
            if job is None or self._isolated_started or self._outstanding != 1:
                return
            self._isolated_started = True
        self._dispatch([job])

    def _dispatch(self, jobs: list[Job]) -> None:
        """Hand jobs to the handler threads, or to the event loop for `async def` states."""
        later = []
        for job in jobs:
            if job.state in self._async_states:
                later.append(job)
            else:
                self._jobs.put(job)
        if not later:
            return
        loop = self._loop
        if loop is None:  # the run's loop is gone (past a drain deadline): hand them back
            for job in later:
                self._outcomes.put((job, _RELEASE, 0.0))
        else:
            loop.call_soon_threadsafe(self._admit, later)

    def _wait_outstanding_change(self, timeout: float) -> None:
        with self._cond:
            start = self._outstanding
            self._cond.wait_for(lambda: self._outstanding != start or self._stopping.is_set(),
                                timeout)

    def _room(self) -> int:
        """How many Flows to claim now, or 0 while enough are unfinished.

        Only Flows not yet finished by a handler count against the batch: a finished one
        whose outcome is queued or being flushed holds its lease for a few ms, and waiting
        for those acknowledgements left the handler threads idle between batches. The leases
        held stay capped at two batches (one handled, one flushed) plus the threads'."""
        batch, threads = self.batch_size, self.concurrency
        unfinished = self._outstanding - self._outcomes.qsize() - self._flushing
        if unfinished >= max(threads, batch // 2):
            return 0
        return max(0, min(batch, batch + threads - unfinished,
                          2 * batch + threads - self._outstanding))

    def _wait_for_room(self, timeout: float) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self._room() > 0 or self._stopping.is_set(), timeout)

    def _wait_outstanding(self, timeout: float | None) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._outstanding == 0, timeout)

    # -- handler threads ----------------------------------------------------------------------

    def _start_threads(self) -> None:
        if self._threads:
            return
        if not self._drain_requested:
            self._stopping.clear()
        for i in range(self._handler_threads):
            t = threading.Thread(target=self._handler_loop, name=f"ff-handler-{i}", daemon=True)
            t.start()
            self._threads.append(t)
        if self._async_states:
            self._loop = loop = asyncio.new_event_loop()
            t = threading.Thread(target=loop.run_forever, name="ff-asyncio", daemon=True)
            t.start()
            self._threads.append(t)
        t = threading.Thread(target=self._flusher_loop, name="ff-flusher", daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def _handler_threads(self) -> int:
        """Handler threads a run starts: none when every state's handler is `async def`."""
        return self.concurrency if len(self._async_states) < len(self.states) else 0

    def _handler_loop(self) -> None:
        get, put, stopping = self._jobs.get, self._outcomes.put, self._stopping
        while True:
            job = get()
            if job is _STOP:
                return
            if stopping.is_set():
                put((job, _RELEASE, 0.0))
                continue
            put(self._handle(job))

    def _handle(self, job: Job) -> tuple[Job, Outcome | None, float]:
        """Run the job's handler: (job, the outcome to store or None, duration in s)."""
        started = time.perf_counter()
        try:
            value = self.handlers[job.state](job)
            if value is not None and type(value) not in KINDS and inspect.isawaitable(value):
                value = asyncio.run(_await(value))  # a plain function that returned one
            outcome = self._outcome(job, value)
        except Exception as exc:  # noqa: BLE001 - a handler may raise anything
            outcome = self._raised(job, exc)
        return job, outcome, time.perf_counter() - started

    async def _handle_async(self, job: Job) -> None:
        """_handle for an `async def` handler, on the loop; the result goes to the flusher."""
        started = time.perf_counter()
        try:
            outcome = self._outcome(job, await self.handlers[job.state](job))
        except Exception as exc:  # noqa: BLE001 - a handler may raise anything
            outcome = self._raised(job, exc)
        self._outcomes.put((job, outcome, time.perf_counter() - started))

    def _outcome(self, job: Job, value: Any) -> Outcome | None:
        outcome: Outcome | None = self.client.storable(to_outcome(value, self.declared))
        if outcome is not value and isinstance(outcome, Fail):  # not the handler's own
            log.error("flow %s %s state=%s attempt=%d: %s", job.type, job.id, job.state,
                      job.attempt, outcome.error.decode("utf-8", "replace"))
        return outcome

    def _raised(self, job: Job, exc: Exception) -> Outcome | None:
        log.warning("flow %s %s state=%s attempt=%d raised %s: %s", job.type, job.id,
                    job.state, job.attempt, type(exc).__name__, exc, exc_info=True)
        if self.hooks.on_handler_error:
            self.hooks.on_handler_error(job, exc)
        return exception_outcome(exc, self._exception_policy(job.state))

    # -- the event loop (its own thread) --------------------------------------------------------

    def _admit(self, jobs: list[Job]) -> None:
        self._waiting.extend(jobs)
        self._pump()

    def _pump(self) -> None:
        """Start waiting async jobs while fewer than `concurrency` run; once stopping, hand
        them all back unstarted, as the handler threads do."""
        waiting, tasks = self._waiting, self._tasks
        if self._stopping.is_set():
            while waiting:
                self._outcomes.put((waiting.popleft(), _RELEASE, 0.0))
            return
        loop = asyncio.get_running_loop()
        while waiting and len(tasks) < self.concurrency:
            task = loop.create_task(self._handle_async(waiting.popleft()))
            tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._pump()

    def _exception_policy(self, state: str) -> ExceptionPolicy:
        policy = self._policy
        if isinstance(policy, Mapping):
            policy = policy.get(state)
        return policy or ExceptionPolicy.RETRY

    # -- outcomes and lease extension ---------------------------------------------------------

    def _flusher_loop(self) -> None:
        next_extend = time.monotonic() + self.lease_ms / 3000.0
        while True:
            batch = self._collect(next_extend)
            stop = _STOP in batch
            batch = [b for b in batch if b is not _STOP]
            if batch:
                with self._cond:  # these no longer count against the next claim
                    self._flushing = len(batch)
                    self._cond.notify_all()
                self._flush(batch)
            if time.monotonic() >= next_extend:
                self._extend()
                next_extend = time.monotonic() + self.lease_ms / 3000.0
            if stop:
                return

    def _collect(self, until: float) -> list[Any]:
        """The next batch of outcomes: the first one, and what else arrives within
        flush_interval, unless every held job's outcome is already queued (then at once: an
        idle worker's lone job costs no extra latency)."""
        outcomes = self._outcomes
        try:
            batch = [outcomes.get(timeout=max(0.001, until - time.monotonic()))]
        except queue.Empty:
            return []
        if self._outstanding > 1 + outcomes.qsize():
            # Sleep through the window rather than waiting on the queue per item: the
            # handler threads' puts then wake nobody (one thread switch per batch, not per job).
            time.sleep(self.flush_interval_s)
        get = outcomes.get_nowait
        try:
            while len(batch) < 1000:
                batch.append(get())
        except queue.Empty:
            pass
        return batch

    def _flush(self, batch: list[Any]) -> None:
        releases: list[Job] = []
        sends: list[tuple[Job, Outcome]] = []
        durations: list[float] = []
        dropped: list[Job] = []
        for job, outcome, duration in batch:
            if outcome is _RELEASE:
                releases.append(job)
            elif outcome is None:
                dropped.append(job)
            else:
                sends.append((job, outcome))
                durations.append(duration)
        if sends:
            # A transition to a state this worker handles comes back as the next Job, leased
            # on in the same call; not while stopping, nor beside a crash suspect running alone.
            keep = None if self._stopping.is_set() or self._isolated is not None else self._keep
            results = self._send(self._apply, sends, keep)
            self._account(sends, durations, results)
            kept = [r for r in results if isinstance(r, Job)]
            if kept:
                self._take(kept)  # before _done below, so the held count never dips to 0
        if releases and self._send(self.client.release, releases, "drain"):
            self.stats.released += len(releases)
            if self.hooks.on_released:
                self.hooks.on_released(self.type, "*", len(releases))
        self._done(releases + dropped + [job for job, _ in sends])

    def _apply(self, sends: list[tuple[Job, Outcome]], keep: KeepLease | None) -> list[Any]:
        return self.client.apply_outcomes(sends, keep, checked=True)  # _handle: storable()

    def _send(self, fn: Callable[..., list[Any]], *args: Any) -> list[Any]:
        """Run a store call, retrying store failures with backoff until it goes through
        (outcomes are replay-safe) or the process is past its drain deadline."""
        backoff = 0.05
        while True:
            try:
                return fn(*args)
            except StoreError as exc:
                if self._deadline is not None and time.monotonic() > self._deadline:
                    log.error("dropping outcomes after drain deadline: %s", exc)
                    return []
                log.warning("store unavailable while sending outcomes: %s", exc)
                time.sleep(backoff)
                backoff = min(backoff * 2, 2.0)

    def _account(self, sends: list[tuple[Job, Outcome]], durations: list[float],
                 results: list[Any]) -> None:
        """Count a flushed batch in the statistics and report it to the hooks."""
        events: list[OutcomeEvent] = []
        counts: dict[str, int] = {}
        # `results` is empty when the outcomes were dropped after the drain deadline.
        for (job, outcome), duration, result in zip(sends, durations, results, strict=False):
            kind, error = self._kind(job, outcome, result)
            counts[kind] = counts.get(kind, 0) + 1
            events.append((job, kind, duration, error))
        stats = self.stats
        for kind, n in counts.items():
            stats.by_kind[kind] = stats.by_kind.get(kind, 0) + n
            attr = _STATS_ATTR.get(kind)
            if attr is not None:
                setattr(stats, attr, getattr(stats, attr) + n)
        stats.stale += counts.get("stale", 0)
        stats.handled += len(events)
        hooks = self.hooks
        if hooks.on_outcomes:
            hooks.on_outcomes(events)
        elif hooks.on_outcome:
            for event in events:
                hooks.on_outcome(*event)

    @staticmethod
    def _kind(job: Job, outcome: Outcome, result: Any) -> tuple[str, str | None]:
        """The outcome kind as stored (complete, transition, retry, fail, exhausted, stale,
        error) and its error text; rejected outcomes are logged here."""
        if isinstance(result, FlowError):
            if isinstance(result, StaleLease):
                log.warning("flow %s %s state=%s attempt=%d: outcome rejected, lease lost "
                            "(reclaimed while the handler ran)", job.type, job.id, job.state,
                            job.attempt)
                return "stale", str(result)
            log.error("flow %s %s state=%s attempt=%d: outcome rejected: %s", job.type, job.id,
                      job.state, job.attempt, result)
            return "error", str(result)
        kind = kind_of(outcome)
        if kind == "complete" or kind == "transition":
            return kind, None
        if kind == "retry" and result == b"exhausted":
            kind = "exhausted"
        return kind, outcome.error.decode("utf-8", "replace")

    def _done(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._held.pop(job.id, None)
        with self._cond:
            self._outstanding -= len(jobs)
            self._flushing = 0
            if self._isolated is not None and any(j is self._isolated for j in jobs):
                self._isolated = None
            self._cond.notify_all()
        self._start_isolated()

    def _extend(self) -> None:
        cutoff = time.monotonic() - self.lease_ms / 3000.0
        old = [job for job, since in list(self._held.values()) if since <= cutoff]
        if not old:
            return
        try:
            results = self.client.extend_leases(old, self.lease_ms)
        except StoreError as exc:
            log.warning("could not extend %d leases: %s", len(old), exc)
            return
        now = time.monotonic()
        for job, result in zip(old, results, strict=True):
            if isinstance(result, FlowError):
                log.warning("flow %s %s state=%s: lease lost (%s)", job.type, job.id,
                            job.state, result)
            elif job.id in self._held:
                self._held[job.id] = (job, now)

    # -- shutdown -----------------------------------------------------------------------------

    def _release_abandoned(self) -> None:
        """Past the drain deadline: hand back the leases of the handlers still running, so
        their Flows are due again at once, with no crash counted (a drain is not a crash; the
        supervisor's reclaim of a dead worker's leases counts one). A handler that still
        finishes later meets a released lease (StaleLease) if its outcome is ever sent."""
        flusher = self._threads[-1] if self._threads else None
        if flusher is not None:
            flusher.join(timeout=0.2)  # outcomes already queued go out first
        jobs = [job for job, _ in list(self._held.values())]
        if not jobs:
            return
        try:
            results = self.client.release(jobs, "drain deadline")
        except StoreError as exc:
            log.warning("could not release %d abandoned lease(s): %s", len(jobs), exc)
            return
        released = sum(1 for r in results if not isinstance(r, FlowError))
        self.stats.released += released
        if self.hooks.on_released:
            self.hooks.on_released(self.type, "*", released)

    def _finish(self, deadline: float | None) -> None:
        """Release unstarted jobs, wait for running ones (until `deadline`), stop threads."""
        self._stopping.set()
        unstarted = []
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                break
            if job is not _STOP:
                unstarted.append(job)
        with self._cond:
            if self._isolated is not None and not self._isolated_started:
                self._isolated_started = True  # never started: hand it back with the rest
                unstarted.append(self._isolated)
        for job in unstarted:
            self._outcomes.put((job, _RELEASE, 0.0))
        if self._loop is not None:  # unstarted async jobs go back the same way
            self._loop.call_soon_threadsafe(self._pump)
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        finished = self._wait_outstanding(remaining)
        for _ in range(self._handler_threads):  # one each; none when every state is async
            self._jobs.put(_STOP)
        self._outcomes.put(_STOP)
        loop, self._loop = self._loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if finished:
            for t in self._threads:
                t.join(timeout=5.0)
            if loop is not None and not loop.is_running():
                loop.close()  # not when abandoned handlers are still on it
        else:
            log.warning("drain deadline passed with %d handler(s) still running; abandoning "
                        "them and releasing their leases", self._outstanding)
            self._release_abandoned()
        self._threads = []
        if self._blocking is not None:
            try:
                self._blocking.close()
            except Exception:  # noqa: BLE001
                pass
            self._blocking = None


async def _await(value: Any) -> Any:
    return await value
