"""FlowClient: every Flow command, typed in and out.

One method per engine command; batch forms group their items by partition and send one
script call per partition in a single pipeline. Error replies become the typed exceptions of
`errors.py`; store failures become `StoreError`, never a silent success.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

import msgpack
import redis.exceptions as rexc

from .errors import FlowError, InvalidArgument, StoreError, error_from_reply
from .keys import KeySpace
from .outcomes import (
    Complete,
    Fail,
    Outcome,
    Retry,
    Transition,
    as_bytes,
    as_values,
    check_bool,
    check_int,
    check_priority,
    kind_of,
)
from .policy import RetryPolicy
from .records import FlowRecord, FlowStats, HistoryEvent, Job, StateStats, record_fields
from .store import Call, Store

NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,128}$")
RESERVED_STATES = frozenset({"running", "completed", "failed", "cancelled"})
MAX_ID_BYTES = 8192
# Items per script call of a batch command: big enough that the store's fixed cost per call
# is small, small enough that the store runs the first calls of a 1,000-item batch while the
# client still builds the rest (Store.call_many streams them).
BATCH_CALL_ITEMS = 200
DAY_MS = 86_400_000


def check_name(argument: str, value: object) -> str:
    """Types, states and signal names: 1-128 of [A-Za-z0-9_.-]."""
    if not isinstance(value, str):
        raise TypeError(f"{argument} must be str, not {type(value).__name__}")
    if not NAME_RE.match(value):
        raise InvalidArgument(argument, f"{value!r} is not 1-128 characters of A-Z a-z 0-9 _ . -")
    return value


def check_state(argument: str, value: object) -> str:
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


def _opt(value: object) -> str:
    return "" if value is None else str(value)


def _pack(values: Mapping[str, bytes]) -> bytes:
    return msgpack.packb(dict(values), use_bin_type=False) if values else b""


def _check_flow_fields(flow_id: object, type: object, state: object, partition_key: object,
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


_local = threading.local()


def _digest(*parts: object) -> str:
    """What an idempotent repeat is compared by. 64 bits tell two requests for one id apart
    as well as 160 would, and every record keeps one, so it is kept short."""
    try:
        packer = _local.packer
    except AttributeError:  # one Packer per thread: msgpack.packb builds one per call
        packer = _local.packer = msgpack.Packer(use_bin_type=True, default=repr)
    return hashlib.blake2b(packer.pack(parts), digest_size=8).hexdigest()


def _create_digest(s: CreateSpec) -> str:
    """What an idempotent repeat of a create is compared by (the record keeps it)."""
    return _digest(s.type, s.state, s.payload, sorted(s.values.items()) if s.values else [],
                   s.priority, s.partition_key, s.parent_id)


def _raise_item(reply: Any, flow_id: str | None) -> Any:
    """Raise the typed error of an item reply, or return it."""
    if type(reply) is list or (type(reply) is bytes and reply[:3] != b"ERR"):
        return reply  # the common case (b'ok', a kept Job's fields): nothing to map
    if isinstance(reply, FlowError):  # already mapped by a batch form (_item_result)
        raise reply
    if isinstance(reply, rexc.ResponseError):
        raise error_from_reply(str(reply), flow_id)
    if isinstance(reply, bytes) and reply.startswith(b"ERR"):
        raise error_from_reply(reply.decode(), flow_id)
    return reply


def _item_result(reply: Any, flow_id: str | None) -> Any:
    """Return an item reply, or its typed error as a value (batch forms)."""
    try:
        return _raise_item(reply, flow_id)
    except FlowError as exc:
        return exc


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
        _check_flow_fields(self.id, self.type, self.state, self.partition_key, self.priority)
        as_bytes("payload", self.payload, allow_none=False)
        as_values("values", self.values)


@dataclass(frozen=True)
class ClaimResult:
    jobs: list[Job]
    next_due_ms: int | None
    more: bool
    now_ms: int


class FlowClient:
    """A connection to one FerricFlow namespace. Connects lazily on first use."""

    def __init__(self, store: Store, *, namespace: str = "ff", partitions: int | None = None,
                 history_cap: int = 10_000, retention_ms: int = 7 * DAY_MS,
                 max_payload_bytes: int = 1 << 20, max_value_bytes: int = 16 << 20) -> None:
        if not isinstance(store, Store):
            raise TypeError(f"store must be a Store, not {type(store).__name__} (use "
                            "FlowClient.from_url(url) to connect by URL)")
        if not isinstance(namespace, str) or not re.match(r"^[A-Za-z0-9_.\-]{1,64}$", namespace):
            raise InvalidArgument("namespace", f"{namespace!r} is not 1-64 of [A-Za-z0-9_.-]")
        if partitions is not None and (not isinstance(partitions, int) or partitions < 1):
            raise InvalidArgument("partitions", "must be an int >= 1")
        for name, value in (("history_cap", history_cap), ("retention_ms", retention_ms),
                            ("max_payload_bytes", max_payload_bytes),
                            ("max_value_bytes", max_value_bytes)):
            check_int(name, value, low=1)
        self.store = store
        self._checked: set[tuple[str, str]] = set()  # valid (type, state) pairs
        self.namespace = namespace
        self.requested_partitions = partitions
        self.history_cap = history_cap
        self.retention_ms = retention_ms
        self.max_payload_bytes = max_payload_bytes
        self.max_value_bytes = max_value_bytes
        self._keys: KeySpace | None = None
        self._lock = threading.Lock()
        self._policies: set[str] = set()

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "ff", durability: str = "strict",
                 min_replicas: int = 0, partitions: int | None = None,
                 socket_timeout_s: float = 5.0, **options: Any) -> FlowClient:
        if not isinstance(url, str):
            raise TypeError(f"url must be str, not {type(url).__name__}")
        if (not isinstance(socket_timeout_s, (int, float)) or isinstance(socket_timeout_s, bool)
                or not 0 < socket_timeout_s < float("inf")):
            raise InvalidArgument("socket_timeout_s", f"must be a number of seconds > 0, "
                                  f"got {socket_timeout_s!r}")
        check_int("min_replicas", min_replicas)
        if not isinstance(durability, str):
            raise TypeError(f"durability must be str, not {type(durability).__name__}")
        store = Store(url, socket_timeout_s=socket_timeout_s, min_replicas=min_replicas,
                      durability=durability)
        return cls(store, namespace=namespace, partitions=partitions, **options)

    # -- connection ---------------------------------------------------------------------------

    @property
    def keys(self) -> KeySpace:
        if self._keys is None:
            with self._lock:
                if self._keys is None:
                    self._keys = self._setup()
        return self._keys

    def connect(self) -> FlowClient:
        _ = self.keys
        return self

    def _setup(self) -> KeySpace:
        """Fix the partition count at first use and publish per-partition settings. Every
        worker process starts here, so what is already in place is only read: a write
        costs an fsync, and loading the library compiles it again."""
        meta = f"{self.namespace}:meta"
        want = self.requested_partitions or 1

        def setup(r: Any) -> int:
            pipe = r.pipeline(transaction=False)
            pipe.hsetnx(meta, "partitions", want)
            pipe.hget(meta, "partitions")
            return int(pipe.execute()[1])

        have = self.store.execute(setup)
        if self.requested_partitions is not None and have != self.requested_partitions:
            raise InvalidArgument("partitions", f"namespace {self.namespace!r} already has "
                                  f"{have} partitions (asked for {self.requested_partitions})")
        keys = KeySpace(self.namespace, have)
        names = ("part", "history_cap", "retention_ms")

        def publish(r: Any) -> None:
            pipe = r.pipeline(transaction=False)
            for p in range(have):
                pipe.hmget(keys.config(p), names)
            wanted = [(p, self.history_cap, self.retention_ms) for p in range(have)]
            stale = [w for w, got in zip(wanted, pipe.execute(), strict=True)
                     if got != [str(v).encode() for v in w]]
            for w in stale:
                pipe.hset(keys.config(w[0]), mapping=dict(zip(names, w, strict=True)))
            if stale:
                pipe.execute()

        self.store.execute(publish)
        self.store.ensure_library()
        return keys

    def ping(self) -> bool:
        return self.store.ping()

    def close(self) -> None:
        self.store.close()

    def partition_for(self, flow_id: str, partition_key: str | None = None) -> int:
        if partition_key is not None:
            check_id("partition_key", partition_key)
        return self.keys.partition_of(partition_key if partition_key is not None else flow_id)

    def _call(self, script: str, partition: int, args: Sequence[Any]) -> Any:
        return self.store.call(Call(script, self.keys.prefix(partition), args))

    # -- create -------------------------------------------------------------------------------

    def create(self, flow_id: str, type: str, state: str, payload: bytes | str = b"", *,
               values: Mapping[str, bytes] | None = None, partition_key: str | None = None,
               run_at_ms: int | None = None, priority: int = 0, idempotent: bool = False,
               correlation_id: str | None = None) -> bool:
        """Create one Flow; True when created, False for an idempotent repeat."""
        spec = CreateSpec(flow_id, type, state, as_bytes("payload", payload) or b"",
                          as_values("values", values), partition_key, run_at_ms, priority,
                          idempotent, None, None, correlation_id)
        self._validate_create(spec)
        # One call without create_many's grouping and chunking (a third of its client CPU).
        reply = self._call("create", self.partition_for(flow_id, partition_key),
                           ["", 1, *self._create_args(spec)])
        return _raise_item(_raise_item(reply, flow_id)[0], flow_id) == b"ok"

    def create_many(self, specs: Sequence[CreateSpec]) -> list[bool | FlowError]:
        """Create Flows, one script call per partition in one pipeline; a result per item."""
        for spec in specs:  # before anything is sent: a bad item writes nothing
            self._validate_create(spec)
        return self._create_checked(specs)

    def _create_checked(self, specs: Sequence[CreateSpec]) -> list[bool | FlowError]:
        """create_many for specs already validated (by _validate_create or check_plain)."""
        replies = self._batched([(self.partition_for(s.id, s.partition_key), "create", s, s.id)
                                 for s in specs], fields=self._create_args)
        return [r if isinstance(r, FlowError) else r == b"ok" for r in replies]

    def _batched(self, items: Sequence[tuple[int, str, Any, str]],
                 head: Sequence[Any] | Mapping[str, Sequence[Any]] = (),
                 fields: Callable[[Any], list[Any]] | None = None) -> list[Any]:
        """Send per-item commands grouped by (partition, script), at most BATCH_CALL_ITEMS
        items per script call, all in one round trip. An item is (partition, script, its
        ARGV fields, flow id), or with `fields` (partition, script, x, flow id) whose ARGV
        fields are fields(x), built only as its call is sent: the store runs one call while
        the next is built. A call's ARGV is now_ms override, *head (or head[script] for a
        mapping), n, then its items' fields. Returns each item's reply, or its typed
        FlowError as a value (one bad item never sinks the batch)."""
        groups: dict[tuple[int, str], list[int]] = defaultdict(list)
        for i, (partition, script, _, _) in enumerate(items):
            groups[(partition, script)].append(i)
        chunks = [(partition, script, idx[k:k + BATCH_CALL_ITEMS])
                  for (partition, script), idx in groups.items()
                  for k in range(0, len(idx), BATCH_CALL_ITEMS)]

        def calls() -> Iterator[Call]:
            for partition, script, idx in chunks:
                fixed = head.get(script, ()) if isinstance(head, Mapping) else head
                args: list[Any] = ["", *fixed, len(idx)]
                for i in idx:
                    args.extend(fields(items[i][2]) if fields else items[i][2])
                yield Call(script, self.keys.prefix(partition), args)

        results: list[Any] = [None] * len(items)
        for (_, _, idx), reply in zip(chunks, self.store.call_many(calls()), strict=True):
            for i, item in zip(idx, _raise_item(reply, None), strict=True):
                results[i] = _item_result(item, items[i][3])
        return results

    def _validate_create(self, spec: CreateSpec) -> None:
        _check_flow_fields(spec.id, spec.type, spec.state, spec.partition_key, spec.priority,
                           known=self._checked)
        if not isinstance(spec.payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(spec.payload).__name__}")
        self._check_payload(spec.payload)
        self._check_values(spec.values)
        check_int("run_at_ms", spec.run_at_ms, optional=True)
        check_bool("idempotent", spec.idempotent)
        if spec.correlation_id is not None:
            check_id("correlation_id", spec.correlation_id)

    def check_plain(self, flow_id: object, payload: bytes) -> None:
        """What _validate_create checks of a plain_spec item whose type and state are known
        valid: the id and the payload size (a batch's items, without their specs' checks)."""
        check_id("id", flow_id)
        self._check_payload(payload)

    def _check_payload(self, payload: bytes) -> None:
        if len(payload) > self.max_payload_bytes:
            raise InvalidArgument("payload", f"{len(payload)} bytes is over the limit of "
                                  f"{self.max_payload_bytes} (put large data in values)")

    def _check_values(self, values: Mapping[str, bytes]) -> None:
        for name, data in values.items():
            if len(data) > self.max_value_bytes:
                raise InvalidArgument(f"values[{name!r}]", f"{len(data)} bytes is over the "
                                      f"limit of {self.max_value_bytes}")

    def _create_args(self, s: CreateSpec) -> list[Any]:
        values = s.values
        digest = _create_digest(s)
        # A plain job (the common case) needs none of the conversions below, and is sent as
        # 7 fields, not 14 (create.lua: mode '0'/'1' = plain, '2'/'3' = with the options).
        if (s.run_at_ms is None and s.parent_id is None and s.parent_partition is None
                and s.partition_key is None and s.correlation_id is None and not values):
            return [s.id, s.type, s.state, s.payload, s.priority,
                    "1" if s.idempotent else "0", digest]
        return [s.id, s.type, s.state, s.payload, s.priority, "3" if s.idempotent else "2",
                digest, _opt(s.run_at_ms), _opt(s.parent_id), _opt(s.parent_partition),
                _opt(s.partition_key), "", _opt(s.correlation_id), _pack(values)]

    # -- claim --------------------------------------------------------------------------------

    def claim(self, type: str, states: Sequence[str], worker: str, *, lease_ms: int,
              limit: int, claim_values: Sequence[str] = (), payload_cap: int = 64 << 10,
              value_max_bytes: int | None = None, start: int = 0) -> ClaimResult:
        """Lease up to `limit` due Flows, visiting partitions from `start` until filled.

        With several partitions, priority 2 (then 1) work anywhere is claimed before
        priority 0 work: a read-only probe finds the partitions that have it."""
        check_name("type", type)
        states = check_names("states", states)
        if not states:
            raise InvalidArgument("states", "name at least one state")
        check_id("worker", worker)
        check_int("lease_ms", lease_ms, low=1)
        check_int("limit", limit, low=1)
        claim_values = check_value_names("claim_values", claim_values)
        check_int("payload_cap", payload_cap, low=1)
        check_int("value_max_bytes", value_max_bytes, optional=True)
        keys = self.keys
        order = [(start + step) % keys.partitions for step in range(keys.partitions)]
        passes = [(prio, [p for p in order if p in parts])
                  for prio, parts in self._priority_probe(type, states).items()]
        passes.append((0, order))
        jobs: list[Job] = []
        next_due: int | None = None
        more = False
        now = 0
        for min_prio, parts in passes:
            for p in parts:
                if len(jobs) >= limit:
                    return ClaimResult(jobs, next_due, True, now)
                args = ["", type, limit - len(jobs), min_prio,
                        *_lease_args(worker, lease_ms, states, claim_values, payload_cap,
                                     value_max_bytes)]
                reply = _raise_item(self._call("claim", p, args), None)
                now = int(reply[0])
                if int(reply[1]) >= 0:
                    next_due = min(next_due or int(reply[1]), int(reply[1]))
                more = more or bool(reply[2])
                # 8 fields per leased Flow, flat (claim.lua)
                jobs.extend(self._job(type, p, reply[i:i + 8]) for i in range(3, len(reply), 8))
        return ClaimResult(jobs, next_due, more or len(jobs) >= limit, now)

    def _priority_probe(self, type: str, states: Sequence[str]) -> dict[int, set[int]]:
        """Partitions holding due priority-2 and priority-1 work (one pipelined read)."""
        keys = self.keys
        if keys.partitions == 1:
            return {}
        now_ms = int(time.time() * 1000)
        probes = [(prio, p, keys.due(p, type, s, prio)) for prio in (2, 1)
                  for p in range(keys.partitions) for s in states]

        def read(r: Any) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for _, _, key in probes:
                pipe.zcount(key, "-inf", now_ms)
            return pipe.execute()

        found: dict[int, set[int]] = {}
        for (prio, p, _), n in zip(probes, self.store.execute(read), strict=True):
            if n:
                found.setdefault(prio, set()).add(p)
        return dict(sorted(found.items(), reverse=True))

    def _job(self, type: str, partition: int, item: list[Any]) -> Job:
        fid, state, payload, attempt, fence, token, deadline, extra = item
        prio, parent, total, big, flat, crashes, suspect = extra or _NO_EXTRA
        flow_id = fid.decode("utf-8")
        values = {flat[i].decode(): flat[i + 1] for i in range(0, len(flat), 2)} if flat else {}
        if big:  # over a cap: fetched here, outside the claim, so the claim stays small
            names = [b.decode() for b in big if b]
            if b"" in big:
                payload = self._get_many([(partition, flow_id)])[0].payload
            if names:
                values.update(self.get_values(flow_id, names, partition=partition))
        handle = FlowHandle(self, flow_id, partition)
        # Every field set at once: a frozen dataclass's __init__ sets its 16 fields one
        # object.__setattr__ at a time (2 us, most of a claimed job's client cost).
        job = _new(Job)
        job.__dict__.update(
            id=flow_id, type=type, state=state.decode(), payload=payload,
            attempt=int(attempt), fencing_token=int(fence), lease_token=token.decode(),
            lease_deadline_ms=int(deadline), priority=int(prio),
            parent_id=parent.decode() or None, attempts_total=int(total), values=values,
            partition=partition, flow=handle, crash_count=int(crashes),
            crash_suspect=bool(suspect))
        handle.job = job
        return job

    def wait_for_work(self, conn: Any, type: str, states: Sequence[str], timeout_ms: int,
                      rotate: int = 0) -> bool:
        """Block on the wake lists of `states` (BLPOP) for up to `timeout_ms`; True if woken."""
        keys = self.keys
        timeout_s = max(timeout_ms, 1) / 1000.0
        try:
            if self.store.cluster:  # one slot per call: rotate through the partitions
                p = rotate % keys.partitions
                lists = [keys.wake(p, type, s) for s in states]
                timeout_s = max(timeout_s / keys.partitions, 0.05)
            else:
                lists = [keys.wake(p, type, s) for p in range(keys.partitions) for s in states]
            return conn.blpop(lists, timeout=timeout_s) is not None
        except rexc.RedisError as exc:
            raise StoreError(f"{self.store.safe_url}: {exc}") from exc

    # -- outcomes -----------------------------------------------------------------------------

    def apply_outcomes(self, items: Sequence[tuple[Job, Outcome]],
                       keep: KeepLease | None = None, *, checked: bool = False) -> list[Any]:
        """Send outcomes as one pipeline: one script call per (partition, kind).

        Returns per item the reply (b'ok', b'replay', b'scheduled', b'exhausted') or the
        typed FlowError (e.g. StaleLease) as a value. With `keep`, a transition to one of
        its states that is due at once stays with keep.worker: its reply is then the Job
        of the next state, already leased (one store call instead of a transition and a
        claim; the worker runs it next, as a sticky queue does). `checked`: every outcome
        already passed check_outcome (storable), as FlowWorker's do."""
        if not checked:  # before anything is sent: nothing of the batch is written
            for _, outcome in items:
                self.check_outcome(outcome)
        head = _NO_KEEP if keep is None else _lease_args(
            keep.worker, keep.lease_ms, keep.states, keep.claim_values, keep.payload_cap,
            keep.value_max_bytes)
        replies = self._batched([(job.partition, kind_of(outcome), _outcome_args(job, outcome),
                                  job.id) for job, outcome in items], {"transition": head})
        for i, reply in enumerate(replies):
            if isinstance(reply, list):
                job = items[i][0]
                replies[i] = self._job(job.type, job.partition, reply)
        return replies

    def check_outcome(self, outcome: Outcome) -> None:
        """InvalidArgument when an outcome is over the payload/value limits (or no outcome)."""
        cls = type(outcome)
        if cls is Transition and outcome.payload is None and not outcome.values:
            return  # the common case: nothing that could be over a limit
        if cls is Complete and outcome.result is None and not outcome.values:
            return
        kind_of(outcome)
        if isinstance(outcome, (Complete, Transition)):
            data = outcome.result if isinstance(outcome, Complete) else outcome.payload
            name = "result" if isinstance(outcome, Complete) else "payload"
            if data is not None and len(data) > self.max_payload_bytes:
                raise InvalidArgument(name, f"{len(data)} bytes is over the limit of "
                                      f"{self.max_payload_bytes} (put large data in values)")
            self._check_values(outcome.values)
        elif len(outcome.error) > self.max_payload_bytes:
            raise InvalidArgument("error", f"{len(outcome.error)} bytes is over the limit of "
                                  f"{self.max_payload_bytes}")

    def storable(self, outcome: Outcome) -> Outcome:
        """A handler's outcome, or a Fail saying why it cannot be stored (over a limit)."""
        try:
            self.check_outcome(outcome)
        except InvalidArgument as exc:
            return Fail(f"handler returned an outcome that cannot be stored: {exc}".encode())
        return outcome

    def apply_outcome(self, job: Job, outcome: Outcome) -> Any:
        return _raise_item(self.apply_outcomes([(job, outcome)])[0], job.id)

    def extend_leases(self, jobs: Sequence[Job], lease_ms: int) -> list[Any]:
        """Extend leases; per job the new deadline (int) or a FlowError value."""
        return self._per_job("extend", jobs, lease_ms)

    def release(self, jobs: Sequence[Job], cause: str) -> list[Any]:
        """Hand claimed, unstarted jobs back: due again at once, no attempt or crash counted."""
        return self._per_job("release", jobs, cause)

    def _per_job(self, script: str, jobs: Sequence[Job], arg: Any) -> list[Any]:
        return self._batched([(j.partition, script, [j.id, j.lease_token, j.fencing_token], j.id)
                              for j in jobs], head=[arg])

    # -- other commands -----------------------------------------------------------------------

    def cancel(self, flow_id: str, reason: str = "cancelled", *,
               partition_key: str | None = None, job: Job | None = None) -> bool:
        """Cancel a Flow (a running one needs its `job`); False if it was already cancelled."""
        check_id("flow_id", flow_id)
        reason_bytes = as_bytes("reason", reason, allow_none=False)
        if job is not None and not isinstance(job, Job):
            raise TypeError(f"job must be a claimed Job, not {type(job).__name__}")
        p = self.partition_for(flow_id, partition_key)
        args = ["", 1, flow_id, reason_bytes, job.lease_token if job else "",
                job.fencing_token if job else ""]
        reply = _raise_item(_raise_item(self._call("cancel", p, args), flow_id)[0], flow_id)
        self.deliver_outbox(partitions=[p])
        return reply == b"ok"

    def signal(self, flow_id: str, signal: str, *, values: Mapping[str, bytes] | None = None,
               if_state: str | Iterable[str] | None = None, transition_to: str | None = None,
               run_at_ms: int | None = None, idempotency_key: str | None = None,
               partition_key: str | None = None) -> bool:
        """Record a durable signal; with `transition_to` (needs `if_state`) move the Flow.
        False when the idempotency key was already used for the same request."""
        check_id("flow_id", flow_id)
        check_name("signal", signal)
        vals = as_values("values", values)
        self._check_values(vals)
        guard = ([if_state] if isinstance(if_state, str)
                 else check_names("if_state", if_state or []))
        for s in guard:
            check_name("if_state", s)
        check_int("run_at_ms", run_at_ms, optional=True)
        if idempotency_key is not None:
            check_id("idempotency_key", idempotency_key)
        if transition_to is not None:
            check_state("transition_to", transition_to)
            if not guard:
                raise InvalidArgument("if_state", "is required with transition_to")
        digest = _digest(signal, sorted(vals.items()), sorted(guard), transition_to, run_at_ms)
        args = ["", flow_id, signal, _pack(vals), _opt(transition_to), _opt(run_at_ms),
                _opt(idempotency_key), digest, len(guard), *guard]
        p = self.partition_for(flow_id, partition_key)
        return _raise_item(self._call("signal", p, args), flow_id) == b"ok"

    def spawn_children(self, job: Job, children: Sequence[ChildSpec], *, wait_state: str,
                       wait: str = "all", on_child_failed: str = "fail_parent",
                       group: str = "children") -> bool:
        """Create `children` for the running `job` and record the group on it; the job's next
        transition parks it until the group resolves, then it is due in `wait_state`."""
        check_state("wait_state", wait_state)
        check_name("group", group)
        if wait not in ("all", "any"):
            raise InvalidArgument("wait", "must be 'all' or 'any'")
        if on_child_failed not in ("fail_parent", "ignore"):
            raise InvalidArgument("on_child_failed", "must be 'fail_parent' or 'ignore'")
        if not isinstance(job, Job):
            raise TypeError(f"job must be a claimed Job, not {type(job).__name__}")
        if isinstance(children, (str, bytes, ChildSpec)) or not isinstance(children, Iterable):
            raise TypeError(f"children must be a list of ChildSpec, not "
                            f"{type(children).__name__}")
        specs = [self._child_spec(job, c) for c in children]
        digest = _digest(*[(s.id, s.type, s.state, s.payload) for s in specs], wait_state, wait)
        args: list[Any] = ["", job.id, job.lease_token, job.fencing_token, group, wait_state,
                           wait, on_child_failed, digest, job.partition, len(specs)]
        parts = [self.partition_for(s.id, s.partition_key) if s.partition_key is not None
                 else job.partition for s in specs]  # children inherit the parent's partition
        for s, cp in zip(specs, parts, strict=True):
            args.extend([s.id, s.type, s.state, s.payload, s.priority, cp, _opt(s.partition_key),
                         _pack(s.values), _create_digest(s)])
        reply = _raise_item(self._call("spawn", job.partition, args), job.id)
        if reply[0] == b"dup":  # the same group again (no items): ensure its remote children
            remote = [s for s, cp in zip(specs, parts, strict=True) if cp != job.partition]
        else:
            remote = [s for s, r in zip(specs, reply[1:], strict=True) if r == b"remote"]
        if remote:
            for result in self.create_many(remote):
                if isinstance(result, FlowError):
                    raise result
        return reply[0] == b"ok"

    def _child_spec(self, job: Job, c: ChildSpec) -> CreateSpec:
        if not isinstance(c, ChildSpec):
            raise TypeError(f"children must be ChildSpec, not {type(c).__name__}")
        spec = CreateSpec(c.id, c.type, c.state, as_bytes("payload", c.payload) or b"",
                          as_values("values", c.values), c.partition_key, None, c.priority,
                          True, job.id, job.partition)
        self._validate_create(spec)
        return spec

    def put_value(self, flow_id: str, name: str, data: bytes, *, override: bool = False,
                  partition_key: str | None = None, partition: int | None = None) -> None:
        """Store a named value beside the Flow (write-once unless `override`)."""
        check_id("flow_id", flow_id)
        vals = as_values("values", {name: data})
        self._check_values(vals)
        p = partition if partition is not None else self.partition_for(flow_id, partition_key)
        _raise_item(self._call("put_value", p, ["", flow_id, _pack(vals),
                                                "1" if override else "0"]), flow_id)

    def get_values(self, flow_id: str, names: Sequence[str], *, partition: int | None = None,
                   partition_key: str | None = None) -> dict[str, bytes]:
        names = check_value_names("names", names)
        p = partition if partition is not None else self.partition_for(flow_id, partition_key)
        if not names:
            return {}
        got = self.store.execute(lambda r: r.hmget(self.keys.values(p, flow_id), list(names)))
        return {n: v for n, v in zip(names, got, strict=True) if v is not None}

    def register_policy(self, type: str, policy: RetryPolicy,
                        per_state: Mapping[str, RetryPolicy] | None = None) -> None:
        """Store the RetryPolicy of a type (and per-state overrides) in every partition."""
        check_name("type", type)
        fields = {"*": policy.to_json()}
        fields.update({check_name("state", s): p.to_json() for s, p in (per_state or {}).items()})

        def write(r: Any) -> None:
            pipe = r.pipeline(transaction=False)
            for p in range(self.keys.partitions):
                pipe.hset(self.keys.policy(p, type), mapping=fields)
            pipe.execute()

        self.store.execute(write)

    # -- maintenance --------------------------------------------------------------------------

    def reclaim_expired(self, type: str, limit: int = 1000) -> int:
        """Release expired leases of `type` in every partition; the number released."""
        calls = [Call("reclaim", pre, ["", "expired", type, "expired", limit])
                 for pre in self.keys.all_prefixes()]
        return sum(int(_raise_item(r, None)[0]) for r in self.store.call_many(calls))

    def reclaim_worker(self, worker_id: str, cause: str) -> tuple[int, int]:
        """Release every lease held by a dead worker id, counting a crash on each Flow.
        Returns (released, failed as poison pills)."""
        calls = [Call("reclaim", pre, ["", "worker", worker_id, cause, 0])
                 for pre in self.keys.all_prefixes()]
        replies = [_raise_item(r, None) for r in self.store.call_many(calls)]
        self.deliver_outbox()
        return sum(int(r[0]) for r in replies), sum(int(r[1]) for r in replies)

    def deliver_outbox(self, partitions: Iterable[int] | None = None, batch: int = 200) -> int:
        """Deliver child->parent and parent->child notices across partitions (idempotent)."""
        keys = self.keys
        parts = list(range(keys.partitions)) if partitions is None else list(partitions)
        delivered = 0
        for p in parts:
            entries = self.store.execute(lambda r, p=p: r.lrange(keys.outbox(p), 0, batch - 1))
            if not entries:
                continue
            by_target: dict[int, list[Any]] = defaultdict(list)
            for raw in entries:
                target_p, target, source, kind = msgpack.unpackb(raw, raw=False)
                by_target[int(target_p)].extend([target, source, kind])
            calls = [Call("deliver", keys.prefix(tp), ["", len(a) // 3, *a])
                     for tp, a in by_target.items()]
            for reply in self.store.call_many(calls):
                delivered += int(_raise_item(reply, None))

            def trim(r: Any, p: int = p, entries: list[bytes] = entries) -> None:
                pipe = r.pipeline(transaction=False)
                for raw in entries:
                    pipe.lrem(keys.outbox(p), 1, raw)
                pipe.execute()

            self.store.execute(trim)
        return delivered

    def cleanup(self, now_ms: int | None = None, limit: int = 1000) -> int:
        """Delete terminal Flows past the retention; the number deleted."""
        calls = [Call("cleanup", pre, [_opt(now_ms), self.retention_ms, limit])
                 for pre in self.keys.all_prefixes()]
        return sum(int(_raise_item(r, None)) for r in self.store.call_many(calls))

    # -- reads --------------------------------------------------------------------------------

    def get(self, flow_id: str, *, values: Sequence[str] = (), payload: bool = True,
            partition_key: str | None = None) -> FlowRecord | None:
        """The Flow's record (with the named values), or None when no such Flow exists."""
        check_id("flow_id", flow_id)
        values = check_value_names("values", values)
        check_bool("payload", payload)
        p = self.partition_for(flow_id, partition_key)
        return self._get_many([(p, flow_id)], values, payload)[0]

    def _get_many(self, refs: Sequence[tuple[int, str]], values: Sequence[str] = (),
                  payload: bool = True) -> list[FlowRecord | None]:
        keys = self.keys

        def read(r: Any) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for p, fid in refs:
                pipe.get(keys.flow(p, fid))
                if payload:
                    pipe.get(keys.payload(p, fid))
                if values:
                    pipe.hmget(keys.values(p, fid), list(values))
            return pipe.execute()

        got = iter(self.store.execute(read))
        out: list[FlowRecord | None] = []
        for _, fid in refs:
            raw = record_fields(next(got))
            blob = next(got) if payload else None
            vals = ({n: v for n, v in zip(values, next(got), strict=True) if v is not None}
                    if values else {})
            if not raw:
                out.append(None)
                continue
            # A long payload lives in its own key (the record stays small).
            if raw.pop(b"pb", None) or not payload:
                raw[b"payload"] = blob or b""
            out.append(FlowRecord.from_hash(fid, raw, vals))
        return out

    def history(self, flow_id: str, *, count: int = 1000, reverse: bool = False,
                partition_key: str | None = None) -> list[HistoryEvent]:
        """The Flow's history, oldest first (newest first with `reverse`)."""
        check_id("flow_id", flow_id)
        check_int("count", count, low=1)
        check_bool("reverse", reverse)
        p = self.partition_for(flow_id, partition_key)
        key = self.keys.history(p, flow_id)
        if reverse:
            raw = self.store.execute(lambda r: r.lrange(key, -count, -1))[::-1]
        else:
            raw = self.store.execute(lambda r: r.lrange(key, 0, count - 1))
        events = []
        for entry in raw:
            ver, at, name, details = msgpack.unpackb(entry, raw=False,
                                                     unicode_errors="surrogateescape")
            events.append(HistoryEvent(name, int(ver), int(at), details or {}))
        return events

    def children(self, flow_id: str, *, partition_key: str | None = None) -> list[FlowRecord]:
        """Records of the Flow's children (every group), in id order."""
        check_id("flow_id", flow_id)
        p = self.partition_for(flow_id, partition_key)
        raw = self.store.execute(lambda r: r.hgetall(self.keys.children(p, flow_id)))
        refs = []
        for cid, entry in sorted(raw.items()):
            part = int(entry.split(b"|")[1])
            refs.append((part, cid.decode("utf-8")))
        return [r for r in self._get_many(refs) if r is not None]

    def terminals(self, type: str, state: str | None = None, count: int = 100) -> list[FlowRecord]:
        """The newest `count` terminal Flows of `type` (of one terminal `state`, or all)."""
        check_name("type", type)
        check_int("count", count, low=1)
        statuses = [state] if state is not None else ["completed", "failed", "cancelled"]
        for s in statuses:
            if s not in ("completed", "failed", "cancelled"):
                raise InvalidArgument("state", "must be completed, failed or cancelled")
        keys = self.keys

        def read(r: Any) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for p in range(keys.partitions):
                for s in statuses:
                    pipe.zrevrange(keys.terminal(p, type, s), 0, count - 1, withscores=True)
            return pipe.execute()

        got = self.store.execute(read)
        entries = []
        for i, rows in enumerate(got):
            p = i // len(statuses)
            entries.extend((score, p, fid.decode("utf-8")) for fid, score in rows)
        entries.sort(key=lambda e: -e[0])
        refs = [(p, fid) for _, p, fid in entries[:count]]
        return [r for r in self._get_many(refs) if r is not None]

    def stats(self, type: str) -> FlowStats:
        """Exact counts per state, due-now and oldest-due age, running, across partitions."""
        check_name("type", type)
        calls = [Call("stats", pre, ["", type]) for pre in self.keys.all_prefixes()]
        counts: dict[str, int] = defaultdict(int)
        due: dict[str, int] = defaultdict(int)
        oldest: dict[str, int] = {}
        running = 0
        for reply in self.store.call_many(calls, mutating=False):
            now, run, flat, *per_state = _raise_item(reply, None)
            running += int(run)
            for i in range(0, len(flat), 2):
                counts[flat[i].decode()] += int(flat[i + 1])
            for st, n, first in per_state:
                name = st.decode()
                due[name] += int(n)
                if int(first) >= 0:
                    age = int(now) - int(first)
                    oldest[name] = max(oldest.get(name, 0), age)
        states = {s: StateStats(s, counts.get(s, 0), due.get(s, 0), oldest.get(s))
                  for s in sorted(set(counts) | set(due))
                  if s not in ("running", "completed", "failed", "cancelled")}
        return FlowStats(type, {k: v for k, v in counts.items() if v}, running, states)

    def types(self) -> list[str]:
        keys = self.keys

        def read(r: Any) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for p in range(keys.partitions):
                pipe.smembers(keys.types(p))
            return pipe.execute()

        return sorted({t.decode() for members in self.store.execute(read) for t in members})


@dataclass(frozen=True)
class KeepLease:
    """For apply_outcomes: the worker that keeps Flows moving into `states`, and its lease
    terms (those of FlowClient.claim)."""

    worker: str
    states: Sequence[str]
    lease_ms: int
    claim_values: Sequence[str] = ()
    payload_cap: int = 64 << 10
    value_max_bytes: int | None = None


def _lease_args(worker: str, lease_ms: int, states: Sequence[str], claim_values: Sequence[str],
                payload_cap: int, value_max_bytes: int | None) -> list[Any]:
    """A lease request as claim.lua and transition.lua read it (lease_spec in _lib.lua)."""
    return [worker, lease_ms, payload_cap, value_max_bytes or 0, len(states), *states,
            len(claim_values), *claim_values]


_NO_KEEP = _lease_args("", 0, (), (), 0, None)
# A claim item's rarely set fields when the store leaves them out (grant in _lib.lua).
_NO_EXTRA = (0, b"", 0, (), (), 0, 0)
_new = object.__new__
_SPEC_DEFAULTS = {f.name: f.default for f in fields(CreateSpec) if f.default is not MISSING}


def _outcome_args(job: Job, o: Outcome) -> list[Any]:
    if isinstance(o, Transition):
        # '' keeps the payload, '=' + bytes sets it (any bytes, b"\0" included)
        return [job.id, job.lease_token, job.fencing_token, o.to_state,
                b"" if o.payload is None else b"=" + o.payload, _pack(o.values),
                _opt(o.run_at_ms), _opt(o.priority)]
    head = [job.id, job.lease_token, job.fencing_token]
    if isinstance(o, Complete):
        return [*head, o.result or b"", _pack(o.values)]
    if isinstance(o, Retry):
        return [*head, o.error, _opt(o.run_at_ms)]
    return [*head, o.error]  # Fail


class FlowHandle:
    """`job.flow`: what a handler may do to its own Flow while it holds the lease."""

    def __init__(self, client: FlowClient, flow_id: str, partition: int) -> None:
        self.client = client
        self.id = flow_id
        self.partition = partition
        self.job: Job | None = None

    def _job(self) -> Job:
        if self.job is None:
            raise InvalidArgument("job", "this handle is not bound to a claimed job")
        return self.job

    def spawn_children(self, children: Sequence[ChildSpec], *, wait_state: str,
                       wait: str = "all", on_child_failed: str = "fail_parent",
                       group: str = "children") -> bool:
        return self.client.spawn_children(self._job(), children, wait_state=wait_state,
                                          wait=wait, on_child_failed=on_child_failed,
                                          group=group)

    def extend_lease(self, lease_ms: int) -> int:
        got = self.client.extend_leases([self._job()], lease_ms)[0]
        return int(_raise_item(got, self.id))

    def put_value(self, name: str, data: bytes, *, override: bool = False) -> None:
        self.client.put_value(self.id, name, data, override=override, partition=self.partition)

    def signal(self, flow_id: str, signal: str, **options: Any) -> bool:
        """Signal another Flow (e.g. a parent or a peer) of this namespace."""
        return self.client.signal(flow_id, signal, **options)
