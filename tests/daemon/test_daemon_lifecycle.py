"""The daemon's own life: one daemon per data_dir, a fast stop when idle, and restarts that
keep a group serving when its workers are killed from outside."""

from __future__ import annotations

import signal
import time

import psutil

from ferricflowd.flow.policy import RetryPolicy
from ferricflowd.flow.queue import Queue
from tests.daemons import free_port, metric, run_cli
from tests.helpers import wait_for

H = "tests.daemon.handlers.basic"


def test_a_second_daemon_on_the_same_data_dir_exits_2_and_touches_nothing(
        start_daemon, tmp_path):
    first = start_daemon({"q": {"type": "q", "states": ["queued"], "handler": f"{H}:echo"}},
                         store={"url": None})
    sock = tmp_path / "data" / "redis" / "redis.sock"
    prom = tmp_path / "data" / "prometheus"
    prom_files = sorted(p.name for p in prom.iterdir())
    assert sock.exists() and prom_files

    second = run_cli("run", "--config", str(first.config_path),
                     "--listen", f"127.0.0.1:{free_port()}", cwd=tmp_path, timeout=30)
    assert second.returncode == 2, second.stderr
    assert (f"data_dir {tmp_path / 'data'} is in use by ferricflowd pid {first.pid}"
            in second.stderr)
    assert "redis-server" not in second.stderr  # it started (and stopped) no store

    # the first daemon's store, socket and metrics files are untouched; it works and drains
    assert sock.exists() and prom.is_dir()
    assert set(prom_files) <= {p.name for p in prom.iterdir()}
    Queue(first.client, "q").enqueue_many([f"e{i}" for i in range(20)])
    wait_for(lambda: first.client.stats("q").counts.get("completed") == 20, timeout=10,
             what="20 flows completed by the first daemon")
    assert first.get("/readyz")[0] == 200
    first.signal(signal.SIGTERM)
    assert first.wait_exit(10) == 0


def test_a_stale_lock_file_does_not_block_a_start(start_daemon, tmp_path):
    """A daemon killed with SIGKILL leaves its lock file; nobody holds the lock, so the next
    daemon starts."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "ferricflowd.lock").write_text("999999\n")
    daemon = start_daemon({"q": {"type": "q", "states": ["queued"], "handler": f"{H}:echo"}})
    assert (tmp_path / "data" / "ferricflowd.lock").read_text().strip() == str(daemon.pid)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0


def test_an_idle_daemon_stops_in_well_under_a_second(start_daemon):
    """Workers blocked in their claim wait (block = 5s) are woken by the drain, not waited
    out; nothing is in flight, so there is nothing to wait for."""
    daemon = start_daemon({
        "q": {"type": "q", "states": ["queued"], "handler": f"{H}:echo", "processes": 2,
              "block": "5s"},
        "w": {"type": "order", "states": ["created", "charged"], "handler": f"{H}:order",
              "block": "5s"},
    })
    Queue(daemon.client, "q").enqueue("one")  # one job, so the workers have been busy once
    wait_for(lambda: daemon.client.stats("q").counts.get("completed") == 1, timeout=10)
    time.sleep(0.5)  # into the blocked wait
    started = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0
    elapsed = time.monotonic() - started
    print(f"idle stop took {elapsed:.3f}s")
    assert elapsed < 0.8, f"an idle daemon took {elapsed:.2f}s to stop"


def _healthy_workers(daemon, group: str) -> list:
    """Workers that booted and reported work (their title turns "busy" at the first
    heartbeat after ready)."""
    found = []
    for proc in daemon.workers(group).values():
        try:
            if " busy " in " ".join(proc.cmdline()):
                found.append(proc)
        except psutil.Error:
            continue
    return found


def test_a_kill_storm_never_leaves_a_group_without_workers(start_daemon):
    """One healthy worker killed from outside every 300 ms for 6 s (an OOM killer, an
    operator): each had made progress, so none counts toward crash-loop detection
    (max_restarts is 5 here); a worker is always there to kill, nothing is lost, and every
    flow completes once. (Poison-pill detection is a separate, per-Flow rule: a Flow held by
    `max_crashes` dead workers fails. Flows here are held by several killed workers on
    purpose, so the type allows more crashes than the default 3.)"""
    daemon = start_daemon({"q": {"type": "storm", "states": ["queued"],
                                 "handler": f"{H}:sleepy", "processes": 2, "concurrency": 4}})
    daemon.client.register_policy("storm", RetryPolicy(max_crashes=50))
    total = 1500
    Queue(daemon.client, "storm").enqueue_many([(f"s{i}", b"0.02") for i in range(total)])
    kills = 0  # a replacement boots in ~0.5 s; on a loaded machine in a few (the wait below)
    end = time.monotonic() + 6.0
    while time.monotonic() < end:
        victims = wait_for(lambda: _healthy_workers(daemon, "q"), timeout=5, interval=0.02,
                           what=f"a healthy worker to kill after {kills} kills")
        victims[0].send_signal(signal.SIGKILL)
        kills += 1
        time.sleep(0.3)
    assert kills >= 10
    wait_for(lambda: daemon.client.stats("storm").counts.get("completed") == total,
             timeout=60, interval=0.2, what=f"{total} flows completed")
    for i in range(total):
        events = [e.event for e in daemon.client.history(f"s{i}")]
        assert events.count("completed") == 1, (i, events)
    text = daemon.metrics()
    assert metric(text, "ferricflowd_group_crash_looping", group="q") == 0
    assert metric(text, "ferricflowd_worker_restarts_total", group="q") >= kills
    wait_for(daemon.ready, timeout=10, what="/readyz 200 after the storm")
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0
