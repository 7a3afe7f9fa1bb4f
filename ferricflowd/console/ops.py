"""The operator calls the console makes, behind one small adapter.

Pages ask for the Flows of a type in a state a page at a time (FlowClient.browse and its
cursor), for stuck and long-running Flows, for requeue (rewind), cancel and purge of one
Flow, of the Flows selected on a page, or of every Flow a filter matches (the bulk commands
of issue 20). Two reads have no FlowClient command and are made here from the indexes that
flow/keys.py names: the Flows finished per time window (one ZCOUNT per terminal index and
window, all in one round trip: the throughput chart) and a Flow's value names and sizes
(HKEYS, HSTRLEN: never the bytes). The views never touch a key name themselves.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ferricflowd.flow.browse import BrowsePage, FlowFilter, RunningFlow
from ferricflowd.flow.errors import FlowError, FlowNotFound, InvalidArgument
from ferricflowd.flow.records import TERMINAL_STATES

if TYPE_CHECKING:
    from ferricflowd.flow.admin import BulkResult
    from ferricflowd.flow.client import FlowClient

__all__ = ["BULK_ACTIONS", "Filters", "Operator", "Selection"]

BULK_ACTIONS = ("requeue", "cancel", "purge")
BY = "console"  # `by` of the history's rewound events
_AGO_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_AGO_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Filters:
    """A page's filters as the form sends them (text); `flow_filter` checks and converts."""

    error: str = ""
    attempts: str = ""
    updated_after: str = ""
    updated_before: str = ""

    @classmethod
    def of(cls, params: Mapping[str, Any]) -> Filters:
        """From a query string or a form (each field's first value)."""
        def get(key: str) -> str:
            value = params.get(key) or ""
            return str(value[0] if isinstance(value, list) else value).strip()

        return cls(*(get(k) for k in ("error", "attempts", "updated_after", "updated_before")))

    def as_query(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v}

    def flow_filter(self, state: str, now_ms: int) -> FlowFilter:
        """The FlowFilter for `state`; InvalidArgument names the field that is wrong."""
        attempts = None
        if self.attempts:
            if not self.attempts.isdigit():
                raise InvalidArgument("attempts", "must be a whole number")
            attempts = int(self.attempts)
        return FlowFilter(states=(state,), error_contains=self.error or None,
                          min_attempts=attempts,
                          updated_after_ms=_when("updated_after", self.updated_after, now_ms),
                          updated_before_ms=_when("updated_before", self.updated_before,
                                                  now_ms))


def _when(field_name: str, text: str, now_ms: int) -> int | None:
    """"15m", "2h", "1d" (that long ago) or "2026-12-01 10:00[:00]" (UTC) -> epoch ms."""
    if not text:
        return None
    ago = _AGO_RE.match(text)
    if ago:
        return now_ms - int(float(ago.group(1)) * _AGO_S[ago.group(2)] * 1000)
    try:
        moment = datetime.fromisoformat(text.replace("Z", ""))
    except ValueError:
        raise InvalidArgument(field_name, 'give a time ago ("15m", "2h", "1d") or a UTC time '
                              '("2026-12-01 10:00")') from None
    return int(moment.replace(tzinfo=UTC).timestamp() * 1000)


@dataclass
class Selection:
    """The outcome of an action on the Flows selected on a page."""

    done: int = 0
    skipped: int = 0
    errors: list[tuple[str, str]] = field(default_factory=list)


