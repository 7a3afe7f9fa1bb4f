"""Handlers for the time-limit and BaseException tests' daemon workers (imported by name).

`limited` (a queue handler) does what the Flow's payload says: `hang` blocks for good (a
thread nobody can kill), `exit` raises SystemExit(3) (what sys.exit() in a library does),
`interrupt` raises KeyboardInterrupt; anything else completes with b"ok".
"""

from __future__ import annotations

import threading
from typing import Any

_never = threading.Event()


def limited(job: Any) -> bytes:
    what = job.payload
    if what == b"hang":
        _never.wait()
    if what == b"exit":
        raise SystemExit(3)
    if what == b"interrupt":
        raise KeyboardInterrupt
    return b"ok"
