"""The flusher thread of a Runner: sends outcomes in batches and renews long leases.

Finished jobs arrive on the outcomes queue (see execution.py). The flusher takes the first
one and whatever else arrives within `flush_interval`, sends the batch as one round trip
(FlowClient.apply_outcomes, one script call per partition and kind), counts it, and hands
the jobs back to the ledger. Every lease/3 it extends the leases of jobs held that long.
A store error is retried with backoff until the batch goes through (outcomes are replay
safe) or the drain deadline passed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import FlowError, StaleLease, StoreError
from ..outcomes import COUNTED_AS, Outcome, kind_of
from ..records import Job
from ..wire import LeaseRequest
from .execution import RELEASE, STOP
from .ledger import Ledger

log = logging.getLogger(__name__)

# What a handler did, for hooks and statistics: (job, kind, duration_s, error text or None).
OutcomeEvent = tuple[Job, str, float, "str | None"]


class Flusher:
    """One thread: outcome batches out, lease extensions, accounting."""

    def __init__(self, runner: Any, ledger: Ledger, outcomes: queue.SimpleQueue[Any],
                 lease: LeaseRequest, flush_interval_s: float) -> None:
        # `runner` gives the client, stats, hooks, stopping flag and drain deadline, and
        # takes kept jobs and finished ones back (Runner.take, Runner.done).
        self.runner = runner
        self.client = runner.client
        self.ledger = ledger
        self.outcomes = outcomes
        self.lease = lease
        self.lease_ms = lease.lease_ms
        self.flush_interval_s = flush_interval_s
        self.thread: threading.Thread | None = None

    def start(self) -> threading.Thread:
        self.thread = threading.Thread(target=self._loop, name="ff-flusher", daemon=True)
        self.thread.start()
        return self.thread

    def _loop(self) -> None:
        next_extend = time.monotonic() + self.lease_ms / 3000.0
        # Time limits are checked at a tenth of the shortest one (at most every 0.5 s).
        limits = self.runner.execution.timeouts.values()
        watch_every = min(0.5, min(limits) / 10) if limits else None
        next_watch = time.monotonic() + (watch_every or 0.0)
        while True:
            until = next_extend if watch_every is None else min(next_extend, next_watch)
            batch = self._collect(until)
            if watch_every is not None and time.monotonic() >= next_watch:
                self.runner.watch(time.monotonic())  # queues timeout outcomes: next batch
                next_watch = time.monotonic() + watch_every
            stop = STOP in batch
            batch = [b for b in batch if b is not STOP]
            if batch:
                self.ledger.flushing_now(len(batch))
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
        outcomes = self.outcomes
        try:
            batch = [outcomes.get(timeout=max(0.001, until - time.monotonic()))]
        except queue.Empty:
            return []
        if self.ledger.outstanding > 1 + outcomes.qsize():
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
        runner = self.runner
        releases: list[Job] = []
        sends: list[tuple[Job, Outcome]] = []
        durations: list[float] = []
        dropped: list[Job] = []
        for job, outcome, duration in batch:
            if outcome is RELEASE:
                releases.append(job)
            elif outcome is None:
                dropped.append(job)
            else:
                sends.append((job, outcome))
                durations.append(duration)
        if sends:
            # A transition to a state this runner handles comes back as the next Job, leased
            # on in the same call; not while stopping, nor beside a crash suspect running alone.
            keep = (None if runner.stopping.is_set() or self.ledger.isolated is not None
                    else self.lease)
            results = self._send(self._apply, sends, keep)
            self._account(sends, durations, results)
            kept = [r for r in results if isinstance(r, Job)]
            if kept:
                runner.take(kept)  # before done() below, so the held count never dips to 0
        if releases and self._send(self.client.release, releases, "drain"):
            runner.stats.released += len(releases)
            if runner.hooks.on_released:
                runner.hooks.on_released(runner.type, "*", len(releases))
        runner.done(releases + dropped + [job for job, _ in sends])

    def _apply(self, sends: list[tuple[Job, Outcome]], keep: LeaseRequest | None) -> list[Any]:
        return self.client.apply_outcomes(sends, keep, checked=True)  # handle(): storable()

    def _send(self, fn: Callable[..., list[Any]], *args: Any) -> list[Any]:
        """Run a store call, retrying store failures with backoff until it goes through
        (outcomes are replay-safe) or the process is past its drain deadline."""
        backoff = 0.05
        while True:
            try:
                return fn(*args)
            except StoreError as exc:
                deadline = self.runner.deadline
                if deadline is not None and time.monotonic() > deadline:
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
            kind, error = _kind(job, outcome, result)
            counts[kind] = counts.get(kind, 0) + 1
            events.append((job, kind, duration, error))
        stats = self.runner.stats
        for kind, n in counts.items():
            stats.by_kind[kind] = stats.by_kind.get(kind, 0) + n
            attr = COUNTED_AS.get(kind)
            if attr is not None:
                setattr(stats, attr, getattr(stats, attr) + n)
        stats.stale += counts.get("stale", 0)
        stats.handled += len(events)
        hooks = self.runner.hooks
        if hooks.on_outcomes:
            hooks.on_outcomes(events)
        elif hooks.on_outcome:
            for event in events:
                hooks.on_outcome(*event)

    def _extend(self) -> None:
        old = self.ledger.held_since(time.monotonic() - self.lease_ms / 3000.0)
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
            else:
                self.ledger.renewed(job, now)

    def release_abandoned(self) -> None:
        """Past the drain deadline: hand back the leases of the handlers still running, so
        their Flows are due again at once, with no crash counted (a drain is not a crash; the
        supervisor's reclaim of a dead worker's leases counts one). A handler that still
        finishes later meets a released lease (StaleLease) if its outcome is ever sent."""
        if self.thread is not None:
            self.thread.join(timeout=0.2)  # outcomes already queued go out first
        jobs = self.ledger.jobs()
        if not jobs:
            return
        try:
            results = self.client.release(jobs, "drain deadline")
        except StoreError as exc:
            log.warning("could not release %d abandoned lease(s): %s", len(jobs), exc)
            return
        released = sum(1 for r in results if not isinstance(r, FlowError))
        runner = self.runner
        runner.stats.released += released
        if runner.hooks.on_released:
            runner.hooks.on_released(runner.type, "*", released)


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
    return kind, outcome.error.decode("utf-8", "replace")  # type: ignore[union-attr]
