"""What crosses the wire to the engine scripts: request types and their ARGV, reply decoding.

Each script's header (lua/<name>.lua) says what its ARGV and reply are; this module is the
Python side of those headers, one encoder or decoder per script field layout, so client.py
only decides *what* to send. The hot paths (claim replies, outcome batches, plain creates)
are built without dataclass __init__ calls: see the comments at each.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from functools import cached_property
from typing import Any

import msgpack
import redis.exceptions as rexc

from .checks import (
    as_bytes,
    as_values,
    check_flow_fields,
    check_id,
    check_int,
    check_names,
    check_value_names,
)
from .errors import FlowError, InvalidArgument, error_from_reply
from .outcomes import Complete, Outcome, Retry, Transition
from .records import HistoryEvent, Job, JobFlow

Arg = str | bytes | int | float

# -- requests --------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseRequest:
    """Who takes leases, on what terms: the request of a claim (claim.lua), and of a batch of
    outcomes whose transitions into `states` are leased straight on to the same worker
    (transition.lua, "kept" transitions). `value_max_bytes` None = no cap."""

    worker: str
    states: Sequence[str]
    lease_ms: int
    claim_values: Sequence[str] = ()
    payload_cap: int = 64 << 10
    value_max_bytes: int | None = None

    def __post_init__(self) -> None:  # checked once, where the request is made
        check_id("worker", self.worker)
        states = tuple(check_names("states", self.states))
        if not states:
            raise InvalidArgument("states", "name at least one state")
        object.__setattr__(self, "states", states)
        check_int("lease_ms", self.lease_ms, low=1)
        object.__setattr__(self, "claim_values",
                           tuple(check_value_names("claim_values", self.claim_values)))
        check_int("payload_cap", self.payload_cap, low=1)
        check_int("value_max_bytes", self.value_max_bytes, optional=True)

    @cached_property
    def args(self) -> tuple[Arg, ...]:
        """The lease request as the scripts read it (lease_spec in lua): worker, lease_ms,
        payload_cap, value_max_bytes (0 = no cap), n_states, states..., n_values, names..."""
        return (self.worker, self.lease_ms, self.payload_cap, self.value_max_bytes or 0,
                len(self.states), *self.states, len(self.claim_values), *self.claim_values)


# An outcome batch that keeps no lease: transition.lua reads an empty worker as "none".
NO_LEASE: tuple[Arg, ...] = ("", 0, 0, 0, 0, 0)


@dataclass(frozen=True)
class CreateSpec:
    """One Flow to create (see FlowClient.create)."""

    id: str
    type: str
    state: str
    payload: bytes = b""
    values: Mapping[str, bytes] = field(default_factory=dict)
    partition_key: str | None = None
    run_at_ms: int | None = None
    priority: int = 0
    idempotent: bool = False
    parent_id: str | None = None
    parent_partition: int | None = None
    correlation_id: str | None = None


_new = object.__new__
_SPEC_DEFAULTS = {f.name: f.default for f in fields(CreateSpec) if f.default is not MISSING}


def plain_spec(flow_id: str, type: str, state: str, payload: bytes,
               idempotent: bool) -> CreateSpec:
    """CreateSpec(flow_id, type, state, payload, idempotent=idempotent), every other field
    at its default, built without the frozen dataclass __init__: its twelve
    object.__setattr__ calls were a quarter of a batched enqueue's client CPU, all spent
    before the first item is sent."""
    spec = _new(CreateSpec)
    spec.__dict__.update(_SPEC_DEFAULTS, id=flow_id, type=type, state=state, payload=payload,
                         values={}, idempotent=idempotent)
    return spec


@dataclass(frozen=True)
class ChildSpec:
    """A child to spawn from a handler; it lands in the parent's partition by default."""

    id: str
    type: str
    payload: bytes = b""
    state: str = "queued"
    values: Mapping[str, bytes] = field(default_factory=dict)
    partition_key: str | None = None
    priority: int = 0

    def __post_init__(self) -> None:  # fail where the spec is written, naming the field
        check_flow_fields(self.id, self.type, self.state, self.partition_key, self.priority)
        as_bytes("payload", self.payload, allow_none=False)
        as_values("values", self.values)


# -- encoding ----------------------------------------------------------------------------------

_local = threading.local()


def digest(*parts: object) -> str:
    """What an idempotent repeat is compared by. 64 bits tell two requests for one id apart
    as well as 160 would, and every record keeps one, so it is kept short."""
    try:
        packer = _local.packer
    except AttributeError:  # one Packer per thread: msgpack.packb builds one per call
        packer = _local.packer = msgpack.Packer(use_bin_type=True, default=repr)
    return hashlib.blake2b(packer.pack(parts), digest_size=8).hexdigest()


def create_digest(s: CreateSpec) -> str:
    """What an idempotent repeat of a create is compared by (the record keeps it)."""
    return digest(s.type, s.state, s.payload, sorted(s.values.items()) if s.values else [],
                  s.priority, s.partition_key, s.parent_id)


def opt(value: object) -> str:
    """An optional ARGV field: '' for None."""
    return "" if value is None else str(value)


def pack_values(values: Mapping[str, bytes]) -> bytes:
    """Named values as the scripts read them: a msgpack map, or '' for none."""
    return msgpack.packb(dict(values), use_bin_type=False) if values else b""


