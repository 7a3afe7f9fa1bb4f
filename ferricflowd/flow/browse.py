"""Browse: a type's Flows in any state, page by page, and the stuck ones.

A mixin of FlowClient (like `Reads`). Every Flow at rest sits in one sorted set of its
partition: due Flows by due time (one per state and priority), parked parents by when they
parked, running Flows by lease deadline, terminal Flows by end time (see lua/_lib.lua). A
page is one `browse.lua` call per partition in one round trip: each call enters its indexes
at the cursor by rank and reads at most a budget of entries, so a page costs the same on the
first and the millionth Flow. The cursor is the (score, member, partition) of the last entry
a page covered, so Flows that leave an index (requeued, purged, claimed) never shift it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, fields
from typing import Any

import msgpack

from .checks import check_int, check_name, check_names
from .errors import InvalidArgument
from .keys import PRIORITIES, KeySpace
from .records import RUNNING, TERMINAL_STATES, FlowRecord, record_fields
from .store import Call, Store
from .wire import digest, raise_item

ORDERS = ("oldest", "newest")
# Entries one partition's call may examine for a page when record filters leave some out:
# bounds the page's work; a page may then hold fewer matches than asked (as SCAN does).
SCAN_BUDGET = 500


@dataclass(frozen=True)
class FlowFilter:
    """Which Flows of a type: `states` (none = every state, `running` and the terminal
    statuses included) and the criteria below, all of which must hold. Times are epoch ms;
    `*_before` is exclusive, `*_after` inclusive. Due times exist only for Flows at rest and
    due (a due filter leaves out running, parked and terminal Flows); a terminal Flow's
    updated time is when it ended. `error_contains` is a case-insensitive (ASCII) substring
    of the last error; `min_attempts` compares the attempt number in the current state."""

    states: tuple[str, ...] = ()
    due_before_ms: int | None = None
    due_after_ms: int | None = None
    updated_before_ms: int | None = None
    updated_after_ms: int | None = None
    min_attempts: int | None = None
    error_contains: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "states", tuple(check_names("states", self.states)))
        for f in fields(self)[1:6]:
            check_int(f.name, getattr(self, f.name), optional=True)
        if self.error_contains is not None and not isinstance(self.error_contains, str):
            raise TypeError(f"error_contains must be str, not "
                            f"{type(self.error_contains).__name__}")

    @classmethod
    def of(cls, state: str | None = None, states: Sequence[str] | None = None,
           **criteria: Any) -> FlowFilter:
        """FlowFilter(states=[state] or states, **criteria): the keyword form of the handles."""
        if state is not None and states is not None:
            raise TypeError("pass state or states, not both")
        unknown = sorted(set(criteria) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown filter argument(s): {', '.join(unknown)}")
        return cls(states=(state,) if state is not None else tuple(states or ()), **criteria)

    @property
    def record_filters(self) -> bool:
        """Whether records must be read to decide (not only the indexes' scores)."""
        return bool(self.min_attempts is not None or self.error_contains
                    or (self.updated_before_ms is not None or self.updated_after_ms is not None)
                    and any(s not in TERMINAL_STATES for s in self.states or ("",)))

    def bounded(self, updated_before_ms: int) -> FlowFilter:
        """This filter, limited to Flows last updated before `updated_before_ms` (a bulk
        run's snapshot: what it changes itself, or what changes meanwhile, is left alone)."""
        mine = self.updated_before_ms
        bound = updated_before_ms if mine is None else min(mine, updated_before_ms)
        return FlowFilter(**{**self.__dict__, "updated_before_ms": bound})


@dataclass(frozen=True)
class BrowsePage:
    """One page: (partition, record) pairs in order (records carry no payload), and the
    cursor to pass for the next page (None: nothing is left). A page whose filters left
    out most entries may hold fewer than asked, even none, with a cursor to go on."""

    items: list[tuple[int, FlowRecord]]
    cursor: str | None
    examined: int

    @property
    def records(self) -> list[FlowRecord]:
        return [r for _, r in self.items]


@dataclass(frozen=True)
class RunningFlow:
    """A leased Flow: who holds it, since when (its current claim), until when."""

    id: str
    type: str
    state: str
    worker: str
    claimed_at_ms: int
    lease_deadline_ms: int
    partition: int


# One index a page reads: kind (due, parked, running, terminal), state, score range.
_Index = tuple[str, str, int | None, int | None]


class Browse:
    """The browse commands of FlowClient."""

    # Provided by FlowClient.
    store: Store
    keys: KeySpace

    def browse(self, type: str, filter: FlowFilter | None = None, *, order: str = "oldest",
               limit: int = 100, cursor: str | None = None) -> BrowsePage:
        """One page of the Flows of `type` that match `filter`, oldest first by index time
        (due time, parked since, lease deadline or end time), or newest first."""
        check_name("type", type)
        filter = filter or FlowFilter()
        if not isinstance(filter, FlowFilter):
            raise TypeError(f"filter must be a FlowFilter, not {type(filter).__name__}")
        return self._page(type, self._indexes(type, filter), filter, order, limit, cursor,
                          digest(type, filter, order))

    def browse_all(self, type: str, filter: FlowFilter | None = None, *,
                   order: str = "oldest", page: int = 200) -> Iterator[tuple[int, FlowRecord]]:
        """Every matching (partition, record), page after page."""
        cursor: str | None = None
        while True:
            got = self.browse(type, filter, order=order, limit=page, cursor=cursor)
            yield from got.items
            if got.cursor is None:
                return
            cursor = got.cursor

    def count_matching(self, type: str, filter: FlowFilter | None = None) -> int:
        """How many Flows of `type` match: from the indexes alone (ZCOUNT) when the filter
        needs no record, else by browsing them all."""
        check_name("type", type)
        filter = filter or FlowFilter()
        if filter.record_filters:
            return sum(1 for _ in self.browse_all(type, filter, page=SCAN_BUDGET))
        keys = self.keys
        commands = [("ZCOUNT", key, _bound(lo, "-inf"), _bound(hi, "+inf"))
                    for kind, state, lo, hi in self._indexes(type, filter)
                    for p in range(keys.partitions) for key in _keys(keys, p, type, kind, state)]
        return sum(int(n) for n in self.store.batch(commands))

    def stuck(self, type: str, *, due_for_ms: int = 300_000, parked_for_ms: int | None = None,
              now_ms: int | None = None, limit: int = 100, cursor: str | None = None,
              ) -> BrowsePage:
        """Running Flows whose lease expired, Flows due for longer than `due_for_ms`, and
        (with `parked_for_ms`) parents parked that long, oldest first."""
        check_name("type", type)
        check_int("due_for_ms", due_for_ms)
        check_int("parked_for_ms", parked_for_ms, optional=True)
        now = self.server_ms() if now_ms is None else now_ms
        indexes: list[_Index] = [("running", "", None, now - 1)]
        for state in self.resting_states(type):
            indexes.append(("due", state, None, now - due_for_ms))
            if parked_for_ms is not None:
                indexes.append(("parked", state, None, now - parked_for_ms))
        return self._page(type, indexes, FlowFilter(), "oldest", limit, cursor,
                          digest("stuck", type, due_for_ms, parked_for_ms))

    def resting_states(self, type: str) -> list[str]:
        """The states (not running, not terminal) Flows of `type` have rested in."""
        keys = self.keys
        got = self.store.batch([("SMEMBERS", keys.states(p, type))
                                for p in range(keys.partitions)])
        found = {s.decode() for members in got for s in members}
        return sorted(found - {RUNNING, *TERMINAL_STATES})

    def running(self, type: str, *, limit: int = 10, scan: int = 1000) -> list[RunningFlow]:
        """The longest-running Flows of `type` (earliest claim first), among the `scan`
        soonest lease deadlines of each partition (running Flows are few: at most the
        workers' concurrency)."""
        check_name("type", type)
        check_int("limit", limit, low=1)
        keys = self.keys
        ids = self.store.batch([("ZRANGE", keys.leases(p, type), 0, scan - 1)
                                for p in range(keys.partitions)])
        refs = [(p, fid.decode("utf-8", "surrogateescape")) for p, members in enumerate(ids)
                for fid in members]
        blobs = self.store.batch([("GET", keys.flow(p, fid)) for p, fid in refs])
        out = []
        for (p, fid), blob in zip(refs, blobs, strict=True):
            raw = record_fields(blob)
            token = raw.get(b"token", b"").decode("utf-8", "replace")
            # A lease token is "<worker id>:<claim time ms>:<fencing>" (grant in _lib.lua).
            worker, _, rest = token.rsplit(":", 1)[0].rpartition(":")
            if raw.get(b"state") != b"running" or not rest.isdigit():
                continue
            out.append(RunningFlow(fid, type,
                                   raw.get(b"run_state", b"").decode(), worker, int(rest),
                                   int(raw.get(b"deadline", 0)), p))
        out.sort(key=lambda f: (f.claimed_at_ms, f.id))
        return out[:limit]

    def finished_since(self, type: str, since_ms: int) -> dict[str, int]:
        """How many Flows of `type` ended (per terminal status) at or after `since_ms`."""
        check_name("type", type)
        keys = self.keys
        got = self.store.batch([("ZCOUNT", keys.terminal(p, type, s), since_ms, "+inf")
                                for s in TERMINAL_STATES for p in range(keys.partitions)])
        n = keys.partitions
        return {s: sum(int(x) for x in got[i * n:(i + 1) * n])
                for i, s in enumerate(TERMINAL_STATES)}

    def server_ms(self) -> int:
        """The store's clock (the engine's leases and due times are on it)."""
        sec, usec = self.store.execute(lambda r: r.time())
        return int(sec) * 1000 + int(usec) // 1000

    # -- the page ----------------------------------------------------------------------------

    def _indexes(self, type: str, filter: FlowFilter) -> list[_Index]:
        states = filter.states or (*self.resting_states(type), RUNNING, *TERMINAL_STATES)
        due = filter.due_before_ms is not None or filter.due_after_ms is not None
        out: list[_Index] = []
        for state in dict.fromkeys(states):
            if state in TERMINAL_STATES:
                if not due:
                    out.append(("terminal", state, filter.updated_after_ms,
                                _before(filter.updated_before_ms)))
            elif state == RUNNING:
                if not due:
                    out.append(("running", "", None, None))
            else:
                out.append(("due", state, filter.due_after_ms, _before(filter.due_before_ms)))
                if not due:
                    out.append(("parked", state, None, None))
        return out

    def _page(self, type: str, indexes: list[_Index], filter: FlowFilter, order: str,
              limit: int, cursor: str | None, query: str) -> BrowsePage:
        """One round trip: browse.lua in every partition, merged. `query` names what the
        cursor belongs to."""
        if order not in ORDERS:
            raise InvalidArgument("order", f"must be one of {', '.join(ORDERS)}")
        check_int("limit", limit, low=1)
        desc = order == "newest"
        at = _decode_cursor(cursor, query) if cursor is not None else None
        budget = max(limit, SCAN_BUDGET) if filter.record_filters else limit
        needle = (filter.error_contains or "").encode().lower()
        flat = [part for kind, state, lo, hi in indexes
                for part in (kind, state, _opt(lo), _opt(hi))]
        keys = self.keys
        calls = []
        for p in range(keys.partitions):
            # An entry equal to the cursor's (score, member) is after it in the partitions
            # after the cursor's (the order is score, member, partition).
            incl = at is not None and (p < at[2] if desc else p > at[2])
            calls.append(Call("browse", keys.prefix(p), [
                "", type, "desc" if desc else "asc", "" if at is None else at[0],
                b"" if at is None else at[1], "1" if incl else "0", limit, budget,
                _opt(filter.updated_before_ms), _opt(filter.updated_after_ms),
                _opt(filter.min_attempts), needle, len(indexes), *flat]))
        return _merge(self.store.call_many(calls, mutating=False), desc, limit, query)


def _merge(replies: Sequence[Any], desc: bool, limit: int, query: str) -> BrowsePage:
    """The page across partitions: every match up to the nearest partition frontier, in
    order, at most `limit`; the cursor where it ends."""
    frontiers = []
    matches = []
    examined = 0
    for p, reply in enumerate(replies):
        exhausted, fscore, fmember, seen, *flat = raise_item(reply, None)
        examined += int(seen)
        if not int(exhausted):
            frontiers.append((int(fscore), fmember, p))
        for i in range(0, len(flat), 4):
            matches.append(((int(flat[i]), flat[i + 1], p), flat[i + 3]))
    frontier = (max if desc else min)(frontiers) if frontiers else None
    if frontier is not None:
        matches = [m for m in matches if (m[0] >= frontier if desc else m[0] <= frontier)]
    matches.sort(key=lambda m: m[0], reverse=desc)
    if len(matches) > limit:
        matches = matches[:limit]
        frontier = matches[-1][0]
    items = [(key[2], _record(key[1], raw)) for key, raw in matches]
    cursor = None if frontier is None else _encode_cursor(frontier, query)
    return BrowsePage(items, cursor, examined)


def _record(member: bytes, blob: bytes) -> FlowRecord:
    raw = record_fields(blob)
    raw.pop(b"pb", None)
    raw[b"payload"] = b""  # listings carry no payloads (get() reads one)
    return FlowRecord.from_hash(member.decode("utf-8", "surrogateescape"), raw, {})


def _keys(keys: KeySpace, p: int, type: str, kind: str, state: str) -> list[str]:
    if kind == "due":
        return [keys.due(p, type, state, prio) for prio in PRIORITIES]
    if kind == "parked":
        return [keys.parked(p, type, state)]
    if kind == "running":
        return [keys.leases(p, type)]
    return [keys.terminal(p, type, state)]


def _before(ms: int | None) -> int | None:
    """An exclusive upper time as the inclusive score bound the scripts take."""
    return None if ms is None else ms - 1


def _opt(value: int | None) -> str | int:
    return "" if value is None else value


def _bound(value: int | None, unbounded: str) -> str | int:
    return unbounded if value is None else value


def _encode_cursor(key: tuple[int, bytes, int], query: str) -> str:
    packed = msgpack.packb([1, query, key[0], key[1], key[2]], use_bin_type=True)
    return base64.urlsafe_b64encode(packed).decode().rstrip("=")


def _decode_cursor(cursor: str, query: str) -> tuple[int, bytes, int]:
    """A cursor of this query (type, states, filters, order), or InvalidArgument."""
    if not isinstance(cursor, str):
        raise TypeError(f"cursor must be str, not {type(cursor).__name__}")
    try:
        data = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        version, of, score, member, partition = msgpack.unpackb(data, raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise InvalidArgument("cursor", "is not a browse cursor") from exc
    if version != 1 or of != query:
        raise InvalidArgument("cursor", "belongs to another query (type, states, filters or "
                              "order differ)")
    return int(score), bytes(member), int(partition)

