"""Admin: rewind (requeue) a Flow, and requeue, cancel or purge every Flow a filter matches.

A mixin of FlowClient. One Flow's rewind is one `rewind.lua` call. A bulk operation pages
through the matching Flows with `browse` and acts on each page with one script call per
partition, every item guarded by the state and version the page saw, so a Flow that moved
on in between is skipped, never acted on twice, and never half-done (each item is atomic).
A bulk run only touches Flows last updated before it started (its snapshot): what it
requeues, and what workers finish meanwhile, is not met again further on. Running it again
after an interruption carries on where it stopped; a rate limit keeps it from crowding out
live workers.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .browse import BrowsePage, FlowFilter
from .checks import as_bytes, check_bool, check_id, check_int, check_name, check_state
from .errors import FlowError, InvalidArgument
from .keys import KeySpace
from .records import TERMINAL_STATES, FlowRecord
from .store import Call, Store
from .wire import item_result, opt, raise_item

# Flows acted on per second by default: a 100,000-Flow requeue takes under a minute and
# leaves the store to the workers most of the time (see README, Operator commands).
DEFAULT_RATE = 2_000
DEFAULT_BATCH = 200


@dataclass(frozen=True)
class BulkResult:
    """What a bulk run did: `done` Flows changed; `skipped` changed since the page saw them
    (another actor moved them: nothing to do); `refused` by the engine, per error reply
    (e.g. a live lease, a family conflict); `interrupted` when asked to stop early.
    `snapshot_ms`: only Flows last updated before it were considered. `errors` holds up to
    20 (flow id, message) of the refused ones."""

    action: str
    done: int
    skipped: int
    refused: dict[str, int]
    interrupted: bool
    snapshot_ms: int
    errors: list[tuple[str, str]] = field(default_factory=list)

    @property
    def matched(self) -> int:
        return self.done + self.skipped + sum(self.refused.values())


Progress = Callable[[int, int], None]  # (Flows handled so far, done so far)


class Admin:
    """The operator commands of FlowClient."""

    # Provided by FlowClient.
    store: Store
    keys: KeySpace
    partition_for: Callable[..., int]
    browse: Callable[..., BrowsePage]
    server_ms: Callable[[], int]
    deliver_outbox: Callable[..., int]

    def rewind(self, flow_id: str, *, to_state: str | None = None,
               to_version: int | None = None, run_at_ms: int | None = None,
               reason: str = "", by: str = "api", keep_attempts: bool = False,
               if_state: str | Sequence[str] | None = None, if_version: int | None = None,
               partition_key: str | None = None) -> str:
        """Move a Flow nobody holds (terminal, at rest, or running with an expired lease)
        into `to_state` (default: the state it was in at history version `to_version`, or
        last), due at `run_at_ms` or now; fencing + 1, history `rewound`. Returns the state.
        Raises FlowLeased, FamilyConflict, StaleVersion (`if_version` differs),
        StateMismatch (not in `if_state`), WrongState, FlowNotFound."""
        check_id("flow_id", flow_id)
        guard = [if_state] if isinstance(if_state, str) else list(if_state or [])
        item = self._rewind_item(flow_id, to_state, to_version, run_at_ms, reason, by,
                                 keep_attempts, guard, if_version)
        p = self.partition_for(flow_id, partition_key)
        reply = raise_item(self.store.call(Call("rewind", self.keys.prefix(p),
                                                ["", 1, *item])), flow_id)
        return raise_item(reply[0], flow_id).decode()

    def requeue(self, type: str, filter: FlowFilter, *, to_state: str | None = None,
                run_at_ms: int | None = None, reason: str = "", by: str = "api",
                keep_attempts: bool = False, **bulk: Any) -> BulkResult:
        """Rewind every Flow of `type` that `filter` matches (see rewind); a Flow that is
        leased, or whose family forbids it, is refused and counted, not an error."""
        # The arguments are checked once, before the first page is read.
        self._rewind_item("-", to_state, None, run_at_ms, reason, by, keep_attempts, [], None)

        def item(rec: FlowRecord) -> list[Any]:
            return self._rewind_item(rec.id, to_state, None, run_at_ms, reason, by,
                                     keep_attempts, [rec.state], rec.version)

        return self._bulk("requeue", "rewind", type, filter, item, **bulk)

    def cancel_matching(self, type: str, filter: FlowFilter, *, reason: str = "cancelled",
                        **bulk: Any) -> BulkResult:
        """Cancel every Flow of `type` that `filter` matches (and their unfinished
        children); a running Flow whose lease has not expired is refused."""
        text = as_bytes("reason", reason, allow_none=False)

        def item(rec: FlowRecord) -> list[Any]:
            return [rec.id, text, rec.state, rec.version]

        return self._bulk("cancel", "cancel_matching", type, filter, item, **bulk)

    def purge(self, type: str, filter: FlowFilter, **bulk: Any) -> BulkResult:
        """Delete every terminal Flow of `type` that `filter` matches, with its history,
        values and children list, now (not at the retention). `filter.states` must name
        terminal statuses only."""
        states = filter.states
        if not states or any(s not in TERMINAL_STATES for s in states):
            raise InvalidArgument("states", f"purge takes terminal states only "
                                  f"({', '.join(TERMINAL_STATES)}), got {list(states)}")

        def item(rec: FlowRecord) -> list[Any]:
            return [rec.id, rec.state, rec.version]

        return self._bulk("purge", "purge", type, filter, item, **bulk)

    # -- the bulk loop -----------------------------------------------------------------------

    def _bulk(self, action: str, script: str, type: str, filter: FlowFilter,
              item: Callable[[FlowRecord], list[Any]], *, batch: int = DEFAULT_BATCH,
              rate: float | None = DEFAULT_RATE, order: str = "oldest",
              snapshot_ms: int | None = None, progress: Progress | None = None,
              should_stop: Callable[[], bool] | None = None) -> BulkResult:
        """Page through `filter`'s Flows (as of `snapshot_ms`, default now) and send each
        page's items to `script`, one call per partition, at most `rate` Flows a second."""
        check_name("type", type)
        if not isinstance(filter, FlowFilter):
            raise TypeError(f"filter must be a FlowFilter, not {type(filter).__name__}")
        check_int("batch", batch, low=1)
        if rate is not None and (not isinstance(rate, (int, float)) or not rate > 0):
            raise InvalidArgument("rate", f"must be a number > 0 or None, got {rate!r}")
        snapshot = self.server_ms() if snapshot_ms is None else snapshot_ms
        scoped = filter.bounded(snapshot)
        tally = _Tally(action, snapshot)
        started = time.monotonic()
        cursor: str | None = None
        while True:
            if should_stop is not None and should_stop():
                tally.interrupted = True
                break
            page = self.browse(type, scoped, order=order, limit=batch, cursor=cursor)
            if page.items:
                self._apply(script, page.items, item, tally)
                if progress is not None:
                    progress(tally.handled, tally.done)
            if page.cursor is None:
                break
            cursor = page.cursor
            if rate is not None:
                _pace(started, tally.handled, rate, should_stop)
        return tally.result()

    def _apply(self, script: str, items: list[tuple[int, FlowRecord]],
               item: Callable[[FlowRecord], list[Any]], tally: _Tally) -> None:
        by_partition: dict[int, list[FlowRecord]] = defaultdict(list)
        for p, rec in items:
            by_partition[p].append(rec)
        keys = self.keys
        calls = [Call(script, keys.prefix(p), ["", len(recs), *[a for r in recs for a in item(r)]])
                 for p, recs in by_partition.items()]
        for (_, recs), reply in zip(by_partition.items(), self.store.call_many(calls),
                                    strict=True):
            for rec, one in zip(recs, raise_item(reply, None), strict=True):
                tally.add(rec.id, item_result(one, rec.id))
        if script == "cancel_matching":  # cancelled parents tell children elsewhere
            self.deliver_outbox(partitions=list(by_partition))

    @staticmethod
    def _rewind_item(flow_id: str, to_state: str | None, to_version: int | None,
                     run_at_ms: int | None, reason: str, by: str, keep_attempts: bool,
                     if_states: Sequence[str], if_version: int | None) -> list[Any]:
        if to_state is not None:
            check_state("to_state", to_state)
        check_int("to_version", to_version, low=1, optional=True)
        check_int("run_at_ms", run_at_ms, optional=True)
        check_bool("keep_attempts", keep_attempts)
        check_int("if_version", if_version, optional=True)
        for s in if_states:
            check_name("if_state", s)
        return [flow_id, to_state or "", opt(to_version), opt(run_at_ms),
                as_bytes("reason", reason, allow_none=False),
                as_bytes("by", by, allow_none=False), "1" if keep_attempts else "0",
                ",".join(if_states), opt(if_version)]


