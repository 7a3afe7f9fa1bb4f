"""The daemon's side of schedules, run by the maintenance thread (maintenance.py).

- At start and after each HUP, the config's `[schedules.NAME]` tables are written to the
  store (`reconcile`: only what changed) and declared: the daemon records, under its own id
  and for DECLARE_TTL_S, the set of names it has, and renews that every RENEW_S.
- Due schedules are fired with `client.schedules.fire_due()`: at the earliest next due time
  of any schedule (the maintenance thread's wait ends then, so an idle daemon sleeps until
  the next occurrence), and at every maintenance sweep, which picks up schedules created
  elsewhere. Any number of daemons may do this against one store: a fire is one script call
  that creates the Flow `<id_prefix>:<due_ms>` only if the schedule still expects that
  occurrence, so each occurrence gets exactly one Flow.
- A config schedule that no running daemon declares any more (removed from every config)
  is deleted once it has been undeclared for RETIRE_AFTER_S, by a daemon that declares
  schedules itself (or did since it started). Daemons with other configs therefore never
  delete each other's schedules, a daemon restart does not lose a schedule's state, and
  schedules created through the API are never deleted by a daemon.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from typing import Any

from ferricflowd.metrics import SchedulerMetrics

__all__ = ["Scheduler"]

log = logging.getLogger(__name__)

RENEW_S = 10.0  # how often a daemon renews its declaration
DECLARE_TTL_S = 30.0  # a declaration not renewed for this long has expired
RETIRE_AFTER_S = 60.0  # an undeclared config schedule is deleted after this long
BUSY_S = 0.5  # longest run of back-to-back fire passes before the thread does other work
FIRED = {"fired": "on_time", "catchup": "catchup"}
RETRY_S = 1.0  # after a failed step (the store is down): the next try


class Scheduler:
    """Fires due schedules and keeps the config's schedules in the store; every method but
    set_declared runs on the maintenance thread."""

    def __init__(self, schedules: Sequence[Any], metrics: SchedulerMetrics | None = None,
                 daemon_id: str | None = None) -> None:
        self.daemon_id = daemon_id or (
            f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
        self.metrics = metrics
        self._declared = tuple(schedules)
        self._dirty = True  # the declared set changed: reconcile and declare at the next step
        self._ever_declared = False
        self._renew_at = 0.0
        self._wake_at = 0.0  # monotonic time of the next step
        self._undeclared_since: dict[str, float] = {}
        self._retry_at = 0.0  # after a failed step: no new try before this (monotonic)
        self._failing: str | None = None  # the last failure, logged once until it changes

    # ---- the supervisor loop

    def set_declared(self, schedules: Sequence[Any]) -> None:
        """A reloaded config's schedules; the maintenance thread applies them."""
        self._declared = tuple(schedules)
        self._dirty = True
        self._wake_at = 0.0

    # ---- the maintenance thread

    def wake_at(self) -> float:
        return self._wake_at

    def step(self, client: Any) -> None:
        """Reconcile or renew when due, then fire until nothing is due (or BUSY_S passed).
        A failure (the store is down) is logged and tried again RETRY_S later."""
        now = time.monotonic()
        if now < self._retry_at:  # every maintenance sweep calls; a down store is tried less
            return
        try:
            self._step(client)
        except Exception as exc:
            # Once per distinct failure: an outage would otherwise log every sweep.
            say = log.debug if str(exc) == self._failing else log.warning
            say("schedules: %s; trying again every %gs", exc, RETRY_S)
            self._failing = str(exc)
            self._retry_at = self._wake_at = now + RETRY_S
            return
        if self._failing is not None:
            log.info("schedules: the store answers again")
            self._failing = None

    def _step(self, client: Any) -> None:
        now = time.monotonic()
        if self._dirty:
            self._reconcile(client)
        elif now >= self._renew_at:
            self._renew(client)
        started = time.monotonic()
        while True:
            report = client.schedules.fire_due()
            self._observe(report)
            if not report.more or time.monotonic() - started > BUSY_S:
                break
        if report.more:
            self._wake_at = time.monotonic()
        elif report.next_due_ms is None:
            self._wake_at = self._renew_at
        else:  # the store's clock, as a local monotonic time
            self._wake_at = time.monotonic() + max(0, report.next_due_ms - report.now_ms) / 1e3
        self._wake_at = min(self._wake_at, self._renew_at)

    def stop(self, client: Any) -> None:
        """At shutdown: this daemon declares nothing any more."""
        try:
            client.schedules.withdraw(self.daemon_id)
        except Exception as exc:  # the declaration expires by itself
            log.debug("schedules: withdraw failed: %s", exc)

    def _reconcile(self, client: Any) -> None:
        specs = self._declared
        outcomes = client.schedules.reconcile(specs)
        changed = {n: o for n, o in outcomes.items() if o != "unchanged"}
        if changed:
            log.info("schedules: %s", ", ".join(f"{n} {o}" for n, o in sorted(changed.items())))
        self._dirty = False
        self._renew(client)
        if self.metrics is not None and specs:
            for spec in specs:  # at zero: the first fire or skip is an increase() from 0
                for kind in ("on_time", "catchup"):
                    self.metrics.fires.labels(spec.name, kind)
                for reason in ("missed", "overlap"):
                    self.metrics.skipped.labels(spec.name, reason)
            for name, due in client.schedules.next_dues([s.name for s in specs]).items():
                self._gauge(name, due)

    def _renew(self, client: Any) -> None:
        names = [s.name for s in self._declared]
        client.schedules.declare(self.daemon_id, names, int(DECLARE_TTL_S * 1000))
        self._ever_declared = self._ever_declared or bool(names)
        self._renew_at = time.monotonic() + RENEW_S
        if self._ever_declared:
            self._retire(client)

    def _retire(self, client: Any) -> None:
        now = time.monotonic()
        undeclared = set(client.schedules.undeclared())
        for name in list(self._undeclared_since):
            if name not in undeclared:
                del self._undeclared_since[name]
        for name in sorted(undeclared):
            since = self._undeclared_since.setdefault(name, now)
            if now - since >= RETIRE_AFTER_S and client.schedules.retire(name):
                log.info("schedules: %s deleted: no running daemon's config declares it "
                         "any more", name)
                del self._undeclared_since[name]

    def _observe(self, report: Any) -> None:
        for r in report.results:
            if r.outcome in ("stale", "early", "gone", "paused"):
                continue
            log.debug("schedule %s: %s %s %s", r.schedule, r.outcome, r.due_ms, r.detail)
            if self.metrics is None:
                continue
            kind = FIRED.get(r.outcome)
            if kind is not None:
                self.metrics.fires.labels(r.schedule, kind).inc()
                if kind == "on_time":
                    self.metrics.lag.observe(max(0, r.lag_ms) / 1000.0)
            elif r.outcome == "missed":
                self.metrics.skipped.labels(r.schedule, "missed").inc(int(r.detail or 0))
            elif r.outcome == "overlap":
                self.metrics.skipped.labels(r.schedule, "overlap").inc()
        for name, due in report.next_dues.items():
            self._gauge(name, due)

    def _gauge(self, name: str, due_ms: int | None) -> None:
        if self.metrics is not None:
            self.metrics.next_due.labels(name).set((due_ms or 0) / 1000.0)
