"""What a worker process tells the supervisor: the control pipe, and the in-flight gauge."""

from __future__ import annotations

import inspect
import json
import os
import threading
from collections.abc import Callable
from typing import Any


class ControlChannel:
    """The write end of the control pipe: JSON lines to the supervisor, never blocking."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd
        self.broken = False
        if fd is not None:
            os.set_blocking(fd, False)

    def send(self, **message: Any) -> None:
        if self.fd is None or self.broken:
            return
        line = (json.dumps(message, separators=(",", ":")) + "\n").encode()
        try:
            os.write(self.fd, line)  # < PIPE_BUF: atomic
        except BlockingIOError:
            pass  # the supervisor is behind; the next heartbeat carries the same news
        except OSError:
            self.broken = True  # EPIPE: nobody reads any more, the supervisor is gone


class InFlight:
    """Handlers running now, per logical state, for the in-flight gauge.

    Counted in plain ints and written to the gauge by the heartbeat (twice a second, only
    what changed): a gauge inc/dec per job is two multiprocess mmap writes, each taking
    prometheus_client's one process-wide lock and a getpid() syscall, and the handler threads
    contended for that lock (about a tenth of a short job's CPU). The gauge never drifts; it
    lags by at most a heartbeat."""

    def __init__(self, gauge: Any, flow_type: str) -> None:
        self._gauge = gauge
        self._type = flow_type
        self._running: dict[str, int] = {}
        self._published: dict[str, int] = {}
        self._lock = threading.Lock()

    def wrap(self, state: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        self._running.setdefault(state, 0)
        running, lock = self._running, self._lock
        if inspect.iscoroutinefunction(fn):

            async def run_async(job: Any) -> Any:
                with lock:
                    running[state] += 1
                try:
                    return await fn(job)
                finally:
                    with lock:
                        running[state] -= 1

            return run_async

        def run(job: Any) -> Any:
            with lock:
                running[state] += 1
            try:
                return fn(job)
            finally:
                with lock:
                    running[state] -= 1

        return run

    def publish(self) -> None:
        with self._lock:
            now = dict(self._running)
        for state, n in now.items():
            if self._published.get(state) != n:
                self._gauge.labels(self._type, state).set(n)
                self._published[state] = n
