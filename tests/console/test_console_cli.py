"""`ferricflowd console` standalone: serves until SIGTERM and exits 0; a taken port is a
config error (exit 2) with a one-line reason."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.consoles import write_console_config
from tests.daemons import free_port

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRICFLOWD_")}
    env["PYTHONPATH"] = str(REPO)
    return env


def _up(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
            return reply.status == 200 and "ferricflowd" in reply.read().decode()
    except OSError:
        return False


def test_standalone_console_serves_and_stops_cleanly(redis_server, namespace,
                                                     tmp_path: Path) -> None:
    config = write_console_config(tmp_path / "flows.toml", redis_server.url, namespace, 1, "t")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ferricflowd", "console", "--config",
                             str(config), "--listen", f"127.0.0.1:{port}"],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        deadline = time.monotonic() + 20
        while not _up(port):
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert "console on http://127.0.0.1:" in proc.stdout.read()
    finally:
        proc.kill()


def test_a_taken_port_is_a_config_error(redis_server, namespace, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        config = write_console_config(tmp_path / "flows.toml", redis_server.url, namespace,
                                      port, "t")
        done = subprocess.run([sys.executable, "-m", "ferricflowd", "console", "--config",
                               str(config)], env=_env(), capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
