"""Fixtures that start real redis-server processes (see tests/servers.py).

- redis_server (session): one durable server; .url .port .dir .pid .process, .kill()
  .restart() .stop_process() .cont_process(). A test that leaves it stopped or dead gets
  it resumed/restarted after it, so one failure test cannot break the rest.
- namespace (function): a fresh namespace per test; tests isolate by namespace, never FLUSHALL.
- redis_cluster (session): 3 masters, no replicas; .url .ports .nodes .client().
- make_redis_server (function): factory for servers with special options.
- start_daemon (function): starts the real `ferricflowd run` as a subprocess on
  redis_server (see tests/daemons.py); every daemon is killed after the test.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ferricflowd.flow.client import FlowClient
from tests.daemons import TEST_DAEMON, Daemon, daemon_env, free_port, write_config
from tests.servers import RedisClusterServers, RedisServer, terminate_all

_SERVER_KEY = pytest.StashKey[RedisServer]()
_CLUSTER_KEY = pytest.StashKey[RedisClusterServers]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: takes seconds or more (deselect: -m 'not slow')")
    config.addinivalue_line(
        "markers", "cluster: needs the 3-master Redis Cluster (deselect: -m 'not cluster')"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Anything that uses the cluster is marked, so `-m "not cluster"` skips its start-up.
    for item in items:
        if "redis_cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def redis_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    request.config.stash[_SERVER_KEY] = server
    try:
        yield server
    finally:
        del request.config.stash[_SERVER_KEY]
        server.terminate()


@pytest.fixture(scope="session")
def redis_cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers(tmp_path_factory.mktemp("redis-cluster")).start()
    request.config.stash[_CLUSTER_KEY] = cluster
    try:
        yield cluster
    finally:
        del request.config.stash[_CLUSTER_KEY]
        cluster.terminate()


@pytest.fixture(autouse=True)
def _heal_shared_servers(request: pytest.FixtureRequest) -> Iterator[None]:
    # After each test: resume/restart the session servers it may have stopped or killed.
    # Looks only at servers already started, so it never starts one by itself.
    yield
    server = request.config.stash.get(_SERVER_KEY, None)
    if server is not None:
        server.ensure_running()
    cluster = request.config.stash.get(_CLUSTER_KEY, None)
    if cluster is not None:
        cluster.ensure_running()


@pytest.fixture
def namespace() -> str:
    return "t" + secrets.token_hex(4)


@pytest.fixture
def make_redis_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Callable[..., RedisServer]]:
    """make_redis_server(*extra_args, durable=True, password=None, tls=False, port=None).

    Extra args come last on the command line, so they override the defaults, e.g.
    make_redis_server("--appendonly", "no") or make_redis_server(password="s3cret").
    """
    started: list[RedisServer] = []

    def make(*extra_args: str, **kwargs: Any) -> RedisServer:
        server = RedisServer(tmp_path_factory.mktemp("redis-custom"), args=extra_args, **kwargs)
        started.append(server)
        return server.start()

    yield make
    terminate_all(started)


@pytest.fixture
def closing() -> Iterator[Callable[[Any], Any]]:
    """closing(client) registers a client to close after the test."""
    clients: list[Any] = []

    def register(client: Any) -> Any:
        clients.append(client)
        return client

    yield register
    for client in clients:
        client.close()


@pytest.fixture
def start_daemon(
    tmp_path: Path, redis_server: Any, namespace: str
) -> Iterator[Callable[..., Daemon]]:
    """start_daemon(groups, daemon={...}, defaults={...}, store={...}, console={...}, env={...},
    wait=True, schedules={...}, config_name="flows.toml"). No console unless `console` gives
    its table."""
    started: list[Daemon] = []

    def start(
        groups: dict[str, dict[str, Any]],
        *,
        daemon: dict[str, Any] | None = None,
        defaults: dict[str, Any] | None = None,
        store: dict[str, Any] | None = None,
        console: dict[str, Any] | None = None,
        env: dict[str, str] | None = None,
        wait: bool = True,
        args: tuple[str, ...] = (),
        prefix: tuple[str, ...] = (),
        schedules: dict[str, dict[str, Any]] | None = None,
        config_name: str = "flows.toml",
    ) -> Daemon:
        port = free_port()
        store_table = {"url": redis_server.url, "namespace": namespace, **(store or {})}
        store_table = {k: v for k, v in store_table.items() if v is not None}
        daemon_table = {
            "data_dir": str(tmp_path / "data"),
            "listen": f"127.0.0.1:{port}",
            **TEST_DAEMON,
            **(daemon or {}),
        }
        config = write_config(tmp_path / config_name, groups, store_table, daemon_table, defaults,
                              console=console, schedules=schedules)
        log_path = tmp_path / f"daemon-{len(started)}.log"
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [*prefix, sys.executable, "-m", "ferricflowd", "run", "--config", str(config),
                 *args],
                cwd=tmp_path, env=daemon_env(env), stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        url = store_table.get("url") or f"unix://{tmp_path / 'data' / 'redis' / 'redis.sock'}"
        client = FlowClient.from_url(url, namespace=namespace)
        handle = Daemon(proc, config, log_path, port, client, wrapped=bool(prefix))
        started.append(handle)
        if wait:
            handle.wait_ready()
        return handle

    yield start
    for handle in started:
        handle.kill_all()
        handle.client.close()
        print(f"---- {handle.log_path.name} (tail) ----\n{handle.log_tail(60)}")
