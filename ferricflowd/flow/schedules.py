"""Schedules in the store: create, update, pause, resume, trigger, backfill, list, get, delete,
and fire the due ones. `FlowClient.schedules` is the handle.

A schedule is a hash in the partition of its name (lua/schedule_admin.lua lists its fields),
with a queue of active schedules per partition scored by their next due time. Firing is two
steps: read the due schedules (one round trip), then compute each one's occurrences in Python
(schedule_spec.plan: cron needs a cron library, not Lua) and send them to schedule_fire.lua,
which applies an item only if the schedule still expects it (its next due time and timing
digest). So any number of processes may call `fire_due` at once: each occurrence is fired
once, its Flow is `<id_prefix>:<due_ms>`, and a fire that lost the race changes nothing.

Config schedules (`[schedules.NAME]` in the daemon's TOML) are written by `reconcile` and
*declared* by each running daemon (`declare`: the set of names it has, renewed while it runs);
`undeclared` names the config schedules no live daemon declares, for the daemon to retire.
"""

from __future__ import annotations

import random
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import msgpack

from .checks import check_int, check_name
from .errors import InvalidArgument
from .schedule_spec import FireStep, Schedule, plan
from .store import Call
from .wire import digest, opt, pack_values, raise_item, scored

if TYPE_CHECKING:
    from .client import FlowClient

__all__ = ["FireReport", "FireResult", "ScheduleEvent", "ScheduleInfo", "Schedules"]

CALL_ITEMS = 200  # fire items per script call
_NOT_APPLIED = (b"stale", b"gone", b"paused", b"early")
HISTORY = 20  # recent fires get() returns by default
SPEC_CACHE = 100_000  # specs kept by fire_due (one-shots fill it: cleared when over)


@dataclass(frozen=True)
class ScheduleEvent:
    """One entry of a schedule's recent history (newest first): a fire outcome (fired,
    catchup, triggered, backfilled, dup, buffered, overlap, missed, cancelled) or an admin
    change (created, updated, paused, resumed). `detail`: a Flow id or a count."""

    at_ms: int
    due_ms: int | None
    outcome: str
    detail: str


@dataclass(frozen=True)
class ScheduleInfo:
    """A schedule as stored: its spec, whether it is paused, and where it is."""

    spec: Schedule
    partition: int
    origin: str  # "api" or "config"
    paused: bool
    next_due_ms: int | None  # None: done (a one-shot that fired, or past end_at)
    last_due_ms: int | None
    last_flow_id: str | None
    last_fire_ms: int | None
    buffered_due_ms: int | None
    fired: int
    skipped: int
    created_ms: int
    updated_ms: int
    recent: tuple[ScheduleEvent, ...] = ()

    @property
    def name(self) -> str:
        return self.spec.name

    def upcoming(self, n: int = 5) -> list[int]:
        """The next `n` due times (ms), from the stored next one; none while paused."""
        if self.paused or self.next_due_ms is None or n < 1:
            return []
        return [self.next_due_ms, *self.spec.upcoming(self.next_due_ms, n - 1)]


@dataclass(frozen=True)
class FireResult:
    """What one fire did to one occurrence: an outcome of schedule_fire.lua, the
    occurrence's due time, a Flow id or a count, and how late the fire was (store clock)."""

    schedule: str
    outcome: str
    due_ms: int
    detail: str
    lag_ms: int


@dataclass(frozen=True)
class FireReport:
    """A `fire_due` pass: its results, the store's clock, the earliest next due time of any
    schedule (None: nothing scheduled), and whether due schedules were left for another pass."""

    results: list[FireResult]
    now_ms: int
    next_due_ms: int | None
    more: bool
    next_dues: dict[str, int | None] = field(default_factory=dict)  # of schedules it moved


def _int(v: Any) -> int | None:
    return int(v) if v not in (None, b"", "") else None


def _text(v: Any) -> str:
    return v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else str(v or "")


def spec_fields(s: Schedule) -> list[Any]:
    """A spec as the record's field, value pairs (schedule_admin.lua 'put')."""
    return ["type", s.type, "state", s.state, "payload", s.payload, "prio", s.priority,
            "values", pack_values(s.values), "prefix", s.prefix, "id_prefix", opt(s.id_prefix),
            "overlap", s.overlap, "kind", s.kind, "cron", opt(s.cron), "every", opt(s.every_ms),
            "at", opt(s.at_ms), "tz", s.timezone, "start", opt(s.start_at_ms),
            "end", opt(s.end_at_ms), "jitter", s.jitter_ms, "catchup", s.catchup_window_ms]


