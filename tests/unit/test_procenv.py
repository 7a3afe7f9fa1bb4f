"""The one builder of a worker's environment (supervisor spawns and `ferricflowd check`)."""

from __future__ import annotations

import os
from pathlib import Path

import ferricflowd
from ferricflowd import procenv

PACKAGE_ROOT = str(Path(ferricflowd.__file__).resolve().parents[1])


def test_worker_env_drops_systemd_and_appends_this_ferricflowd_once() -> None:
    base = {"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "1", "HOME": "/h",
            "PYTHONPATH": os.pathsep.join(["/app", PACKAGE_ROOT])}
    env = procenv.worker_env({"EXTRA": "1"}, base=base)
    assert "NOTIFY_SOCKET" not in env and "WATCHDOG_USEC" not in env
    assert (env["HOME"], env["EXTRA"]) == ("/h", "1")
    assert env["PYTHONPATH"] == os.pathsep.join(["/app", PACKAGE_ROOT])
    assert procenv.worker_env(base={})["PYTHONPATH"] == PACKAGE_ROOT


def test_cli_check_and_the_supervisor_use_the_same_builder() -> None:
    from ferricflowd import cli
    from ferricflowd.supervisor import arbiter

    assert cli.worker_env is procenv.worker_env is arbiter.worker_env
