"""Handler execution: plain functions on `concurrency` threads, `async def` handlers as tasks
on one asyncio event loop thread, and what a handler's return value or exception becomes.

Every finished (or handed back) job leaves as `(job, outcome, duration_s)` on the outcomes
queue, where the flusher takes it: `outcome` is an Outcome to store, None (the exception
policy RAISE: leave the Flow to its lease) or RELEASE (hand it back unstarted).

A state may have a time limit. An `async def` handler past it is cancelled. A thread cannot
be killed: the watchdog (overdue(), run by the flusher) takes the job from its thread, sends
its timeout outcome at once and counts the thread as hung; whatever the handler returns
later is dropped. The Runner's owner decides what a hung thread means (the daemon's worker
process drains and is replaced, as Celery does past a hard time limit).
"""

from __future__ import annotations

import asyncio
import collections
import inspect
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from ..checks import check_state
from ..outcomes import COMPLETE, KINDS, Complete, Fail, Outcome, Retry, Transition
from ..policy import ExceptionPolicy
from ..records import Job

log = logging.getLogger(__name__)

Handler = Callable[[Job], Any]


class HandlerBoard(Protocol):
    """Notes which job each handler slot runs (the daemon's run board, runboard.py):
    begin(slot, job) just before a handler starts, end(slot) once it has returned."""

    def begin(self, slot: int, job: Job) -> None: ...

    def end(self, slot: int) -> None: ...

STOP = object()  # on the jobs queue: a handler thread exits; on the outcomes queue: the flusher
RELEASE = object()  # in place of an outcome: hand the job back unstarted


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
    """What an exception escaping a handler becomes under `policy` (None: RAISE)."""
    text = f"{type(exc).__name__}: {exc}".encode("utf-8", "replace")[:4096]
    if policy is ExceptionPolicy.FAIL:
        return Fail(text)
    if policy is ExceptionPolicy.RAISE:
        return None
    return Retry(text)


def timeout_outcome(job: Job, limit_s: float, policy: ExceptionPolicy) -> Outcome:
    """A handler past its time limit: retried or failed under `policy`. RAISE (leave the
    Flow to its lease) would leave it to a lease its own worker keeps renewing: retry."""
    exc = TimeoutError(f"handler of {job.type}.{job.state} passed its timeout of {limit_s:g}s")
    return exception_outcome(exc, policy) or Retry(f"TimeoutError: {exc}".encode())


