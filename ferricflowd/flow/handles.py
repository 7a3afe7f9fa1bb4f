"""What queue and workflow handles share: producing Flows and inspecting them by type."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .admin import BulkResult
from .browse import BrowsePage, FlowFilter
from .checks import (
    as_bytes,
    as_values,
    check_bool,
    check_id,
    check_int,
    check_name,
    check_names,
    check_state,
    delay_to_run_at,
)
from .client import FlowClient
from .errors import FlowError, InvalidArgument
from .policy import ExceptionPolicy, RetryPolicy
from .records import FlowRecord, FlowStats, HistoryEvent
from .runner import RunnerHooks
from .wire import CreateSpec, plain_spec

WORKER_OPTIONS = ("concurrency", "batch_size", "lease_ms", "block_ms", "claim_values",
                  "value_max_bytes", "exception_policy", "worker_id", "hooks", "payload_cap")


def _run_at(run_at_ms: int | None, delay_ms: int | None) -> int | None:
    if delay_ms is None:
        return run_at_ms
    if run_at_ms is not None:
        raise TypeError("pass run_at_ms or delay_ms, not both")
    return delay_to_run_at(delay_ms)


def worker_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Check `worker(...)` keyword arguments, naming a wrong one."""
    unknown = sorted(set(options) - set(WORKER_OPTIONS))
    if unknown:
        raise TypeError(f"worker() got unexpected argument(s) {', '.join(unknown)}; "
                        f"accepted: state/states, {', '.join(WORKER_OPTIONS)}")
    policy = options.get("exception_policy")
    if policy is not None and not isinstance(policy, ExceptionPolicy):
        raise TypeError("exception_policy must be an ExceptionPolicy")
    values = options.get("claim_values", ())
    if (isinstance(values, (str, bytes)) or not isinstance(values, Iterable)
            or not all(isinstance(v, str) for v in values)):
        raise TypeError("claim_values must be a list of value names")
    for name in ("concurrency", "batch_size", "lease_ms", "payload_cap"):
        if name in options:
            check_int(name, options[name], low=1)
    if "block_ms" in options:
        check_int("block_ms", options["block_ms"])
    check_int("value_max_bytes", options.get("value_max_bytes"), optional=True)
    if options.get("worker_id") is not None:
        check_id("worker_id", options["worker_id"])
    hooks = options.get("hooks")
    if hooks is not None and not isinstance(hooks, RunnerHooks):
        raise TypeError(f"hooks must be a RunnerHooks, not {type(hooks).__name__}")
    return dict(options)


def state_list(state: str | None, states: Sequence[str] | None,
               default: Sequence[str]) -> list[str]:
    if state is not None and states is not None:
        raise TypeError("pass state or states, not both")
    if state is not None:
        return [check_state("state", state)]
    if states is not None:
        chosen = check_names("states", states, states=True)
        if not chosen:
            raise InvalidArgument("states", "name at least one state")
        return chosen
    return list(default)


