"""What the overview shows, read once per refresh interval whatever the number of open pages.

`Overview.snapshot()` returns the cached `Snapshot` while it is younger than `[console]
refresh`; the first request after that reads the store (every type's stats in one round trip,
the completed and failed counts of the last minute in another) while concurrent requests wait
for that same read instead of making their own (single flight). Nothing is read while nobody
looks.

Throughput: each snapshot appends one sample (per type: Flows completed and failed in the
minute before it, counted in the terminal indexes by finish time) to a ring that keeps the
last hour. When the ring has a hole (the console just started, or nobody looked for a while),
the missing minutes are counted afresh from the same indexes, so the chart always covers the
hour, in one-minute steps where it was filled in.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ferricflowd.flow.errors import FerricflowdError
from ferricflowd.flow.records import FlowStats

from .ops import Operator

__all__ = ["DaemonStatus", "Overview", "Snapshot", "TypeRow"]

log = logging.getLogger(__name__)

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAEMON_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class TypeRow:
    type: str
    stats: FlowStats
    completed_per_min: int
    failed_per_min: int


@dataclass(frozen=True)
class Snapshot:
    at_ms: int
    took_ms: float
    rows: list[TypeRow] = field(default_factory=list)
    error: str | None = None  # the store could not be read
    series: dict[str, list[Any]] = field(default_factory=dict)  # the throughput chart
    daemon: dict[str, Any] | None = None
    daemon_error: str | None = None

    @property
    def totals(self) -> dict[str, int]:
        out = {"due_now": 0, "running": 0, "completed_per_min": 0, "failed_per_min": 0,
               "backlog": 0}
        for row in self.rows:
            out["due_now"] += row.stats.due_now
            out["running"] += row.stats.running
            out["completed_per_min"] += row.completed_per_min
            out["failed_per_min"] += row.failed_per_min
            out["backlog"] += sum(s.count for s in row.stats.states.values())
        return out


class DaemonStatus:
    """The supervisor's /status and /readyz (daemon.listen), read over HTTP."""

    def __init__(self, url: str | None) -> None:
        self.url = url.rstrip("/") if url else None

    def read(self) -> tuple[dict[str, Any] | None, str | None]:
        """(status document with its readiness under "ready", None) or (None, why not)."""
        if self.url is None:
            return None, "no daemon address"
        try:
            doc = self._get("/status")
            doc["ready"] = self._get("/readyz")
        except (OSError, ValueError) as exc:
            return None, f"daemon not reachable at {self.url} ({exc})"
        return doc, None

    def _get(self, path: str) -> dict[str, Any]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=DAEMON_TIMEOUT_S) as reply:
                return dict(json.loads(reply.read()))
        except urllib.error.HTTPError as exc:
            if exc.code == 503:  # /readyz says "not ready" with a document
                return dict(json.loads(exc.read()))
            raise


class Overview:
    """The overview cache and the throughput ring (one per console process)."""

    def __init__(self, ops: Operator, refresh_s: float, daemon: DaemonStatus,
                 clock: Callable[[], float] = time.time) -> None:
        self.ops = ops
        self.refresh_s = refresh_s
        self.daemon = daemon
        self.clock = clock
        self.reads = 0  # store reads made (the tests count them)
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._fetched = 0.0
        # (at_ms, {type: (completed, failed) in the minute before}); an hour at one a second
        self._ring: deque[tuple[int, dict[str, tuple[int, int]]]] = deque(maxlen=3600)

    def snapshot(self) -> Snapshot:
        snap = self._snapshot
        if snap is not None and time.monotonic() - self._fetched < self.refresh_s:
            return snap
        with self._lock:  # one reader; the others wait for its result
            if self._snapshot is not None and time.monotonic() - self._fetched < self.refresh_s:
                return self._snapshot
            self._snapshot = self._read()
            self._fetched = time.monotonic()
            return self._snapshot

    def expire(self) -> None:
        """Make the next snapshot() read the store (tests and the bench)."""
        self._snapshot = None

    def _read(self) -> Snapshot:
        started = time.perf_counter()
        now = int(self.clock() * 1000)
        self.reads += 1
        daemon, daemon_error = self.daemon.read()
        try:
            client = self.ops.client
            types = client.types()
            stats = client.stats_many(types)
            self._fill_ring(types, now)
        except FerricflowdError as exc:
            log.warning("console: cannot read the store: %s", exc)
            return Snapshot(now, _ms_since(started), error=str(exc), daemon=daemon,
                            daemon_error=daemon_error)
        last = self._ring[-1][1] if self._ring else {}
        rows = [TypeRow(t, stats[t], *last.get(t, (0, 0))) for t in types]
        return Snapshot(now, _ms_since(started), rows, None, self._series(now), daemon,
                        daemon_error)

    def _fill_ring(self, types: list[str], now: int) -> None:
        """Sample the last minute; first count the minutes of any hole in the last hour."""
        newest = self._ring[-1][0] if self._ring else now - HOUR_MS
        hole = [m for m in range(max(newest, now - HOUR_MS) + MINUTE_MS, now, MINUTE_MS)]
        windows = [(m - MINUTE_MS, m) for m in hole] + [(now - MINUTE_MS, now)]
        for (_, end), counts in zip(windows, self.ops.terminal_counts(types, windows),
                                    strict=True):
            self._ring.append((end, counts))
        while self._ring and self._ring[0][0] < now - HOUR_MS:
            self._ring.popleft()

    def _series(self, now: int) -> dict[str, list[Any]]:
        """The chart's columns: seconds since the epoch, completed/min, failed/min."""
        at, completed, failed = [], [], []
        for end, counts in self._ring:
            at.append(end // 1000)
            completed.append(sum(c for c, _ in counts.values()))
            failed.append(sum(f for _, f in counts.values()))
        return {"t": at, "completed": completed, "failed": failed, "now": now // 1000}


def _ms_since(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)
