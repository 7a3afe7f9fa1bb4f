"""The web console as the daemon's supervised child: started after boot, shows the process
table, restarted when it dies without touching the workers, and left down (until HUP) when
its address cannot be used."""

from __future__ import annotations

import json
import os
import signal
import socket
import urllib.request

import psutil

from tests.daemons import Daemon, free_port
from tests.helpers import wait_for

TOKEN = "daemon-console-token-42"
GROUPS = {"q": {"type": "job", "states": ["queued"], "handler": "tests.daemon.handlers.basic:echo",
                "processes": 2}}


def console_pid(daemon: Daemon) -> int | None:
    for child in psutil.Process(daemon.pid).children():
        try:
            if " ".join(child.cmdline()).startswith("ferricflowd: console") and \
                    child.status() != psutil.STATUS_ZOMBIE:
                return child.pid
        except psutil.Error:
            continue
    return None


def page(port: int, path: str = "/") -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as reply:
            return reply.read().decode()
    except OSError:
        return None


def test_the_daemon_serves_its_console_and_restarts_it(start_daemon) -> None:
    port = free_port()
    daemon = start_daemon(GROUPS, console={"listen": f"127.0.0.1:{port}", "token": TOKEN,
                                           "refresh": "1s"})
    workers = set(daemon.workers("q"))
    assert len(workers) == 2
    home = wait_for(lambda: page(port), timeout=15, what="the console answers")
    # the overview shows the daemon's process table, from the supervisor's /status
    wait_for(lambda: all(f'<td class="n">{pid}</td>' in (page(port) or "") for pid in workers),
             timeout=10, what="worker pids on the overview")
    assert "Ready: every group at strength" in (page(port) or home)
    status = json.loads(daemon.get("/status")[1])
    assert {p["pid"] for p in status["processes"]} == workers
    assert status["groups"]["q"]["target"] == 2 and status["console"]["listen"].endswith(
        str(port))

    first = console_pid(daemon)
    assert first is not None
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: console_pid(daemon) not in (None, first), timeout=15,
             what="a new console process")
    wait_for(lambda: page(port), timeout=15, what="the new console answers")
    assert set(daemon.workers("q")) == workers  # the workers never noticed
    assert daemon.ready()
    assert "console exited: killed by SIGKILL" in daemon.log()
    assert json.loads(daemon.get("/status")[1])["console"]["restarts"] == 1

    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    wait_for(lambda: page(port) is None, timeout=5, what="the console gone with the daemon")


def test_a_console_that_cannot_listen_waits_for_hup(start_daemon) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        daemon = start_daemon(GROUPS, console={"listen": f"127.0.0.1:{port}"})
        wait_for(lambda: "not restarting it until the config changes" in daemon.log(),
                 timeout=15, what="the console's refusal in the log")
        assert daemon.ready()  # the console is not part of readiness
        assert console_pid(daemon) is None
        assert daemon.log().count("cannot listen on") == 1  # tried once, not in a loop
    daemon.signal(signal.SIGHUP)  # the port is free now
    wait_for(lambda: page(port), timeout=15, what="the console after HUP")


def test_the_console_exits_when_the_supervisor_is_killed(start_daemon) -> None:
    port = free_port()
    daemon = start_daemon(GROUPS, console={"listen": f"127.0.0.1:{port}"})
    wait_for(lambda: console_pid(daemon), timeout=15, what="the console process")
    console = psutil.Process(console_pid(daemon))
    os.kill(daemon.pid, signal.SIGKILL)
    wait_for(lambda: not console.is_running() or console.status() == psutil.STATUS_ZOMBIE,
             timeout=10, what="the console gone after its supervisor")


def test_hup_with_a_new_console_address_moves_the_console(start_daemon) -> None:
    port, moved = free_port(), free_port()
    daemon = start_daemon(GROUPS, console={"listen": f"127.0.0.1:{port}"})
    wait_for(lambda: page(port), timeout=15, what="the console answers")
    first = console_pid(daemon)
    text = daemon.config_path.read_text().replace(f"127.0.0.1:{port}", f"127.0.0.1:{moved}")
    daemon.config_path.write_text(text)
    daemon.signal(signal.SIGHUP)
    wait_for(lambda: page(moved), timeout=15, what="the console on its new address")
    assert page(port) is None and console_pid(daemon) != first
    assert "(replaced)" in daemon.log() and "restarting it in" not in daemon.log()
