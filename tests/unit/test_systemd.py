"""sd_notify against a real AF_UNIX datagram socket, as systemd would listen."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from ferricflowd.supervisor import systemd


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        yield sock


def _received(sock: socket.socket) -> str:
    return sock.recv(4096).decode()


@pytest.mark.parametrize(
    ("send", "expected"),
    [
        (systemd.ready, "READY=1"),
        (systemd.stopping, "STOPPING=1"),
        (systemd.watchdog, "WATCHDOG=1"),
    ],
)
def test_simple_states(
    notify_socket: socket.socket, send: Callable[[], bool], expected: str
) -> None:
    assert send() is True
    assert _received(notify_socket) == expected


def test_status_is_one_line(notify_socket: socket.socket) -> None:
    assert systemd.status("2/3 groups up\nemail: crash-looping")
    assert _received(notify_socket) == "STATUS=2/3 groups up email: crash-looping"


def test_reloading_carries_monotonic_usec(notify_socket: socket.socket) -> None:
    assert systemd.reloading()
    lines = _received(notify_socket).split("\n")
    assert lines[0] == "RELOADING=1"
    key, _, value = lines[1].partition("=")
    assert key == "MONOTONIC_USEC" and int(value) > 0


def test_extend_timeout(notify_socket: socket.socket) -> None:
    assert systemd.extend_timeout(2.5)
    assert _received(notify_socket) == "EXTEND_TIMEOUT_USEC=2500000"


def test_notify_sends_arbitrary_assignments(notify_socket: socket.socket) -> None:
    assert systemd.notify("READY=1\nSTATUS=up\nMAINPID=42")
    assert _received(notify_socket) == "READY=1\nSTATUS=up\nMAINPID=42"


def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    name = f"ferricflowd-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2.0)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert systemd.ready()
        assert _received(sock) == "READY=1"


def test_without_systemd_everything_is_a_quiet_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert systemd.ready() is False
    assert systemd.status("x") is False
    assert systemd.watchdog() is False


def test_missing_socket_file_is_not_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert systemd.ready() is False


def test_unsupported_address_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")
    assert systemd.ready() is False


def test_unset_environment_hides_the_socket_from_children(
    notify_socket: socket.socket,
) -> None:
    assert systemd.notify("READY=1", unset_environment=True)
    assert _received(notify_socket) == "READY=1"
    assert "NOTIFY_SOCKET" not in os.environ
    assert systemd.ready() is False


def test_watchdog_interval_is_half_of_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert systemd.watchdog_interval_s() == 15.0
    monkeypatch.delenv("WATCHDOG_PID")
    assert systemd.watchdog_interval_s() == 15.0  # no PID given: it is for us


@pytest.mark.parametrize(
    ("usec", "pid"),
    [(None, None), ("0", None), ("junk", None), ("30000000", "1"), ("30000000", "junk")],
)
def test_no_watchdog(monkeypatch: pytest.MonkeyPatch, usec: str | None, pid: str | None) -> None:
    for name, value in (("WATCHDOG_USEC", usec), ("WATCHDOG_PID", pid)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    assert systemd.watchdog_interval_s() is None


def test_a_child_process_can_notify(notify_socket: socket.socket) -> None:
    # The supervisor may notify from a fresh interpreter too (e.g. after re-exec).
    code = "from ferricflowd.supervisor import systemd; raise SystemExit(not systemd.ready())"
    repo = Path(__file__).resolve().parents[2]
    subprocess.run([sys.executable, "-c", code], check=True, cwd=repo, timeout=30)
    assert _received(notify_socket) == "READY=1"


def test_notifier_sends_ready_once_and_status_on_change(
    notify_socket: socket.socket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = systemd.Notifier()
    assert notifier.update(0.0, ["starting"], 0) is False
    assert [_received(notify_socket) for _ in range(2)] == ["STATUS=starting", "WATCHDOG=1"]
    assert notifier.update(0.5, [], 2) is True  # not yet due for another ping (every 1 s)
    assert [_received(notify_socket) for _ in range(2)] == [
        "READY=1", "STATUS=2 workers, all groups ready"]
    assert notifier.update(1.0, [], 2) is False  # same status: only the ping is due
    assert _received(notify_socket) == "WATCHDOG=1"
    assert notifier.update(1.2, ["draining"], 2) is False  # never READY=1 twice
    assert _received(notify_socket) == "STATUS=draining"
