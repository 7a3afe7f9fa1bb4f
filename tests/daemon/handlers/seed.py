"""A handler module written exactly like a producer's: its own client, created at import.

The URL points nowhere; clients connect lazily, and the daemon binds the workflow to its own
configured store, so the workers must never try this address.
"""

from __future__ import annotations

from ferricflowd.flow.outcomes import transition
from ferricflowd.flow.workflow import WorkflowClient

order = WorkflowClient.from_url("redis://127.0.0.1:9/0").workflow(
    type="seed", initial_state="created"
)


@order.state("created")
def created(job: object) -> object:
    return transition("shipped")


@order.state("shipped")
def shipped(job: object) -> None:
    return None
