"""What the supervisor knows about each worker process, and how it starts one.

A `Worker` is one OS process running `python -m ferricflowd.worker` for one group: its pid and
worker id, the generation of its group's config it was started with, and what it last said
on its control pipe. Workers write one small JSON object per line on that pipe
(ferricflowd/worker/process.py is the other side):

    {"t": "ready"}                                      boot done, claiming
    {"t": "hb", "busy": 3, "conc": 16, "handled": 812,  status, about once a second;
     "rss": 51200000, "tick_age": 0.2}                  tick_age = seconds since the claim
                                                        loop last turned
    {"t": "progress"}                                   its first outcomes were stored
    {"t": "draining"}                                   SIGTERM seen, no more claims

The group-level bookkeeping (strength, backoff, crash loops) is in groups.py.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferricflowd import exitcodes
from ferricflowd.config import Config, GroupConfig
from ferricflowd.runboard import blame, board_path, read_board

if TYPE_CHECKING:
    from ferricflowd.supervisor.groups import GroupState

__all__ = ["Worker"]

_MAX_LINE = 64 * 1024  # a control line longer than this is garbage; drop it
BOOT_TIMEOUT_S = 60.0  # a worker must report ready within this (slow imports are common)
MAX_JOBS_JITTER = 0.1  # up to +10%, so workers started together do not recycle together


@dataclass(eq=False)
class Worker:
    """One worker process, as seen from the supervisor."""

    pid: int
    group: str
    worker_id: str
    generation: int
    popen: subprocess.Popen[bytes]
    control_fd: int  # read end of the control pipe, non-blocking
    spawned_at: float  # time.monotonic()
    max_jobs: int = 0  # this worker's recycle threshold (with jitter); 0 = never
    # what the worker last said
    ready_at: float | None = None
    last_tick: float = 0.0  # monotonic time of the claim loop's last turn, per the worker
    busy: int = 0
    concurrency: int = 0
    handled: int = 0
    rss: int = 0
    live: int | None = None  # handler slots able to run a job (None: not reported yet)
    draining: bool = False
    progressed: bool = False  # finished work at least once ("progress")
    # what the supervisor asked of it
    retire_reason: str | None = None  # set once the worker is on its way out
    marked_at: float | None = None  # recycle: when its replacement was asked for
    term_sent_at: float | None = None
    kill_at: float | None = None  # SIGKILL after this (monotonic)
    abort_sent_at: float | None = None  # hang: SIGABRT sent
    kill_sent: bool = False
    _buffer: bytes = b""
    _eof: bool = False

    def __post_init__(self) -> None:
        self.last_tick = self.spawned_at

    @classmethod
    def spawn(
        cls,
        config: Config,
        group: GroupState,
        hostname: str,
        store_url: str | None,
        env: dict[str, str],
        now: float,
    ) -> Worker:
        """fork+exec `python -m ferricflowd.worker` for `group` with a control pipe.

        subprocess forks and execs in C (no Python runs in between), so it is safe while this
        process has other threads. Raises OSError when the exec fails.
        """
        read_fd, write_fd = os.pipe()  # both non-inheritable; pass_fds hands write_fd over
        os.set_blocking(read_fd, False)
        template = f"{hostname}:{{pid}}:{group.name}"  # the worker fills in its own pid
        cmd = [
            sys.executable, "-m", "ferricflowd.worker",
            "--config", str(config.path), "--group", group.name,
            "--worker-id", template, "--control-fd", str(write_fd),
            "--log-format", config.daemon.log_format, "--log-level", config.daemon.log_level,
        ]  # fmt: skip
        if store_url is not None:
            cmd += ["--store-url", store_url]
        try:
            popen = subprocess.Popen(cmd, pass_fds=(write_fd,), env=env, stdin=subprocess.DEVNULL)
        except OSError:
            os.close(read_fd)
            raise
        finally:
            os.close(write_fd)
        max_jobs = group.config.max_jobs
        return cls(
            pid=popen.pid,
            group=group.name,
            worker_id=template.replace("{pid}", str(popen.pid)),
            generation=group.generation,
            popen=popen,
            control_fd=read_fd,
            spawned_at=now,
            max_jobs=max_jobs + int(max_jobs * random.uniform(0, MAX_JOBS_JITTER)),
        )

    @property
    def ready(self) -> bool:
        return self.ready_at is not None

    @property
    def made_progress(self) -> bool:
        """It booted and finished work: its death says nothing against its group's code."""
        return self.ready and self.progressed

    @property
    def retiring(self) -> bool:
        return self.retire_reason is not None

    def hang_limit(self, heartbeat_timeout_s: float, block_ms: int) -> float:
        """Seconds without a heartbeat after which it counts as hung: a booting worker may
        take BOOT_TIMEOUT_S to import; a ready one may block in a claim for block_ms."""
        if not self.ready:
            return max(heartbeat_timeout_s, BOOT_TIMEOUT_S)
        return heartbeat_timeout_s + block_ms / 1000.0

    def describe(self) -> str:
        """One line for the process table (SIGUSR1)."""
        return (f"pid={self.pid} id={self.worker_id} gen={self.generation} ready={self.ready} "
                f"busy={self.busy}/{self.concurrency} handled={self.handled} rss={self.rss} "
                f"retiring={self.retire_reason}")

    def read_control(self, now: float) -> list[dict[str, Any]]:
        """Read whatever the worker wrote (never blocks) and apply it; returns the messages."""
        messages = []
        while not self._eof:
            try:
                chunk = os.read(self.control_fd, 65536)
            except BlockingIOError:
                break
            except OSError:
                chunk = b""
            if not chunk:
                self._eof = True
                break
            self._buffer += chunk
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > _MAX_LINE:
            self._buffer = b""
        for line in lines:
            try:
                message = json.loads(line)
            except ValueError:
                continue
            if isinstance(message, dict):
                self._apply(message, now)
                messages.append(message)
        return messages

    def _apply(self, message: dict[str, Any], now: float) -> None:
        kind = message.get("t")
        if kind == "ready" and self.ready_at is None:
            self.ready_at = now
            self.last_tick = now
        elif kind == "hb":
            self.busy = int(message.get("busy", self.busy))
            self.concurrency = int(message.get("conc", self.concurrency))
            self.handled = int(message.get("handled", self.handled))
            self.rss = int(message.get("rss", self.rss))
            self.live = int(message.get("live", 1))
            self.last_tick = max(self.last_tick, now - float(message.get("tick_age", 0.0)))
        elif kind == "progress":
            self.progressed = True
        elif kind == "draining":
            self.draining = True
        elif kind == "recycle":  # it drains and exits by itself: a planned recycle
            self.retire_reason = self.retire_reason or f"recycle: {message.get('why', '')}"
            if self.term_sent_at is None:  # as if told to (no SIGTERM needed)
                self.term_sent_at = now

    def send(self, sig: int) -> bool:
        """Send a signal; False if the process is already gone (not yet reaped)."""
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        if sig == signal.SIGKILL:
            self.kill_sent = True
        return True

    def retire(self, reason: str, grace_s: float, now: float) -> None:
        """Ask the worker to drain and exit: SIGTERM now, SIGKILL at now + grace_s."""
        self.retire_reason = self.retire_reason or reason
        if self.term_sent_at is None:
            self.term_sent_at = now
            self.kill_at = now + grace_s
            self.send(signal.SIGTERM)

    def quit(self, kill_at: float, now: float) -> None:
        """Fast stop: SIGQUIT now (stop claiming, exit), SIGKILL at `kill_at` at the latest."""
        self.retire_reason = self.retire_reason or "stop"
        self.term_sent_at = self.term_sent_at or now
        self.kill_at = min(self.kill_at or kill_at, kill_at)
        self.send(signal.SIGQUIT)

    def recycle_trigger(self, group: GroupConfig, check_rss: bool) -> str | None:
        """Why this worker should be recycled now ("max_jobs ...", "max_memory ..."), or None.
        RSS is measured here (psutil), not taken from the worker's own report."""
        if self.max_jobs and self.handled >= self.max_jobs:
            return f"max_jobs {self.handled} >= {self.max_jobs}"
        if group.max_memory_bytes and check_rss:
            import psutil  # here: only groups with max_memory need it (~10 ms of a cold start)

            try:
                self.rss = psutil.Process(self.pid).memory_info().rss
            except psutil.Error:
                return None
            if self.rss > group.max_memory_bytes:
                return f"max_memory rss {self.rss} > {group.max_memory_bytes}"
        return None

    def exit_label(self, status: int) -> str:
        """A metric label for why it died: hang, recycle, drain, reload, ..., signal, store
        (unreachable at boot), crash."""
        if self.abort_sent_at is not None:
            return "hang"
        if self.retire_reason is not None:
            reason = self.retire_reason
            return "recycle" if reason.startswith("recycle") else reason.split()[0]
        if os.WIFSIGNALED(status):
            return "signal"
        return "store" if os.waitstatus_to_exitcode(status) == exitcodes.STORE_UNREACHABLE \
            else "crash"

    def in_handler(self, status: int, data_dir: Path, hang_limit_s: float
                   ) -> dict[bytes, bool] | None:
        """What it was running in a handler at its death, and whom to blame (the reclaim's
        `in_handler`); None when it left no run board (it never started its runner)."""
        running = read_board(board_path(data_dir, self.pid))
        if running is None:
            return None
        label = self.exit_label(status)
        if label not in ("crash", "signal", "hang"):  # retired (drain deadline, recycle, ...)
            return dict.fromkeys((r.digest for r in running), False)
        return blame(running, hang=label == "hang", now=time.time(),
                     default_limit_s=hang_limit_s)

    def closed(self, status: int) -> None:
        """The worker was reaped: record its status for Popen and close the pipe."""
        # Popen must not waitpid() this pid later: it may belong to a new worker by then.
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        try:
            os.close(self.control_fd)
        except OSError:
            pass
