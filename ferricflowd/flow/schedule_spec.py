"""What a schedule is, and when it fires: the spec, its occurrences, and a fire's plan.

A `Schedule` names the Flow to create (type, state, payload, values, priority) and when:
exactly one of `cron` (5 fields, or 6 with seconds first; evaluated by cronsim in an IANA
`timezone`), `every_ms` (a period aligned to the epoch, or to `start_at_ms` when given) or
`at_ms` (once). Times are integer milliseconds since the epoch, as everywhere in flow/.

Daylight saving time follows Debian cron, as cronsim implements it: a job at a fixed time
(minute and hour fields without `*`) whose local time is skipped by a spring-forward runs
at the first minute after the gap (02:30 runs at 03:00), and one whose local time occurs
twice on a fall-back day runs once, at the first; a job with `*` in the minute or hour field
runs on real time (every 15 minutes stays every 15 minutes across both changes).

`plan()` turns a schedule's stored next due time and the clock into the steps of one fire
(see its docstring for the catch-up rules); the script only checks and applies them.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgpack
from cronsim import CronSim, CronSimError

from .checks import as_bytes, as_values, check_bool, check_int, check_name, check_priority
from .checks import check_state as _check_state
from .errors import InvalidArgument

__all__ = ["MIN_EVERY_MS", "ON_TIME_MS", "OVERLAPS", "FireStep", "Schedule", "iso_ms", "plan"]

OVERLAPS = ("allow", "skip", "buffer_one", "cancel_other")
MIN_EVERY_MS = 1000
# An occurrence fired at most this late still counts as on time: a busy scheduler (10,000
# schedules due in one second) or a restarting daemon does not turn it into a missed one.
ON_TIME_MS = 10_000
# Missed occurrences are counted one by one up to this many per fire (a cron schedule
# stopped for a year is not walked minute by minute).
COUNT_CAP = 1000
MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
          "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
          "@hourly": "0 * * * *"}


@functools.lru_cache(maxsize=256)
def zone(name: str) -> timezone | ZoneInfo:
    """The tzinfo of an IANA name; UTC as datetime's own (cronsim skips DST logic for it)."""
    if name == "UTC":
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise InvalidArgument("timezone", f"unknown IANA time zone {name!r}") from exc


def digest(*parts: object) -> str:
    """As wire.digest (64 bits of blake2b over msgpack), without importing wire and with it
    redis-py: the config loader uses this module, and the supervisor loads redis-py later."""
    packed = msgpack.packb(parts, use_bin_type=True, default=repr)
    return hashlib.blake2b(packed, digest_size=8).hexdigest()


def iso_ms(text: str, tz: str = "UTC") -> int:
    """An ISO 8601 date-time as ms since the epoch; without an offset it is read in `tz`."""
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidArgument("at", f"not an ISO 8601 date-time: {text!r}") from exc
    return datetime_ms(when, tz)


def datetime_ms(when: datetime, tz: str = "UTC") -> int:
    if when.tzinfo is None:
        when = when.replace(tzinfo=zone(tz))
    return round(when.timestamp() * 1000)


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def _dt(ms: int, tz: str) -> datetime:
    return datetime.fromtimestamp(ms / 1000, zone(tz))


@functools.lru_cache(maxsize=8192)
def _cron_next(expr: str, tz: str, after_ms: int) -> int | None:
    """The first occurrence of `expr` strictly after `after_ms` (cached: many schedules
    share an expression and a due time)."""
    try:
        return _ms(next(CronSim(expr, _dt(after_ms, tz))))
    except StopIteration:  # no match within 50 years
        return None


@functools.lru_cache(maxsize=8192)
def _cron_last(expr: str, tz: str, at_or_before_ms: int) -> int | None:
    """The last occurrence at or before `at_or_before_ms`. cronsim's reverse iteration
    starts at the given second when it has a fraction (and before it otherwise), so one ms
    later makes the bound inclusive."""
    try:
        return _ms(next(CronSim(expr, _dt(at_or_before_ms + 1, tz), reverse=True)))
    except StopIteration:
        return None


