"""FlowHandle: `job.flow`, what a handler may do to its own Flow while it holds the lease.

It implements records.JobFlow; the client makes one per claimed Job (FlowClient._job).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .errors import InvalidArgument
from .records import Job
from .wire import ChildSpec, raise_item

if TYPE_CHECKING:  # only for annotations: the client imports this module
    from .client import FlowClient


class FlowHandle:
    """`job.flow`: spawn children, extend the lease, store values, signal other Flows."""

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
        return int(raise_item(got, self.id))

    def put_value(self, name: str, data: bytes, *, override: bool = False) -> None:
        self.client.put_value(self.id, name, data, override=override, partition=self.partition)

    def signal(self, flow_id: str, signal: str, **options: Any) -> bool:
        """Signal another Flow (e.g. a parent or a peer) of this namespace."""
        return self.client.signal(flow_id, signal, **options)
