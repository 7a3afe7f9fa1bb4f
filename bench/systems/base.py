"""The adapter interface: what a system must offer so the workloads can drive it.

A new system is one file in bench/systems/ with a `System` subclass named `Adapter`. The
workloads (bench/workloads.py) only use the methods below; a system that cannot do one raises
`Unavailable("why")` and that cell is reported as unavailable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from bench.common import EVENTS, BenchStore, Unavailable, python_env

# Handler threads per worker process of the threaded systems (ferricflowd, dramatiq) unless
# `--threads` says otherwise: Dramatiq's default, and ferricflowd's concurrency default.
THREADS = 8


class ProcGroup:
    """The top-level processes of a worker side (a daemon, or N worker commands)."""

    def __init__(self, procs: Sequence[subprocess.Popen[bytes]], runner: str,
                 logs: Sequence[Path] = ()) -> None:
        self.procs = list(procs)
        self.runner = runner
        self.logs = list(logs)

    @classmethod
    def spawn(cls, commands: Sequence[Sequence[str]], runner: str, log_dir: Path,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> ProcGroup:
        log_dir.mkdir(parents=True, exist_ok=True)
        procs, logs = [], []
        for i, cmd in enumerate(commands):
            path = log_dir / f"proc{i}-{int(time.time() * 1000)}.log"
            with open(path, "wb") as out:
                procs.append(subprocess.Popen(
                    list(cmd), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                    env=python_env(env), cwd=cwd, start_new_session=True))
            logs.append(path)
        return cls(procs, runner, logs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def descendants(self) -> list[int]:
        """Every live process below (and including) the top-level ones."""
        out: list[int] = []
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                proc = psutil.Process(p.pid)
                out.append(p.pid)
                out.extend(c.pid for c in proc.children(recursive=True))
        return out

    def alive(self) -> str | None:
        """None while every top-level process runs; else why not (with its log tail)."""
        for p, path in zip(self.procs, self.logs, strict=False):
            code = p.poll()
            if code is not None:
                return f"worker process {p.pid} exited with {code}: {tail(path)}"
        return None

    def signal(self, sig: int) -> None:
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, sig)

    def wait(self, timeout_s: float) -> bool:
        """Wait until every top-level process exited; False on timeout."""
        deadline = time.monotonic() + timeout_s
        for p in self.procs:
            try:
                p.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                return False
        return True

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL the whole process groups (children included)."""
        self.signal(signal.SIGTERM)
        if not self.wait(grace_s):
            self.kill_all()

    def kill_all(self) -> None:
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(p.pid, signal.SIGKILL)  # start_new_session: pgid == pid
            with contextlib.suppress(ProcessLookupError):
                p.kill()
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        for pid in self.descendants():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return " | ".join(text.strip().splitlines()[-lines:])


class System:
    """Base adapter. `kind` is the handler: noop, lat, sleep (BENCH_SLEEP_S) or chain."""

    name = "?"
    workloads: tuple[str, ...] = ("W1", "W2", "W3", "W4", "R1", "D1", "M1", "S1")
    # Caps on the sizes for systems too slow to finish the full ones in reasonable time
    # (the used size is reported as "n" in every repetition).
    max_sizes: dict[str, int] = {}

    def __init__(self, handlers: str = "sync") -> None:
        self.store: BenchStore | None = None
        self.log_dir = Path("/tmp")
        # "async": W1 only, its handler an `async def` (bench.handlers.noop_async), the
        # variant reported as "<name>-async".
        if handlers not in ("sync", "async"):
            raise ValueError(f"handlers must be sync or async, not {handlers!r}")
        self.asynchronous = handlers == "async"
        if self.asynchronous:
            self.name = f"{self.name}-async"
            self.workloads = ("W1",)

    def handler_name(self, kind: str) -> str:
        """The system's handler (task, actor) for `kind`: W1's noop has an async twin."""
        return f"{kind}_async" if self.asynchronous and kind == "noop" else kind

    # -- lifecycle ---------------------------------------------------------------------------

    def check(self) -> None:
        """Raise Unavailable when this system cannot run here (package missing, ...)."""

    def setup(self, store: BenchStore, log_dir: Path) -> None:
        """Bind to a freshly reset store before a cell."""
        self.store = store
        self.log_dir = log_dir

    def teardown(self) -> None:
        """Close clients after a cell."""

    def info(self) -> dict[str, Any]:
        """Versions and settings, for the JSON."""
        return {}

    @property
    def s(self) -> BenchStore:
        assert self.store is not None, "setup() first"
        return self.store

    # -- producing ---------------------------------------------------------------------------

    def enqueue(self, kind: str, job_id: str, payload: bytes) -> None:
        raise Unavailable("enqueue not implemented")

    def enqueue_many(self, kind: str, items: Sequence[tuple[str, bytes]]) -> None:
        """A batch (one round trip if the system has a batch API)."""
        raise Unavailable("no batch enqueue")

    def enqueue_chains(self, ids: Sequence[str]) -> None:
        raise Unavailable("no chain primitive")

    # -- consuming ---------------------------------------------------------------------------

    def start_workers(self, kind: str, *, concurrency: int | None = None,
                      env: dict[str, str] | None = None) -> ProcGroup:
        raise Unavailable("no worker command")

    def handler_pids(self, workers: ProcGroup) -> list[int]:
        """Processes that run handlers (killed in R1)."""
        return workers.descendants()

    # -- inspection --------------------------------------------------------------------------

    def pending(self) -> int:
        """Jobs still waiting in the broker (D1 counts the rest as lost)."""
        raise Unavailable("pending count not implemented")

    def drain_accounting(self, n: int) -> dict[str, Any]:
        """D1 after the workers exited: completed, handed back (due again), lost."""
        done = self.s.done()
        pending = self.pending()
        return {"completed": done, "requeued": pending, "lost": max(0, n - done - pending)}

    def recovered_after(self, killed_ids: Sequence[str], t_kill: float,
                        timeout_s: float) -> float | None:
        """Seconds from the kill until every killed job started again; None if not in time.

        Default: the handlers' own start events (a job that runs again logs again)."""
        deadline = time.monotonic() + timeout_s
        want = set(killed_ids)
        while time.monotonic() < deadline:
            latest: dict[str, float] = {}
            for raw in self.s.r.lrange(EVENTS, 0, -1):
                jid, _pid, at = raw.decode().split()
                if jid in want and float(at) > t_kill:
                    latest.setdefault(jid, float(at))
            if len(latest) == len(want):
                return max(latest.values()) - t_kill
            time.sleep(0.05)
        return None

    def memory(self, n: int) -> dict[str, Any]:
        """M1. Default: queued only (peers keep no history of completed jobs)."""
        from bench.workloads import queued_memory

        return queued_memory(self, n)

    def scale(self, small: int, big: int) -> dict[str, Any]:
        raise Unavailable("claim batches are a ferricflowd notion")
