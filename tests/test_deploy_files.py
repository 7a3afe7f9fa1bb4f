"""The systemd unit is real: systemd accepts it, and it stops and notifies the way the daemon
expects (the container and Kubernetes files are tested in tests/deploy/)."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import seconds

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "ferricflowd.service"
DEFAULT_DRAIN_TIMEOUT_S = 30.0  # daemon.drain_timeout default (architecture.md, section 5)

# -- systemd -------------------------------------------------------------------------------


def _unit() -> tuple[configparser.RawConfigParser, dict[str, str]]:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read(UNIT)
    # Environment= may repeat; configparser keeps only the last, so collect them all.
    env: dict[str, str] = {}
    for line in UNIT.read_text().splitlines():
        if line.startswith("Environment="):
            for assignment in line.removeprefix("Environment=").split():
                key, _, value = assignment.strip('"').partition("=")
                env[key] = value
    return parser, env


def test_unit_stops_and_notifies_like_the_daemon_expects() -> None:
    unit, env = _unit()
    service = unit["Service"]
    assert service["Type"] == "notify"
    assert service["NotifyAccess"] == "main"
    assert service["KillMode"] == "mixed"  # SIGTERM to the supervisor only; it drains
    assert service["KillSignal"] == "SIGTERM"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ExecStart"].split()[1:] == ["run", "--config", "/etc/ferricflowd/flows.toml"]
    assert service["Restart"] == "on-failure"
    stop_timeout = seconds(service["TimeoutStopSec"])
    assert stop_timeout > DEFAULT_DRAIN_TIMEOUT_S
    grace = seconds(env["FERRICFLOWD_DAEMON_STOP_GRACE"])
    assert DEFAULT_DRAIN_TIMEOUT_S < grace <= stop_timeout
    assert seconds(service["WatchdogSec"]) > 0


def test_unit_is_hardened() -> None:
    service = _unit()[0]["Service"]
    assert service["User"] == service["Group"] == "ferricflowd"
    assert service["StateDirectory"] == "ferricflowd"
    for key in (
        "NoNewPrivileges",
        "ProtectHome",
        "PrivateTmp",
        "PrivateDevices",
        "ProtectKernelTunables",
        "ProtectKernelModules",
        "LockPersonality",
    ):
        assert service[key] == "yes", key
    assert service["ProtectSystem"] == "strict"
    assert set(service["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    # Breaks Python C extensions that need W+X memory (libffi closures, JITs).
    assert "MemoryDenyWriteExecute" not in service


def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze not installed (Debian package: systemd)")
    # verify insists that ExecStart's binary exists; point it at a stand-in, keep the rest.
    fake = tmp_path / "ferricflowd"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(0o755)
    text = UNIT.read_text().replace("/usr/local/bin/ferricflowd", str(fake))
    assert str(fake) in text
    unit = tmp_path / "ferricflowd.service"
    unit.write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    output = done.stdout + done.stderr
    # Unknown keys or bad values are only warnings ("..., ignoring") with exit status 0.
    about_us = [line for line in output.splitlines() if "ferricflowd.service" in line]
    assert done.returncode == 0, output
    assert about_us == [], output
