"""Flows that would wait forever are named: a type or state no group handles (CLI warning,
`check`, a gauge) and a transition to an undeclared state (the Flow fails, saying why)."""

from __future__ import annotations

import signal

from tests.daemons import metric_or_none, run_cli
from tests.helpers import wait_for

H = "tests.daemon.handlers.basic"
GROUPS = {"image": {"type": "image", "states": ["queued"], "handler": f"{H}:echo"}}


def test_enqueue_of_a_type_no_group_handles_warns_and_strict_refuses(start_daemon, tmp_path):
    daemon = start_daemon(GROUPS)
    config = str(daemon.config_path)
    done = run_cli("enqueue", "--config", config, "imgae", "x1", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "warning: no group of" in done.stderr and "'imgae'" in done.stderr
    assert "did you mean type 'image'" in done.stderr
    assert daemon.client.get("x1") is not None  # created, as asked

    refused = run_cli("enqueue", "--config", config, "--strict", "imgae", "x2", cwd=tmp_path)
    assert refused.returncode == 2 and "refusing" in refused.stderr, refused
    assert daemon.client.get("x2") is None

    ok = run_cli("enqueue", "--config", config, "--strict", "image", "x3", cwd=tmp_path)
    assert ok.returncode == 0 and "warning" not in ok.stderr, ok.stderr
    wrong_state = run_cli("enqueue", "--config", config, "--state", "sent", "image", "x4",
                          cwd=tmp_path)
    assert "in state 'sent' (its groups handle queued)" in wrong_state.stderr

    # the daemon's gauge and `check` name the stranded backlog (a sweep updates the gauges
    # type by type: wait for all three)
    def gauges() -> tuple[float | None, ...]:
        text = daemon.metrics()
        return tuple(metric_or_none(text, name, type=t, state=s) for name, t, s in (
            ("ferricflowd_unserved_backlog", "imgae", "queued"),
            ("ferricflowd_unserved_backlog", "image", "sent"),
            ("ferricflowd_unserved_backlog", "image", "queued"),
            ("ferricflowd_backlog", "imgae", "queued")))

    wait_for(lambda: gauges() == (1, 1, 0, 1), timeout=15, interval=0.1,
             what="unserved gauges 1 (imgae, image/sent), 0 (image/queued)")
    check = run_cli("check", "--config", config, cwd=tmp_path)
    assert check.returncode == 0, check.stderr
    assert ("warning: 1 Flow(s) of type 'imgae' due in state 'queued', which no group of this "
            "config handles") in check.stderr
    assert "type 'image' due in state 'sent'" in check.stderr
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0


def test_a_transition_to_an_undeclared_state_fails_the_flow_with_its_reason(start_daemon):
    daemon = start_daemon({"s": {"type": "strict", "states": ["created"],
                                 "handler": f"{H}:strict_order"}})
    daemon.client.create("s1", "strict", "created")
    wait_for(lambda: (r := daemon.client.get("s1")) is not None and r.state == "failed",
             timeout=10, what="s1 failed")
    record = daemon.client.get("s1")
    assert record is not None and b"undeclared state 'no_such_state'" in (record.error or b"")
    events = daemon.client.history("s1")
    assert events[-1].event == "failed"
    assert "undeclared state 'no_such_state'" in str(events[-1].details["error"])
