"""Argument checks shared by every public entry point of flow/.

Each check names the argument it rejects (`InvalidArgument(argument, problem)` or a
`TypeError` for a wrong type), so a caller learns which of its arguments was wrong. The
engine's vocabulary of reserved states lives in records.py; these checks apply it.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from .errors import InvalidArgument
from .records import RESERVED_STATES

NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
MAX_ID_BYTES = 8192


def check_name(argument: str, value: object) -> str:
    """Types, states and signal names: 1-128 of [A-Za-z0-9_.-]."""
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be str, not {type(value).__name__}")
    if not NAME_RE.match(value):
        raise InvalidArgument(argument, f"{value!r} is not 1-128 characters of A-Z a-z 0-9 _ . -")
    return value


def check_state(argument: str, value: object) -> str:
    """A state a Flow may rest in: a name, and not one the engine reserves."""
    state = check_name(argument, value)
    if state in RESERVED_STATES:
        raise InvalidArgument(argument, f"{state!r} is reserved by the engine")
    return state


def check_id(argument: str, value: object) -> str:
    """Flow ids: any non-empty str up to 8 KiB of UTF-8 (spaces and unicode allowed)."""
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be str, not {type(value).__name__}")
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidArgument(argument, "must be encodable as UTF-8") from exc
    if size == 0 or size > MAX_ID_BYTES:
        raise InvalidArgument(argument, f"must be 1..{MAX_ID_BYTES} bytes of UTF-8, got {size}")
    return value


def check_names(argument: str, values: object, *, states: bool = False) -> list[str]:
    """A list (or other iterable, not a str) of names; each checked like check_name."""
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise TypeError(f"{argument} must be a list of names, not {type(values).__name__}")
    check = check_state if states else check_name
    return [check(argument, v) for v in values]


def check_value_names(argument: str, names: object) -> list[str]:
    """Names of values to read: a list (not a str) of non-empty str."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise TypeError(f"{argument} must be a list of value names, not {type(names).__name__}")
    out = list(names)
    for name in out:
        if not isinstance(name, str) or not name:
            raise InvalidArgument(argument, f"value names must be non-empty str, got {name!r}")
    return out


def check_int(name: str, value: object, *, low: int = 0, optional: bool = False) -> int | None:
    """An int (not a bool) >= `low`; None passes when `optional`. Names `name` otherwise."""
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be int, not {type(value).__name__}")
    if value < low:
        raise InvalidArgument(name, f"must be >= {low}, got {value}")
    return value


def check_bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be bool, not {type(value).__name__}")
    return value


def check_priority(name: str, value: object, *, optional: bool = False) -> int | None:
    if value is None and optional:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value not in (0, 1, 2):
        raise InvalidArgument(name, f"must be 0, 1 or 2, got {value!r}")  # 1.0 too: a key part
    return value


def as_bytes(name: str, value: object, *, allow_none: bool = True) -> bytes | None:
    """bytes stay, str is UTF-8 encoded, None passes when allowed; anything else is an error."""
    if value is None and allow_none:
        return None
    if isinstance(value, bytes):
        return value
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    if isinstance(value, str):
        return value.encode("utf-8")
    raise TypeError(f"{name} must be bytes or str, not {type(value).__name__}")


def as_values(name: str, values: Mapping[str, object] | None) -> dict[str, bytes]:
    """Named values as {non-empty str: bytes}; None is no values."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise TypeError(f"{name} must be a mapping of name to bytes, not {type(values).__name__}")
    out: dict[str, bytes] = {}
    for key, data in values.items():
        if not isinstance(key, str) or not key:
            raise InvalidArgument(name, f"value names must be non-empty str, got {key!r}")
        out[key] = as_bytes(f"{name}[{key!r}]", data, allow_none=False)  # type: ignore[assignment]
    return out


def delay_to_run_at(delay_ms: object) -> int:
    """`delay_ms` (a number of milliseconds >= 0) from now, as an absolute run_at_ms."""
    if not isinstance(delay_ms, (int, float)) or isinstance(delay_ms, bool):
        raise TypeError(f"delay_ms must be int or float milliseconds, not "
                        f"{type(delay_ms).__name__}")
    if not delay_ms >= 0 or delay_ms == float("inf"):  # nan and inf too
        raise InvalidArgument("delay_ms", f"must be a finite number >= 0, got {delay_ms!r}")
    return int(time.time() * 1000) + int(delay_ms)


def check_flow_fields(flow_id: object, type: object, state: object, partition_key: object,
                      priority: object, *, known: set[tuple[str, str]] | None = None) -> None:
    """What every new Flow is checked for, each error naming its field. `known` holds the
    (type, state) pairs found valid before: a batch repeats the same few, checked once."""
    check_id("id", flow_id)
    pair = (type, state)
    if known is None or not (isinstance(type, str) and isinstance(state, str)
                             and pair in known):
        check_name("type", type)
        check_state("state", state)
        if known is not None and len(known) < 1000:
            known.add(pair)  # type: ignore[arg-type]  # both checked str just above
    if partition_key is not None:
        check_id("partition_key", partition_key)
    check_priority("priority", priority)


@dataclass(frozen=True)
class Limits:
    """The size limits of a namespace's client: a payload, result or error over
    `max_payload_bytes` belongs in a named value; a value over `max_value_bytes` nowhere."""

    max_payload_bytes: int = 1 << 20
    max_value_bytes: int = 16 << 20

    def payload(self, data: bytes, name: str = "payload") -> None:
        if len(data) > self.max_payload_bytes:
            hint = "" if name == "error" else " (put large data in values)"
            raise InvalidArgument(name, f"{len(data)} bytes is over the limit of "
                                  f"{self.max_payload_bytes}{hint}")

    def values(self, values: Mapping[str, bytes]) -> None:
        for name, data in values.items():
            if len(data) > self.max_value_bytes:
                raise InvalidArgument(f"values[{name!r}]", f"{len(data)} bytes is over the "
                                      f"limit of {self.max_value_bytes}")
