"""The run board: which Flows a worker process is running in a handler, and since when.

A small file under `daemon.data_dir/running/<pid>`, memory-mapped by the worker, one fixed
slot per handler thread or async task slot. A handler's start and end are a few stores into
the mapping (no syscall, nothing on the store's hot path). The supervisor reads the file
after the worker is gone, so it learns what the worker was doing at its death without the
worker's help: a SIGKILL, an OOM kill or a GIL-holding hang leave the file as it was.

What it is for (issue 18, items 3 and 4; docs/failure-semantics.md): only Flows that were
running in a handler at a death count a crash; the ones the worker held but never started
are released without blame; after a hang, only the Flows past their time limit are blamed
(else the longest-running one).

Slot layout (little-endian): started f64 (Unix time; 0 = empty), limit f64 (the state's
timeout in seconds, 0 = none), SHA-1 of the Flow id (20 bytes), state length u8, state (128
bytes). A handler's start writes the rest of the slot, then `started` (one aligned 8-byte
store, so a death never leaves half of it); its end zeroes `started`. A slot is therefore
either empty or names the Flow whose handler was running, whenever the process died.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass
from hashlib import sha1
from pathlib import Path
from typing import Any

__all__ = ["InHandler", "RunBoard", "blame", "board_path", "read_board"]

_STARTED = struct.Struct("<d")  # at the slot's start: 8-byte aligned, as STRIDE is
_REST = struct.Struct("<d20sB128s")
STRIDE = 168  # _STARTED.size + _REST.size = 165, rounded up to a multiple of 8


def board_path(data_dir: Path, pid: int) -> Path:
    return Path(data_dir) / "running" / str(pid)


@dataclass(frozen=True)
class InHandler:
    """A Flow running in a handler when its worker died (read back from the board)."""

    digest: bytes  # SHA-1 of the Flow id (reclaim.lua matches it with redis.sha1hex)
    state: str
    started: float  # Unix time
    limit_s: float  # the state's timeout; 0 = none


class RunBoard:
    """The worker's side: begin(slot, job) before a handler runs, end(slot) after it."""

    def __init__(self, path: Path, slots: int, timeouts: Mapping[str, float]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.ftruncate(fd, slots * STRIDE)
            self._map = mmap.mmap(fd, slots * STRIDE)
        finally:
            os.close(fd)
        self.path = path
        self.slots = slots
        self._limits = {s: float(t) for s, t in timeouts.items() if t}

    def begin(self, slot: int, job: Any) -> None:
        off, state = slot * STRIDE, job.state.encode()
        _REST.pack_into(self._map, off + 8, self._limits.get(job.state, 0.0),
                        sha1(job.id.encode("utf-8", "surrogatepass")).digest(), len(state), state)
        _STARTED.pack_into(self._map, off, time.time())  # wall clock: read by another process

    def end(self, slot: int) -> None:
        _STARTED.pack_into(self._map, slot * STRIDE, 0.0)

    def close(self) -> None:
        self._map.close()


def read_board(path: Path, *, remove: bool = True) -> list[InHandler] | None:
    """The Flows a dead worker was running in a handler; None when it left no board (it died
    before its runner started, or it ran without one)."""
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if remove:
        path.unlink(missing_ok=True)
    running = []
    for off in range(0, len(data) - STRIDE + 1, STRIDE):
        (started,) = _STARTED.unpack_from(data, off)
        limit, digest, size, state = _REST.unpack_from(data, off + 8)
        if started:
            running.append(InHandler(digest, state[:size].decode(), started, limit))
    return running


def blame(running: list[InHandler], *, hang: bool, now: float,
          default_limit_s: float) -> dict[bytes, bool]:
    """Which of the Flows running at a death to blame (digest -> blamed).

    A crash, a kill or an OOM blames every Flow that was in a handler: any of them may have
    caused it. A hang (the heartbeat stopped: a handler holding the GIL) blames the Flows
    past their time limit (their state's timeout, else `default_limit_s`); when none is,
    the longest-running one. The others' handlers were only frozen alongside."""
    if not hang or not running:
        return {r.digest: True for r in running}
    late = {r.digest for r in running if now - r.started > (r.limit_s or default_limit_s)}
    if not late:
        late = {min(running, key=lambda r: r.started).digest}
    return {r.digest: r.digest in late for r in running}
