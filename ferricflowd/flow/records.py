"""What the store hands back: Flow records, history events, statistics, claimed jobs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgpack

# The engine's own states: a claimed Flow rests in RUNNING; the terminal ones end it. No
# handler state may take these names (checks.check_state).
RUNNING = "running"
TERMINAL_STATES = ("completed", "failed", "cancelled")
RESERVED_STATES = frozenset({RUNNING, *TERMINAL_STATES})


# The record's fields by position, as lua/lib/record.lua numbers them (its ID .. SI constants).
# Position 0 holds no field (the engine keeps the id there in memory); "si" is a map of
# signal idempotency key -> digest, read back as fields "si:<key>".
FIELDS = (None, "type", "state", "run_state", "attempt", "ver", "created", "updated", "digest",
          "payload", "due", "fence", "owner", "token", "deadline", "lo", "until", "result",
          "error", "prio", "attempts", "crashes", "parent", "pp", "pb", "root", "corr", "pkey",
          "grp_open", "grp_parked", "grp_res", "grp_err", "grp_done", "grp_ok", "grp_n",
          "grp_wait", "grp_fail", "grp_name", "grp_state", "grp_digest", "si")
_FIELD_KEYS = tuple(f.encode() if f else None for f in FIELDS)


def record_fields(blob: bytes | None) -> dict[bytes, bytes]:
    """A stored record's fields, name -> value as bytes (integers in decimal); {} when the
    record does not exist. The engine keeps each record as one msgpack array of its fields
    by position (FIELDS; false when absent): one GET and one SET per script call, and no
    field names to read or write."""
    if not blob:
        return {}
    out: dict[bytes, bytes] = {}
    # The array stops after its last set field (positions past CORE come only once set).
    for key, v in zip(_FIELD_KEYS, msgpack.unpackb(blob, raw=True), strict=False):
        if key is None or v is None or v is False:
            continue
        if isinstance(v, dict):  # si
            out.update({key + b":" + k: val for k, val in v.items()})
        else:
            out[key] = v if isinstance(v, bytes) else str(v).encode()
    return out


def _s(raw: Mapping[bytes, bytes], name: str) -> str | None:
    v = raw.get(name.encode())
    return v.decode("utf-8", "surrogateescape") if v else None


def _i(raw: Mapping[bytes, bytes], name: str, default: int | None = 0) -> int | None:
    v = raw.get(name.encode())
    return int(v) if v not in (None, b"") else default


@dataclass(frozen=True)
class FlowRecord:
    """One Flow as stored. `state` is `running` while claimed; `run_state` is then the logical
    state. `next_run_at_ms` is None when parked or terminal."""

    id: str
    type: str
    state: str
    run_state: str | None
    payload: bytes
    result: bytes | None
    error: bytes | None
    attempt: int
    attempts_total: int
    fencing_token: int
    version: int
    priority: int
    next_run_at_ms: int | None
    lease_owner: str | None
    lease_token: str | None
    lease_deadline_ms: int | None
    parent_id: str | None
    root_id: str | None
    correlation_id: str | None
    partition_key: str | None
    crash_count: int
    created_at_ms: int
    updated_at_ms: int | None
    terminal_until_ms: int | None
    values: Mapping[str, bytes] = field(default_factory=dict)
    children_group: Mapping[str, str] = field(default_factory=dict)

    @property
    def logical_state(self) -> str:
        return self.run_state if self.state == "running" and self.run_state else self.state

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @classmethod
    def from_hash(cls, flow_id: str, raw: Mapping[bytes, bytes],
                  values: Mapping[str, bytes]) -> FlowRecord:
        group = {k: _s(raw, f"grp_{k}") or "" for k in ("name", "state", "wait", "res", "err")
                 if raw.get(f"grp_{k}".encode())}
        return cls(
            id=flow_id, type=_s(raw, "type") or "", state=_s(raw, "state") or "",
            run_state=_s(raw, "run_state"), payload=raw.get(b"payload", b""),
            # A completion without a result stores none; it reads back as b"".
            result=raw.get(b"result", b"" if raw.get(b"state") == b"completed" else None),
            error=raw.get(b"error"),
            attempt=_i(raw, "attempt", 1) or 1, attempts_total=_i(raw, "attempts") or 0,
            fencing_token=_i(raw, "fence") or 0, version=_i(raw, "ver") or 0,
            priority=_i(raw, "prio") or 0, next_run_at_ms=_i(raw, "due", None),
            lease_owner=_s(raw, "owner"), lease_token=_s(raw, "token"),
            lease_deadline_ms=_i(raw, "deadline", None), parent_id=_s(raw, "parent"),
            root_id=_s(raw, "root"), correlation_id=_s(raw, "corr"),
            partition_key=_s(raw, "pkey"), crash_count=_i(raw, "crashes") or 0,
            created_at_ms=_i(raw, "created") or 0, updated_at_ms=_i(raw, "updated", None),
            terminal_until_ms=_i(raw, "until", None), values=dict(values),
            children_group=group,
        )


@dataclass(frozen=True)
class HistoryEvent:
    """One history entry: the event name, the version it produced, when, and its details."""

    event: str
    version: int
    at_ms: int
    details: Mapping[str, Any]


@dataclass(frozen=True)
class StateStats:
    state: str
    count: int
    due_now: int
    oldest_due_age_ms: int | None


@dataclass(frozen=True)
class FlowStats:
    """Exact counts for one type across all partitions."""

    type: str
    counts: Mapping[str, int]
    running: int
    states: Mapping[str, StateStats]

    @property
    def due_now(self) -> int:
        return sum(s.due_now for s in self.states.values())


class JobFlow(Protocol):
    """`job.flow`: what a handler may do to its own Flow while it holds the lease
    (client.FlowHandle implements it; typed here so records.py needs no client)."""

    id: str
    partition: int

    def spawn_children(self, children: Sequence[Any], *, wait_state: str, wait: str = "all",
                       on_child_failed: str = "fail_parent", group: str = "children") -> bool: ...

    def extend_lease(self, lease_ms: int) -> int: ...

    def put_value(self, name: str, data: bytes, *, override: bool = False) -> None: ...

    def signal(self, flow_id: str, signal: str, **options: Any) -> bool: ...


@dataclass(frozen=True)
class Job:
    """A claimed Flow as a handler sees it. `flow` offers spawn_children, signal,
    extend_lease and put_value for this Flow while the lease is held."""

    id: str
    type: str
    state: str
    # Kept out of repr: a payload or value may hold personal data, and a Job's repr ends up in
    # tracebacks, logs and error reports (Sentry frame locals).
    payload: bytes = field(repr=False)
    attempt: int
    fencing_token: int
    lease_token: str
    lease_deadline_ms: int
    priority: int
    parent_id: str | None
    attempts_total: int
    values: Mapping[str, bytes] = field(repr=False)
    partition: int
    flow: JobFlow = field(repr=False, compare=False)
    crash_count: int = 0
    crash_suspect: bool = False  # one more worker crash would fail it (see runner.Runner)
