"""A store that fails the scheduler is tried again every RETRY_S, not at every maintenance
sweep, and its failure is logged once (it logged every 200 ms during an outage)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ferricflowd.supervisor import scheduler as scheduler_module
from ferricflowd.supervisor.scheduler import Scheduler


class _DownStore:
    def __init__(self) -> None:
        self.calls = 0

    @property
    def schedules(self) -> Any:
        self.calls += 1
        raise ConnectionError("store unreachable")


def test_a_failing_store_is_retried_at_the_retry_interval_and_logged_once(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    clock = [100.0]
    monkeypatch.setattr(scheduler_module.time, "monotonic", lambda: clock[0])
    scheduler, client = Scheduler([]), _DownStore()
    with caplog.at_level(logging.DEBUG, logger=scheduler_module.__name__):
        for _ in range(25):  # 5 s of sweeps every 200 ms
            scheduler.step(client)
            clock[0] += 0.2
    assert client.calls == 5  # at 100, 101, 102, 103, 104 (RETRY_S = 1)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "store unreachable" in warnings[0].getMessage()
