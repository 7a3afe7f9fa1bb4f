"""Every Prometheus metric of ferricflowd, defined in one place.

The supervisor owns prometheus-client's multiprocess mode (ferricflowd/supervisor/promdir.py):
it sets PROMETHEUS_MULTIPROC_DIR before anything imports prometheus_client and passes it to
each worker in its environment. prometheus_client picks its value class (mmap files or plain
memory) when it is first imported, so nothing here imports it at module level: the metric
objects are built on first use, in whichever process uses them.

Workers write the per-Flow metrics (`WorkerMetrics`); the supervisor and its maintenance
thread write the process and store metrics (`SupervisorMetrics`). The supervisor's /metrics
merges every process's files. Labels stay low-cardinality: type, state, group, and short
reason/cause/trigger words; never a Flow id or a pid.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

__all__ = ["SchedulerMetrics", "SupervisorMetrics", "WorkerMetrics", "observe_many",
           "scheduler_metrics", "supervisor_metrics", "under_replicated_writes",
           "worker_metrics"]

PREFIX = "ferricflowd"
# Handler durations span milliseconds (queue jobs) to minutes (workflow steps); few buckets,
# because every process pre-allocates a file for them.
DURATION_BUCKETS = (0.005, 0.025, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0, float("inf"))
DRAIN_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 300.0, float("inf"))
# Label values created at zero before their first event, so that the first restart or the
# first failure is an increase() from 0 and not a series appearing from nowhere (which
# Prometheus' increase()/rate() cannot see). docs/metrics.md lists every series.
RESTART_REASONS = ("boot", "crash", "signal", "hang", "store")  # supervisor/workers.py exit_label
RECYCLE_TRIGGERS = ("max_jobs", "max_memory")
RECLAIM_CAUSES = ("crash", "signal", "hang", "expired")
# A fire's lag (store time of the fire - the occurrence's due time): milliseconds normally.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, float("inf"))


@dataclass(frozen=True)
class WorkerMetrics:
    """Metrics written by worker processes, labelled by Flow type and logical state."""

    claimed: Any
    completed: Any
    failed: Any
    retried: Any
    transitioned: Any
    released: Any
    handler_errors: Any
    handler_duration: Any
    in_flight: Any

    def preinit(self, flow_type: str, states: tuple[str, ...]) -> None:
        """Every per-Flow series of this worker's states, at zero."""
        for state in states:
            for series in (self.claimed, self.completed, self.failed, self.retried,
                           self.transitioned, self.released, self.handler_errors,
                           self.handler_duration):
                series.labels(flow_type, state)


@dataclass(frozen=True)
class SupervisorMetrics:
    """Metrics written by the supervisor process (its loop and its maintenance thread)."""

    worker_restarts: Any
    leases_reclaimed: Any
    recycles: Any
    drain_duration: Any
    group_workers: Any
    group_crash_looping: Any
    backlog: Any
    unserved: Any
    oldest_due_age: Any
    running: Any
    store_up: Any

    def preinit(self, groups: list[str]) -> None:
        """The labelled counters of these groups (and the reclaim causes), at zero."""
        for cause in RECLAIM_CAUSES:
            self.leases_reclaimed.labels(cause)
        for group in groups:
            for reason in RESTART_REASONS:
                self.worker_restarts.labels(group, reason)
            for trigger in RECYCLE_TRIGGERS:
                self.recycles.labels(group, trigger)


@functools.cache
def worker_metrics() -> WorkerMetrics:
    """The worker-side metrics of this process (built once)."""
    from prometheus_client import Counter, Gauge, Histogram

    flow = ("type", "state")

    def counter(name: str, doc: str) -> Any:
        # registry=None: the multiprocess collector reads the files, not a registry
        return Counter(f"{PREFIX}_{name}", doc, flow, registry=None)

    return WorkerMetrics(
        claimed=counter("flows_claimed", "Flows claimed by workers."),
        completed=counter("flows_completed", "Flows completed by their handler."),
        failed=counter("flows_failed", "Flows failed by their handler or its exception."),
        retried=counter("flows_retried", "Handler runs that ended in a retry."),
        transitioned=counter("flows_transitioned", "Handler runs that moved the Flow on."),
        released=counter("flows_released", "Claimed Flows handed back unstarted (drain)."),
        handler_errors=counter("handler_errors", "Handler runs that raised."),
        handler_duration=Histogram(
            f"{PREFIX}_handler_duration_seconds",
            "Wall time of handler runs.",
            flow,
            buckets=DURATION_BUCKETS,
            registry=None,
        ),
        in_flight=Gauge(
            f"{PREFIX}_flows_in_flight",
            "Handlers running now.",
            flow,
            multiprocess_mode="livesum",
            registry=None,
        ),
    )


