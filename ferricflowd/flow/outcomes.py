"""What a handler returns: an explicit outcome value.

`None` (and any storable value) means complete for queue handlers; workflow handlers return
one of these. Outcomes are plain frozen values; the worker turns them into store commands.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .errors import InvalidArgument


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


def delay_to_run_at(delay_ms: object) -> int:
    """`delay_ms` (a number of milliseconds >= 0) from now, as an absolute run_at_ms."""
    if not isinstance(delay_ms, (int, float)) or isinstance(delay_ms, bool):
        raise TypeError(f"delay_ms must be int or float milliseconds, not "
                        f"{type(delay_ms).__name__}")
    if not delay_ms >= 0 or delay_ms == float("inf"):  # nan and inf too
        raise InvalidArgument("delay_ms", f"must be a finite number >= 0, got {delay_ms!r}")
    return int(time.time() * 1000) + int(delay_ms)


def _set(obj: object, name: str, value: object) -> None:
    object.__setattr__(obj, name, value)  # normalising a frozen dataclass in __post_init__


@dataclass(frozen=True)
class Transition:
    to_state: str
    payload: bytes | None = None
    values: Mapping[str, bytes] = field(default_factory=dict)
    run_at_ms: int | None = None
    priority: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.to_state, str) or not self.to_state:
            raise TypeError("to_state must be a non-empty str")
        _set(self, "payload", as_bytes("payload", self.payload))
        _set(self, "values", as_values("values", self.values))
        check_int("run_at_ms", self.run_at_ms, optional=True)
        check_priority("priority", self.priority, optional=True)


@dataclass(frozen=True)
class Complete:
    result: bytes | None = None
    values: Mapping[str, bytes] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _set(self, "result", as_bytes("result", self.result))
        _set(self, "values", as_values("values", self.values))


@dataclass(frozen=True)
class Fail:
    error: bytes = b""

    def __post_init__(self) -> None:
        _set(self, "error", as_bytes("error", self.error, allow_none=False))


@dataclass(frozen=True)
class Retry:
    error: bytes = b""
    run_at_ms: int | None = None

    def __post_init__(self) -> None:
        _set(self, "error", as_bytes("error", self.error, allow_none=False))
        check_int("run_at_ms", self.run_at_ms, optional=True)


Outcome = Transition | Complete | Fail | Retry
KINDS: dict[type, str] = {Complete: "complete", Transition: "transition", Retry: "retry",
                          Fail: "fail"}


def kind_of(outcome: object) -> str:
    """complete, transition, retry or fail (a subclass's instance too); TypeError otherwise."""
    kind = KINDS.get(type(outcome))
    if kind is not None:
        return kind
    for cls, name in KINDS.items():
        if isinstance(outcome, cls):
            return name
    raise TypeError(f"not an outcome: {outcome!r}")

# The outcomes most handlers return, built once: a frozen dataclass costs ~1.5 us to build
# and check, a good part of a short handler's framework cost. Their `values` is read-only
# because the instances are shared.
_NO_VALUES: Mapping[str, bytes] = MappingProxyType({})
COMPLETE = Complete()
_set(COMPLETE, "values", _NO_VALUES)
_PLAIN_TRANSITIONS: dict[str, Transition] = {}
_PLAIN_MAX = 1024  # distinct target states remembered (a workflow has a handful)


def _plain_transition(to_state: str) -> Transition:
    t = _PLAIN_TRANSITIONS.get(to_state)
    if t is None:
        t = Transition(to_state)
        _set(t, "values", _NO_VALUES)
        if len(_PLAIN_TRANSITIONS) < _PLAIN_MAX:
            _PLAIN_TRANSITIONS[to_state] = t
    return t


def transition(to_state: str, *, payload: bytes | str | None = None,
               values: Mapping[str, bytes] | None = None, run_at_ms: int | None = None,
               delay_ms: int | None = None, priority: int | None = None) -> Transition:
    """Move the Flow to `to_state`, due now (or at `run_at_ms`, or after `delay_ms`)."""
    if (type(to_state) is str and payload is None and values is None and run_at_ms is None
            and delay_ms is None and priority is None):
        return _plain_transition(to_state)
    if delay_ms is not None:
        run_at_ms = delay_to_run_at(delay_ms)
    return Transition(to_state, as_bytes("payload", payload), as_values("values", values),
                      run_at_ms, priority)


def complete(result: bytes | str | None = None, *,
             values: Mapping[str, bytes] | None = None) -> Complete:
    """Finish the Flow successfully with an optional result."""
    if result is None and values is None:
        return COMPLETE
    return Complete(as_bytes("result", result), as_values("values", values))


def fail(error: bytes | str = b"") -> Fail:
    """Fail the Flow at once (the retry policy is not consulted)."""
    return Fail(as_bytes("error", error) or b"")


def retry(error: bytes | str = b"", *, run_at_ms: int | None = None,
          delay_ms: int | None = None) -> Retry:
    """Run the state again later, as the RetryPolicy says (or at `run_at_ms`)."""
    if delay_ms is not None:
        run_at_ms = delay_to_run_at(delay_ms)
    return Retry(as_bytes("error", error) or b"", run_at_ms)
