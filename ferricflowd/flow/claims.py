"""Claiming: lease due Flows to a worker, and wait for work without polling.

A mixin of FlowClient (client.py). A claim visits the partitions from a start, priority 2
(then 1) work anywhere first, one `claim.lua` call per partition visited; a Flow whose
payload or values are over the claim's caps is completed by a read outside the claim, so
the claim stays small. Idle workers block on the wake lists (BLPOP) instead of polling.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from .checks import check_int, check_name
from .jobflow import FlowHandle
from .keys import KeySpace
from .records import Job
from .store import Store
from .wakewait import WakeWait
from .wire import ClaimResult, LeaseRequest, decode_job, raise_item


class Claims:
    """The claim commands of FlowClient."""

    # Provided by FlowClient (and its Reads mixin).
    store: Store
    keys: KeySpace
    _call: Any
    get_many: Any
    get_values: Any

    def claim(self, type: str, lease: LeaseRequest, *, limit: int,
              start: int = 0) -> ClaimResult:
        """Lease up to `limit` due Flows of `type` in `lease.states` to `lease.worker`,
        visiting partitions from `start` until filled.

        With several partitions, priority 2 (then 1) work anywhere is claimed before
        priority 0 work: a read-only probe finds the partitions that have it."""
        check_name("type", type)
        if not isinstance(lease, LeaseRequest):
            raise TypeError(f"lease must be a LeaseRequest, not {lease.__class__.__name__}")
        check_int("limit", limit, low=1)
        keys = self.keys
        order = [(start + step) % keys.partitions for step in range(keys.partitions)]
        passes = [(prio, [p for p in order if p in parts])
                  for prio, parts in self._priority_probe(type, lease.states).items()]
        passes.append((0, order))
        jobs: list[Job] = []
        next_due: int | None = None
        more = False
        now = 0
        for min_prio, parts in passes:
            for p in parts:
                if len(jobs) >= limit:
                    return ClaimResult(jobs, next_due, True, now)
                args = ["", type, limit - len(jobs), min_prio, *lease.args]
                reply = raise_item(self._call("claim", p, args), None)
                now = int(reply[0])
                if int(reply[1]) >= 0:
                    next_due = min(next_due or int(reply[1]), int(reply[1]))
                more = more or bool(reply[2])
                # 8 fields per leased Flow, flat (claim.lua)
                jobs.extend(self._job(type, p, reply[i:i + 8]) for i in range(3, len(reply), 8))
        return ClaimResult(jobs, next_due, more or len(jobs) >= limit, now)

    def _priority_probe(self, type: str, states: Sequence[str]) -> dict[int, set[int]]:
        """Partitions holding due priority-2 and priority-1 work (one pipelined read)."""
        keys = self.keys
        if keys.partitions == 1:
            return {}
        now_ms = int(time.time() * 1000)
        probes = [(prio, p, keys.due(p, type, s, prio)) for prio in (2, 1)
                  for p in range(keys.partitions) for s in states]
        found: dict[int, set[int]] = {}
        counts = self.store.batch([("ZCOUNT", key, "-inf", now_ms) for _, _, key in probes])
        for (prio, p, _), n in zip(probes, counts, strict=True):
            if n:
                found.setdefault(prio, set()).add(p)
        return dict(sorted(found.items(), reverse=True))

    def _job(self, type: str, partition: int, item: Sequence[Any]) -> Job:
        job, big = decode_job(type, partition, item, self._handle)
        job.flow.job = job  # type: ignore[attr-defined]  # a FlowHandle, made just above
        if big:  # over a cap: fetched here, outside the claim, so the claim stays small
            names = [b.decode() for b in big if b]
            if b"" in big:
                job.__dict__["payload"] = self.get_many([(partition, job.id)])[0].payload
            if names:
                job.values.update(self.get_values(job.id, names, partition=partition))
        return job

    def _handle(self, flow_id: str, partition: int) -> FlowHandle:
        return FlowHandle(self, flow_id, partition)

    def wait_for_work(self, waiter: WakeWait, type: str, states: Sequence[str],
                      timeout_ms: int, rotate: int = 0) -> bool:
        """Block on the wake lists of `states` (BLPOP) for up to `timeout_ms`; True if woken.
        `waiter` is a store.wake_wait(): another thread may interrupt() it."""
        keys = self.keys
        timeout_s = max(timeout_ms, 1) / 1000.0
        if self.store.cluster:  # one slot per call: rotate through the partitions
            p = rotate % keys.partitions
            lists = [keys.wake(p, type, s) for s in states]
            timeout_s = max(timeout_s / keys.partitions, 0.05)
        else:
            lists = [keys.wake(p, type, s) for p in range(keys.partitions) for s in states]
        return waiter.wait(lists, timeout_s)