class Operator:
    """Operator reads and writes for the console, on one FlowClient."""

    def __init__(self, client: FlowClient) -> None:
        self.client = client

    # -- reads ----------------------------------------------------------------------------

    def browse(self, type: str, state: str, filters: Filters, *, cursor: str | None,
               limit: int, order: str) -> tuple[BrowsePage, int | None]:
        """A page of the Flows of `type` in `state` matching `filters`, and how many Flows
        the state holds (None when filters apply: counting those would read them all)."""
        flow_filter = filters.flow_filter(state, self.client.server_ms())
        page = self.client.browse(type, flow_filter, order=order, limit=limit, cursor=cursor)
        total = (None if filters.as_query() else
                 self.client.count_matching(type, FlowFilter(states=(state,))))
        return page, total

    def count(self, type: str, state: str, filters: Filters) -> int:
        return self.client.count_matching(
            type, filters.flow_filter(state, self.client.server_ms()))

    def stuck(self, type: str, due_for_ms: int, limit: int = 20) -> BrowsePage:
        return self.client.stuck(type, due_for_ms=due_for_ms, limit=limit)

    def running(self, type: str, limit: int = 5) -> list[RunningFlow]:
        """The longest-running Flows of `type` (earliest claim first)."""
        return self.client.running(type, limit=limit)

    def states(self, type: str) -> list[str]:
        return self.client.resting_states(type)

    def terminal_counts(self, types: Sequence[str],
                        windows: Sequence[tuple[int, int]]) -> list[dict[str, tuple[int, int]]]:
        """Per window (start_ms, end_ms]: type -> (completed, failed) that ended in it; one
        round trip for all of them."""
        keys = self.client.keys
        parts = range(keys.partitions)
        commands = [("ZCOUNT", keys.terminal(p, t, status), f"({lo}", hi)
                    for lo, hi in windows for t in types for status in ("completed", "failed")
                    for p in parts]
        got = iter(self.client.store.batch(commands))
        out = []
        for _ in windows:
            per_type = {}
            for t in types:
                completed = sum(int(next(got)) for _ in parts)
                failed = sum(int(next(got)) for _ in parts)
                per_type[t] = (completed, failed)
            out.append(per_type)
        return out

    def value_sizes(self, flow_id: str) -> dict[str, int]:
        """Names and sizes of a Flow's values, without reading their bytes."""
        key = self.client.keys.values(self.client.partition_for(flow_id), flow_id)
        names = sorted(n.decode("utf-8", "surrogateescape")
                       for n in self.client.store.batch([("HKEYS", key)])[0])
        if not names:
            return {}
        sizes = self.client.store.batch([("HSTRLEN", key, n) for n in names])
        return {n: int(s) for n, s in zip(names, sizes, strict=True)}

    # -- one Flow -------------------------------------------------------------------------

    def requeue(self, flow_id: str, to_state: str | None, reason: str, *,
                if_state: str | None = None, if_version: int | None = None) -> str:
        """Rewind one Flow into `to_state` (None: the state it last rested in), due now;
        returns that state."""
        return self.client.rewind(flow_id, to_state=to_state, reason=reason, by=BY,
                                  if_state=if_state, if_version=if_version)

    def cancel(self, flow_id: str, reason: str) -> bool:
        return self.client.cancel(flow_id, reason)

    # -- many Flows -----------------------------------------------------------------------

    def act_on_selection(self, action: str, ids: Sequence[str], to_state: str | None,
                         reason: str) -> Selection:
        """Requeue or cancel each Flow of `ids`, each guarded by the state and version it
        has now (one Flow refused never stops the rest). Purge works on a filter only."""
        if action not in ("requeue", "cancel"):
            raise InvalidArgument("action", "selected Flows can be requeued or cancelled; "
                                  "purge every Flow the filter matches instead")
        out = Selection()
        records = self.client.get_many([(self.client.partition_for(i), i) for i in ids],
                                       payload=False)
        for flow_id, record in zip(ids, records, strict=True):
            try:
                if record is None:
                    raise FlowNotFound("no such Flow", flow_id)
                if action == "requeue":
                    self.requeue(flow_id, to_state, reason, if_state=record.state,
                                 if_version=record.version)
                elif not self.cancel(flow_id, reason):
                    out.skipped += 1
                    continue
                out.done += 1
            except FlowError as exc:
                out.errors.append((flow_id, str(exc)))
        return out

    def act_on_filter(self, action: str, type: str, state: str, filters: Filters,
                      to_state: str | None, reason: str, *,
                      progress: Callable[[int, int], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> BulkResult:
        """Requeue, cancel or purge every Flow of `type` in `state` that `filters` match, in
        batches at the bulk commands' default rate (so live workers keep the store)."""
        flow_filter = filters.flow_filter(state, self.client.server_ms())
        run: dict[str, Any] = {"progress": progress, "should_stop": should_stop}
        if action == "requeue":
            return self.client.requeue(type, flow_filter, to_state=to_state, reason=reason,
                                       by=BY, **run)
        if action == "cancel":
            return self.client.cancel_matching(type, flow_filter, reason=reason, **run)
        if action == "purge":
            if state not in TERMINAL_STATES:
                raise InvalidArgument("action", "only finished Flows can be purged")
            return self.client.purge(type, flow_filter, **run)
        raise InvalidArgument("action", f"must be one of {', '.join(BULK_ACTIONS)}")

