"""A queue group's retry policy comes from its TOML (issue 17, item 13): `max_retries = 1`
and `backoff = "none"` fail an always-failing Flow after two attempts, at once, where the
defaults (3 retries, exponential from 1 s) would take seconds and four attempts."""

from __future__ import annotations

from typing import Any

from ferricflowd.config import load_config
from tests.helpers import wait_for


def test_a_queue_group_takes_its_retry_policy_from_the_toml(start_daemon: Any) -> None:
    daemon = start_daemon(
        {"q": {"type": "retrycfg", "states": ["queued"],
               "handler": "tests.daemon.handlers.kit:boom", "max_retries": 1,
               "backoff": "none", "exhausted_to": "gave_up"}},
    )  # fmt: skip
    group = load_config(daemon.config_path).group("q")
    assert group.retry_policy() is not None and group.retry_policy().max_retries == 1
    fc = daemon.client
    fc.create("r1", "retrycfg", "queued", b"")
    wait_for(lambda: (r := fc.get("r1")) is not None and r.state == "gave_up", timeout=10,
             what=f"r1 exhausted after one retry; log:\n{daemon.log_tail()}")
    events = [e.event for e in fc.history("r1")]
    assert events.count("claimed") == 2, events
