"""The `console_app` fixture: a console served in this process (uvicorn in a thread) on a test
namespace. `console_app(token=..., refresh="5s")` starts one and returns a `Served` handle
(tests/consoles.py): `.get()`, `.post()`, `.console` (the app's shared state, e.g.
`.console.overview.reads`), `.client` (a FlowClient on the same namespace) and `.url`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ferricflowd.config import load_config
from ferricflowd.flow.client import FlowClient
from tests.consoles import TOKEN, Served, write_console_config
from tests.daemons import free_port


@pytest.fixture
def console_app(redis_server: Any, namespace: str, tmp_path: Path
                ) -> Iterator[Callable[..., Served]]:
    import uvicorn

    from ferricflowd.console.app import create_app
    from ferricflowd.console.server import bind

    started: list[tuple[Any, threading.Thread, FlowClient]] = []

    def start(token: str = TOKEN, refresh: str = "5s") -> Served:
        port = free_port()
        path = write_console_config(tmp_path / f"flows{len(started)}.toml", redis_server.url,
                                    namespace, port, token, refresh)
        config = load_config(path, env={})
        client = config.store.client(config.store_url)
        app = create_app(config, client, daemon_url=None)
        server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off",
                                               access_log=False))
        sock = bind(config.console.listen)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "console did not start"
            time.sleep(0.01)
        started.append((server, thread, client))
        return Served(f"http://127.0.0.1:{port}", port, config,
                      FlowClient.from_url(redis_server.url, namespace=namespace),
                      app.app.state.console)

    yield start
    for server, thread, client in started:
        server.should_exit = True
        thread.join(10)
        client.close()
