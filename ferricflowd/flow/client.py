"""FlowClient: every Flow command of one namespace, typed in and out.

A facade over the parts of flow/: `checks` validates arguments (each error names its
argument), `wire` encodes each script's ARGV and decodes its replies, `store` runs the
scripts (the only module that talks to Redis), and the read, browse, operator and upkeep
commands come from the `Reads`, `Browse`, `Admin` and `Upkeep` mixins, claiming from
`Claims`. What stays here are the commands that change Flows. Batch forms group their items
by partition and send one script call per partition and chunk in one round trip; error
replies become the typed exceptions of `errors.py`, store failures `StoreError`, never a
silent success.
"""

from __future__ import annotations

import re
import threading
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from .admin import Admin
from .browse import Browse
from .checks import (
    Limits,
    as_bytes,
    as_values,
    check_bool,
    check_flow_fields,
    check_id,
    check_int,
    check_name,
    check_names,
    check_state,
)
from .claims import Claims
from .errors import FlowError, InvalidArgument, PartialBatch, StoreError, UnderReplicated
from .jobflow import FlowHandle
from .keys import KeySpace
from .outcomes import Complete, Fail, Outcome, Transition, kind_of
from .policy import RetryPolicy
from .reads import Reads
from .records import Job
from .store import Call, Store
from .upkeep import Upkeep
from .wire import (
    NO_LEASE,
    ChildSpec,
    ClaimResult,
    CreateSpec,
    LeaseRequest,
    create_args,
    create_digest,
    digest,
    field_pairs,
    item_result,
    lease_item,
    opt,
    outcome_args,
    pack_values,
    raise_item,
)

if TYPE_CHECKING:
    from .schedules import Schedules

__all__ = ["ChildSpec", "ClaimResult", "CreateSpec", "FlowClient", "FlowHandle",
           "LeaseRequest"]

# Items per script call of a batch command: big enough that the store's fixed cost per call
# is small, small enough that the store runs the first calls of a 1,000-item batch while the
# client still builds the rest (Store.call_many streams them).
BATCH_CALL_ITEMS = 200
DAY_MS = 86_400_000
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


