"""The supervisor's child processes: the environment of a worker, built in one place, and
the end of a helper process (`terminate`).

The supervisor starts workers with it (supervisor/workers.py) and `ferricflowd check` starts
its handler-import checks with it (cli.py), so both find the same modules: a check that
passes means the workers import the same code. The worker reads SUPERVISOR_PID_ENV back
(worker/process.py) for its parent-death check.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from collections.abc import Mapping
from pathlib import Path

__all__ = ["SUPERVISOR_PID_ENV", "pythonpath", "terminate", "worker_env"]

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


def terminate(popen: subprocess.Popen[bytes] | None, grace_s: float, name: str) -> None:
    """SIGTERM a helper process (the embedded store, the console) and reap it; SIGKILL it
    after `grace_s`. Nothing to do if it is gone already."""
    if popen is None or popen.returncode is not None:
        return
    popen.send_signal(signal.SIGTERM)
    try:
        popen.wait(grace_s)
    except subprocess.TimeoutExpired:
        logging.getLogger(__name__).warning("%s pid %d ignored SIGTERM; killing it", name,
                                            popen.pid)
        popen.kill()
        popen.wait()