def spec_of(name: str, raw: dict[bytes, bytes]) -> Schedule:
    """The spec of a stored record (HGETALL); checked when it was written."""
    values = msgpack.unpackb(raw[b"values"], raw=True) if raw.get(b"values") else {}
    return Schedule.stored(
        name=name, type=_text(raw[b"type"]), state=_text(raw[b"state"]),
        cron=_text(raw[b"cron"]) or None, every_ms=_int(raw.get(b"every")),
        at_ms=_int(raw.get(b"at")), timezone=_text(raw[b"tz"]),
        start_at_ms=_int(raw.get(b"start")), end_at_ms=_int(raw.get(b"end")),
        jitter_ms=int(raw[b"jitter"]), payload=raw.get(b"payload", b""),
        values={k.decode(): v for k, v in values.items()}, priority=int(raw[b"prio"]),
        overlap=_text(raw[b"overlap"]), catchup_window_ms=int(raw[b"catchup"]),
        id_prefix=_text(raw.get(b"id_prefix")) or None,
        paused=raw.get(b"decl_paused") == b"1",
    )  # fmt: skip


def info_of(name: str, partition: int, raw: dict[bytes, bytes],
            history: Sequence[bytes] = ()) -> ScheduleInfo:
    recent = []
    for entry in history:
        at, due, outcome, detail = msgpack.unpackb(entry, raw=False,
                                                   unicode_errors="surrogateescape")
        recent.append(ScheduleEvent(int(at), int(due) or None, outcome, str(detail)))
    return ScheduleInfo(
        spec=spec_of(name, raw), partition=partition, origin=_text(raw.get(b"origin")),
        paused=raw.get(b"paused") == b"1", next_due_ms=_int(raw.get(b"next")),
        last_due_ms=_int(raw.get(b"last_due")),
        last_flow_id=_text(raw.get(b"last_id")) or None,
        last_fire_ms=_int(raw.get(b"last_fire")), buffered_due_ms=_int(raw.get(b"buffered")),
        fired=int(raw.get(b"fired") or 0), skipped=int(raw.get(b"skipped") or 0),
        created_ms=int(raw.get(b"created") or 0), updated_ms=int(raw.get(b"updated") or 0),
        recent=tuple(recent),
    )  # fmt: skip


def _results(name: str, events: Sequence[Any], now: int) -> list[FireResult]:
    """An item's flat triples (outcome, due, detail) as FireResults."""
    out = []
    for i in range(0, len(events), 3):
        due = int(events[i + 1] or 0)
        out.append(FireResult(name, _text(events[i]), due, _text(events[i + 2]), now - due))
    return out


def _step_args(name: str, spec: Schedule, step: FireStep) -> list[Any]:
    fire = step.fire_due
    run_at = "" if fire is None else fire + spec.jitter_for(fire)
    return [name, step.expect_due, spec.timing_digest, opt(fire), "1" if step.catchup else "0",
            run_at, step.skipped, opt(step.next_due)]


