"""Operating the daemon: HUP reload, TTIN/TTOU, recycling, systemd notify, embedded store,
and config errors."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from ferricflowd.flow.client import FlowClient
from ferricflowd.flow.queue import Queue
from tests.daemons import daemon_env, metric, metric_or_none, run_cli
from tests.helpers import wait_for

H = "tests.daemon.handlers.basic"
TWO_GROUPS = {
    "a": {"type": "a", "states": ["queued"], "handler": f"{H}:echo"},
    "b": {"type": "b", "states": ["queued"], "handler": f"{H}:echo"},
}


def test_hup_with_changed_processes_leaves_the_other_group_alone(start_daemon):
    daemon = start_daemon(TWO_GROUPS)
    a_pids, b_pids = set(daemon.workers("a")), set(daemon.workers("b"))
    text = daemon.config_path.read_text()
    daemon.config_path.write_text(
        text.replace('[groups.b]\ntype = "b"', '[groups.b]\nprocesses = 2\ntype = "b"')
    )
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: daemon.group_ready("b", 2) and not b_pids & set(daemon.workers("b")),
             timeout=15, what="group b replaced by 2 new workers")
    assert set(daemon.workers("a")) == a_pids
    assert daemon.ready()

    # an invalid config is refused and the running one kept
    daemon.config_path.write_text(daemon.config_path.read_text() + "\n[bogus]\nx = 1\n")
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: "reload failed, keeping the running config" in daemon.log(), timeout=5)
    assert "bogus" in daemon.log()
    assert set(daemon.workers("a")) == a_pids and daemon.ready()


def test_ttin_and_ttou_add_and_remove_one_process_per_group(start_daemon):
    daemon = start_daemon(TWO_GROUPS)
    daemon.signal(signal.SIGTTIN)
    wait_for(lambda: daemon.group_ready("a", 2) and daemon.group_ready("b", 2), timeout=15,
             what="2 workers per group")
    daemon.signal(signal.SIGTTOU)
    wait_for(lambda: len(daemon.workers("a")) == 1 and len(daemon.workers("b")) == 1,
             timeout=15, what="1 worker per group again")
    assert daemon.ready()


def test_max_jobs_recycles_a_worker_without_losing_a_flow(start_daemon):
    daemon = start_daemon(
        {"q": {"type": "q", "states": ["queued"], "handler": f"{H}:sleepy",
               "max_jobs": 40, "concurrency": 4, "batch_size": 4}}
    )  # fmt: skip
    (first,) = daemon.workers("q")
    Queue(daemon.client, "q").enqueue_many([(f"j{i}", b"0.02") for i in range(200)])
    wait_for(lambda: daemon.client.stats("q").counts.get("completed") == 200, timeout=30,
             interval=0.1, what="200 flows completed")
    assert metric(daemon.metrics(), "ferricflowd_recycles_total", trigger="max_jobs") >= 1
    wait_for(lambda: first not in daemon.workers("q") and daemon.group_ready("q", 1),
             timeout=10, what="the old worker replaced")
    assert "recycling worker" in daemon.log()
    assert all(daemon.client.get(f"j{i}").state == "completed" for i in range(200))


def test_max_memory_recycles_a_worker_without_losing_a_flow(start_daemon):
    daemon = start_daemon(
        {"q": {"type": "q", "states": ["queued"], "handler": f"{H}:leak",
               "max_memory": "120MiB", "concurrency": 2, "batch_size": 2}}
    )  # fmt: skip
    (first,) = daemon.workers("q")
    Queue(daemon.client, "q").enqueue_many([f"m{i}" for i in range(80)])  # 160 MiB leaked
    wait_for(lambda: daemon.client.stats("q").counts.get("completed") == 80, timeout=30,
             interval=0.1, what="80 flows completed")
    wait_for(lambda: (metric_or_none(daemon.metrics(), "ferricflowd_recycles_total",
                                     trigger="max_memory") or 0) >= 1,
             timeout=5, what="a max_memory recycle")
    wait_for(lambda: first not in daemon.workers("q") and daemon.group_ready("q", 1),
             timeout=10, what="the old worker replaced")
    assert all(daemon.client.get(f"m{i}").state == "completed" for i in range(80))


def test_systemd_notify_ready_and_stopping(start_daemon, tmp_path):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        sock.settimeout(15)
        daemon = start_daemon(TWO_GROUPS, env={"NOTIFY_SOCKET": path}, wait=False)
        messages: list[str] = []

        def receive_until(text: str) -> None:
            while not any(text in m for m in messages):
                messages.append(sock.recv(4096).decode())

        receive_until("READY=1")
        assert daemon.ready()  # READY=1 only once every group is at strength
        daemon.signal(signal.SIGTERM)
        receive_until("STOPPING=1")
        assert daemon.wait_exit(10) == 0
    assert any(m.startswith("STATUS=") for m in messages), messages


def test_embedded_store_when_no_store_url(start_daemon, tmp_path):
    daemon = start_daemon(
        {"q": {"type": "q", "states": ["queued"], "handler": f"{H}:echo"}},
        store={"url": None},
    )
    sock = tmp_path / "data" / "redis" / "redis.sock"
    assert "embedded store: redis-server" in daemon.log() and str(sock) in daemon.log()
    assert oct((tmp_path / "data" / "redis").stat().st_mode & 0o777) == "0o700"
    Queue(daemon.client, "q").enqueue_many([f"e{i}" for i in range(50)])
    wait_for(lambda: daemon.client.stats("q").counts.get("completed") == 50, timeout=10)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0
    assert not sock.exists() or not _pings(sock)  # the store stopped with the daemon


def _pings(sock: Path) -> bool:
    try:
        return FlowClient.from_url(f"unix://{sock}").ping()
    except Exception:
        return False


def test_embedded_store_missing_redis_server_says_how_to_fix(start_daemon, tmp_path):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    os.symlink(sys.executable, bindir / "python")
    daemon = start_daemon(
        {"q": {"type": "q", "states": ["queued"], "handler": f"{H}:echo"}},
        store={"url": None},
        env={"PATH": str(bindir)},
        wait=False,
    )
    assert daemon.wait_exit(10) == 2
    assert "apt-get install redis-server" in daemon.log()


BAD_CONFIGS = [
    ("[store]\nurl = 5\n", "store.url"),
    ('[store]\ndurability = "sometimes"\n', "store.durability"),
    ('[daemon]\ndrain_timeout = "soon"\n', "daemon.drain_timeout"),
    ('[daemon]\ndrain_timeout = "30s"\nstop_grace = "10s"\n', "daemon.drain_timeout"),
    ("[daemon]\nlisten = 9464\n", "daemon.listen"),
    ('[daemon]\nlog_format = "xml"\n', "daemon.log_format"),
    ("[daemon]\nmax_restarts = -1\n", "daemon.max_restarts"),
    ("[daemon]\ncolour = 1\n", "daemon.colour"),
    ("[defaults]\nprocesses = 0\n", "defaults.processes"),
    ('[defaults]\nmax_memory = "lots"\n', "defaults.max_memory"),
    ('[groups.g]\ntype = "q"\nstates = ["a"]\n', "groups.g.handler"),
    ('[groups.g]\ntype = "q"\nstates = "a"\nhandler = "m:f"\n', "groups.g.states"),
    ('[groups.g]\ntype = "q"\nstates = ["a", "a"]\nhandler = "m:f"\n', "groups.g.states"),
    ('[groups.g]\ntype = "q"\nstates = ["a"]\nhandler = "m:f"\nlease = "0s"\n', "groups.g.lease"),
    ('[groups.g]\ntype = "q"\nstates = ["a"]\nhandler = "no colon"\n', "groups.g.handler"),
    ('[groups.g]\ntype = "q"\nstates = ["a"]\nhandler = "m:f"\n'
     '[groups.h]\ntype = "q"\nstates = ["a"]\nhandler = "m:g"\n', "groups.h.states"),
]


@pytest.mark.parametrize(("text", "key"), BAD_CONFIGS, ids=[k for _, k in BAD_CONFIGS])
def test_bad_config_exits_2_naming_the_key(tmp_path, text, key):
    config = tmp_path / "flows.toml"
    if "[groups." not in text:
        text += '\n[groups.g]\ntype = "q"\nstates = ["a"]\nhandler = "m:f"\n'
    config.write_text(text)
    result = run_cli("run", "--config", str(config), cwd=tmp_path, timeout=30)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert key in result.stderr and str(config) in result.stderr, result.stderr


def test_config_from_ferricflowd_config_env_and_cli_overrides(tmp_path):
    config = tmp_path / "flows.toml"
    config.write_text('[groups.g]\ntype = "q"\nstates = ["a"]\nhandler = "m:f"\n')
    env = daemon_env({"FERRICFLOWD_CONFIG": str(config)})
    result = run_cli("--listen", "nonsense", cwd=tmp_path, env=env, timeout=30)
    assert result.returncode == 2 and "daemon.listen" in result.stderr, result.stderr
    assert shutil.which("redis-server")  # the daemon tests need a real one
    started = time.monotonic()
    result = run_cli("check", cwd=tmp_path, env=env, timeout=30)
    assert result.returncode == 1 and "'m'" in result.stderr, result.stderr
    assert time.monotonic() - started < 30