class _Tally:
    """A bulk run's counts as it goes."""

    # A Flow that moved on since the page saw it: nothing to do, not a refusal.
    SKIPPED = ("StaleVersion", "StateMismatch", "FlowNotFound")

    def __init__(self, action: str, snapshot_ms: int) -> None:
        self.action, self.snapshot_ms = action, snapshot_ms
        self.done = self.skipped = 0
        self.refused: Counter[str] = Counter()
        self.errors: list[tuple[str, str]] = []
        self.interrupted = False

    @property
    def handled(self) -> int:
        return self.done + self.skipped + sum(self.refused.values())

    def add(self, flow_id: str, result: Any) -> None:
        if not isinstance(result, FlowError):
            self.done += 1
        elif type(result).__name__ in self.SKIPPED:
            self.skipped += 1
        else:
            self.refused[type(result).__name__] += 1
            if len(self.errors) < 20:
                self.errors.append((flow_id, str(result)))

    def result(self) -> BulkResult:
        return BulkResult(self.action, self.done, self.skipped, dict(self.refused),
                          self.interrupted, self.snapshot_ms, list(self.errors))


def _pace(started: float, handled: int, rate: float,
          should_stop: Callable[[], bool] | None) -> None:
    """Sleep until `handled` Flows fit `rate` per second since `started` (waking early to
    honour should_stop)."""
    while True:
        wait = started + handled / rate - time.monotonic()
        if wait <= 0 or (should_stop is not None and should_stop()):
            return
        time.sleep(min(wait, 0.1))
