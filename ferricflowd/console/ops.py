"""The operator calls the console makes, behind one small adapter.

The pages ask for Flows by type and state a page at a time, for terminal counts per minute,
for stuck Flows, for value sizes, and for requeue, cancel and purge, one Flow or many. Until
the operator commands of issue 20 are in FlowClient, the reads here use the store's indexes
directly (the due, lease and terminal sorted sets named by flow/keys.py, read with
Store.batch) and requeue only Flows that are not terminal (a guarded signal moves them); the
views never touch a key name themselves.
"""

from __future__ import annotations

import base64
import heapq
import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ferricflowd.flow.errors import FerricflowdError, FlowError
from ferricflowd.flow.keys import PRIORITIES
from ferricflowd.flow.records import RUNNING, TERMINAL_STATES, FlowRecord

if TYPE_CHECKING:
    from ferricflowd.flow.client import FlowClient

__all__ = ["BULK_ACTIONS", "Operator", "Page", "PageRow", "Unsupported"]

BULK_ACTIONS = ("requeue", "cancel", "purge")
TIE_CAP = 1000  # Flows sharing one score that a page boundary can tell apart


class Unsupported(FerricflowdError):
    """An operation the store's API cannot do yet (needs the operator commands, issue 20)."""

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} needs the operator commands of issue 20, not merged yet")


@dataclass(frozen=True)
class PageRow:
    """One Flow of a page: its index score (due time, lease deadline or terminal time)."""

    id: str
    score_ms: int
    record: FlowRecord | None


@dataclass(frozen=True)
class Page:
    rows: list[PageRow]
    next_cursor: str | None
    score_label: str  # what score_ms means on this page
    note: str = ""  # a limitation the page should show
    total: int | None = None


@dataclass
class BulkResult:
    done: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)


