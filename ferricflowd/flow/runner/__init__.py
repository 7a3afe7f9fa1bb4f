"""The Runner: the in-process claim / handle / flush engine (see runner.py).

    runner.py     the Runner and its claim loop; hooks and statistics
    ledger.py     the leases it holds, shared by its threads
    execution.py  handler threads, the asyncio loop, return values and exceptions -> outcomes
    flusher.py    the thread that sends outcome batches and renews long leases

`FlowWorker` and `WorkerHooks` are the 0.x names of `Runner` and `RunnerHooks` ("worker"
now means the OS process the daemon's supervisor spawns); they stay until 1.0.
"""

from __future__ import annotations

from .execution import exception_outcome, to_outcome
from .flusher import OutcomeEvent
from .runner import Runner, RunnerHooks, RunnerStatistics, default_worker_id

FlowWorker = Runner
WorkerHooks = RunnerHooks

__all__ = ["FlowWorker", "OutcomeEvent", "Runner", "RunnerHooks", "RunnerStatistics",
           "WorkerHooks", "default_worker_id", "exception_outcome", "to_outcome"]