@functools.cache
def supervisor_metrics() -> SupervisorMetrics:
    """The supervisor-side metrics of this process (built once)."""
    from prometheus_client import Counter, Gauge, Histogram

    def gauge(name: str, doc: str, labels: tuple[str, ...], mode: str) -> Any:
        return Gauge(f"{PREFIX}_{name}", doc, labels, multiprocess_mode=mode, registry=None)

    return SupervisorMetrics(
        worker_restarts=Counter(
            f"{PREFIX}_worker_restarts",
            "Worker processes that died unexpectedly, by reason (exit, signal, hang, boot).",
            ("group", "reason"),
            registry=None,
        ),
        leases_reclaimed=Counter(
            f"{PREFIX}_leases_reclaimed",
            "Leases taken back from workers, by cause (crash, signal, hang, drain, "
            "recycle, stop, expired).",
            ("cause",),
            registry=None,
        ),
        recycles=Counter(
            f"{PREFIX}_recycles",
            "Workers replaced gracefully, by trigger (max_memory, max_jobs).",
            ("group", "trigger"),
            registry=None,
        ),
        drain_duration=Histogram(
            f"{PREFIX}_drain_duration_seconds",
            "Time from SIGTERM to exit of draining workers.",
            ("group",),
            buckets=DRAIN_BUCKETS,
            registry=None,
        ),
        group_workers=gauge("group_workers", "Live worker processes.", ("group",), "livemax"),
        group_crash_looping=gauge(
            "group_crash_looping", "1 while a group is crash-looping.", ("group",), "livemax"
        ),
        backlog=gauge(
            "backlog", "Flows due now, by type and state.", ("type", "state"), "livemostrecent"
        ),
        unserved=gauge(
            "unserved_backlog",
            "Flows due now in a type and state that no group of this daemon claims.",
            ("type", "state"),
            "livemostrecent",
        ),
        oldest_due_age=gauge(
            "oldest_due_age_seconds",
            "Age of the oldest due Flow, by type and state.",
            ("type", "state"),
            "livemostrecent",
        ),
        running=gauge("flows_running", "Flows leased now, by type.", ("type",), "livemostrecent"),
        store_up=gauge("store_up", "1 when the last store ping succeeded.", (), "livemostrecent"),
    )


@functools.cache
def under_replicated_writes() -> Any:
    """Batches of mutating commands (claims included) applied on the primary that fewer than
    store.min_replicas replicas acknowledged within store.wait_timeout (counted by workers
    and the supervisor alike)."""
    from prometheus_client import Counter

    return Counter(f"{PREFIX}_store_under_replicated_writes",
                   "Mutating store calls applied, but acknowledged by fewer than min_replicas "
                   "replicas within wait_timeout.",
                   registry=None)


@dataclass(frozen=True)
class SchedulerMetrics:
    """Metrics of the schedules this daemon fires (its maintenance thread). `schedule` is a
    label: schedules are declared by operators, a bounded set like groups."""

    fires: Any
    skipped: Any
    lag: Any
    next_due: Any


@functools.cache
def scheduler_metrics() -> SchedulerMetrics:
    """The scheduler metrics of this process (built once)."""
    from prometheus_client import Counter, Gauge, Histogram

    return SchedulerMetrics(
        fires=Counter(
            f"{PREFIX}_schedule_fires",
            "Occurrences fired (a Flow created), by schedule and kind (on_time, catchup).",
            ("schedule", "kind"),
            registry=None,
        ),
        skipped=Counter(
            f"{PREFIX}_schedule_skipped",
            "Occurrences not fired, by schedule and reason (missed, overlap).",
            ("schedule", "reason"),
            registry=None,
        ),
        lag=Histogram(
            f"{PREFIX}_schedule_lag_seconds",
            "Fire time - due time of occurrences fired on time.",
            buckets=LAG_BUCKETS,
            registry=None,
        ),
        next_due=Gauge(
            f"{PREFIX}_schedule_next_due_timestamp_seconds",
            "When a schedule is next due (Unix time; 0 = done or paused).",
            ("schedule",),
            multiprocess_mode="mostrecent",
            registry=None,
        ),
    )


def observe_many(histogram: Any, amounts: list[float]) -> None:
    """Histogram.observe for a batch: one write per bucket touched and one for the sum.

    prometheus_client has no batched observe, and in multiprocess mode every observe is two
    mmap writes, each under the process-wide values lock with a getpid() (~2.8 us a handler
    run here); a flush of outcomes touches one or two buckets. This uses the labelled
    histogram's _sum/_buckets/_upper_bounds, so it falls back to observe() if they change."""
    try:
        total, buckets, bounds = histogram._sum, histogram._buckets, histogram._upper_bounds
    except AttributeError:
        for amount in amounts:
            histogram.observe(amount)
        return
    counts = [0] * len(bounds)
    for amount in amounts:
        for i, bound in enumerate(bounds):
            if amount <= bound:
                counts[i] += 1
                break
    total.inc(sum(amounts))
    for bucket, n in zip(buckets, counts, strict=True):
        if n:
            bucket.inc(n)