class FlowClient(Claims, Reads, Browse, Admin, Upkeep):
    """A connection to one FerricFlow namespace. Connects lazily on first use."""

    def __init__(self, store: Store, *, namespace: str = "ff", partitions: int | None = None,
                 history_cap: int = 10_000, retention_ms: int = 7 * DAY_MS,
                 max_payload_bytes: int = 1 << 20, max_value_bytes: int = 16 << 20) -> None:
        if not isinstance(store, Store):
            raise TypeError(f"store must be a Store, not {type(store).__name__} (use "
                            "FlowClient.from_url(url) to connect by URL)")
        if not isinstance(namespace, str) or not _NAMESPACE_RE.match(namespace):
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
        self.limits = Limits(max_payload_bytes, max_value_bytes)
        self._keys: KeySpace | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_url(cls, url: str, *, namespace: str = "ff", durability: str = "strict",
                 min_replicas: int = 0, partitions: int | None = None,
                 socket_timeout_s: float = 5.0, wait_timeout_s: float = 1.0,
                 **options: Any) -> FlowClient:
        if not isinstance(url, str):
            raise TypeError(f"url must be str, not {type(url).__name__}")
        if (not isinstance(socket_timeout_s, (int, float)) or isinstance(socket_timeout_s, bool)
                or not 0 < socket_timeout_s < float("inf")):
            raise InvalidArgument("socket_timeout_s", f"must be a number of seconds > 0, "
                                  f"got {socket_timeout_s!r}")
        check_int("min_replicas", min_replicas)
        if (not isinstance(wait_timeout_s, (int, float)) or isinstance(wait_timeout_s, bool)
                or not 0 < wait_timeout_s < float("inf")):
            raise InvalidArgument("wait_timeout_s", f"must be a number of seconds > 0, "
                                  f"got {wait_timeout_s!r}")
        if not isinstance(durability, str):
            raise TypeError(f"durability must be str, not {type(durability).__name__}")
        store = Store(url, socket_timeout_s=socket_timeout_s, min_replicas=min_replicas,
                      wait_timeout_s=wait_timeout_s, durability=durability)
        return cls(store, namespace=namespace, partitions=partitions, **options)

    # -- connection ---------------------------------------------------------------------------

    @property
    def keys(self) -> KeySpace:  # type: ignore[override]  # Reads/Upkeep declare it
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
        have = int(self.store.batch([("HSETNX", meta, "partitions", want),
                                     ("HGET", meta, "partitions")])[1])
        if self.requested_partitions is not None and have != self.requested_partitions:
            raise InvalidArgument("partitions", f"namespace {self.namespace!r} already has "
                                  f"{have} partitions (asked for {self.requested_partitions})")
        keys = KeySpace(self.namespace, have)
        names = ("part", "history_cap", "retention_ms")
        wanted = [(p, self.history_cap, self.retention_ms) for p in range(have)]
        got = self.store.batch([("HMGET", keys.config(p), *names) for p in range(have)])
        self.store.batch([("HSET", keys.config(w[0]), *field_pairs(names, w))
                          for w, now in zip(wanted, got, strict=True)
                          if now != [str(v).encode() for v in w]])
        self.store.ensure_library()
        return keys

    def ping(self) -> bool:
        return self.store.ping()

    @cached_property
    def schedules(self) -> Schedules:
        """The schedules of this namespace: create, pause, trigger, fire_due, ... (imported
        on first use: it loads the cron library)."""
        from .schedules import Schedules

        return Schedules(self)

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
        try:
            reply = self._call("create", self.partition_for(flow_id, partition_key),
                               ["", 1, *create_args(spec)])
        except UnderReplicated as exc:  # an engine error wrote nothing: raise that instead
            exc.results = [raise_item(raise_item(exc.results[0], flow_id)[0], flow_id) == b"ok"]
            raise
        return raise_item(raise_item(reply, flow_id)[0], flow_id) == b"ok"

    def create_many(self, specs: Sequence[CreateSpec]) -> list[bool | FlowError]:
        """Create Flows, one script call per partition in one pipeline; a result per item.

        When the store refuses part of the batch (a later chunk: OOM, NOPERM, ...), the rest
        is still written: PartialBatch then carries `results` (True/False/FlowError per
        written item, the StoreError of each item not written) and `failed_items` (the
        specs to send again)."""
        for spec in specs:  # before anything is sent: a bad item writes nothing
            self._validate_create(spec)
        return self.create_checked(specs)

    def create_checked(self, specs: Sequence[CreateSpec]) -> list[bool | FlowError]:
        """create_many for specs already validated (by _validate_create or check_plain)."""
        try:
            replies = self._batched([(self.partition_for(s.id, s.partition_key), "create", s,
                                      s.id) for s in specs], fields=create_args)
        except (PartialBatch, UnderReplicated) as exc:
            exc.results = _created(exc.results)
            raise
        return _created(replies)

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
        try:
            replies = self.store.call_many(calls())
        except PartialBatch as exc:  # per call -> per item: which items were not written
            _spread(chunks, exc.results, items, results)
            failed = [i for i, r in enumerate(results) if isinstance(r, StoreError)]
            raise PartialBatch(f"{len(failed)} of {len(items)} items not written: {exc}",
                               results=results, failed=failed,
                               failed_items=[items[i][2] for i in failed]) from exc
        except UnderReplicated as exc:
            _spread(chunks, exc.results, items, results)
            exc.results = results
            raise
        _spread(chunks, replies, items, results)
        return results

    def _validate_create(self, spec: CreateSpec) -> None:
        check_flow_fields(spec.id, spec.type, spec.state, spec.partition_key, spec.priority,
                          known=self._checked)
        if not isinstance(spec.payload, bytes):
            raise TypeError(f"payload must be bytes, not {type(spec.payload).__name__}")
        self.limits.payload(spec.payload)
        self.limits.values(spec.values)
        check_int("run_at_ms", spec.run_at_ms, optional=True)
        check_bool("idempotent", spec.idempotent)
        if spec.correlation_id is not None:
            check_id("correlation_id", spec.correlation_id)

    def check_plain(self, flow_id: object, payload: bytes) -> None:
        """What _validate_create checks of a plain_spec item whose type and state are known
        valid: the id and the payload size (a batch's items, without their specs' checks)."""
        check_id("id", flow_id)
        self.limits.payload(payload)

    # -- outcomes -----------------------------------------------------------------------------

    def apply_outcomes(self, items: Sequence[tuple[Job, Outcome]],
                       keep: LeaseRequest | None = None, *, checked: bool = False) -> list[Any]:
        """Send outcomes as one pipeline: one script call per (partition, kind).

        Returns per item the reply (b'ok', b'replay', b'scheduled', b'exhausted') or the
        typed FlowError (e.g. StaleLease) as a value. With `keep`, a transition to one of
        its states that is due at once stays with keep.worker: its reply is then the Job
        of the next state, already leased (one store call instead of a transition and a
        claim; the worker runs it next, as a sticky queue does). `checked`: every outcome
        already passed check_outcome (storable), as a Runner's do."""
        if not checked:  # before anything is sent: nothing of the batch is written
            for _, outcome in items:
                self.check_outcome(outcome)
        head = NO_LEASE if keep is None else keep.args
        try:
            replies = self._batched([(job.partition, kind_of(outcome),
                                      outcome_args(job, outcome), job.id)
                                     for job, outcome in items], {"transition": head})
        except UnderReplicated as exc:  # applied: its kept Jobs are leased all the same
            exc.results = self._kept_jobs(items, exc.results)
            raise
        return self._kept_jobs(items, replies)

    def _kept_jobs(self, items: Sequence[tuple[Job, Outcome]], replies: list[Any]) -> list[Any]:
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
            if data is not None:
                self.limits.payload(data, "result" if cls is Complete else "payload")
            self.limits.values(outcome.values)
        else:
            self.limits.payload(outcome.error, "error")

    def storable(self, outcome: Outcome) -> Outcome:
        """A handler's outcome, or a Fail saying why it cannot be stored (over a limit)."""
        try:
            self.check_outcome(outcome)
        except InvalidArgument as exc:
            return Fail(f"handler returned an outcome that cannot be stored: {exc}".encode())
        return outcome

    def apply_outcome(self, job: Job, outcome: Outcome) -> Any:
        return raise_item(self.apply_outcomes([(job, outcome)])[0], job.id)

    def extend_leases(self, jobs: Sequence[Job], lease_ms: int) -> list[Any]:
        """Extend leases; per job the new deadline (int) or a FlowError value."""
        return self._batched([(j.partition, "extend", lease_item(j), j.id) for j in jobs],
                             head=[lease_ms])

    def release(self, jobs: Sequence[Job], cause: str) -> list[Any]:
        """Hand claimed, unstarted jobs back: due again at once, no attempt or crash counted."""
        return self._batched([(j.partition, "release", lease_item(j), j.id) for j in jobs],
                             head=[cause])

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
        reply = raise_item(raise_item(self._call("cancel", p, args), flow_id)[0], flow_id)
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
        self.limits.values(vals)
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
        dig = digest(signal, sorted(vals.items()), sorted(guard), transition_to, run_at_ms)
        args = ["", flow_id, signal, pack_values(vals), opt(transition_to), opt(run_at_ms),
                opt(idempotency_key), dig, len(guard), *guard]
        p = self.partition_for(flow_id, partition_key)
        return raise_item(self._call("signal", p, args), flow_id) == b"ok"

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
        dig = digest(*[(s.id, s.type, s.state, s.payload) for s in specs], wait_state, wait)
        args: list[Any] = ["", job.id, job.lease_token, job.fencing_token, group, wait_state,
                           wait, on_child_failed, dig, job.partition, len(specs)]
        parts = [self.partition_for(s.id, s.partition_key) if s.partition_key is not None
                 else job.partition for s in specs]  # children inherit the parent's partition
        for s, cp in zip(specs, parts, strict=True):
            args.extend([s.id, s.type, s.state, s.payload, s.priority, cp, opt(s.partition_key),
                         pack_values(s.values), create_digest(s)])
        reply = raise_item(self._call("spawn", job.partition, args), job.id)
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
        self.limits.values(vals)
        p = partition if partition is not None else self.partition_for(flow_id, partition_key)
        raise_item(self._call("put_value", p, ["", flow_id, pack_values(vals),
                                               "1" if override else "0"]), flow_id)

    def register_policy(self, type: str, policy: RetryPolicy | None,
                        per_state: Mapping[str, RetryPolicy] | None = None) -> None:
        """Store the RetryPolicy of a type (and per-state overrides) in every partition;
        `policy` None leaves the type's default as it is."""
        check_name("type", type)
        fields = {"*": policy.to_json()} if policy is not None else {}
        fields.update({check_name("state", s): p.to_json() for s, p in (per_state or {}).items()})
        if not fields:
            return
        flat = field_pairs(fields, fields.values())
        self.store.batch([("HSET", self.keys.policy(p, type), *flat)
                          for p in range(self.keys.partitions)])


def _spread(chunks: Sequence[tuple[int, str, list[int]]], replies: Sequence[Any],
            items: Sequence[tuple[int, str, Any, str]], results: list[Any]) -> None:
    """Each script call's reply to its items' places in `results` (a call that failed as a
    whole: its StoreError for each of its items)."""
    for (_, _, idx), reply in zip(chunks, replies, strict=True):
        if isinstance(reply, StoreError):
            for i in idx:
                results[i] = reply
            continue
        for i, item in zip(idx, raise_item(reply, None), strict=True):
            results[i] = item_result(item, items[i][3])


def _created(replies: Sequence[Any]) -> list[Any]:
    return [r if isinstance(r, (FlowError, StoreError)) else r == b"ok" for r in replies]
