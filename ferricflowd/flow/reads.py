"""Reads: records, history, children, terminals, statistics and types of a namespace.

A mixin of FlowClient (as redis-py builds its client from command mixins): it uses the
client's `store` and `keys` and its `partition_for`. Plain reads are not atomic across keys
and need none: a record and its history are read in one round trip (Store.batch); only the
statistics, which must be exact per partition, are a script (stats.lua).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

from .checks import check_bool, check_id, check_int, check_name, check_value_names
from .errors import InvalidArgument
from .keys import KeySpace
from .records import (
    RESERVED_STATES,
    TERMINAL_STATES,
    FlowRecord,
    FlowStats,
    HistoryEvent,
    StateStats,
    record_fields,
)
from .store import Call, Store
from .wire import decode_history, raise_item, scored


class Reads:
    """The read commands of FlowClient."""

    # Provided by FlowClient: its store, its key space (connecting on first use) and the
    # partition of a Flow.
    store: Store
    keys: KeySpace
    partition_for: Callable[..., int]

    def get(self, flow_id: str, *, values: Sequence[str] = (), payload: bool = True,
            partition_key: str | None = None) -> FlowRecord | None:
        """The Flow's record (with the named values), or None when no such Flow exists."""
        check_id("flow_id", flow_id)
        values = check_value_names("values", values)
        check_bool("payload", payload)
        p = self.partition_for(flow_id, partition_key)
        return self.get_many([(p, flow_id)], values, payload)[0]

    def get_many(self, refs: Sequence[tuple[int, str]], values: Sequence[str] = (),
                 payload: bool = True) -> list[FlowRecord | None]:
        """Records by (partition, id), in one round trip; None where a Flow does not exist."""
        keys = self.keys
        commands: list[tuple[Any, ...]] = []
        for p, fid in refs:
            commands.append(("GET", keys.flow(p, fid)))
            if payload:
                commands.append(("GET", keys.payload(p, fid)))
            if values:
                commands.append(("HMGET", keys.values(p, fid), *values))
        got = iter(self.store.batch(commands))
        out: list[FlowRecord | None] = []
        for _, fid in refs:
            raw = record_fields(next(got))
            blob = next(got) if payload else None
            vals = ({n: v for n, v in zip(values, next(got), strict=True) if v is not None}
                    if values else {})
            if not raw:
                out.append(None)
                continue
            # A long payload lives in its own key (the record stays small).
            if raw.pop(b"pb", None) or not payload:
                raw[b"payload"] = blob or b""
            out.append(FlowRecord.from_hash(fid, raw, vals))
        return out

    def get_values(self, flow_id: str, names: Sequence[str], *, partition: int | None = None,
                   partition_key: str | None = None) -> dict[str, bytes]:
        """The named values of a Flow that exist."""
        names = check_value_names("names", names)
        p = partition if partition is not None else self.partition_for(flow_id, partition_key)
        if not names:
            return {}
        got = self.store.batch([("HMGET", self.keys.values(p, flow_id), *names)])[0]
        return {n: v for n, v in zip(names, got, strict=True) if v is not None}

    def history(self, flow_id: str, *, count: int = 1000, reverse: bool = False,
                partition_key: str | None = None) -> list[HistoryEvent]:
        """The Flow's history, oldest first (newest first with `reverse`)."""
        check_id("flow_id", flow_id)
        check_int("count", count, low=1)
        check_bool("reverse", reverse)
        key = self.keys.history(self.partition_for(flow_id, partition_key), flow_id)
        if reverse:
            raw = self.store.batch([("LRANGE", key, -count, -1)])[0][::-1]
        else:
            raw = self.store.batch([("LRANGE", key, 0, count - 1)])[0]
        return decode_history(raw)

    def children(self, flow_id: str, *, partition_key: str | None = None) -> list[FlowRecord]:
        """Records of the Flow's children (every group), in id order."""
        check_id("flow_id", flow_id)
        p = self.partition_for(flow_id, partition_key)
        raw = self.store.batch([("HGETALL", self.keys.children(p, flow_id))])[0]
        refs = []
        for cid, entry in sorted(raw.items()):
            part = int(entry.split(b"|")[1])  # "<status>|<partition>|<group>"
            refs.append((part, cid.decode("utf-8")))
        return [r for r in self.get_many(refs) if r is not None]

    def terminals(self, type: str, state: str | None = None, count: int = 100) -> list[FlowRecord]:
        """The newest `count` terminal Flows of `type` (of one terminal `state`, or all)."""
        check_name("type", type)
        check_int("count", count, low=1)
        statuses = [state] if state is not None else list(TERMINAL_STATES)
        for s in statuses:
            if s not in TERMINAL_STATES:
                raise InvalidArgument("state", f"must be {', '.join(TERMINAL_STATES)}")
        keys = self.keys
        got = self.store.batch([("ZREVRANGE", keys.terminal(p, type, s), 0, count - 1,
                                 "WITHSCORES")
                                for p in range(keys.partitions) for s in statuses])
        entries = []
        for i, reply in enumerate(got):
            p = i // len(statuses)
            entries.extend((score, p, member.decode("utf-8")) for member, score in scored(reply))
        entries.sort(key=lambda e: -e[0])
        refs = [(p, fid) for _, p, fid in entries[:count]]
        return [r for r in self.get_many(refs) if r is not None]

    def stats(self, type: str) -> FlowStats:
        """Exact counts per state, due-now and oldest-due age, running, across partitions."""
        return self.stats_many([type])[type]

    def stats_many(self, types: Sequence[str]) -> dict[str, FlowStats]:
        """stats() of several types in one round trip (a dashboard reads every type)."""
        types = [check_name("type", t) for t in types]
        prefixes = self.keys.all_prefixes()
        calls = [Call("stats", pre, ["", t]) for t in types for pre in prefixes]
        replies = iter(self.store.call_many(calls, mutating=False))
        return {t: _merge_stats(t, [next(replies) for _ in prefixes]) for t in types}

    def types(self) -> list[str]:
        """Every Flow type this namespace has seen."""
        keys = self.keys
        got = self.store.batch([("SMEMBERS", keys.types(p)) for p in range(keys.partitions)])
        return sorted({t.decode() for members in got for t in members})


def _merge_stats(type: str, replies: Sequence[Any]) -> FlowStats:
    """One type's stats.lua replies (one per partition) summed into FlowStats."""
    counts: dict[str, int] = defaultdict(int)
    due: dict[str, int] = defaultdict(int)
    oldest: dict[str, int] = {}
    running = 0
    for reply in replies:
        now, run, flat, *per_state = raise_item(reply, None)
        running += int(run)
        for i in range(0, len(flat), 2):
            counts[flat[i].decode()] += int(flat[i + 1])
        for st, n, first in per_state:
            name = st.decode()
            due[name] += int(n)
            if int(first) >= 0:
                age = int(now) - int(first)
                oldest[name] = max(oldest.get(name, 0), age)
    states = {s: StateStats(s, counts.get(s, 0), due.get(s, 0), oldest.get(s))
              for s in sorted(set(counts) | set(due)) if s not in RESERVED_STATES}
    return FlowStats(type, {k: v for k, v in counts.items() if v}, running, states)
