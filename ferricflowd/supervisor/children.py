"""What the supervisor knows about each worker process and each group.

A `Child` is one worker process: its pid and worker id, the generation of its group's config
it was started with, and what it last said on its control pipe. Workers write one small JSON
object per line on that pipe (ferricflowd/worker/process.py is the other side):

    {"t": "ready"}                                      boot done, claiming
    {"t": "hb", "busy": 3, "conc": 16, "handled": 812,  status, about once a second;
     "rss": 51200000, "tick_age": 0.2, "live": 16}      tick_age = seconds since the claim
                                                        loop last turned; live = handler
                                                        slots not hung past a timeout
    {"t": "draining"}                                   SIGTERM seen, no more claims
    {"t": "recycle", "why": "..."}                      a handler hung past its timeout:
                                                        draining to be replaced (planned)

A `GroupState` is the supervisor's bookkeeping for one `[groups.NAME]`: the target strength,
the config generation, the crash history that drives backoff and crash-loop detection, and
whether a boot failure or a recycle is in progress.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ferricflowd.config import Config, GroupConfig

__all__ = ["SUPERVISOR_PID_ENV", "Child", "GroupState", "spawn_worker", "worker_env"]

BACKOFF_BASE_S = 0.1
BACKOFF_MAX_S = 30.0
CRASH_LOOP_RETRY_S = 30.0  # a crash-looping group is retried this slowly
STABLE_AFTER_S = 10.0  # a child alive this long resets the backoff and the crash-loop mark
_MAX_LINE = 64 * 1024  # a control line longer than this is garbage; drop it
MAX_JOBS_JITTER = 0.1  # up to +10%, so children started together do not recycle together
SUPERVISOR_PID_ENV = "FERRICFLOWD_SUPERVISOR_PID"  # the worker's parent-death check
# systemd's variables are for the main process only; a worker must not notify in its place.
_CHILD_ENV_DROP = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


@dataclass(eq=False)
class Child:
    """One worker process, as seen from the supervisor."""

    pid: int
    group: str
    worker_id: str
    generation: int
    popen: subprocess.Popen[bytes]
    control_fd: int  # read end of the control pipe, non-blocking
    spawned_at: float  # time.monotonic()
    max_jobs: int = 0  # this child's recycle threshold (with jitter); 0 = never
    # what the child last said
    ready_at: float | None = None
    last_tick: float = 0.0  # monotonic time of the claim loop's last turn, per the child
    busy: int = 0
    concurrency: int = 0
    handled: int = 0
    rss: int = 0
    live: int | None = None  # handler slots able to run a job (None: not reported yet)
    draining: bool = False
    # what the supervisor asked of it
    retire_reason: str | None = None  # set once the child is on its way out
    marked_at: float | None = None  # recycle: when its replacement was asked for
    term_sent_at: float | None = None
    kill_at: float | None = None  # SIGKILL after this (monotonic)
    abort_sent_at: float | None = None  # hang: SIGABRT sent
    kill_sent: bool = False
    _buffer: bytes = b""
    _eof: bool = False

    def __post_init__(self) -> None:
        self.last_tick = self.spawned_at

    @property
    def ready(self) -> bool:
        return self.ready_at is not None

    @property
    def retiring(self) -> bool:
        return self.retire_reason is not None

    def read_control(self, now: float) -> list[dict[str, Any]]:
        """Read whatever the child wrote (never blocks) and apply it; returns the messages."""
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
        """Ask the child to drain and exit: SIGTERM now, SIGKILL at now + grace_s."""
        self.retire_reason = self.retire_reason or reason
        if self.term_sent_at is None:
            self.term_sent_at = now
            self.kill_at = now + grace_s
            self.send(signal.SIGTERM)

    def recycle_trigger(self, group: GroupConfig, check_rss: bool) -> str | None:
        """Why this child should be recycled now ("max_jobs ...", "max_memory ..."), or None.
        RSS is measured here (psutil), not taken from the child's own report."""
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
        """A metric label for why it died: hang, recycle, drain, reload, ..., signal, crash."""
        if self.abort_sent_at is not None:
            return "hang"
        if self.retire_reason is not None:
            reason = self.retire_reason
            return "recycle" if reason.startswith("recycle") else reason.split()[0]
        return "signal" if os.WIFSIGNALED(status) else "crash"

    def closed(self, status: int) -> None:
        """The child was reaped: record its status for Popen and close the pipe."""
        # Popen must not waitpid() this pid later: it may belong to a new child by then.
        self.popen.returncode = os.waitstatus_to_exitcode(status)
        try:
            os.close(self.control_fd)
        except OSError:
            pass