def create_args(s: CreateSpec) -> list[Any]:
    """One create.lua item: 7 fields for a plain Flow (the common case, with none of the
    conversions below), 14 with its options (mode '2'/'3')."""
    values = s.values
    dig = create_digest(s)
    if (s.run_at_ms is None and s.parent_id is None and s.parent_partition is None
            and s.partition_key is None and s.correlation_id is None and not values):
        return [s.id, s.type, s.state, s.payload, s.priority, "1" if s.idempotent else "0", dig]
    return [s.id, s.type, s.state, s.payload, s.priority, "3" if s.idempotent else "2",
            dig, opt(s.run_at_ms), opt(s.parent_id), opt(s.parent_partition),
            opt(s.partition_key), "", opt(s.correlation_id), pack_values(values)]


def outcome_args(job: Job, o: Outcome) -> list[Any]:
    """One item of transition.lua, complete.lua, retry.lua or fail.lua for `o`."""
    if isinstance(o, Transition):
        # '' keeps the payload, '=' + bytes sets it (any bytes, b"\0" included)
        return [job.id, job.lease_token, job.fencing_token, o.to_state,
                b"" if o.payload is None else b"=" + o.payload, pack_values(o.values),
                opt(o.run_at_ms), opt(o.priority)]
    head = [job.id, job.lease_token, job.fencing_token]
    if isinstance(o, Complete):
        return [*head, o.result or b"", pack_values(o.values)]
    if isinstance(o, Retry):
        return [*head, o.error, opt(o.run_at_ms)]
    return [*head, o.error]  # Fail


def lease_item(job: Job) -> list[Any]:
    """An item of the scripts that only prove the lease (extend, release): id, token, fencing."""
    return [job.id, job.lease_token, job.fencing_token]


def field_pairs(names: Iterable[Any], values: Iterable[Any]) -> list[Any]:
    """HSET's field, value, field, value, ... arguments."""
    return [part for pair in zip(names, values, strict=True) for part in pair]


# -- decoding ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClaimResult:
    """What a claim got: the jobs, the next due time it saw (None: nothing scheduled),
    whether due work was left behind, and the store's clock."""

    jobs: list[Job]
    next_due_ms: int | None
    more: bool
    now_ms: int


# A claim item's rarely set fields when the store leaves them out (grant in lua).
_NO_EXTRA = (0, b"", 0, (), (), 0, 0)


def decode_job(type: str, partition: int, item: Sequence[Any],
               flow: Callable[[str, int], JobFlow]) -> tuple[Job, list[bytes]]:
    """A claim reply item (claim.lua: 8 fields) as a Job, and the names of what the store
    left out for exceeding a cap (b"" = the payload), for the caller to fetch."""
    fid, state, payload, attempt, fence, token, deadline, extra = item
    prio, parent, total, big, flat, crashes, suspect = extra or _NO_EXTRA
    flow_id = fid.decode("utf-8")
    values = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)} if flat else {}
    # Every field set at once: a frozen dataclass's __init__ sets its 16 fields one
    # object.__setattr__ at a time (2 us, most of a claimed job's client cost).
    job = _new(Job)
    job.__dict__.update(
        id=flow_id, type=type, state=state.decode(), payload=payload,
        attempt=int(attempt), fencing_token=int(fence), lease_token=token.decode(),
        lease_deadline_ms=int(deadline), priority=int(prio),
        parent_id=parent.decode() or None, attempts_total=int(total), values=values,
        partition=partition, flow=flow(flow_id, partition), crash_count=int(crashes),
        crash_suspect=bool(suspect))
    return job, list(big) if big else []


def scored(reply: Sequence[Any]) -> list[tuple[bytes, float]]:
    """A WITHSCORES reply as (member, score) pairs: redis-py pairs it itself (RESP3, and
    RESP2 since 5.x for some commands); a raw reply is flat."""
    if reply and isinstance(reply[0], (list, tuple)):
        return [(m, float(s)) for m, s in reply]
    return [(reply[i], float(reply[i + 1])) for i in range(0, len(reply), 2)]


def decode_history(raw: Sequence[bytes]) -> list[HistoryEvent]:
    """History list entries (msgpack [version, at_ms, event, details]) as events."""
    events = []
    for entry in raw:
        ver, at, name, details = msgpack.unpackb(entry, raw=False,
                                                 unicode_errors="surrogateescape")
        events.append(HistoryEvent(name, int(ver), int(at), details or {}))
    return events


def decode_outbox(entry: bytes) -> tuple[int, Any, Any, Any]:
    """An outbox entry: (target partition, target id, source id, kind); see deliver.lua."""
    target_p, target, source, kind = msgpack.unpackb(entry, raw=False)
    return int(target_p), target, source, kind


def raise_item(reply: Any, flow_id: str | None) -> Any:
    """An item reply of a script (or a whole reply), or raise its typed FlowError."""
    if type(reply) is list or (type(reply) is bytes and reply[:3] != b"ERR"):
        return reply  # the common case (b'ok', a kept Job's fields): nothing to map
    if isinstance(reply, FlowError):  # already mapped by a batch form (item_result)
        raise reply
    if isinstance(reply, rexc.ResponseError):
        raise error_from_reply(str(reply), flow_id)
    if isinstance(reply, bytes) and reply.startswith(b"ERR"):
        raise error_from_reply(reply.decode(), flow_id)
    return reply


def item_result(reply: Any, flow_id: str | None) -> Any:
    """An item reply, or its typed FlowError as a value (batch forms: one bad item never
    sinks the batch)."""
    try:
        return raise_item(reply, flow_id)
    except FlowError as exc:
        return exc
