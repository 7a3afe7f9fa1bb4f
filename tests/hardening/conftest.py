"""Fixtures and helpers of the hardening tests (scenarios 7, 8 and 9).

The real daemon is driven exactly as in tests/daemon (its `start_daemon` fixture is reused);
everything else talks to the session redis-server or to servers made for one test
(`make_redis_server`: password, ACL users, TLS).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.daemon.conftest import REPO_ROOT, daemon_env, start_daemon  # noqa: F401 - fixture
from tests.engine.util import assert_versions as assert_versions  # shared with the engine tests

HARDEN = "tests.hardening.handlers"


def flow_keys(redis_client: Any, namespace: str, flow_id: str) -> list[bytes]:
    """Every key of the namespace whose name ends in `:<flow_id>` (record, history, values,
    children); read with SCAN so ids with glob characters need no escaping."""
    suffix = f":{flow_id}".encode()
    return [k for k in redis_client.scan_iter(match=f"{{{namespace}:*", count=1000)
            if k.endswith(suffix)]


def run_many(commands: Sequence[Sequence[str]], *, cwd: Path,
             env: dict[str, str] | Sequence[dict[str, str]] | None = None,
             timeout: float = 60) -> list[subprocess.CompletedProcess[str]]:
    """Run `python -m ferricflowd ARGS` for each command at once (the interpreter start-up
    dominates), with `env` (one for all, or one per command); results in order."""
    envs = list(env) if isinstance(env, Sequence) else [env or daemon_env()] * len(commands)
    procs = [subprocess.Popen([sys.executable, "-m", "ferricflowd", *cmd], cwd=cwd, env=e,
                              stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
             for cmd, e in zip(commands, envs, strict=True)]
    results = []
    for cmd, proc in zip(commands, procs, strict=True):
        out, err = proc.communicate(timeout=timeout)
        results.append(subprocess.CompletedProcess(list(cmd), proc.returncode, out, err))
    return results


def process_tree(pid: int) -> list[psutil.Process]:
    """The process and all its live descendants."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def proc_cmdline(pid: int) -> str:
    """/proc/PID/cmdline as text (NULs as spaces): what `ps -o args` shows."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
            "utf-8", "replace")
    except OSError:
        return ""


@pytest.fixture
def env_without_ferricflowd() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FERRICFLOWD_")}


__all__ = ["HARDEN", "REPO_ROOT", "assert_versions", "daemon_env", "flow_keys", "proc_cmdline",
           "process_tree", "run_many"]