@dataclass(eq=False)
class GroupState:
    """The supervisor's bookkeeping for one group of the config."""

    config: GroupConfig
    fingerprint: str
    target: int
    generation: int = 1
    crashes: deque[float] = field(default_factory=deque)  # monotonic times in the window
    consecutive_crashes: int = 0
    next_spawn_at: float = 0.0
    crash_looping: bool = False
    boot_failure: str | None = None  # set: do not respawn until the config changes
    boot_exit_code: int = 0
    recycling: int | None = None  # pid of the child being recycled (one at a time)
    last_crash_at: float = 0.0
    generation_started: float = 0.0  # monotonic time of the last reset (reload)

    @classmethod
    def of(cls, config: Config, group: GroupConfig) -> GroupState:
        return cls(group, config.fingerprint(group.name), target=group.processes)

    @property
    def name(self) -> str:
        return self.config.name

    def record_crash(
        self, now: float, max_restarts: int, window_s: float, *, was_ready: bool = False
    ) -> float:
        """Note an unexpected death; returns the delay before the next spawn.

        Backoff doubles from BACKOFF_BASE_S up to BACKOFF_MAX_S, with +-25% jitter so the
        children of many daemons do not restart in lockstep. A child that had booted and
        reported ready (`was_ready`: killed from outside, OOM, a crash in a handler) is
        replaced after BACKOFF_BASE_S without doubling: its group would otherwise lose its
        capacity for up to BACKOFF_MAX_S after a few such deaths. More than `max_restarts`
        crashes within `window_s` mark the group crash-looping, ready or not; it is then
        retried every CRASH_LOOP_RETRY_S until a child stays up for STABLE_AFTER_S.
        """
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - window_s:
            self.crashes.popleft()
        self.consecutive_crashes += 1
        self.last_crash_at = now
        if len(self.crashes) > max_restarts:
            self.crash_looping = True
        exponent = 0 if was_ready else self.consecutive_crashes - 1
        delay = min(BACKOFF_BASE_S * 2**exponent, BACKOFF_MAX_S)
        if self.crash_looping:
            delay = max(delay, CRASH_LOOP_RETRY_S)
        delay *= random.uniform(0.75, 1.25)
        self.next_spawn_at = now + delay
        return delay

    def note_stable(self, now: float, oldest_alive_since: float | None) -> bool:
        """Reset backoff once a child has lived STABLE_AFTER_S; True if a crash loop ended."""
        if oldest_alive_since is None or self.consecutive_crashes == 0:
            return False
        if now - max(oldest_alive_since, self.last_crash_at) < STABLE_AFTER_S:
            return False
        was_looping = self.crash_looping
        self.consecutive_crashes = 0
        self.crash_looping = False
        return was_looping

    def readiness(self, children: list[Child]) -> tuple[dict[str, Any], str | None]:
        """(status for /readyz, why the group is not ready or None)."""
        ready = sum(  # a worker whose every handler slot hung serves nothing: not ready
            1 for c in children if c.ready and c.live != 0 and not c.retiring
            and c.generation == self.generation
        )
        doc: dict[str, Any] = {"target": self.target, "ready": ready}
        if self.boot_failure is not None:
            doc["boot_failure"] = self.boot_failure
            return doc, f"failed at boot ({self.boot_failure})"
        if self.crash_looping:
            doc["crash_looping"] = True
            return doc, "crash-looping"
        if ready < self.target:
            return doc, f"{ready}/{self.target} workers ready"
        return doc, None

    def reset(self, config: GroupConfig, fingerprint: str) -> None:
        """A changed config (HUP): a new generation, fresh crash history, no boot failure."""
        self.config = config
        self.fingerprint = fingerprint
        self.target = config.processes
        self.generation += 1
        self.generation_started = time.monotonic()
        self.crashes.clear()
        self.consecutive_crashes = 0
        self.next_spawn_at = 0.0
        self.crash_looping = False
        self.boot_failure = None
        self.boot_exit_code = 0


def worker_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of a worker: ours, minus systemd's, plus `extra`, and a PYTHONPATH
    that finds the same ferricflowd this supervisor runs (installed or from a checkout)."""
    env = {k: v for k, v in os.environ.items() if k not in _CHILD_ENV_DROP}
    env.update(extra)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if _PACKAGE_ROOT not in paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, _PACKAGE_ROOT])
    return env


def spawn_worker(
    config: Config,
    group: GroupState,
    hostname: str,
    store_url: str | None,
    env: dict[str, str],
    now: float,
) -> Child:
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
    return Child(
        pid=popen.pid,
        group=group.name,
        worker_id=template.replace("{pid}", str(popen.pid)),
        generation=group.generation,
        popen=popen,
        control_fd=read_fd,
        spawned_at=now,
        max_jobs=max_jobs + int(max_jobs * random.uniform(0, MAX_JOBS_JITTER)),
    )
