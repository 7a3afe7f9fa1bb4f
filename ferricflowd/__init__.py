"""ferricflowd: durable FerricFlow workflows on Redis, and the daemon that runs them.

Public API (re-exports only; see ferricflowd/flow/ for the implementation).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .flow.admin import BulkResult
    from .flow.browse import BrowsePage, FlowFilter
    from .flow.client import FlowClient
    from .flow.errors import (
        ConfigError,
        DurabilityError,
        FamilyConflict,
        FerricflowdError,
        FlowAlreadyExists,
        FlowError,
        FlowLeased,
        FlowNotFound,
        IdempotencyConflict,
        InvalidArgument,
        ScheduleExists,
        ScheduleNotFound,
        StaleLease,
        StaleVersion,
        StateMismatch,
        StoreError,
        TerminalFlow,
        ValueConflict,
        WrongState,
    )
    from .flow.outcomes import complete, fail, retry, transition
    from .flow.policy import ExceptionPolicy, RetryPolicy
    from .flow.queue import Queue, QueueClient
    from .flow.records import FlowRecord, FlowStats, HistoryEvent, Job
    from .flow.runner import FlowWorker, Runner, RunnerHooks, WorkerHooks
    from .flow.schedule_spec import Schedule
    from .flow.schedules import FireResult, ScheduleInfo
    from .flow.wire import ChildSpec, CreateSpec, LeaseRequest
    from .flow.workflow import Workflow, WorkflowClient

# Where each public name lives. They load on first use, so that `ferricflowd run` (the
# supervisor, which never needs the client) starts its workers without importing redis-py.
_EXPORTS = {
    ".flow.admin": ("BulkResult",),
    ".flow.browse": ("BrowsePage", "FlowFilter"),
    ".flow.client": ("FlowClient",),
    ".flow.errors": ("ConfigError", "DurabilityError", "FamilyConflict", "FerricflowdError",
                     "FlowAlreadyExists", "FlowError", "FlowLeased", "FlowNotFound",
                     "IdempotencyConflict", "InvalidArgument", "ScheduleExists",
                     "ScheduleNotFound", "StaleLease", "StaleVersion", "StateMismatch",
                     "StoreError", "TerminalFlow", "ValueConflict", "WrongState"),
    ".flow.outcomes": ("complete", "fail", "retry", "transition"),
    ".flow.policy": ("ExceptionPolicy", "RetryPolicy"),
    ".flow.queue": ("Queue", "QueueClient"),
    ".flow.records": ("FlowRecord", "FlowStats", "HistoryEvent", "Job"),
    ".flow.runner": ("FlowWorker", "Runner", "RunnerHooks", "WorkerHooks"),
    ".flow.schedule_spec": ("Schedule",),
    ".flow.schedules": ("FireResult", "ScheduleInfo"),
    ".flow.wire": ("ChildSpec", "CreateSpec", "LeaseRequest"),
    ".flow.workflow": ("Workflow", "WorkflowClient"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'ferricflowd' has no attribute {name!r}")
    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__version__ = "0.1.0"

__all__ = [
    "BrowsePage", "BulkResult", "ChildSpec", "ConfigError", "CreateSpec", "DurabilityError",
    "ExceptionPolicy", "FamilyConflict", "FerricflowdError", "FireResult", "FlowAlreadyExists",
    "FlowClient", "FlowError", "FlowFilter", "FlowLeased", "FlowNotFound", "FlowRecord",
    "FlowStats", "FlowWorker", "HistoryEvent", "IdempotencyConflict", "InvalidArgument", "Job",
    "LeaseRequest", "Queue", "QueueClient", "RetryPolicy", "Runner", "RunnerHooks", "Schedule",
    "ScheduleExists", "ScheduleInfo", "ScheduleNotFound", "StaleLease", "StaleVersion",
    "StateMismatch", "StoreError", "TerminalFlow",
    "ValueConflict", "Workflow", "WorkflowClient", "WorkerHooks", "WrongState", "__version__",
    "complete", "fail", "retry", "transition",
]
