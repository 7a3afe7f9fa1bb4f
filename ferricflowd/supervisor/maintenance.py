"""The supervisor's store thread: lease reclaim, outbox, retention, readiness ping, gauges.

The supervisor loop never talks to the store: a slow or dead Redis must not stop it from
reaping and restarting workers. Everything that needs the store runs here, on a thread with
its own FlowClient:

- `reclaim_worker(worker_id, cause)`, queued by the loop when a worker dies, runs at once
  (the queue wakes the thread), so that worker's Flows are due again well under a second
  after the death instead of after the lease; failures are retried every interval;
- every `interval_s`: ping (cached for /readyz), with store.min_replicas the online replicas
  of every primary (too few: not ready), reclaim expired leases of the configured types,
  deliver the cross-partition outbox, backlog gauges from `stats` for every type in
  the store (the unserved gauge: Flows due in a (type, state) no group of this daemon
  claims, such as a typo'd type or a state missing from the config); retention cleanup runs
  less often because it walks the terminal indexes;
- schedules (scheduler.py): fired at their next due time (the wait below ends then) and at
  every sweep; the config's schedules reconciled at start and after a HUP.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ferricflowd.metrics import SupervisorMetrics, scheduler_metrics
from ferricflowd.supervisor.scheduler import Scheduler

__all__ = ["Maintenance", "Reclaim"]

log = logging.getLogger(__name__)

CLEANUP_EVERY_S = 60.0  # retention is in days; a minute of slack costs nothing
CLEANUP_SLACK = 0.1  # ...but a short retention is kept to within a tenth of itself
_STOP = object()
_WAKE = object()  # look at the schedules now (a reload changed them)


@dataclass(frozen=True)
class Reclaim:
    """Take back every lease of a dead worker; `cause` goes into the Flows' history."""

    worker_id: str
    cause: str
    label: str  # low-cardinality metric label: crash, signal, hang, drain, recycle, stop
    # Flows it was running in a handler (SHA-1 of id -> blamed); None: unknown, blame all.
    in_handler: Mapping[bytes, bool] | None = None


