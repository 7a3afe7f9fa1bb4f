"""Issue 18 items 10 and 11, with the real daemon.

10: hundreds of idle (or slowly sending) clients on `daemon.listen` cost sockets, not
    supervisor threads, and /healthz still answers at once; the listener closes them.
11: at start the supervisor warns about a module in a handler directory that shadows a
    package the daemon imports, and about a config file or handler directory anyone may
    write, then runs as usual.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import time
from pathlib import Path
from typing import Any

import psutil
import redis

from ferricflowd import QueueClient
from ferricflowd.supervisor import preflight
from ferricflowd.supervisor.http import REQUEST_TIMEOUT_S
from tests.helpers import wait_for

ECHO = "tests.daemon.handlers.basic:echo"
GROUPS = {"q": {"type": "q", "states": ["queued"], "handler": ECHO, "processes": 1}}


# -- 10: the health listener ------------------------------------------------------------------

def test_health_answers_at_once_with_300_idle_clients_and_few_threads(start_daemon: Any) -> None:
    daemon = start_daemon(GROUPS)
    clients: list[socket.socket] = []
    try:
        for _ in range(300):
            clients.append(socket.create_connection(("127.0.0.1", daemon.port), timeout=5))
        for sock in clients[-20:]:  # slow clients: a request head that never ends
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        status, body = daemon.get("/healthz")
        took = time.monotonic() - started
        assert status == 200 and '"alive"' in body, (status, body)
        assert took < 1.0, f"/healthz took {took:.2f}s with 300 idle clients"
        # /healthz was accepted after all 300: each has cost whatever it costs by now.
        threads = psutil.Process(daemon.pid).num_threads()
        assert threads < 40, f"supervisor has {threads} threads with 300 idle clients"
        # The listener gives up on a client that sends no complete request in time.
        last = clients[-1]
        last.settimeout(REQUEST_TIMEOUT_S + 10)
        waited = time.monotonic()
        assert last.recv(1) == b""  # closed by the daemon, not our timeout (that raises)
        assert time.monotonic() - waited < REQUEST_TIMEOUT_S + 5
        assert daemon.get("/healthz")[0] == 200
    finally:
        for sock in clients:
            sock.close()


# -- 11: imports and file modes ---------------------------------------------------------------

def _warnings(log: str) -> list[str]:
    return [line for line in log.splitlines() if " WARNING " in line and "preflight" in line]


def test_start_warns_about_a_shadowing_module_and_loose_modes(start_daemon: Any,
                                                              tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "redis.py").write_text("raise ImportError('not the real redis')\n")
    config = conf / "flows.toml"
    config.touch()
    config.chmod(0o666)  # start_daemon rewrites it in place: the mode stays
    conf.chmod(0o777)
    try:
        daemon = start_daemon(GROUPS, config_name="conf/flows.toml")
        assert stat.S_IMODE(config.stat().st_mode) == 0o666
        QueueClient(daemon.client).queue(type="q").enqueue("f1")
        wait_for(lambda: daemon.client.get("f1").state == "completed", timeout=20,
                 what=f"f1 completed; log:\n{daemon.log_tail()}")
        log = daemon.log()
    finally:
        conf.chmod(0o755)
    found = _warnings(log)
    assert any(f"{conf / 'redis.py'} shadows the 'redis' package" in w for w in found), log
    assert any(f"config file {config} is writable by any user" in w for w in found), log
    assert any(f"handler directory {conf} is writable by any user" in w for w in found), log
    assert len(found) == 3, found  # one line each, nothing about the other directories
    # Said before the first worker was spawned (it could import from there).
    first_spawn = log.index("spawned worker")
    assert all(log.index(w) < first_spawn for w in found), log


def test_preflight_flags_real_shadows_only(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "flows.toml"
    config.parent.mkdir()
    config.write_text("")
    work, extra = tmp_path / "work", tmp_path / "extra"
    (work / "psutil").mkdir(parents=True)
    (work / "psutil" / "__init__.py").write_text("")
    (extra / "click").mkdir(parents=True)  # no __init__.py: loses to the real click
    (extra / "msgpack.py").write_text("")
    (extra / "my_handlers.py").write_text("")
    installed = str(Path(redis.__file__).resolve().parents[1])  # holds the real redis
    env = {"PYTHONPATH": os.pathsep.join([str(extra), installed])}
    found = preflight.warn_unsafe(config, env, cwd=work)
    shadows = sorted(re.findall(r"shadows the '(\w+)' package", " ".join(found)))
    assert shadows == ["msgpack", "psutil"], found
    assert not any("writable" in w for w in found), found
    assert Path(installed) not in preflight.handler_dirs(config, env, cwd=work)
