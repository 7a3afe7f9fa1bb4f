"""`[schedules.NAME]` tables of the config: their declared keys, parsed into flow Schedules.

    [schedules.nightly-report]
    type = "report"            # required
    state = "queued"           # default: the first state of the group of that type, or queued
    cron = "0 3 * * *"         # exactly one of cron / every / at
    timezone = "Europe/Berlin" # default UTC
    payload = "full"
    overlap = "skip"
    catchup_window = "1h"

Every problem is a ConfigError naming `schedules.NAME.KEY`, raised before the daemon writes
anything. Environment variables do not set schedules (a schedule is a whole table, not a
tunable). How the daemon applies them: ferricflowd/supervisor/scheduler.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from ferricflowd.flow.errors import ConfigError, InvalidArgument
from ferricflowd.flow.schedule_spec import Schedule, datetime_ms, iso_ms, zone

__all__ = ["SCHEDULE_KEYS", "parse_schedules"]

_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class _Bad(Exception):
    """A value problem, located by the caller."""


@dataclass(frozen=True)
class Key:
    """One key of a [schedules.NAME] table: how it is written, and the Schedule field."""

    kind: str  # shown in errors
    field: str
    parse: Callable[[Any, str], Any]  # (value, the table's timezone) -> the field's value
    desc: str


def _string(value: Any, _: str) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, got {type(value).__name__} {value!r}")
    return value


def _bool(value: Any, _: str) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {value!r}")
    return value


def _integer(value: Any, _: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Bad(f"expected an integer, got {value!r}")
    return value


def _ms(value: Any, _: str) -> int:
    from ferricflowd.config import parse_duration  # config imports this module lazily

    if not isinstance(value, str):
        raise _Bad(f'expected a duration string such as "30s", got {value!r}')
    try:
        return round(parse_duration(value) * 1000)
    except Exception as exc:  # config's own value error: its message says what is wrong
        raise _Bad(str(exc)) from None


def _time(value: Any, tz: str) -> int:
    """An ISO 8601 string or a TOML date-time; without an offset, in the table's timezone."""
    if isinstance(value, datetime):
        return datetime_ms(value, tz)
    if isinstance(value, date):
        return datetime_ms(datetime(value.year, value.month, value.day), tz)
    if isinstance(value, str):
        return iso_ms(value, tz)
    raise _Bad(f"expected an ISO 8601 date-time, got {value!r}")


def _values(value: Any, _: str) -> dict[str, bytes]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _Bad("expected a table of strings, e.g. { region = \"eu\" }")
    return {k: v.encode() for k, v in value.items()}


SCHEDULE_KEYS: dict[str, Key] = {
    "type": Key("string", "type", _string, "Flow type to create (required)."),
    "state": Key("string", "state", _string, "State the Flow starts in."),
    "cron": Key("string", "cron", _string, "Cron expression: 5 fields, or 6 with seconds first."),
    "every": Key("duration", "every_ms", _ms, "A period of at least 1s."),
    "at": Key("date-time", "at_ms", _time, "One-shot time (ISO 8601)."),
    "timezone": Key("string", "timezone", _string, "IANA time zone of cron and local times."),
    "start_at": Key("date-time", "start_at_ms", _time, "No occurrence before this."),
    "end_at": Key("date-time", "end_at_ms", _time, "No occurrence after this."),
    "jitter": Key("duration", "jitter_ms", _ms, "Each Flow is due up to this much later."),
    "payload": Key("string", "payload", lambda v, tz: _string(v, tz).encode(), "Flow payload."),
    "values": Key("table of strings", "values", _values, "Named values of each Flow."),
    "priority": Key("integer", "priority", _integer, "0..2, higher first."),
    "overlap": Key("string", "overlap", _string,
                   "allow, skip, buffer_one or cancel_other (previous Flow not terminal yet)."),
    "catchup_window": Key("duration", "catchup_window_ms", _ms,
                          "A missed occurrence younger than this fires late (at most one)."),
    "id_prefix": Key("string", "id_prefix", _string, "Flow ids are <id_prefix>:<due_ms>."),
    "paused": Key("boolean", "paused", _bool, "Declared paused (applied when it changes)."),
}
_FIELD_KEY = {k.field: name for name, k in SCHEDULE_KEYS.items()}
_WHEN = ("cron", "every", "at")


def parse_schedules(file: str, tables: object,
                    initial_states: Mapping[str, str]) -> tuple[Schedule, ...]:
    """The [schedules] table as Schedules; `initial_states` maps a Flow type to the first
    state of its group (the default `state`)."""
    if not isinstance(tables, dict):
        raise ConfigError(file, "schedules", "expected a table [schedules.NAME]")
    return tuple(_parse_one(file, name, table, initial_states)
                 for name, table in tables.items())


def _parse_one(file: str, name: str, table: object,
               initial_states: Mapping[str, str]) -> Schedule:
    where = f"schedules.{name}"
    if not _NAME_RE.fullmatch(name):
        raise ConfigError(file, where, "schedule names use letters, digits, '_', '.' and '-' "
                          "(at most 128)")
    if not isinstance(table, dict):
        raise ConfigError(file, where, f"expected a table [{where}]")
    for key in table:
        if key not in SCHEDULE_KEYS:
            raise ConfigError(file, f"{where}.{key}", "unknown key; known: "
                              + ", ".join(SCHEDULE_KEYS))
    given = [k for k in _WHEN if k in table]
    if len(given) != 1:
        key = given[-1] if given else "cron"
        got = " and ".join(given) if given else "none"
        raise ConfigError(file, f"{where}.{key}",
                          f"give exactly one of cron, every, at (got {got})")
    if "type" not in table:
        raise ConfigError(file, f"{where}.type", "missing; every schedule needs a type")
    tz = table.get("timezone", "UTC")
    try:  # first: the date-time keys are read in it
        zone(_string(tz, ""))
    except (_Bad, InvalidArgument) as exc:
        raise ConfigError(file, f"{where}.timezone", str(exc).split(": ", 1)[-1]) from None
    fields: dict[str, Any] = {"name": name}
    for key, raw in table.items():
        spec = SCHEDULE_KEYS[key]
        try:
            fields[spec.field] = spec.parse(raw, tz)
        except (_Bad, InvalidArgument) as exc:
            problem = exc.args[0] if isinstance(exc, _Bad) else str(exc).split(": ", 1)[-1]
            raise ConfigError(file, f"{where}.{key}", problem) from None
    fields.setdefault("state", initial_states.get(fields["type"], "queued"))
    try:
        return Schedule(**fields)
    except InvalidArgument as exc:
        key = _FIELD_KEY.get(exc.argument, exc.argument)
        raise ConfigError(file, f"{where}.{key}", str(exc).split(": ", 1)[-1]) from None
    except TypeError as exc:
        raise ConfigError(file, where, str(exc)) from None
