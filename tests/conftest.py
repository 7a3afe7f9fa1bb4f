"""Fixtures that start real redis-server processes (see tests/servers.py).

- redis_server (session): one durable server; .url .port .dir .pid .process, .kill()
  .restart() .stop_process() .cont_process(). A test that leaves it stopped or dead gets
  it resumed/restarted after it, so one failure test cannot break the rest.
- namespace (function): a fresh namespace per test; tests isolate by namespace, never FLUSHALL.
- redis_cluster (session): 3 masters, no replicas; .url .ports .nodes .client().
- make_redis_server (function): factory for servers with special options.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest

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
