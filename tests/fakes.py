"""Fakes of the supervisor's collaborators, for its parts tested without processes."""

from __future__ import annotations


class FakeClient:
    """The store client of the maintenance thread: starts down; `down` steers ping and
    reclaim_worker, calls are recorded."""

    def __init__(self) -> None:
        self.down = True
        self.reclaimed: list[tuple[str, str]] = []
        self.expired: list[str] = []

    def ping(self) -> bool:
        return not self.down

    def reclaim_worker(self, worker_id: str, cause: str,
                       in_handler: object = None) -> tuple[int, int]:
        if self.down:
            raise ConnectionError("store down")
        self.reclaimed.append((worker_id, cause))
        return 2, 0

    def reclaim_expired(self, flow_type: str) -> int:
        self.expired.append(flow_type)
        return 0

    def stats(self, flow_type: str) -> None:
        return None

    def deliver_outbox(self) -> int:
        return 0

    def cleanup(self) -> int:
        return 0

    def close(self) -> None:
        pass
