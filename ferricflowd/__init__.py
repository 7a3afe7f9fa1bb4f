"""ferricflowd: durable FerricFlow workflows on Redis, and the daemon that runs them.

Public API (re-exports only; see ferricflowd/flow/ for the implementation).
"""

from __future__ import annotations

from .flow.client import ChildSpec, CreateSpec, FlowClient
from .flow.errors import (
    ConfigError,
    DurabilityError,
    FerricflowdError,
    FlowAlreadyExists,
    FlowError,
    FlowNotFound,
    HandlerError,
    IdempotencyConflict,
    InvalidArgument,
    StaleLease,
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
from .flow.worker import FlowWorker, WorkerHooks
from .flow.workflow import Workflow, WorkflowClient

__version__ = "0.1.0"

__all__ = [
    "ChildSpec", "ConfigError", "CreateSpec", "DurabilityError", "ExceptionPolicy",
    "FerricflowdError", "FlowAlreadyExists", "FlowClient", "FlowError", "FlowNotFound",
    "FlowRecord", "FlowStats", "FlowWorker", "HandlerError", "HistoryEvent",
    "IdempotencyConflict", "InvalidArgument", "Job", "Queue", "QueueClient", "RetryPolicy",
    "StaleLease", "StateMismatch", "StoreError", "TerminalFlow", "ValueConflict",
    "Workflow", "WorkflowClient", "WorkerHooks", "WrongState", "__version__", "complete",
    "fail", "retry", "transition",
]