@dataclass(frozen=True)
class Schedule:
    """A recurring or one-shot Flow; see the module docstring. `id_prefix` (default: the
    name) makes each Flow's id `<id_prefix>:<due_ms>`. `catchup_window_ms`: missed
    occurrences younger than this may fire late (at most one per fire), older ones are
    counted as skipped. `jitter_ms`: each Flow is due up to this much after its occurrence
    (a fixed offset per occurrence, the same in every daemon)."""

    name: str
    type: str
    state: str = "queued"
    cron: str | None = None
    every_ms: int | None = None
    at_ms: int | None = None
    timezone: str = "UTC"
    start_at_ms: int | None = None
    end_at_ms: int | None = None
    jitter_ms: int = 0
    payload: bytes = b""
    values: Mapping[str, bytes] = field(default_factory=dict)
    priority: int = 0
    overlap: str = "allow"
    catchup_window_ms: int = 0
    id_prefix: str | None = None
    paused: bool = False

    def __post_init__(self) -> None:  # fails where the spec is written, naming the field
        check_name("name", self.name)
        check_name("type", self.type)
        _check_state("state", self.state)
        given = [k for k in ("cron", "every_ms", "at_ms") if getattr(self, k) is not None]
        if len(given) != 1:
            what = " and ".join(given) if given else "none"
            raise InvalidArgument("cron" if not given else given[-1],
                                  f"give exactly one of cron, every_ms, at_ms (got {what})")
        if not isinstance(self.timezone, str):
            raise TypeError(f"timezone must be str, not {type(self.timezone).__name__}")
        zone(self.timezone)
        for name in ("start_at_ms", "end_at_ms", "at_ms"):
            check_int(name, getattr(self, name), optional=True)
        if self.every_ms is not None:
            check_int("every_ms", self.every_ms)
            if self.every_ms < MIN_EVERY_MS:
                raise InvalidArgument("every_ms", f"must be at least {MIN_EVERY_MS} ms (1s), "
                                      f"got {self.every_ms}")
        if self.cron is not None:
            object.__setattr__(self, "cron", _check_cron(self.cron, self.timezone))
        if (self.start_at_ms is not None and self.end_at_ms is not None
                and self.end_at_ms < self.start_at_ms):
            raise InvalidArgument("end_at_ms", "is before start_at_ms")
        check_int("jitter_ms", self.jitter_ms)
        check_int("catchup_window_ms", self.catchup_window_ms)
        object.__setattr__(self, "payload", as_bytes("payload", self.payload, allow_none=False))
        object.__setattr__(self, "values", as_values("values", self.values))
        check_priority("priority", self.priority)
        if self.overlap not in OVERLAPS:
            raise InvalidArgument("overlap", f"must be one of {', '.join(OVERLAPS)}, "
                                  f"got {self.overlap!r}")
        if self.id_prefix is not None:
            check_name("id_prefix", self.id_prefix)
        check_bool("paused", self.paused)

    @classmethod
    def stored(cls, **fields: Any) -> Schedule:
        """A spec read back from the store, where it was written checked: built without
        the checks (a cron parse among them), which cost more than firing a one-shot."""
        spec = object.__new__(cls)
        spec.__dict__.update(fields)
        return spec

    # -- identity ------------------------------------------------------------------------

    @property
    def kind(self) -> str:
        return "cron" if self.cron is not None else "every" if self.every_ms is not None else "at"

    @property
    def prefix(self) -> str:
        return self.id_prefix or self.name

    def flow_id(self, due_ms: int) -> str:
        """The id of the Flow of the occurrence due at `due_ms`."""
        return f"{self.prefix}:{due_ms}"

    @functools.cached_property
    def timing_digest(self) -> str:
        """What the stored next due time depends on: a fire computed from another timing
        (an update raced it) is refused."""
        return digest(self.kind, self.cron, self.every_ms, self.at_ms, self.timezone,
                      self.start_at_ms, self.end_at_ms)

    @functools.cached_property
    def digest(self) -> str:
        """The whole spec: an upsert of an identical spec writes nothing."""
        return digest(self.timing_digest, self.type, self.state, self.payload,
                      sorted(self.values.items()), self.priority, self.overlap,
                      self.catchup_window_ms, self.jitter_ms, self.prefix, self.paused)

    def jitter_for(self, due_ms: int) -> int:
        """The occurrence's fixed offset in [0, jitter_ms]: every daemon computes the same."""
        if not self.jitter_ms:
            return 0
        h = hashlib.blake2b(f"{self.name}:{due_ms}".encode(), digest_size=8).digest()
        return int.from_bytes(h, "big") % (self.jitter_ms + 1)

    # -- occurrences ---------------------------------------------------------------------

    def next_after(self, t_ms: int) -> int | None:
        """The first occurrence strictly after `t_ms` (None: no more)."""
        if self.start_at_ms is not None:
            t_ms = max(t_ms, self.start_at_ms - 1)
        if self.at_ms is not None:
            nxt: int | None = self.at_ms if self.at_ms > t_ms else None
        elif self.every_ms is not None:
            anchor = self.start_at_ms or 0
            nxt = anchor if t_ms < anchor else anchor + ((t_ms - anchor) // self.every_ms + 1
                                                          ) * self.every_ms
        else:
            nxt = _cron_next(self.cron, self.timezone, t_ms)  # type: ignore[arg-type]
        if nxt is None or (self.end_at_ms is not None and nxt > self.end_at_ms):
            return None
        return nxt

    def last_at_or_before(self, t_ms: int) -> int | None:
        """The last occurrence at or before `t_ms` (None: none yet)."""
        if self.end_at_ms is not None:
            t_ms = min(t_ms, self.end_at_ms)
        if self.at_ms is not None:
            last: int | None = self.at_ms if self.at_ms <= t_ms else None
        elif self.every_ms is not None:
            anchor = self.start_at_ms or 0
            last = None if t_ms < anchor else anchor + (t_ms - anchor) // self.every_ms * (
                self.every_ms)
        else:
            last = _cron_last(self.cron, self.timezone, t_ms)  # type: ignore[arg-type]
        if last is None or (self.start_at_ms is not None and last < self.start_at_ms):
            return None
        return last

    def first_due(self, now_ms: int) -> int | None:
        """A new (or re-timed) schedule's first occurrence: the next one from now; a
        one-shot keeps its time even when past, so the catch-up rules decide about it."""
        if self.at_ms is not None:
            return self.at_ms
        return self.next_after(now_ms - 1)

    def count(self, start_ms: int, end_ms: int) -> int:
        """Occurrences in [start_ms, end_ms), up to COUNT_CAP for cron."""
        if end_ms <= start_ms:
            return 0
        if self.every_ms is not None:
            first = self.next_after(start_ms - 1)
            return 0 if first is None or first >= end_ms else (
                (end_ms - 1 - first) // self.every_ms + 1)
        n, t = 0, start_ms - 1
        while n < COUNT_CAP:
            nxt = self.next_after(t)
            if nxt is None or nxt >= end_ms:
                break
            n, t = n + 1, nxt
        return n

    def upcoming(self, after_ms: int, n: int = 5) -> list[int]:
        out: list[int] = []
        t = after_ms
        while len(out) < n:
            nxt = self.next_after(t)
            if nxt is None:
                break
            out.append(nxt)
            t = nxt
        return out


def _check_cron(expr: object, tz: str) -> str:
    if not isinstance(expr, str):
        raise TypeError(f"cron must be str, not {type(expr).__name__}")
    text = MACROS.get(expr.strip().lower(), expr.strip())
    if len(text.split()) not in (5, 6):
        raise InvalidArgument("cron", f"{expr!r} is not a cron expression of 5 fields (or 6, "
                              "seconds first)")
    try:
        next(CronSim(text, datetime.now(zone(tz))))
    except (CronSimError, StopIteration) as exc:
        raise InvalidArgument("cron", f"{expr!r} is not a valid cron expression "
                              f"({exc or 'it never matches'})") from None
    return text


@dataclass(frozen=True)
class FireStep:
    """One item of a fire (schedule_fire.lua 'due'): when the schedule's next due is still
    `expect_due`, fire the occurrence `fire_due` (None: fire nothing, e.g. all missed),
    count `skipped` missed occurrences, and make `next_due` the next one (None: done)."""

    expect_due: int
    fire_due: int | None
    catchup: bool
    skipped: int
    next_due: int | None


def plan(spec: Schedule, due: int, now: int, on_time_ms: int = ON_TIME_MS) -> list[FireStep]:
    """The steps of firing a schedule whose stored next occurrence is `due`, at `now`.

    The newest occurrence due by now fires when it is at most `on_time_ms` late. Every
    older one (and the newest too when it is later than that) is missed: the newest missed
    one fires as a catch-up if it is within `catchup_window_ms`, and all others count as
    skipped. So a long outage fires at most one catch-up and the current occurrence, never
    a burst. A `due` still in the future is a plain check (a buffered occurrence may fire)."""
    if due > now:
        return [FireStep(due, None, False, 0, due)]
    newest = spec.last_at_or_before(now)
    if newest is None or newest < due:
        newest = due
    after = spec.next_after(newest)
    window = spec.catchup_window_ms
    if now - newest > on_time_ms:  # everything due is late: at most one catch-up
        if now - newest <= window:
            return [FireStep(due, newest, True, spec.count(due, newest), after)]
        return [FireStep(due, None, False, spec.count(due, newest) + 1, after)]
    if newest == due:
        return [FireStep(due, due, False, 0, after)]
    prev = spec.last_at_or_before(newest - 1)
    if prev is not None and prev >= due and now - prev <= window:
        first = FireStep(due, prev, True, spec.count(due, prev), newest)
    else:
        first = FireStep(due, None, False, spec.count(due, newest), newest)
    return [first, FireStep(newest, newest, False, 0, after)]
