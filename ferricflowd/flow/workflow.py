"""WorkflowClient and Workflow: state machines whose states have handlers.

    order = WorkflowClient.from_url(url).workflow(type="order", initial_state="created")

    @order.state("created")
    def created(job):
        return transition("charged")

    order.start("order-1", payload=b"...")
    order.worker(states=["created", "charged"]).run()

A Workflow may also be defined without a client (`Workflow(type=..., initial_state=...)`) and
bound later with `.bind(client)`; the daemon binds the workflows it imports to its own store.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from .checks import check_names, check_state
from .client import FlowClient
from .errors import FlowError, InvalidArgument
from .handles import TypeHandle, state_list, worker_options
from .policy import ExceptionPolicy, RetryPolicy
from .records import Job
from .runner import Runner

Handler = Callable[[Job], Any]


class WorkflowClient:
    """A lazy connection to a namespace; nothing connects until the first command."""

    def __init__(self, client: FlowClient) -> None:
        if not isinstance(client, FlowClient):
            raise TypeError(f"client must be a FlowClient, not {type(client).__name__} (use "
                            "WorkflowClient.from_url(url) to connect by URL)")
        self.flow_client = client

    @classmethod
    def from_url(cls, url: str, **options: Any) -> WorkflowClient:
        return cls(FlowClient.from_url(url, **options))

    def workflow(self, type: str, *, initial_state: str,
                 retry_policy: RetryPolicy | None = None,
                 states: Iterable[str] | None = None) -> Workflow:
        return Workflow(type=type, initial_state=initial_state, retry_policy=retry_policy,
                        states=states, client=self.flow_client)

    def close(self) -> None:
        self.flow_client.close()


class Workflow(TypeHandle):
    """A Flow type with a handler per state. `states`, when given, declares every state a
    handler may transition to; a transition elsewhere then fails the Flow."""

    def __init__(self, *, type: str, initial_state: str, retry_policy: RetryPolicy | None = None,
                 states: Iterable[str] | None = None, client: FlowClient | None = None) -> None:
        check_state("initial_state", initial_state)
        super().__init__(client, type, initial_state, retry_policy)
        self.initial_state = initial_state
        self.handlers: dict[str, Handler] = {}
        self.exception_policies: dict[str, ExceptionPolicy] = {}
        self.timeouts: dict[str, float] = {}  # per state handler time limits, seconds
        self.declared_states = (frozenset(check_names("states", states, states=True))
                                if states is not None else None)

    def state(self, name: str, *, exception_policy: ExceptionPolicy | None = None,
              retry_policy: RetryPolicy | None = None,
              timeout: float | None = None) -> Callable[[Handler], Handler]:
        """Decorator: register the handler of state `name`. `timeout` (seconds): past it the
        handler is given up (see Runner) and the Flow retried or failed under its policy."""
        check_state("state", name)
        if timeout is not None and (isinstance(timeout, bool)
                                    or not isinstance(timeout, (int, float)) or not timeout > 0):
            raise InvalidArgument("timeout", f"must be a number of seconds > 0, got {timeout!r}")
        if exception_policy is not None and not isinstance(exception_policy, ExceptionPolicy):
            raise TypeError("exception_policy must be an ExceptionPolicy")
        if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
            raise TypeError("retry_policy must be a RetryPolicy")

        def register(fn: Handler) -> Handler:
            if not callable(fn):
                raise TypeError("a state handler must be callable")
            self.handlers[name] = fn
            if exception_policy is not None:
                self.exception_policies[name] = exception_policy
            if retry_policy is not None:
                self.state_policies[name] = retry_policy
            if timeout is not None:
                self.timeouts[name] = float(timeout)
            return fn

        return register

    def bind(self, client: FlowClient) -> Workflow:
        """The same workflow (handlers, policies) on another client's store."""
        bound = Workflow(type=self.type, initial_state=self.initial_state,
                         retry_policy=self.retry_policy, client=client)
        bound.handlers = self.handlers
        bound.exception_policies = self.exception_policies
        bound.timeouts = self.timeouts
        bound.state_policies = self.state_policies
        bound.declared_states = self.declared_states
        return bound

    def start(self, flow_id: str, payload: bytes | str = b"", *, idempotent: bool = False,
              values: Mapping[str, bytes] | None = None, state: str | None = None,
              partition_key: str | None = None, run_at_ms: int | None = None,
              delay_ms: int | None = None, priority: int = 0,
              correlation_id: str | None = None) -> bool:
        """Start a Flow in `initial_state`; True when created, False for an idempotent repeat."""
        self._check_declared("state", state)
        return self._create(flow_id, payload, state, idempotent=idempotent, values=values,
                            partition_key=partition_key, run_at_ms=run_at_ms, delay_ms=delay_ms,
                            priority=priority, correlation_id=correlation_id)

    enqueue = start

    def start_many(self, items: Iterable[Any], *,
                   idempotent: bool = False) -> list[bool | FlowError]:
        items = list(items)
        for item in items:
            if isinstance(item, Mapping):
                self._check_declared("state", item.get("state"))
        return self._create_many(items, idempotent)

    def _check_declared(self, argument: str, state: object) -> None:
        """A Flow created in a state this workflow declares no way to leave would be stuck."""
        declared = self.declared()
        if declared is not None and isinstance(state, str) and state not in declared:
            raise InvalidArgument(argument, f"{state!r} is not a state of workflow "
                                  f"{self.type!r} (declared: {', '.join(sorted(declared))})")

    def worker(self, *, state: str | None = None, states: Sequence[str] | None = None,
               **options: Any) -> WorkflowRunner:
        """A Runner of this workflow's states (default: every state with a handler) in this
        process; `options` are Runner's (concurrency, batch_size, lease_ms, ...)."""
        chosen = state_list(state, states, sorted(self.handlers))
        missing = [s for s in chosen if s not in self.handlers]
        if missing:
            raise InvalidArgument("state" if state is not None else "states",
                                  f"no handler for {', '.join(map(repr, missing))} in workflow "
                                  f"{self.type!r} (handlers: {', '.join(sorted(self.handlers))})")
        if not chosen:
            raise InvalidArgument("states", f"workflow {self.type!r} has no state handlers yet")
        return WorkflowRunner(self, chosen, worker_options(options))

    def declared(self) -> frozenset[str] | None:
        if self.declared_states is None:
            return None
        return self.declared_states | set(self.handlers) | {self.initial_state}