class Schedules:
    """The schedule commands of one FlowClient (`client.schedules`)."""

    def __init__(self, client: FlowClient) -> None:
        self._client = client
        self._specs: dict[str, tuple[bytes, Schedule]] = {}  # name -> (digest, spec)
        self._offset_ms = 0  # store clock - local clock, from the last fire_due
        self._backlog: dict[int, int] = {}  # partition -> schedules due at the last fire_due

    @property
    def _store(self) -> Any:
        return self._client.store

    def partition_of(self, name: str) -> int:
        return self._client.keys.partition_of(check_name("name", name))

    def _now(self, now_ms: int | None) -> int:
        return now_ms if now_ms is not None else int(time.time() * 1000) + self._offset_ms

    def _admin(self, name: str, op: str, *args: Any, now_ms: int | None = None) -> Any:
        p = self.partition_of(name)
        call = Call("schedule_admin", self._client.keys.prefix(p), [opt(now_ms), op, name, *args])
        return raise_item(self._store.call(call), None)

    # -- create, update, delete -------------------------------------------------------------

    def put(self, spec: Schedule, *, origin: str = "api", mode: str = "put",
            now_ms: int | None = None) -> str:
        """Create or update a schedule: 'created', 'updated' or 'unchanged'. A changed
        timing restarts it from the next occurrence; its history and counters stay.
        `now_ms` overrides the clock (tests, simulations), as in fire_due."""
        check_int("now_ms", now_ms, optional=True)
        if not isinstance(spec, Schedule):
            raise TypeError(f"spec must be a Schedule, not {type(spec).__name__}")
        self._client.limits.payload(spec.payload)
        self._client.limits.values(spec.values)
        fields = spec_fields(spec)
        first = spec.first_due(self._now(now_ms))
        reply = self._admin(spec.name, "put", mode, origin, spec.digest, spec.timing_digest,
                            opt(first), "1" if spec.paused else "0", len(fields) // 2, *fields,
                            now_ms=now_ms)
        return _text(reply)

    def create(self, spec: Schedule) -> bool:
        """Create a schedule; False if the same spec exists already (ScheduleExists if
        another one does)."""
        return self.put(spec, mode="create") == "created"

    def update(self, spec: Schedule) -> bool:
        """Replace an existing schedule's spec (ScheduleNotFound if none); False if equal."""
        return self.put(spec, mode="update") == "updated"

    def delete(self, name: str) -> bool:
        """Delete a schedule (its Flows stay); False if there was none."""
        return _text(self._admin(name, "delete", "")) == "ok"

    def pause(self, name: str) -> bool:
        """Stop firing (trigger and backfill still work); False if already paused."""
        return _text(self._admin(name, "pause")) == "ok"

    def resume(self, name: str) -> bool:
        """Fire again from the next occurrence after now (those missed while paused are not
        caught up); False if it was not paused."""
        for _ in range(3):  # 'stale': the timing changed between the read and the resume
            info = self.get(name, history=0)
            if info is None:
                self._admin(name, "pause")  # raises ScheduleNotFound
                return False
            nxt = info.spec.first_due(int(time.time() * 1000) + self._offset_ms)
            if info.spec.at_ms is not None:
                nxt = info.next_due_ms
            reply = _text(self._admin(name, "resume", info.spec.timing_digest, opt(nxt)))
            if reply != "stale":
                return reply == "ok"
        return False

    # -- reads ----------------------------------------------------------------------------

    def get(self, name: str, *, history: int = HISTORY) -> ScheduleInfo | None:
        """A schedule with its `history` most recent events, or None."""
        check_int("history", history)
        keys, p = self._client.keys, self.partition_of(name)
        cmds: list[tuple[Any, ...]] = [("HGETALL", keys.schedule(p, name))]
        if history:
            cmds.append(("LRANGE", keys.schedule_fires(p, name), 0, history - 1))
        got = self._store.batch(cmds)
        if not got[0]:
            return None
        return info_of(name, p, got[0], got[1] if history else ())

    def list(self) -> list[ScheduleInfo]:
        """Every schedule of the namespace, by name (without history)."""
        keys = self._client.keys
        per_p = self._store.batch([("HKEYS", keys.schedule_names(p))
                                   for p in range(keys.partitions)])
        refs = sorted((_text(n), p) for p, names in enumerate(per_p) for n in names)
        got = self._store.batch([("HGETALL", keys.schedule(p, n)) for n, p in refs])
        return [info_of(n, p, raw) for (n, p), raw in zip(refs, got, strict=True) if raw]

    def next_dues(self, names: Sequence[str]) -> dict[str, int | None]:
        """Each schedule's next due time (ms); None when paused, done or missing."""
        keys = self._client.keys
        got = self._store.batch([("HMGET", keys.schedule(self.partition_of(n), n), "next",
                                  "paused") for n in names])
        return {n: None if paused == b"1" else _int(nxt)
                for n, (nxt, paused) in zip(names, got, strict=True)}

    # -- fire -----------------------------------------------------------------------------

    def trigger(self, name: str) -> list[FireResult]:
        """Fire an occurrence now (its Flow `<id_prefix>:<now_ms>`), with the overlap
        policy; the regular occurrences are not moved. Works while paused."""
        return self._run(name, "trigger", [""])

    def backfill(self, name: str, start_ms: int, end_ms: int, *,
                 limit: int = 1000) -> list[FireResult]:
        """Create the Flows of every occurrence in [start_ms, end_ms] that has none yet
        (overlap does not apply; each is due now). InvalidArgument past `limit` of them."""
        check_int("start_ms", start_ms)
        check_int("end_ms", end_ms)
        check_int("limit", limit, low=1)
        info = self.get(name, history=0)
        if info is None:
            return self._run(name, "backfill", [])  # raises ScheduleNotFound
        dues, t = [], start_ms - 1
        while (nxt := info.spec.next_after(t)) is not None and nxt <= end_ms:
            if len(dues) == limit:
                raise InvalidArgument("end_ms", f"the range has more than {limit} occurrences "
                                      "(narrow it or raise limit)")
            dues.append(nxt)
            t = nxt
        return self._run(name, "backfill", dues) if dues else []

    def _run(self, name: str, how: str, dues: Sequence[Any]) -> list[FireResult]:
        p = self.partition_of(name)
        call = Call("schedule_fire", self._client.keys.prefix(p),
                    ["", "run", name, how, len(dues), *dues])
        now, *items = raise_item(self._store.call(call), None)
        return [r for events in items for r in _results(name, events, int(now))]

    def fire_due(self, limit: int = 500, *, now_ms: int | None = None) -> FireReport:
        """Fire every due schedule (up to `limit` per partition): see the module docstring.
        Safe to run in any number of processes at once. The clock is the store's (TIME),
        or `now_ms` when given."""
        check_int("limit", limit, low=1)
        check_int("now_ms", now_ms, optional=True)
        keys = self._client.keys
        est = self._now(now_ms) + (0 if now_ms is not None else 50)  # the store's, roughly
        cmds: list[tuple[Any, ...]] = [("TIME",)]
        for p in range(keys.partitions):
            # A backlog larger than `limit` (seen by the last pass) is read from a random
            # offset: several processes then fire different schedules instead of racing
            # for the same ones.
            skip = random.randint(0, max(0, self._backlog.get(p, 0) - limit))
            cmds.append(("ZRANGE", keys.schedule_queue(p), "-inf", est, "BYSCORE", "LIMIT",
                         skip, limit, "WITHSCORES"))
            cmds.append(("ZCOUNT", keys.schedule_queue(p), "-inf", est))
        got = self._store.batch(cmds)
        sec, usec = got[0]
        now = int(sec) * 1000 + int(usec) // 1000
        self._offset_ms = now - int(time.time() * 1000)
        if now_ms is not None:
            now = now_ms
        replies = [scored(r) for r in got[1::2]]
        self._backlog = {p: int(n) for p, n in enumerate(got[2::2])}
        due = [(p, _text(m)) for p, reply in enumerate(replies) for m, score in reply
               if score <= now]
        more = any(n > len(r) for n, r in zip(self._backlog.values(), replies, strict=True))
        results: list[FireResult] = []
        moved: dict[str, int | None] = {}
        if due:
            random.shuffle(due)  # several daemons: each starts where the others do not
            results = self._fire(due, now, opt(now_ms), moved)
        return FireReport(results, now, self.next_due(), more, moved)

    def next_due(self) -> int | None:
        """The earliest time (ms, store clock) any schedule needs looking at; None: none."""
        keys = self._client.keys
        heads = self._store.batch([("ZRANGE", keys.schedule_queue(p), 0, 0, "WITHSCORES")
                                   for p in range(keys.partitions)])
        scores = [int(score) for reply in heads for _, score in scored(reply)]
        return min(scores) if scores else None

    def _fire(self, due: list[tuple[int, str]], now: int, clock: str,
              moved: dict[str, int | None]) -> list[FireResult]:
        keys = self._client.keys
        items: dict[int, list[Any]] = defaultdict(list)
        for p, n, spec, nxt in self._due_specs(due):
            if nxt is None:  # done, but an occurrence is buffered: just look at it
                items[p].append([n, "", spec.timing_digest, "", "0", "", 0, ""])
                continue
            for step in plan(spec, nxt, now):
                items[p].append(_step_args(n, spec, step))
        chunks = [(p, rows[i:i + CALL_ITEMS]) for p, rows in items.items()
                  for i in range(0, len(rows), CALL_ITEMS)]
        calls = [Call("schedule_fire", keys.prefix(p), [clock, "due", len(rows),
                                                       *[a for row in rows for a in row]])
                 for p, rows in chunks]
        out: list[FireResult] = []
        for (_, rows), reply in zip(chunks, self._store.call_many(calls), strict=True):
            t, *per_item = raise_item(reply, None)
            for row, events in zip(rows, per_item, strict=True):
                out.extend(_results(row[0], events, int(t)))
                if not events or events[0] not in _NOT_APPLIED:
                    moved[row[0]] = _int(row[7])
        return out

    def _due_specs(self, due: list[tuple[int, str]]) -> list[tuple[int, str, Schedule,
                                                                     int | None]]:
        """(partition, name, spec, next due) of due schedules, in one round trip: the
        digest and next due of those whose spec this client has seen, the whole record of
        the others (a second read only for a spec changed since it was cached)."""
        keys = self._client.keys
        if len(self._specs) > SPEC_CACHE:
            self._specs.clear()
        got = self._store.batch([
            ("HMGET", keys.schedule(p, n), "digest", "next") if n in self._specs
            else ("HGETALL", keys.schedule(p, n)) for p, n in due])
        out, changed = [], []
        for (p, n), reply in zip(due, got, strict=True):
            if isinstance(reply, dict):
                if reply:  # else deleted since the queue was read
                    self._specs[n] = (reply[b"digest"], spec_of(n, reply))
                    out.append((p, n, self._specs[n][1], _int(reply.get(b"next"))))
            elif reply[0] is not None and reply[0] == self._specs[n][0]:
                out.append((p, n, self._specs[n][1], _int(reply[1])))
            elif reply[0] is not None:
                changed.append((p, n))
        if changed:
            for key in changed:
                self._specs.pop(key[1], None)
            out.extend(self._due_specs(changed))
        return out

    # -- config schedules ---------------------------------------------------------------------

    def reconcile(self, specs: Iterable[Schedule], origin: str = "config") -> dict[str, str]:
        """Put every spec whose stored digest or origin differs; name -> outcome
        ('created', 'updated' or 'unchanged'). One read for all, one write per change."""
        keys = self._client.keys
        specs = list(specs)
        got = self._store.batch([("HMGET", keys.schedule(self.partition_of(s.name), s.name),
                                  "digest", "origin") for s in specs])
        out = {}
        for spec, (dig, org) in zip(specs, got, strict=True):
            same = dig == spec.digest.encode() and org == origin.encode()
            out[spec.name] = "unchanged" if same else self.put(spec, origin=origin)
        return out

    def declare(self, declarer: str, names: Iterable[str], ttl_ms: int) -> None:
        """Record that the daemon `declarer` has these config schedules, for `ttl_ms`."""
        check_int("ttl_ms", ttl_ms, low=1)
        keys = self._client.keys
        listed = sorted(set(names))
        dig = digest(*listed)
        expires = int(time.time() * 1000) + self._offset_ms + ttl_ms
        # The set outlives every declaration of it (daemons with one config share it).
        keep = max(3 * ttl_ms, 600_000)
        self._store.batch([("SET", keys.schedule_declared(dig), msgpack.packb(listed), "PX",
                            keep),
                           ("HSET", keys.schedule_declarers, declarer, f"{expires} {dig}")])

    def withdraw(self, declarer: str) -> None:
        """A stopping daemon declares nothing any more."""
        self._store.batch([("HDEL", self._client.keys.schedule_declarers, declarer)])

    def undeclared(self) -> list[str]:
        """Config schedules that no live daemon declares (expired declarations are removed).
        Empty when a declared set cannot be read: retiring is never a guess."""
        keys = self._client.keys
        now = int(time.time() * 1000) + self._offset_ms
        declarers = self._store.batch([("HGETALL", keys.schedule_declarers)])[0]
        live, dead = set(), []
        for who, value in declarers.items():
            expires, dig = _text(value).split(" ", 1)
            if int(expires) > now:
                live.add(dig)
            else:
                dead.append(who)
        cmds: list[tuple[Any, ...]] = [("GET", keys.schedule_declared(d)) for d in sorted(live)]
        cmds += [("HGETALL", keys.schedule_names(p)) for p in range(keys.partitions)]
        if dead:
            cmds.append(("HDEL", keys.schedule_declarers, *dead))
        got = self._store.batch(cmds)
        sets, origins = got[:len(live)], got[len(live):len(live) + keys.partitions]
        if any(s is None for s in sets):
            return []
        declared = {n for s in sets for n in msgpack.unpackb(s, raw=False)}
        return sorted(_text(n) for names in origins for n, org in names.items()
                      if org == b"config" and _text(n) not in declared)

    def retire(self, name: str) -> bool:
        """Delete a config schedule (an API schedule of that name is kept)."""
        return _text(self._admin(name, "delete", "config")) == "ok"
