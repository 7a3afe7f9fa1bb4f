"""Every key name ferricflowd uses, built in one place.

A namespace has `partitions` partitions; every key of a partition carries the hash tag
`{<ns>:<p>}` so one script call touches one cluster slot. Scripts receive the partition
prefix as KEYS[1] and derive the per-Flow keys from it exactly as below (lua/_lib.lua).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

PRIORITIES = (2, 1, 0)


@dataclass(frozen=True)
class KeySpace:
    namespace: str
    partitions: int

    @property
    def meta(self) -> str:
        """Namespace settings fixed at first use (the partition count)."""
        return f"{self.namespace}:meta"

    def partition_of(self, routing_key: str) -> int:
        """A Flow's partition: crc32 of its partition_key (or id) modulo the count."""
        if self.partitions == 1:
            return 0
        return zlib.crc32(routing_key.encode("utf-8", "surrogatepass")) % self.partitions

    def prefix(self, partition: int) -> str:
        return f"{{{self.namespace}:{partition}}}:"

    def all_prefixes(self) -> list[str]:
        return [self.prefix(p) for p in range(self.partitions)]

    def flow(self, p: int, flow_id: str) -> str:
        return f"{self.prefix(p)}f:{flow_id}"

    def payload(self, p: int, flow_id: str) -> str:
        """A payload too long to keep in the record (see INLINE_MAX in _lib.lua)."""
        return f"{self.prefix(p)}b:{flow_id}"

    def history(self, p: int, flow_id: str) -> str:
        return f"{self.prefix(p)}h:{flow_id}"

    def values(self, p: int, flow_id: str) -> str:
        return f"{self.prefix(p)}v:{flow_id}"

    def children(self, p: int, flow_id: str) -> str:
        return f"{self.prefix(p)}k:{flow_id}"

    def due(self, p: int, type: str, state: str, priority: int) -> str:
        return f"{self.prefix(p)}d:{type}:{state}:{priority}"

    def terminal(self, p: int, type: str, status: str) -> str:
        return f"{self.prefix(p)}t:{type}:{status}"

    def leases(self, p: int, type: str) -> str:
        """Running Flows of a type, scored by lease deadline (ms)."""
        return f"{self.prefix(p)}l:{type}"

    def parked(self, p: int, type: str, state: str) -> str:
        """Parents parked in `state` until their children finish, scored by since (ms)."""
        return f"{self.prefix(p)}q:{type}:{state}"

    def states(self, p: int, type: str) -> str:
        """Every state a Flow of the type has rested in (a set)."""
        return f"{self.prefix(p)}s:{type}"

    def wake(self, p: int, type: str, state: str) -> str:
        return f"{self.prefix(p)}x:{type}:{state}"

    def policy(self, p: int, type: str) -> str:
        return f"{self.prefix(p)}p:{type}"

    def outbox(self, p: int) -> str:
        return f"{self.prefix(p)}o"

    def types(self, p: int) -> str:
        return f"{self.prefix(p)}types"

    def config(self, p: int) -> str:
        return f"{self.prefix(p)}cfg"

    # -- schedules (flow/schedules.py; lua/schedule_*.lua) ------------------------------------
    # A schedule lives in the partition of its name, and its Flows are created with the name
    # as their partition_key, so a fire is one script call in one slot.

    def schedule(self, p: int, name: str) -> str:
        return f"{self.prefix(p)}sc:{name}"

    def schedule_fires(self, p: int, name: str) -> str:
        return f"{self.prefix(p)}sh:{name}"

    def schedule_queue(self, p: int) -> str:
        """Active schedules of a partition by next fire time (ms)."""
        return f"{self.prefix(p)}sq"

    def schedule_names(self, p: int) -> str:
        """Every schedule of a partition: name -> origin ("api" or "config")."""
        return f"{self.prefix(p)}sn"

    @property
    def schedule_declarers(self) -> str:
        """Running daemons' declarations of config schedules: daemon id -> "expires_ms set"."""
        return f"{self.namespace}:schedules:declarers"

    def schedule_declared(self, digest: str) -> str:
        """One declared set of schedule names (msgpack list), named by its digest."""
        return f"{self.namespace}:schedules:set:{digest}"
