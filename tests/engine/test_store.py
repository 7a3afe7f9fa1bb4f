"""The store connection: the library reloaded after a flush, cluster pipelines routed
without COMMAND GETKEYS, a client connecting to a set-up namespace writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from ferricflowd import FlowClient, QueueClient
from ferricflowd.flow import store as store_module
from ferricflowd.flow.client import CreateSpec
from tests.engine.calls import T


def test_scripts_are_reloaded_after_a_flush(url_and_opts: tuple[str, dict[str, Any]],
                                            closing: Callable[[Any], Any]) -> None:
    """A store without the library (new, restarted without AOF, FUNCTION FLUSHed) answers
    "Function not found"; the client loads the library again and runs the calls."""
    url, opts = url_and_opts
    fc: FlowClient = closing(FlowClient.from_url(url, **opts))
    fc.create("before", T, "queued")
    fc.store.client.function_flush()  # on a cluster: every primary
    with pytest.raises(redis.ResponseError, match="Function not found"):
        fc.store.client.execute_command("FCALL", store_module.FUNCTIONS["stats"], 1,
                                        fc.keys.prefix(0), "", T)
    assert fc.create_many([]) == []
    results = QueueClient(fc).queue(type=T).enqueue_many([f"after-{i}" for i in range(20)])
    assert results == [True] * 20
    assert fc.stats(T).counts == {"queued": 21}


def test_cluster_pipelines_route_scripts_without_asking_the_server(
        redis_cluster: Any, namespace: str, closing: Callable[[Any], Any]) -> None:
    """A batch over 16 partitions is one pipeline with no COMMAND GETKEYS round trips."""
    fc: FlowClient = closing(FlowClient.from_url(redis_cluster.url, namespace=namespace,
                                                 partitions=16))
    fc.create("warm", T, "queued")
    for node in redis_cluster.nodes:
        with node.client() as conn:
            conn.config_resetstat()
    assert fc.create_many([CreateSpec(f"j{i}", T, "queued") for i in range(200)]) == [True] * 200
    calls = 0
    for node in redis_cluster.nodes:
        with node.client() as conn:
            stats = conn.info("commandstats")
        assert "cmdstat_command|getkeys" not in stats, stats
        calls += stats.get("cmdstat_fcall", {}).get("calls", 0)
    assert calls == 16  # one script call per partition


def test_a_client_connecting_to_a_set_up_namespace_writes_nothing(
        redis_server: Any, namespace: str, closing: Callable[[Any], Any]) -> None:
    """Every worker process connects at boot: when the partition count, the partition
    settings and the library are in place, it only reads them (a write costs an fsync,
    FUNCTION LOAD a compile of the library)."""
    first: FlowClient = closing(FlowClient.from_url(redis_server.url, namespace=namespace))
    first.connect()

    def calls() -> dict[str, int]:
        stats = first.store.client.info("commandstats")
        return {name: stats.get(f"cmdstat_{name}", {}).get("calls", 0)
                for name in ("function|load", "hset", "hsetnx", "hmget")}

    before = calls()
    closing(FlowClient.from_url(redis_server.url, namespace=namespace)).connect()
    after = calls()
    assert after["function|load"] == before["function|load"]
    assert after["hset"] == before["hset"]
    assert after["hmget"] == before["hmget"] + 1  # it did look
    changed: FlowClient = closing(FlowClient.from_url(redis_server.url, namespace=namespace,
                                                      history_cap=7))
    changed.connect()
    assert calls()["hset"] == after["hset"] + 1  # a changed setting is published
    assert changed.store.client.hget(changed.keys.config(0), "history_cap") == b"7"
