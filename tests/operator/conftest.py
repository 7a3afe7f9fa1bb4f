"""Fixtures of the operator command tests: a FlowClient on the session redis-server and the
real `ferricflowd` command line run as a subprocess against the same namespace."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ferricflowd import FlowClient
from tests.daemons import daemon_env


@pytest.fixture
def fc(redis_server: Any, namespace: str) -> Iterator[FlowClient]:
    client = FlowClient.from_url(redis_server.url, namespace=namespace, partitions=4).connect()
    yield client
    client.close()


@pytest.fixture
def cli(redis_server: Any, namespace: str,
        tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """cli(*args, url=True) runs `python -m ferricflowd ARGS --url ... --namespace ...`
    (stdin not a terminal) and returns the finished process, text output."""

    def run(*args: str, url: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        extra = ["--url", redis_server.url, "--namespace", namespace] if url else []
        return subprocess.run([sys.executable, "-m", "ferricflowd", *args, *extra], cwd=tmp_path,
                              env=daemon_env(), capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)

    return run
