"""What a handler returns: an explicit outcome value.

`None` (and any storable value) means complete for queue handlers; workflow handlers return
one of these. Outcomes are plain frozen values; the worker turns them into store commands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from .checks import as_bytes, as_values, check_int, check_priority, delay_to_run_at


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
# What each stored outcome kind counts as, in a Runner's statistics and the daemon's
# ferricflowd_flows_<name>_total counters. "exhausted" is a retry the policy turned into a
# failure; "stale" and "error" (outcomes the store rejected) count as neither.
COUNTED_AS: Mapping[str, str] = MappingProxyType({
    "complete": "completed", "transition": "transitioned", "retry": "retried",
    "fail": "failed", "exhausted": "failed"})


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