class Maintenance:
    """One thread, one FlowClient; the loop only enqueues work for it."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        types: Iterable[str],
        interval_s: float,
        metrics: SupervisorMetrics | None = None,
        served: Iterable[tuple[str, str]] = (),
        check_replicas: bool = False,
        scheduler: Scheduler | None = None,
    ) -> None:
        self._client_factory = client_factory
        self._check_replicas = check_replicas
        # What falls short of store.min_replicas (None: met, or not asked), for /readyz.
        self.replicas_short: str | None = None
        self._types = tuple(sorted(set(types)))
        self._served = frozenset(served)  # (type, state) pairs the groups claim
        self.interval_s = interval_s
        self._metrics = metrics
        self._scheduler = scheduler
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._retry: list[Reclaim] = []
        self._pending = 0  # reclaims queued or awaiting retry
        self._idle = threading.Condition()
        self._last_ok: float | None = None  # monotonic time of the last successful ping
        self._last_ping_ok = False  # the latest ping's answer: a failed one counts at once
        self._last_cleanup = 0.0
        self._thread = threading.Thread(target=self._run, name="ff-maintenance", daemon=True)

    # ---- called from the supervisor loop

    def start(self, metrics: SupervisorMetrics | None = None) -> None:
        if metrics is not None:
            self._metrics = metrics
            if self._scheduler is not None:
                self._scheduler.metrics = scheduler_metrics()
        self._thread.start()

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def reclaim_worker(self, worker_id: str, cause: str, label: str,
                       in_handler: Mapping[bytes, bool] | None = None) -> None:
        """Queue a dead worker's leases for reclaim; returns at once."""
        with self._idle:
            self._pending += 1
        self._queue.put(Reclaim(worker_id, cause, label, in_handler))

    def set_types(self, types: Iterable[str], served: Iterable[tuple[str, str]] = ()) -> None:
        """The Flow types to sweep and the (type, state) pairs served (after a reload);
        each swap is atomic."""
        self._types = tuple(sorted(set(types)))
        self._served = frozenset(served)

    def set_schedules(self, schedules: Iterable[Any]) -> None:
        """The config's schedules after a reload; reconciled by the thread at once."""
        if self._scheduler is not None:
            self._scheduler.set_declared(tuple(schedules))
            self._queue.put(_WAKE)

    def store_ok(self, within_s: float) -> bool:
        """Did the latest ping succeed, and within the last `within_s` seconds? (A store
        that refuses connections is unready at the first failed ping; one that hangs, when
        no ping has answered for `within_s`.)"""
        last = self._last_ok
        return self._last_ping_ok and last is not None and time.monotonic() - last < within_s

    def flush(self, timeout_s: float) -> bool:
        """Wait until every queued reclaim is done; False if some are still pending."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(left)
        return True

    def stop(self, timeout_s: float = 5.0) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout_s)

    # ---- the thread

    def _run(self) -> None:
        client = self._client_factory()
        if self._check_replicas:
            _count_under_replicated(client)
        next_sweep = time.monotonic()
        scheduler = self._scheduler
        try:
            while True:
                wake = next_sweep if scheduler is None else min(next_sweep, scheduler.wake_at())
                try:
                    item = self._queue.get(timeout=max(0.0, wake - time.monotonic()))
                except queue.Empty:
                    item = None
                if item is _STOP:
                    return
                if isinstance(item, Reclaim):
                    self._reclaim(client, item)
                swept = time.monotonic() >= next_sweep
                if swept:
                    self._sweep(client)
                    next_sweep = time.monotonic() + self.interval_s
                if scheduler is not None and (swept or time.monotonic() >= scheduler.wake_at()):
                    scheduler.step(client)
        finally:
            if scheduler is not None:
                scheduler.stop(client)
            _close(client)

    def _reclaim(self, client: Any, item: Reclaim) -> None:
        try:
            count, poisoned = client.reclaim_worker(item.worker_id, item.cause, item.in_handler)
        except Exception as exc:  # the store may be down; keep it and retry on the next sweep
            log.warning("reclaim of worker %s failed (%s); will retry", item.worker_id, exc)
            self._retry.append(item)
            return
        if count:
            log.info("reclaimed %d lease(s) of worker %s: %s", count, item.worker_id, item.cause)
        if poisoned:
            log.warning("%d Flow(s) of worker %s failed: crashed their worker too often",
                        poisoned, item.worker_id)
        if self._metrics is not None and count:
            self._metrics.leases_reclaimed.labels(item.label).inc(count)
        self._done(1)

    def _done(self, n: int) -> None:
        with self._idle:
            self._pending -= n
            self._idle.notify_all()

    def _sweep(self, client: Any) -> None:
        """The periodic part; each step is independent, so one failing does not stop others."""
        ok = _call(client.ping) is True
        if ok and self._check_replicas:  # before the ping counts: never ready in between
            self._count_replicas(client)
        self._last_ping_ok = ok
        if ok:
            self._last_ok = time.monotonic()
        if self._metrics is not None:
            self._metrics.store_up.set(1 if ok else 0)
        if not ok:
            return
        retry, self._retry = self._retry, []
        for item in retry:
            self._reclaim(client, item)  # still pending; re-queued for retry if it fails again
        for flow_type in self._types:
            count = _call(client.reclaim_expired, flow_type)
            if count and self._metrics is not None:
                self._metrics.leases_reclaimed.labels("expired").inc(count)
            if count:
                log.info("reclaimed %d expired lease(s) of type %s", count, flow_type)
        if self._metrics is not None:
            for flow_type in sorted(set(self._types) | set(_call(client.types) or ())):
                self._export_stats(flow_type, _call(client.stats, flow_type))
        _call(client.deliver_outbox)
        retention_s = getattr(client, "retention_ms", 1e12) / 1000.0
        every = min(CLEANUP_EVERY_S, max(self.interval_s, retention_s * CLEANUP_SLACK))
        if time.monotonic() - self._last_cleanup >= every:
            self._last_cleanup = time.monotonic()
            _call(client.cleanup)

    def _count_replicas(self, client: Any) -> None:
        try:
            short = client.replica_shortfall()
        except Exception as exc:  # the store answered the ping; count it as short
            short = f"cannot count the store's replicas for store.min_replicas: {exc}"
        if short != self.replicas_short:
            if short:
                log.warning("not ready: %s (writes wait store.wait_timeout for them, then "
                            "count as under-replicated)", short)
            else:
                log.info("store.min_replicas met: every primary has its replicas online")
        self.replicas_short = short

    def _export_stats(self, flow_type: str, stats: Any) -> None:
        """Backlog gauges from a flow/ FlowStats (`states: {state: StateStats}`)."""
        if stats is None or self._metrics is None:
            return
        for state, per_state in (getattr(stats, "states", None) or {}).items():
            self._metrics.backlog.labels(flow_type, state).set(per_state.due_now)
            unserved = 0 if (flow_type, state) in self._served else per_state.due_now
            self._metrics.unserved.labels(flow_type, state).set(unserved)
            age_ms = per_state.oldest_due_age_ms or 0
            self._metrics.oldest_due_age.labels(flow_type, state).set(age_ms / 1000.0)
        running = getattr(stats, "running", None)
        if isinstance(running, int):
            self._metrics.running.labels(flow_type).set(running)


def _call(fn: Callable[..., Any], *args: Any) -> Any:
    """Run one maintenance step; log and swallow its failure (the next sweep tries again)."""
    try:
        return fn(*args)
    except Exception as exc:
        log.warning("maintenance: %s failed: %s", getattr(fn, "__name__", fn), exc)
        return None


def _count_under_replicated(client: Any) -> None:
    """Under-replicated writes of this thread are counted and logged, not raised."""
    from ferricflowd.flow.store import ReplicationWarnings
    from ferricflowd.metrics import under_replicated_writes

    client.store.on_under_replicated = ReplicationWarnings(under_replicated_writes().inc)


def _close(client: Any) -> None:
    try:
        client.close()
    except Exception:  # closing a broken connection on the way out; nothing to do
        pass
