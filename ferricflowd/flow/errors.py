"""The one exception tree of ferricflowd.

    FerricflowdError
    ├── ConfigError                (config.py: file, dotted key, problem)
    ├── InvalidArgument            (also a ValueError; names the argument)
    ├── StoreError                 (connection, timeout, unexpected reply)
    │   └── DurabilityError        (store not configured for durable writes)
    └── FlowError                  (an engine error reply; `.reply` is the upstream string)
        ├── FlowNotFound           ERR flow not found
        ├── FlowAlreadyExists      ERR flow already exists
        ├── WrongState             ERR flow wrong state
        ├── StaleLease             ERR stale flow lease
        ├── IdempotencyConflict    ERR flow idempotency conflict / signal idempotency conflict
        ├── StateMismatch          ERR flow state mismatch
        ├── TerminalFlow           ERR flow is terminal
        ├── ValueConflict          ERR flow value <name> already exists with different digest
        ├── StaleVersion           ERR flow stale version (changed since the caller looked)
        ├── FlowLeased             ERR flow is leased (a live lease: only its holder may act)
        ├── FamilyConflict         ERR flow family: ... (parents and children, see rewind.lua)
        ├── ScheduleNotFound       ERR flow schedule not found
        └── ScheduleExists         ERR flow schedule already exists (with another spec)

Error replies travel as the upstream FerricFlow strings so clients of either can map them;
`error_from_reply` turns one into its class.
"""

from __future__ import annotations


class FerricflowdError(Exception):
    """Base of every error ferricflowd raises on purpose."""


class ConfigError(FerricflowdError):
    """A configuration problem, located by file and dotted key."""

    def __init__(self, file: str, key: str, problem: str) -> None:
        self.file, self.key, self.problem = file, key, problem
        super().__init__(f"{file}: {key}: {problem}" if key else f"{file}: {problem}")


class InvalidArgument(FerricflowdError, ValueError):
    """A bad argument to a public API; the message names it."""

    def __init__(self, argument: str, problem: str) -> None:
        self.argument = argument
        super().__init__(f"{argument}: {problem}")


class StoreError(FerricflowdError):
    """The store failed, timed out or answered something unexpected."""


class DurabilityError(StoreError):
    """The store would acknowledge writes it has not made durable."""


class FlowError(FerricflowdError):
    """An error reply of a Flow command."""

    reply = "ERR flow error"

    def __init__(self, message: str | None = None, flow_id: str | None = None) -> None:
        self.flow_id = flow_id
        text = message or self.reply
        super().__init__(f"{text} (flow {flow_id!r})" if flow_id is not None else text)


class FlowNotFound(FlowError):
    reply = "ERR flow not found"


class FlowAlreadyExists(FlowError):
    reply = "ERR flow already exists"


class WrongState(FlowError):
    reply = "ERR flow wrong state"


class StaleLease(FlowError):
    reply = "ERR stale flow lease"


class IdempotencyConflict(FlowError):
    reply = "ERR flow idempotency conflict"


class StateMismatch(FlowError):
    reply = "ERR flow state mismatch"


class TerminalFlow(FlowError):
    reply = "ERR flow is terminal"


class ValueConflict(FlowError):
    reply = "ERR flow value already exists with different digest"


class StaleVersion(FlowError):
    """The Flow changed since the version the caller acted on (an operator's guard)."""

    reply = "ERR flow stale version"


class FlowLeased(FlowError):
    """A worker holds a live lease on the Flow; only that worker may move it."""

    reply = "ERR flow is leased"


class FamilyConflict(FlowError):
    """Rewinding the Flow would break its parent's or its children's group: a parent with
    an unresolved group or with children that already ran, or a finished child whose
    parent no longer waits for it. The message says which."""

    reply = "ERR flow family"


class ScheduleNotFound(FlowError):
    reply = "ERR flow schedule not found"


class ScheduleExists(FlowError):
    reply = "ERR flow schedule already exists"


_BY_PREFIX: tuple[tuple[str, type[FlowError]], ...] = (
    ("ERR flow not found", FlowNotFound),
    ("ERR flow already exists", FlowAlreadyExists),
    ("ERR flow wrong state", WrongState),
    ("ERR stale flow lease", StaleLease),
    ("ERR flow idempotency conflict", IdempotencyConflict),
    ("ERR flow signal idempotency conflict", IdempotencyConflict),
    ("ERR flow state mismatch", StateMismatch),
    ("ERR flow is terminal", TerminalFlow),
    ("ERR flow value", ValueConflict),
    ("ERR flow stale version", StaleVersion),
    ("ERR flow is leased", FlowLeased),
    ("ERR flow family", FamilyConflict),
    ("ERR flow schedule not found", ScheduleNotFound),
    ("ERR flow schedule already exists", ScheduleExists),
)


def error_from_reply(reply: str, flow_id: str | None = None) -> FlowError:
    """Map an engine error string to its typed exception."""
    text = reply if reply.startswith("ERR ") else "ERR " + reply
    for prefix, cls in _BY_PREFIX:
        if text.startswith(prefix):
            return cls(text, flow_id)
    return FlowError(text, flow_id)
