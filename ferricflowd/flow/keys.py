"""Every key name ferricflowd uses, built in one place.

A namespace has `partitions` partitions; every key of a partition carries the hash tag
`{<ns>:<p>}` so one script call touches one cluster slot. Scripts receive the partition
prefix as KEYS[1] and build every other key from it with the builders of `lua/lib/keys.lua`:
one per family of FAMILIES, named `k<family>` (KeySpace.<family> here);
tests/unit/test_key_catalogue.py checks that both build the same names.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

PRIORITIES = (2, 1, 0)


@dataclass(frozen=True)
class Family:
    """A key family of a partition: `pattern` follows the partition prefix, each `<arg>` an
    argument of its builder (KeySpace.<name>, and k<name> in lua/lib/keys.lua)."""

    name: str
    pattern: str
    kind: str  # the Redis type
    holds: str


FAMILIES = (
    Family("flow", "f:<id>", "string", "the Flow record, a msgpack array (record.lua)"),
    Family("payload", "b:<id>", "string", "the payload, when longer than INLINE_MAX bytes"),
    Family("history", "h:<id>", "list", "history: msgpack [version, at_ms, event, details]"),
    Family("values", "v:<id>", "hash", "named values"),
    Family("children", "k:<id>", "hash", 'children: id -> "<status>|<partition>|<group>"'),
    Family("due", "d:<type>:<state>:<priority>", "zset", "due Flows, score = due time (ms)"),
    Family("lease", "l:<type>", "zset", "running Flows, score = lease deadline (ms)"),
    Family("worker", "w:<worker>", "set", "ids leased by one worker id"),
    Family("terminal", "t:<type>:<status>", "zset", "terminal Flows, score = terminal time (ms)"),
    Family("parked", "q:<type>:<state>", "zset",
           "parked Flows (parents waiting for children), score = since (ms)"),
    Family("wake", "x:<type>:<state>", "list", "wake tokens for idle workers (capped)"),
    Family("counts", "c:<type>", "hash", 'Flow count per state ("running" included)'),
    Family("states", "s:<type>", "set", "states seen for a type"),
    Family("policy", "p:<type>", "hash", 'retry policy per state ("*" = the default)'),
    Family("outbox", "o", "list", "child -> parent notices for other partitions"),
    Family("types", "types", "set", "types seen in this partition"),
    Family("config", "cfg", "hash", "settings: history_cap, retention_ms, part"),
    Family("schedule", "sc:<name>", "hash", "a schedule: its spec, next due, state"),
    Family("schedule_fires", "sh:<name>", "list", "a schedule's recent fires (msgpack, capped)"),
    Family("schedule_queue", "sq", "zset", "active schedules, score = next fire time (ms)"),
    Family("schedule_names", "sn", "hash", 'every schedule: name -> origin ("api", "config")'),
)


@dataclass(frozen=True)
class KeySpace:
    namespace: str
    partitions: int

    @property
    def meta(self) -> str:
        """Namespace settings fixed at first use (the partition count); no partition's."""
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

    # -- the families, in FAMILIES order ------------------------------------------------------

    def flow(self, p: int, flow_id: str) -> str:
        return f"{self.prefix(p)}f:{flow_id}"

    def payload(self, p: int, flow_id: str) -> str:
        """A payload too long to keep in the record (see INLINE_MAX in lua/lib/record.lua)."""
        return f"{self.prefix(p)}b:{flow_id}"

    def history(self, p: int, flow_id: str) -> str:
        return f"{self.prefix(p)}h:{flow_id}"

    def values(self, p: int, flow_id: str) -> str:
        return f"{self.prefix(p)}v:{flow_id}"

    def children(self, p: int, flow_id: str) -> str:
        return f"{self.prefix(p)}k:{flow_id}"

    def due(self, p: int, type: str, state: str, priority: int) -> str:
        return f"{self.prefix(p)}d:{type}:{state}:{priority}"

    def lease(self, p: int, type: str) -> str:
        return f"{self.prefix(p)}l:{type}"

    def worker(self, p: int, worker_id: str) -> str:
        return f"{self.prefix(p)}w:{worker_id}"

    def terminal(self, p: int, type: str, status: str) -> str:
        return f"{self.prefix(p)}t:{type}:{status}"

    def parked(self, p: int, type: str, state: str) -> str:
        """Parents parked in `state` until their children finish, scored by since (ms)."""
        return f"{self.prefix(p)}q:{type}:{state}"

    def wake(self, p: int, type: str, state: str) -> str:
        return f"{self.prefix(p)}x:{type}:{state}"

    def counts(self, p: int, type: str) -> str:
        return f"{self.prefix(p)}c:{type}"

    def states(self, p: int, type: str) -> str:
        return f"{self.prefix(p)}s:{type}"

    def policy(self, p: int, type: str) -> str:
        return f"{self.prefix(p)}p:{type}"

    def outbox(self, p: int) -> str:
        return f"{self.prefix(p)}o"

    def types(self, p: int) -> str:
        return f"{self.prefix(p)}types"

    def config(self, p: int) -> str:
        return f"{self.prefix(p)}cfg"

    # A schedule lives in the partition of its name, and its Flows are created with the name
    # as their partition_key, so a fire is one script call in one slot.

    def schedule(self, p: int, name: str) -> str:
        return f"{self.prefix(p)}sc:{name}"

    def schedule_fires(self, p: int, name: str) -> str:
        return f"{self.prefix(p)}sh:{name}"

    def schedule_queue(self, p: int) -> str:
        return f"{self.prefix(p)}sq"

    def schedule_names(self, p: int) -> str:
        return f"{self.prefix(p)}sn"

    # -- namespace keys of no partition (the Python side only) --------------------------------

    @property
    def schedule_declarers(self) -> str:
        """Running daemons' declarations of config schedules: daemon id -> "expires_ms set"."""
        return f"{self.namespace}:schedules:declarers"

    def schedule_declared(self, digest: str) -> str:
        """One declared set of schedule names (msgpack list), named by its digest."""
        return f"{self.namespace}:schedules:set:{digest}"
