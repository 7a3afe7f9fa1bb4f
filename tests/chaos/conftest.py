"""The chaos suite's lab: its own redis-server (the scenarios kill and stop it) and a work
directory for the daemons' configs and logs. Scenario code: tests/chaos/scenarios.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.lab import Lab
from tests.servers import RedisServer


@pytest.fixture(scope="module")
def chaos_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("chaos-redis")).start()
    try:
        yield server
    finally:
        server.terminate()


@pytest.fixture
def lab(chaos_server: RedisServer, tmp_path: Path) -> Iterator[Lab]:
    chaos_server.ensure_running()
    lab = Lab(chaos_server, tmp_path)
    try:
        yield lab
    finally:
        logs = [d.log_path for d in lab.daemons]
        lab.close()
        chaos_server.ensure_running()
        for path in logs:  # shown by pytest only when the test failed
            text = path.read_text(errors="replace").splitlines()
            print(f"---- {path} (tail) ----\n" + "\n".join(text[-80:]))
