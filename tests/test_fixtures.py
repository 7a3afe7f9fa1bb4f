"""The server fixtures themselves: they start real, durable servers and control them."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.crc import key_slot
from redis.retry import Retry

from tests.servers import RedisClusterServers, RedisServer


def test_single_server_is_durable(redis_server: RedisServer) -> None:
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    assert redis_server.dir.is_dir()
    assert redis_server.process is not None and redis_server.pid == redis_server.process.pid
    assert redis_server.config_get("appendonly") == "yes"
    assert redis_server.config_get("appendfsync") == "always"
    assert redis_server.config_get("save") == ""
    assert redis_server.config_get("bind") == "127.0.0.1"


def test_namespace_is_fresh(namespace: str, redis_server: RedisServer) -> None:
    assert re.fullmatch(r"t[0-9a-f]{8}", namespace)
    with redis_server.client() as conn:
        assert conn.keys(f"{namespace}*") == []


def test_kill_and_restart_keep_an_aof_written_key(
    redis_server: RedisServer, namespace: str
) -> None:
    key = f"{namespace}:durable"
    with redis_server.client() as conn:
        conn.set(key, "kept")  # with appendfsync always, the reply means it is on disk
    old_pid = redis_server.pid

    redis_server.kill()
    assert not redis_server.running
    assert not redis_server.ping()

    redis_server.restart()
    assert redis_server.pid != old_pid
    with redis_server.client() as conn:
        assert conn.get(key) == b"kept"


def test_stop_process_makes_commands_time_out(redis_server: RedisServer) -> None:
    redis_server.stop_process()
    try:
        with redis_server.client(socket_timeout=0.3) as conn, pytest.raises(redis.TimeoutError):
            conn.ping()
    finally:
        redis_server.cont_process()
    assert redis_server.ping()


def test_left_stopped_on_purpose(redis_server: RedisServer) -> None:
    # The autouse healer must SIGCONT it after this test; the next test checks.
    redis_server.stop_process()


def test_healer_resumed_the_server(redis_server: RedisServer) -> None:
    assert not redis_server.stopped
    assert redis_server.ping()


def test_make_redis_server_with_password_and_no_aof(
    make_redis_server: Callable[..., RedisServer],
) -> None:
    server = make_redis_server("--appendonly", "no", password="s3cret/x")
    assert server.url == f"redis://:s3cret%2Fx@127.0.0.1:{server.port}/0"
    assert server.config_get("appendonly") == "no"  # the extra args override the defaults
    anonymous = redis.Redis(port=server.port, retry=Retry(NoBackoff(), 0))
    with anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.ping()
    with redis.Redis.from_url(server.url) as conn:
        assert conn.ping()


def test_make_redis_server_with_tls(make_redis_server: Callable[..., RedisServer]) -> None:
    server = make_redis_server(tls=True)
    assert server.url.startswith("rediss://127.0.0.1:")
    with server.client() as conn:
        conn.set("k", "v")
        assert conn.get("k") == b"v"


def test_cluster_has_three_masters_and_is_ok(redis_cluster: RedisClusterServers) -> None:
    assert len(redis_cluster.ports) == 3
    assert redis_cluster.url == f"redis://127.0.0.1:{redis_cluster.ports[0]}/0"
    for node in redis_cluster.nodes:
        info = redis_cluster.cluster_info(node)
        assert info["cluster_state"] == "ok"
        assert info["cluster_size"] == "3"
        assert node.config_get("appendfsync") == "always"
    masters = [n for n in redis_cluster.cluster_nodes() if "master" in n["flags"]]
    assert sorted(int(n["addr"].rsplit(":", 1)[1]) for n in masters) == sorted(redis_cluster.ports)
    assert all(n["slots"] for n in masters)  # each master serves a slot range


def _slot_owner(cluster: RedisClusterServers) -> dict[int, int]:
    """slot -> port of the master that serves it, as the cluster itself reports it."""
    with cluster.nodes[0].client() as conn:
        ranges = conn.execute_command("CLUSTER SLOTS")
    owner: dict[int, int] = {}
    for entry in ranges:
        # redis-py may return a parsed dict or raw lists depending on version
        if isinstance(entry, (list, tuple)):
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            for slot in range(start, end + 1):
                owner[slot] = int(master[1])
    if not owner:  # parsed form: {(start, end): {"primary": (host, port), ...}}
        for (start, end), desc in dict(ranges).items():
            for slot in range(int(start), int(end) + 1):
                owner[slot] = int(desc["primary"][1])
    return owner


def test_a_key_on_each_slot_range_is_writable(
    redis_cluster: RedisClusterServers, namespace: str
) -> None:
    owner = _slot_owner(redis_cluster)
    assert len(owner) == 16384
    keys: dict[int, str] = {}  # port -> a key whose slot that master serves
    i = 0
    while len(keys) < 3:
        key = f"{{{namespace}:{i}}}:probe"  # hash-tagged like the real key schema
        keys.setdefault(owner[key_slot(key.encode())], key)
        i += 1
    assert set(keys) == set(redis_cluster.ports)

    with redis.cluster.RedisCluster.from_url(redis_cluster.url) as client:
        for port, key in keys.items():
            assert client.set(key, str(port))
            assert client.get(key) == str(port).encode()

    for node in redis_cluster.nodes:  # each key really lives on its own master
        with node.client() as conn:
            assert conn.get(keys[node.port]) == str(node.port).encode()
