"""sd_notify(3) with the standard library only: readiness, status and watchdog for systemd.

Every function is a no-op that returns False when the process was not started by systemd
with Type=notify (no $NOTIFY_SOCKET), so callers need no checks of their own. None of them
raise: a lost notification must never take the daemon down.
"""

from __future__ import annotations

import os
import socket
import time

_SOCKET_ENV = "NOTIFY_SOCKET"


def _address(value: str) -> str | bytes | None:
    if value.startswith("@"):
        # Abstract namespace: a leading NUL byte instead of '@' (as sd_notify does).
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock:... (systemd >= 254, VMs) and anything else: not supported


def notify(state: str, *, unset_environment: bool = False) -> bool:
    """Send newline-separated VAR=value assignments to systemd; True when sent.

    unset_environment removes $NOTIFY_SOCKET afterwards, so child processes started later
    do not inherit it (with NotifyAccess=main their messages would be dropped anyway).
    """
    path = os.environ.get(_SOCKET_ENV, "")
    if unset_environment:
        os.environ.pop(_SOCKET_ENV, None)
    address = _address(path) if path else None
    if address is None or not state:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True


def ready() -> bool:
    """All groups are up: systemctl start returns, dependent units start."""
    return notify("READY=1")


def stopping() -> bool:
    """The graceful drain began."""
    return notify("STOPPING=1")


def reloading() -> bool:
    """A reload began; send ready() when it is done.

    MONOTONIC_USEC is required by Type=notify-reload (systemd >= 253), harmless before.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify(f"RELOADING=1\nMONOTONIC_USEC={usec}")


def status(text: str) -> bool:
    """One line shown by systemctl status (newlines would start a new assignment)."""
    return notify("STATUS=" + " ".join(text.splitlines()))


def watchdog() -> bool:
    """Keep-alive ping; send it every watchdog_interval_s() seconds."""
    return notify("WATCHDOG=1")


def extend_timeout(seconds: float) -> bool:
    """Ask for more time to start or stop (e.g. while a long drain is still finishing)."""
    return notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")


def watchdog_interval_s() -> float | None:
    """How often to ping: half of WatchdogSec, or None when no watchdog applies to us.

    WATCHDOG_PID, when set, names the process the watchdog is meant for; a child that
    inherited the variables must not ping in its parent's place.
    """
    pid = os.environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None
        except ValueError:
            return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000 / 2


class Notifier:
    """What a supervisor tells systemd as it turns: READY=1 the first time it has no reason
    to be unready, STATUS= whenever the status line changes, WATCHDOG=1 at half the
    watchdog interval."""

    def __init__(self) -> None:
        self._ready = False
        self._status = ""
        self._next_watchdog = 0.0

    def update(self, now: float, reasons: list[str], workers: int) -> bool:
        """Send what is due; True when this call sent READY=1."""
        became_ready = not reasons and not self._ready
        if became_ready:
            self._ready = True
            ready()
        text = "; ".join(reasons) or f"{workers} workers, all groups ready"
        if text != self._status:
            self._status = text
            status(text)
        interval = watchdog_interval_s()
        if interval is not None and now >= self._next_watchdog:
            self._next_watchdog = now + interval
            watchdog()
        return became_ready
