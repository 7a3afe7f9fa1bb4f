"""The daemon's own life: one daemon per data_dir, a fast stop when idle, and restarts that
keep a group serving when its workers are killed from outside."""

from __future__ import annotations

import signal
import time

from ferricflowd.flow.queue import Queue
from tests.daemon.conftest import free_port, run_cli, wait_for

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
