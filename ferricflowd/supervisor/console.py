"""The web console as a child of the supervisor, and the status document it reads.

`ConsoleProcess` runs `python -m ferricflowd.console` (fork+exec, like a worker) once the
workers have booted, and restarts it with backoff when it dies. It holds no Flow and no
lease, so its death costs nothing but the page: the supervisor loop only reaps it and
schedules the restart; no reclaim, no readiness change, no crash-loop mark on any group.
A console that exits with exitcodes.CONFIG (a bad listen address, the port taken) would fail
the same way again: it waits for the next HUP instead of retrying in a loop.

`status_doc` is what `GET /status` on daemon.listen serves: the process table and the groups,
as the console's overview shows them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from typing import Any

from ferricflowd import exitcodes
from ferricflowd.config import Config
from ferricflowd.procenv import SUPERVISOR_PID_ENV, terminate, worker_env
from ferricflowd.supervisor.groups import GroupState
from ferricflowd.supervisor.workers import Worker

__all__ = ["ConsoleProcess", "local_url", "status_doc"]

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
STABLE_AFTER_S = 10.0  # alive this long: the next death starts the backoff afresh
STOP_GRACE_S = 5.0


class ConsoleProcess:
    """The supervised console process of one daemon (`[console]` with a listen address)."""

    def __init__(self, config: Config, store_url: str | None, daemon_url: str) -> None:
        self.config = config
        self.store_url = store_url  # the embedded store's socket, else None (config's url)
        self.daemon_url = daemon_url
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.next_start_at = 0.0
        self.failures = 0  # deaths in a row, for the backoff
        self.restarts = 0
        self.failed: str | None = None  # exited with a config error: wait for HUP
        self.replacing = False  # SIGTERMed by a reload: start the new one at once

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    def maintain(self, now: float) -> None:
        """Start the console if it should run and is not running (after its backoff)."""
        if self.popen is not None or self.failed is not None or now < self.next_start_at:
            return
        if not self.config.console.enabled:
            return
        cmd = [
            sys.executable, "-m", "ferricflowd.console", "--config", str(self.config.path),
            "--daemon-url", self.daemon_url, "--log-format", self.config.daemon.log_format,
            "--log-level", self.config.daemon.log_level,
        ]  # fmt: skip
        if self.store_url is not None:
            cmd += ["--store-url", self.store_url]
        env = worker_env({SUPERVISOR_PID_ENV: str(os.getpid())})
        try:
            self.popen = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
        except OSError as exc:
            log.error("cannot start the console: %s", exc)
            self._backoff(now)
            return
        self.started_at = now
        log.info("started the console (pid %d) on http://%s", self.popen.pid,
                 self.config.console.listen)

    def exited(self, status: int, now: float, stopping: bool) -> None:
        """The supervisor reaped our pid: note why, and when to start it again."""
        popen, self.popen = self.popen, None
        if popen is not None:
            popen.returncode = os.waitstatus_to_exitcode(status)  # no second waitpid
        how = exitcodes.describe(status)
        if stopping or self.replacing:
            log.info("console exited: %s%s", how, " (replaced)" if self.replacing else "")
            self.replacing = False
            return
        if os.waitstatus_to_exitcode(status) == exitcodes.CONFIG:
            self.failed = how
            log.error("console exited: %s; not restarting it until the config changes (HUP)",
                      how)
            return
        if now - self.started_at >= STABLE_AFTER_S:
            self.failures = 0
        delay = self._backoff(now)
        self.restarts += 1
        log.error("console exited: %s; restarting it in %.1fs", how, delay)

    def reload(self, config: Config) -> None:
        """HUP: a changed [console] (or store) restarts the console; a failed one retries."""
        changed = (config.console, config.store) != (self.config.console, self.config.store)
        self.config = config
        if changed or self.failed is not None:
            self.failed, self.failures, self.next_start_at = None, 0, 0.0
            if self.popen is not None:
                self.replacing = True
                self.popen.send_signal(signal.SIGTERM)  # reaped, then started again

    def stop(self) -> None:
        """SIGTERM, SIGKILL after STOP_GRACE_S; reaps the process itself (the loop is over)."""
        popen, self.popen = self.popen, None
        terminate(popen, STOP_GRACE_S, "console")

    def status(self) -> dict[str, Any]:
        return {"listen": self.config.console.listen, "pid": self.pid,
                "restarts": self.restarts, "failed": self.failed}

    def _backoff(self, now: float) -> float:
        delay = min(BACKOFF_BASE_S * 2**self.failures, BACKOFF_MAX_S)
        self.failures += 1
        self.next_start_at = now + delay
        return delay


def local_url(address: str) -> str:
    """The URL this host reaches `address` (HealthServer.address) at: a wildcard bind is
    reached on loopback."""
    host, _, port = address.rpartition(":")
    if host in ("0.0.0.0", "[::]", ""):
        host = "127.0.0.1"
    return f"http://{host}:{port}"


def status_doc(workers: Iterable[Worker], groups: Iterable[GroupState], now: float,
               console: ConsoleProcess | None) -> dict[str, Any]:
    """The process table and the groups, JSON-ready (ages in seconds, RSS in bytes)."""
    processes = [
        {"group": c.group, "pid": c.pid, "worker_id": c.worker_id, "generation": c.generation,
         "ready": c.ready, "busy": c.busy, "concurrency": c.concurrency, "handled": c.handled,
         "rss": c.rss, "age_s": round(now - c.spawned_at, 1), "retiring": c.retire_reason}
        for c in sorted(workers, key=lambda c: (c.group, c.spawned_at))
    ]
    group_docs = {
        g.name: {"type": g.config.type, "states": list(g.config.states), "target": g.target,
                 "generation": g.generation, "restarts": len(g.crashes),
                 "crash_looping": g.crash_looping, "boot_failure": g.boot_failure}
        for g in groups
    }
    return {"at": time.time(), "processes": processes, "groups": group_docs,
            "console": console.status() if console is not None else None}
