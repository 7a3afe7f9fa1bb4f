"""Retry and exception policies (stored in the store so every worker applies the same one)."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass

from .checks import NAME_RE
from .errors import InvalidArgument
from .records import RUNNING

BACKOFFS = ("exponential", "fixed", "linear", "none")


@dataclass(frozen=True)
class RetryPolicy:
    """How `retry` outcomes (and mapped exceptions) are scheduled.

    Retry n waits `base_ms`, `base_ms * n` or `base_ms * 2**(n-1)` (fixed, linear,
    exponential), capped at `max_ms` and jittered deterministically by +-`jitter_pct`.
    After `max_retries` the Flow goes to `exhausted_to`. A Flow whose worker process died
    `max_crashes` times while holding it fails instead of being run into the crash again.
    """

    max_retries: int = 3
    backoff: str = "exponential"
    base_ms: int = 1000
    max_ms: int = 30000
    jitter_pct: int = 20
    exhausted_to: str = "failed"
    max_crashes: int = 3

    def __post_init__(self) -> None:
        if not isinstance(self.backoff, str) or self.backoff not in BACKOFFS:
            raise InvalidArgument("backoff", f"must be one of {', '.join(BACKOFFS)}")
        for name in ("max_retries", "base_ms", "max_ms", "jitter_pct", "max_crashes"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(name, f"must be an int >= 0, got {value!r}")
        if self.jitter_pct > 100:
            raise InvalidArgument("jitter_pct", "must be <= 100")
        if not isinstance(self.exhausted_to, str):
            raise TypeError(f"exhausted_to must be str, not {type(self.exhausted_to).__name__}")
        if not NAME_RE.match(self.exhausted_to) or self.exhausted_to == RUNNING:
            raise InvalidArgument("exhausted_to", f"{self.exhausted_to!r} is not a state name "
                                  "(1-128 of A-Z a-z 0-9 _ . -, not 'running')")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


class ExceptionPolicy(enum.Enum):
    """What an exception escaping a handler becomes."""

    RETRY = "retry"  # retry(error="<Type>: <message>") under the RetryPolicy
    FAIL = "fail"  # fail(error=...) at once
    RAISE = "raise"  # leave the Flow untouched; its lease expires (for tests)
