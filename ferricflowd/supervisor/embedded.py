"""The embedded store: a private redis-server that the supervisor starts when the config has
no `store.url`, so one machine needs nothing else running.

It is durable the way the daemon's strict mode demands (appendonly yes, appendfsync always),
listens only on a unix socket in a 0700 directory under data_dir (port 0 = no TCP), and is a
child of the supervisor: reaped by the supervisor's loop, restarted if it dies, stopped last
on shutdown. `setpriv --pdeathsig TERM` (util-linux) makes it stop when the supervisor is
SIGKILLed; without setpriv a stale server is found through its pidfile at the next start.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from ferricflowd.procenv import terminate

__all__ = ["EmbeddedStore", "EmbeddedStoreError", "RedisServerMissing"]

log = logging.getLogger(__name__)

_UNIX_PATH_MAX = 104  # sun_path is 108 bytes on Linux; keep a margin


class EmbeddedStoreError(RuntimeError):
    """The embedded redis-server could not be started."""


class RedisServerMissing(EmbeddedStoreError):
    """redis-server is not installed; the message says how to fix it."""


class EmbeddedStore:
    """A supervised redis-server on the unix socket `socket_path` (DaemonConfig's
    embedded_socket, under data_dir), keeping its files in that socket's directory."""

    def __init__(self, socket_path: Path, startup_timeout_s: float = 10.0) -> None:
        self.socket_path = Path(socket_path)
        self.dir = self.socket_path.parent
        self.pidfile = self.dir / "redis.pid"
        self.logfile = self.dir / "redis.log"
        self.startup_timeout_s = startup_timeout_s
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def start(self) -> None:
        """Start redis-server and wait until it answers PING; raises EmbeddedStoreError."""
        binary = shutil.which("redis-server")
        if binary is None:
            raise RedisServerMissing(
                "no store.url is configured, so ferricflowd runs its own redis-server, but "
                "redis-server is not installed (PATH has none). Install it "
                "(Debian/Ubuntu: apt-get install redis-server) or set store.url."
            )
        if len(str(self.socket_path)) > _UNIX_PATH_MAX:
            raise EmbeddedStoreError(
                f"unix socket path {self.socket_path} is too long for the kernel; "
                "choose a shorter daemon.data_dir"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)  # the socket is the only access control
        self._stop_stale()
        setpriv = shutil.which("setpriv")
        prefix = [setpriv, "--pdeathsig", "TERM"] if setpriv else []
        cmd = [
            *prefix, binary,
            "--port", "0",
            "--unixsocket", str(self.socket_path),
            "--unixsocketperm", "700",
            "--dir", str(self.dir),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--pidfile", str(self.pidfile),
            "--logfile", str(self.logfile),
            "--daemonize", "no",
        ]  # fmt: skip
        # Own session: a Ctrl-C meant for the supervisor must not stop the store under
        # workers that are still draining; the supervisor stops it last.
        self.popen = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_ready()
        log.info(
            "embedded store: redis-server pid %d on %s (data and log in %s; "
            "inspect with: redis-cli -s %s)",
            self.popen.pid, self.url, self.dir, self.socket_path,
        )  # fmt: skip

    def exited(self, status: int) -> None:
        """Record the exit status the supervisor's reap loop collected for our pid."""
        if self.popen is not None:
            self.popen.returncode = os.waitstatus_to_exitcode(status)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM (redis fsyncs the AOF and exits), then SIGKILL after `timeout_s`."""
        popen, self.popen = self.popen, None
        terminate(popen, timeout_s, "embedded redis-server")

    def _wait_ready(self) -> None:
        assert self.popen is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise EmbeddedStoreError(
                    f"embedded redis-server exited with {self.popen.returncode} at start; "
                    f"its log says:\n{self._log_tail()}"
                )
            if _pings(self.socket_path):
                return
            time.sleep(0.02)
        self.popen.kill()
        self.popen.wait()
        raise EmbeddedStoreError(
            f"embedded redis-server did not answer within {self.startup_timeout_s:g}s; "
            f"its log says:\n{self._log_tail()}"
        )

    def _stop_stale(self) -> None:
        """A server left behind by a supervisor that died without setpriv: stop it."""
        try:
            pid = int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"redis-server" not in f.read():
                    return
            os.kill(pid, signal.SIGTERM)
        except OSError:
            return
        log.warning("stopping stale embedded redis-server pid %d", pid)
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
            time.sleep(0.05)

    def _log_tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def _pings(path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            sock.connect(str(path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False
