"""The environment of a worker process, built in one place.

The supervisor starts workers with it (supervisor/workers.py) and `ferricflowd check` starts
its handler-import checks with it (cli.py), so both find the same modules: a check that
passes means the workers import the same code. The worker reads SUPERVISOR_PID_ENV back
(worker/process.py) for its parent-death check.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SUPERVISOR_PID_ENV", "pythonpath", "worker_env"]

SUPERVISOR_PID_ENV = "FERRICFLOWD_SUPERVISOR_PID"
# systemd's variables are for the main process only; a worker must not notify in its place.
_SYSTEMD_ONLY = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID")
# The directory that holds this ferricflowd package (site-packages, or a checkout).
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


def pythonpath(current: str | None) -> str:
    """`current` (a PYTHONPATH value) with the directory of this ferricflowd appended, so a
    child interpreter imports the same ferricflowd as this one (installed or a checkout)."""
    paths = [p for p in (current or "").split(os.pathsep) if p]
    if _PACKAGE_ROOT not in paths:
        paths.append(_PACKAGE_ROOT)
    return os.pathsep.join(paths)


def worker_env(
    extra: Mapping[str, str] | None = None, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a worker: `base` (default: ours) minus systemd's variables, plus
    `extra`, with PYTHONPATH from `pythonpath()`."""
    source = os.environ if base is None else base
    env = {k: v for k, v in source.items() if k not in _SYSTEMD_ONLY}
    env.update(extra or {})
    env["PYTHONPATH"] = pythonpath(env.get("PYTHONPATH"))
    return env
