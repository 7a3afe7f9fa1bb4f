"""Upkeep: what keeps a namespace healthy besides the workers' own commands.

A mixin of FlowClient, called by the daemon's maintenance thread (and by anyone running
Flows without the daemon): release expired leases and the leases of a dead worker, deliver
the cross-partition outbox, delete terminal Flows past the retention. Every step is
idempotent, so any number of daemons may run it against one store.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from .keys import KeySpace
from .store import Arg, Call, Store
from .wire import decode_outbox, opt, raise_item


class Upkeep:
    """The maintenance commands of FlowClient."""

    # Provided by FlowClient.
    store: Store
    keys: KeySpace
    retention_ms: int

    def reclaim_expired(self, type: str, limit: int = 1000) -> int:
        """Release expired leases of `type` in every partition; the number released."""
        calls = [Call("reclaim", pre, ["", "expired", type, "expired", limit])
                 for pre in self.keys.all_prefixes()]
        return sum(int(raise_item(r, None)[0]) for r in self.store.call_many(calls))

    def reclaim_worker(self, worker_id: str, cause: str,
                       in_handler: Mapping[bytes, bool] | None = None) -> tuple[int, int]:
        """Release every lease held by a dead worker id. Returns (released, failed as poison
        pills).

        `in_handler` is what the worker was doing at its death: the SHA-1 digest of each
        Flow id that was running in a handler -> whether to blame it. Blamed Flows count a
        crash (and fail as poison pills at their policy's max_crashes); the others are
        released without blame, those it held but never started with '<cause>, not
        started' in their history. None (unknown): every Flow counts a crash."""
        tail: list[Arg] = [""]
        if in_handler is not None:
            tail = [len(in_handler)]
            for digest, blamed in in_handler.items():
                tail += [digest.hex(), "1" if blamed else "0"]
        calls = [Call("reclaim", pre, ["", "worker", worker_id, cause, 0, *tail])
                 for pre in self.keys.all_prefixes()]
        replies = [raise_item(r, None) for r in self.store.call_many(calls)]
        self.deliver_outbox()
        return sum(int(r[0]) for r in replies), sum(int(r[1]) for r in replies)

    def deliver_outbox(self, partitions: Iterable[int] | None = None, batch: int = 200) -> int:
        """Deliver child->parent and parent->child notices across partitions (idempotent:
        an entry is removed only after its notice was applied, and applying it twice
        changes nothing)."""
        keys = self.keys
        parts = list(range(keys.partitions)) if partitions is None else list(partitions)
        delivered = 0
        for p in parts:
            entries = self.store.batch([("LRANGE", keys.outbox(p), 0, batch - 1)])[0]
            if not entries:
                continue
            by_target: dict[int, list[Any]] = defaultdict(list)
            for raw in entries:
                target_p, target, source, kind = decode_outbox(raw)
                by_target[target_p].extend([target, source, kind])
            calls = [Call("deliver", keys.prefix(tp), ["", len(a) // 3, *a])
                     for tp, a in by_target.items()]
            for reply in self.store.call_many(calls):
                delivered += int(raise_item(reply, None))
            self.store.batch([("LREM", keys.outbox(p), 1, raw) for raw in entries])
        return delivered

    def replica_shortfall(self) -> str | None:
        """What falls short of min_replicas on the store (None: met, or min_replicas = 0)."""
        return self.store.replica_shortfall()

    def cleanup(self, now_ms: int | None = None, limit: int = 1000) -> int:
        """Delete terminal Flows past the retention; the number deleted."""
        calls = [Call("cleanup", pre, [opt(now_ms), self.retention_ms, limit])
                 for pre in self.keys.all_prefixes()]
        return sum(int(raise_item(r, None)) for r in self.store.call_many(calls))