class Execution:
    """The handler threads and the event loop of one Runner."""

    def __init__(self, handlers: Mapping[str, Handler], states: list[str], concurrency: int,
                 outcomes: queue.SimpleQueue[Any], stopping: threading.Event, *,
                 storable: Callable[[Outcome], Outcome],
                 exception_policy: ExceptionPolicy | Mapping[str, ExceptionPolicy] | None,
                 declared: frozenset[str] | None,
                 on_error: Callable[[Job, BaseException], None] | None,
                 timeouts: Mapping[str, float] | None = None,
                 board: HandlerBoard | None = None) -> None:
        self.handlers = dict(handlers)
        # Per state time limit in seconds; a state not in it has none.
        self.timeouts = {s: float(t) for s, t in (timeouts or {}).items() if t}
        self.concurrency = concurrency
        self.outcomes = outcomes
        self.stopping = stopping
        self.storable = storable
        self.declared = declared
        self.mean_duration_s: float | None = None  # moving mean of handler durations
        self.on_error = on_error
        self._policy = exception_policy
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.async_states = frozenset(s for s in states
                                      if inspect.iscoroutinefunction(self.handlers[s]))
        # Handler threads a run starts: none when every state's handler is `async def`.
        self.thread_count = concurrency if len(self.async_states) < len(states) else 0
        self.loop: asyncio.AbstractEventLoop | None = None
        # Owned by the loop thread: async jobs not started yet, and the tasks running.
        self._waiting: collections.deque[Job] = collections.deque()
        self._tasks: set[asyncio.Task[None]] = set()
        # Runs of states with a time limit on a handler thread: run number -> (job,
        # monotonic start, thread index). The thread and the watchdog both pop the
        # entry when done with it; whoever gets it owns the outcome (dict.pop is atomic),
        # so a run never has two. Keyed by run, not Flow id: after a reclaim one runner
        # may run the same Flow twice at once.
        self.running: dict[int, tuple[Job, float, int]] = {}
        self._runs = itertools.count()
        self.hung: set[int] = set()  # handler threads stuck past a time limit
        self._threads: list[threading.Thread] = []
        # Where a handler's start and end are noted for the supervisor (the daemon's run
        # board): slot i is handler thread i; async tasks take the slots after them.
        self.board = board
        self._async_slots = list(range(self.thread_count + concurrency - 1,
                                       self.thread_count - 1, -1))

    def start(self) -> list[threading.Thread]:
        """Start the handler threads (and the event loop thread, if any state is async)."""
        threads = []
        for i in range(self.thread_count):
            t = threading.Thread(target=self._handler_loop, args=(i,), name=f"ff-handler-{i}",
                                 daemon=True)
            t.start()
            threads.append(t)
        self._threads = list(threads)
        if self.async_states:
            self.loop = loop = asyncio.new_event_loop()
            t = threading.Thread(target=loop.run_forever, name="ff-asyncio", daemon=True)
            t.start()
            threads.append(t)
        return threads

    def dispatch(self, jobs: list[Job]) -> None:
        """Hand jobs to the handler threads, or to the event loop for `async def` states."""
        later = []
        for job in jobs:
            if job.state in self.async_states:
                later.append(job)
            else:
                self.jobs.put(job)
        if not later:
            return
        loop = self.loop
        if loop is None:  # the run's loop is gone (past a drain deadline): hand them back
            for job in later:
                self.outcomes.put((job, RELEASE, 0.0))
        else:
            loop.call_soon_threadsafe(self._admit, later)

    def unstarted(self) -> list[Job]:
        """Stopping: take back the jobs queued for the threads that no thread started; the
        event loop hands its own waiting jobs back (see _pump)."""
        jobs = []
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                break
            if job is not STOP:
                jobs.append(job)
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self._pump)
        return jobs

    def stop(self) -> asyncio.AbstractEventLoop | None:
        """Tell every handler thread and the loop to end; returns the loop (to close)."""
        for _ in range(self.thread_count):
            self.jobs.put(STOP)
        loop, self.loop = self.loop, None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        return loop

    # -- handler threads ----------------------------------------------------------------------

    def _handler_loop(self, index: int) -> None:
        get, put, stopping, running = self.jobs.get, self.outcomes.put, self.stopping, \
            self.running
        monotonic, runs, timeouts, board = time.monotonic, self._runs, self.timeouts, self.board
        while True:
            job = get()
            if job is STOP:
                return
            if stopping.is_set():
                put((job, RELEASE, 0.0))
                continue
            if board is not None:
                board.begin(index, job)
            # A state without a limit has nothing for the watchdog to track.
            run = next(runs) if job.state in timeouts else None
            if run is not None:
                running[run] = (job, monotonic(), index)
            result = self.handle(job)
            if board is not None:
                board.end(index)
            if run is not None and running.pop(run, None) is None:  # the watchdog took it
                log.warning("flow %s %s state=%s attempt=%d: handler returned after its "
                            "timeout; its result is dropped", job.type, job.id, job.state,
                            job.attempt)
                return  # this thread was counted as hung; it does not come back
            put(result)

    def overdue(self, now: float) -> list[tuple[Job, float]]:
        """The watchdog: take every thread-run job past its state's limit from its thread,
        queue its timeout outcome, and count the thread as hung. Returns (job, limit)."""
        late = []
        for run, (job, started, index) in list(self.running.items()):
            limit = self.timeouts.get(job.state)
            if limit is None or now - started < limit:
                continue
            if self.running.pop(run, None) is None:
                continue  # it finished meanwhile
            self.hung.add(index)
            policy = self._exception_policy(job.state)
            self.outcomes.put((job, timeout_outcome(job, limit, policy), now - started))
            log.error("flow %s %s state=%s attempt=%d: handler passed its timeout of %gs; "
                      "its thread is abandoned", job.type, job.id, job.state, job.attempt, limit)
            late.append((job, limit))
        return late

    def live_slots(self) -> int:
        """Handler slots that can still run a job: live, not hung threads, plus the event
        loop's `concurrency` task slots while its thread is alive."""
        threads = sum(1 for i, t in enumerate(self._threads)
                      if t.is_alive() and i not in self.hung)
        return threads + (self.concurrency if self.loop is not None else 0)

    def hung_threads(self) -> set[threading.Thread]:
        """The handler threads abandoned past a time limit: not worth joining."""
        return {t for i, t in enumerate(self._threads) if i in self.hung}

    def handle(self, job: Job) -> tuple[Job, Outcome | None, float]:
        """Run the job's handler: (job, the outcome to store or None, duration in s)."""
        started = time.perf_counter()
        try:
            value = self.handlers[job.state](job)
            if value is not None and type(value) not in KINDS and inspect.isawaitable(value):
                value = asyncio.run(_await(value))  # a plain function that returned one
            outcome = self._outcome(job, value)
        except BaseException as exc:  # noqa: BLE001 - SystemExit in a library must not kill
            outcome = self._raised(job, exc)  # the thread and strand the Flow under its lease
        return job, outcome, self._took(started)

    async def _handle_async(self, job: Job) -> None:
        """handle() for an `async def` handler, on the loop; the result goes to the flusher."""
        board = self.board
        if board is None:
            self.outcomes.put(await self._run_async(job))
            return
        slot = self._async_slots.pop()
        board.begin(slot, job)
        try:
            result = await self._run_async(job)
        finally:
            board.end(slot)
            self._async_slots.append(slot)
        self.outcomes.put(result)

    async def _run_async(self, job: Job) -> tuple[Job, Outcome | None, float]:
        started = time.perf_counter()
        limit = self.timeouts.get(job.state)
        try:
            async with asyncio.timeout(limit) as scope:
                value = await self.handlers[job.state](job)
            outcome = self._outcome(job, value)
        except TimeoutError as exc:
            if limit is None or not scope.expired():
                outcome = self._raised(job, exc)  # the handler's own TimeoutError
            else:
                log.error("flow %s %s state=%s attempt=%d: handler passed its timeout of %gs; "
                          "cancelled", job.type, job.id, job.state, job.attempt, limit)
                outcome = timeout_outcome(job, limit, self._exception_policy(job.state))
        except asyncio.CancelledError:
            raise  # the loop is shutting down (past a drain deadline)
        except BaseException as exc:  # noqa: BLE001 - SystemExit must not stop the loop
            outcome = self._raised(job, exc)
        return job, outcome, self._took(started)

    def _took(self, started: float) -> float:
        """The handler's duration; kept as a moving mean for the claim size (runner.py)."""
        took = time.perf_counter() - started
        mean = self.mean_duration_s  # a float swap: no lock (threads may lose an update)
        self.mean_duration_s = took if mean is None else mean + (took - mean) * 0.1
        return took

    def _outcome(self, job: Job, value: Any) -> Outcome | None:
        outcome: Outcome | None = self.storable(to_outcome(value, self.declared))
        if outcome is not value and isinstance(outcome, Fail):  # not the handler's own
            log.error("flow %s %s state=%s attempt=%d: %s", job.type, job.id, job.state,
                      job.attempt, outcome.error.decode("utf-8", "replace"),
                      extra=_fields(job, "bad_outcome"))
        return outcome

    def _raised(self, job: Job, exc: BaseException) -> Outcome | None:
        log.warning("flow %s %s state=%s attempt=%d raised %s: %s", job.type, job.id,
                    job.state, job.attempt, type(exc).__name__, exc, exc_info=True,
                    extra={**_fields(job, "raised"), "exception": type(exc).__name__})
        if self.on_error:
            self.on_error(job, exc)
        return exception_outcome(exc, self._exception_policy(job.state))

    def _exception_policy(self, state: str) -> ExceptionPolicy:
        policy = self._policy
        if isinstance(policy, Mapping):
            policy = policy.get(state)
        return policy or ExceptionPolicy.RETRY

    # -- the event loop (its own thread) ------------------------------------------------------

    def _admit(self, jobs: list[Job]) -> None:
        self._waiting.extend(jobs)
        self._pump()

    def _pump(self) -> None:
        """Start waiting async jobs while fewer than `concurrency` run; once stopping, hand
        them all back unstarted, as the handler threads do."""
        waiting, tasks = self._waiting, self._tasks
        if self.stopping.is_set():
            while waiting:
                self.outcomes.put((waiting.popleft(), RELEASE, 0.0))
            return
        loop = asyncio.get_running_loop()
        while waiting and len(tasks) < self.concurrency:
            task = loop.create_task(self._handle_async(waiting.popleft()))
            tasks.add(task)
            task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._pump()

    @property
    def queued(self) -> int:
        """Jobs waiting for a thread or a task slot."""
        return self.jobs.qsize() + len(self._waiting)


async def _await(value: Any) -> Any:
    return await value


def _fields(job: Job, event: str) -> dict[str, Any]:
    """The fields of a log line about a Flow, as the daemon's outcome lines carry them
    (ferricflowd/logs.py flow_event): JSON logs get them as top-level keys."""
    return {"event": event, "type": job.type, "id": job.id, "state": job.state,
            "attempt": job.attempt}