class TypeHandle:
    """A Flow type in one namespace: create Flows and read them back."""

    def __init__(self, client: FlowClient | None, type: str, default_state: str,
                 retry_policy: RetryPolicy | None = None) -> None:
        if client is not None and not isinstance(client, FlowClient):
            raise TypeError(f"client must be a FlowClient, not {client.__class__.__name__}")
        check_name("type", type)
        check_state("state", default_state)
        if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
            raise TypeError("retry_policy must be a RetryPolicy")
        self._client = client
        self.type = type
        self.default_state = default_state
        self.retry_policy = retry_policy
        self.state_policies: dict[str, RetryPolicy] = {}
        self._registered = False

    @property
    def client(self) -> FlowClient:
        if self._client is None:
            raise InvalidArgument("client", f"{self.type!r} is not bound to a store; call "
                                  ".bind(client) or create it from a QueueClient/WorkflowClient")
        return self._client

    def register(self) -> None:
        """Store the retry policy in the store (once per handle), so every worker and
        producer applies the same one. Called by the first create and worker."""
        if self._registered or (self.retry_policy is None and not self.state_policies):
            return
        self.client.register_policy(self.type, self.retry_policy or RetryPolicy(),
                                    self.state_policies)
        self._registered = True

    def _create(self, flow_id: str, payload: bytes | str, state: str | None, **kw: Any) -> bool:
        self.register()
        run_at = _run_at(kw.pop("run_at_ms", None), kw.pop("delay_ms", None))
        return self.client.create(flow_id, self.type, state or self.default_state, payload,
                                  run_at_ms=run_at, **kw)

    def _create_many(self, items: Iterable[Any], idempotent: bool) -> list[bool | FlowError]:
        """Items are ids, (id, payload) pairs or dicts of create() keyword arguments."""
        self.register()
        client = self.client
        check_state("state", self.default_state)  # the type was checked by __init__
        check_bool("idempotent", idempotent)
        specs = []
        plain = True  # every item a (id, payload) pair, checked here as it is read
        for item in items:
            if isinstance(item, tuple) and len(item) == 2:  # the common form, without a dict
                payload = as_bytes("payload", item[1]) or b""
                client.check_plain(item[0], payload)
                specs.append(plain_spec(item[0], self.type, self.default_state, payload,
                                        idempotent))
                continue
            plain = False
            if isinstance(item, str):
                item = {"id": item}
            elif not isinstance(item, Mapping):
                raise TypeError("items must be ids, (id, payload) pairs or dicts")
            kw = dict(item)
            specs.append(CreateSpec(
                id=kw.pop("id"), type=self.type, state=kw.pop("state", self.default_state),
                payload=as_bytes("payload", kw.pop("payload", b"")) or b"",
                values=as_values("values", kw.pop("values", None)),
                partition_key=kw.pop("partition_key", None),
                run_at_ms=_run_at(kw.pop("run_at_ms", None), kw.pop("delay_ms", None)),
                priority=kw.pop("priority", 0), idempotent=kw.pop("idempotent", idempotent),
                correlation_id=kw.pop("correlation_id", None)))
            if kw:
                raise TypeError(f"unexpected item field(s): {', '.join(sorted(kw))}")
        if plain:
            return client.create_checked(specs)
        return client.create_many(specs)

    # -- inspection and control ---------------------------------------------------------------

    def get(self, flow_id: str, *, values: Sequence[str] = (), payload: bool = True,
            partition_key: str | None = None) -> FlowRecord | None:
        return self.client.get(flow_id, values=values, payload=payload,
                               partition_key=partition_key)

    def history(self, flow_id: str, *, count: int = 1000, reverse: bool = False,
                partition_key: str | None = None) -> list[HistoryEvent]:
        return self.client.history(flow_id, count=count, reverse=reverse,
                                   partition_key=partition_key)

    def children(self, flow_id: str, *, partition_key: str | None = None) -> list[FlowRecord]:
        return self.client.children(flow_id, partition_key=partition_key)

    def terminals(self, state: str | None = None, count: int = 100) -> list[FlowRecord]:
        return self.client.terminals(self.type, state, count)

    def stats(self) -> FlowStats:
        return self.client.stats(self.type)

    def signal(self, flow_id: str, signal: str, **options: Any) -> bool:
        return self.client.signal(flow_id, signal, **options)

    def cancel(self, flow_id: str, reason: str = "cancelled", *,
               partition_key: str | None = None) -> bool:
        return self.client.cancel(flow_id, reason, partition_key=partition_key)

    def put_value(self, flow_id: str, name: str, data: bytes, *, override: bool = False,
                  partition_key: str | None = None) -> None:
        self.client.put_value(flow_id, name, data, override=override,
                              partition_key=partition_key)

    # -- operator commands (FlowClient's Browse and Admin, for this type) ---------------------

    def rewind(self, flow_id: str, **options: Any) -> str:
        """Requeue one Flow nobody holds (see FlowClient.rewind); returns its state."""
        return self.client.rewind(flow_id, **options)

    def browse(self, *, order: str = "oldest", limit: int = 100, cursor: str | None = None,
               **criteria: Any) -> BrowsePage:
        """One page of this type's Flows; `criteria` are FlowFilter's (state= or states=,
        due_before_ms=, error_contains=, ...)."""
        return self.client.browse(self.type, FlowFilter.of(**criteria), order=order,
                                  limit=limit, cursor=cursor)

    def stuck(self, **options: Any) -> BrowsePage:
        """Expired leases and long-due Flows of this type (see FlowClient.stuck)."""
        return self.client.stuck(self.type, **options)

    def requeue(self, **options: Any) -> BulkResult:
        """Requeue every matching Flow, e.g. requeue(state="failed", error_contains="timeout");
        options are FlowClient.requeue's and FlowFilter's."""
        criteria, rest = _criteria(options)
        return self.client.requeue(self.type, criteria, **rest)

    def cancel_matching(self, **options: Any) -> BulkResult:
        """Cancel every matching Flow (see FlowClient.cancel_matching)."""
        criteria, rest = _criteria(options)
        return self.client.cancel_matching(self.type, criteria, **rest)

    def purge(self, **options: Any) -> BulkResult:
        """Delete every matching terminal Flow now, e.g. purge(state="completed")."""
        criteria, rest = _criteria(options)
        return self.client.purge(self.type, criteria, **rest)


_CRITERIA = frozenset({"state", "states", *FlowFilter.__dataclass_fields__})


def _criteria(options: Mapping[str, Any]) -> tuple[FlowFilter, dict[str, Any]]:
    """Split keyword arguments into a FlowFilter and the rest."""
    found = {k: v for k, v in options.items() if k in _CRITERIA}
    return FlowFilter.of(**found), {k: v for k, v in options.items() if k not in _CRITERIA}