class WorkflowRunner:
    """Runs the workflow's state handlers for the chosen states."""

    def __init__(self, workflow: Workflow, states: list[str], options: dict[str, Any]) -> None:
        self.workflow = workflow
        self.states = states
        self.options = options
        self._runner: Runner | None = None

    def _make(self) -> Runner:
        wf = self.workflow
        wf.register()
        options = dict(self.options)
        policy = options.pop("exception_policy", None)
        policies: dict[str, ExceptionPolicy] = {s: policy for s in self.states if policy}
        policies.update({s: p for s, p in wf.exception_policies.items() if s in self.states})
        # A state's own timeout wins over the worker's (the group's) for every state.
        timeout = options.pop("timeout", None)
        timeouts: dict[str, float | None] = dict.fromkeys(self.states, timeout)
        timeouts.update({s: t for s, t in wf.timeouts.items() if s in self.states})
        self._runner = Runner(wf.client, type=wf.type, states=self.states,
                              handlers=wf.handlers, exception_policy=policies,
                              declared_states=wf.declared(), timeouts=timeouts, **options)
        return self._runner

    def run(self) -> int:
        return self._make().run()

    def run_once(self) -> int:
        return self._make().run_once()

    def run_until_idle(self, timeout: float = 30.0) -> int:
        return self._make().run_until_idle(timeout)

    def stop(self) -> None:
        if self._runner is not None:
            self._runner.stop()


WorkflowWorker = WorkflowRunner  # the 0.x name