def _encode_cursor(score: float, member: str) -> str:
    raw = json.dumps([score, member], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _page_commands(key: str, after: tuple[float, str] | None, limit: int,
                   newest: bool) -> list[tuple[Any, ...]]:
    """Range reads of one index for a page: past the cursor's score, and the members sharing
    the cursor's score (Redis orders them by member; the caller keeps those past the cursor).
    More than TIE_CAP Flows with one score could hide some of them from the pages."""
    order = ("REV",) if newest else ()
    if after is None:
        lo, hi = ("+inf", "-inf") if newest else ("-inf", "+inf")
        return [("ZRANGE", key, lo, hi, "BYSCORE", *order, "LIMIT", 0, limit + 1, "WITHSCORES")]
    score = repr(after[0])
    end = "-inf" if newest else "+inf"
    return [("ZRANGE", key, f"({score}", end, "BYSCORE", *order, "LIMIT", 0, limit + 1,
             "WITHSCORES"),
            ("ZRANGE", key, score, score, "BYSCORE", "LIMIT", 0, TIE_CAP, "WITHSCORES")]


def _decode_cursor(cursor: str) -> tuple[float, str] | None:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        score, member = json.loads(raw)
        return float(score), str(member)
    except (ValueError, TypeError):
        return None


class Operator:
    """Operator reads and writes for the console, on one FlowClient."""

    def __init__(self, client: FlowClient) -> None:
        self.client = client

    # -- reads ----------------------------------------------------------------------------

    def index_keys(self, type: str, state: str) -> tuple[list[str], str, bool]:
        """(keys of the sorted sets listing a state's Flows, what their score is, newest
        first by default)."""
        keys = self.client.keys
        parts = range(keys.partitions)
        if state in TERMINAL_STATES:
            return [keys.terminal(p, type, state) for p in parts], "finished", True
        if state == RUNNING:
            return [f"{keys.prefix(p)}l:{type}" for p in parts], "lease deadline", False
        return ([keys.due(p, type, state, prio) for p in parts for prio in PRIORITIES],
                "due", False)

    def browse(self, type: str, state: str, *, cursor: str | None = None, limit: int = 50,
               newest_first: bool | None = None) -> Page:
        """A page of the Flows of `type` in `state`, ordered by their index score (ties by
        id), after `cursor`; constant work per page whatever the number of Flows."""
        index, label, default_newest = self.index_keys(type, state)
        newest = default_newest if newest_first is None else newest_first
        after = _decode_cursor(cursor) if cursor else None
        commands: list[tuple[Any, ...]] = [("ZCARD", key) for key in index]
        for key in index:
            commands += _page_commands(key, after, limit, newest)
        got = self.client.store.batch(commands)
        total = sum(int(n) for n in got[:len(index)])
        candidates = {(float(s), m.decode("utf-8", "surrogateescape"))
                      for reply in got[len(index):] for m, s in reply}
        if after is not None:
            candidates = {c for c in candidates if (c < after if newest else c > after)}
        picked = (heapq.nlargest if newest else heapq.nsmallest)(limit + 1, candidates)
        more = len(picked) > limit
        picked = picked[:limit]
        records = self.client.get_many(
            [(self.client.partition_for(fid), fid) for _, fid in picked], payload=False)
        rows = [PageRow(fid, int(score), rec)
                for (score, fid), rec in zip(picked, records, strict=True)]
        note = ("" if state in TERMINAL_STATES or state == RUNNING else
                "Lists the Flows due in this state (now or later); parents parked until their "
                "children finish are counted but not listed.")
        nxt = _encode_cursor(*picked[-1]) if more and picked else None
        return Page(rows, nxt, label, note, total)

    def terminal_counts(self, types: Sequence[str],
                        windows: Sequence[tuple[int, int]]) -> list[dict[str, tuple[int, int]]]:
        """Per window (start_ms, end_ms]: type -> (completed, failed) that finished in it;
        one round trip for all of them."""
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
                done = sum(int(next(got)) for _ in parts)
                failed = sum(int(next(got)) for _ in parts)
                per_type[t] = (done, failed)
            out.append(per_type)
        return out

    def expired_leases(self, type: str, limit: int = 100) -> list[PageRow]:
        """Running Flows whose lease deadline has passed (their worker is gone or hung; the
        maintenance loop reclaims them)."""
        keys = self.client.keys
        now = int(time.time() * 1000)
        got = self.client.store.batch(
            [("ZRANGE", f"{keys.prefix(p)}l:{type}", "-inf", now, "BYSCORE", "LIMIT", 0, limit,
              "WITHSCORES") for p in range(keys.partitions)])
        pairs = sorted((float(s), m.decode("utf-8", "surrogateescape"))
                       for reply in got for m, s in reply)[:limit]
        records = self.client.get_many([(self.client.partition_for(f), f) for _, f in pairs],
                                       payload=False)
        return [PageRow(f, int(s), r) for (s, f), r in zip(pairs, records, strict=True)]

    def value_sizes(self, flow_id: str) -> dict[str, int]:
        """Names and sizes of a Flow's values, without reading their bytes."""
        key = self.client.keys.values(self.client.partition_for(flow_id), flow_id)
        names = sorted(n.decode("utf-8", "surrogateescape")
                       for n in self.client.store.batch([("HKEYS", key)])[0])
        if not names:
            return {}
        sizes = self.client.store.batch([("HSTRLEN", key, n) for n in names])
        return {n: int(s) for n, s in zip(names, sizes, strict=True)}

    # -- writes ---------------------------------------------------------------------------

    def requeue(self, record: FlowRecord, to_state: str, reason: str) -> bool:
        """Move one Flow to `to_state`, due now. Until issue 20's rewind is merged only a
        Flow resting in a state (not running, not terminal) can be moved: a signal guarded by
        its current state, so a Flow that moved meanwhile is left alone."""
        if record.terminal:
            raise Unsupported("requeuing a terminal Flow")
        if record.state == RUNNING:
            raise Unsupported("requeuing a running Flow")
        return self.client.signal(record.id, "console.requeue", if_state=record.state,
                                  transition_to=to_state)

    def cancel(self, flow_id: str, reason: str) -> bool:
        return self.client.cancel(flow_id, reason)

    def purge(self, records: Iterable[FlowRecord]) -> int:
        raise Unsupported("purging Flows")

    def bulk(self, action: str, ids: Sequence[str], to_state: str, reason: str) -> BulkResult:
        """Apply `action` to each Flow of `ids` (one Flow failing never stops the rest)."""
        result = BulkResult()
        records = self.client.get_many([(self.client.partition_for(i), i) for i in ids],
                                       payload=False)
        if action == "purge":
            result.done = self.purge(r for r in records if r is not None)
            return result
        for fid, record in zip(ids, records, strict=True):
            if record is None:
                result.skipped += 1
                continue
            try:
                ok = (self.requeue(record, to_state, reason) if action == "requeue"
                      else self.cancel(fid, reason))
            except (FlowError, Unsupported) as exc:
                result.errors.append(f"{fid}: {exc}")
                continue
            result.done += int(ok)
            result.skipped += int(not ok)
        return result
