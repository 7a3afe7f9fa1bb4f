"""Durability: strict mode refuses a store without appendonly/appendfsync always (on every
cluster node); relaxed mode warns and goes on."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from ferricflowd import DurabilityError, FlowClient
from tests.engine.calls import T


def test_strict_durability_refuses_a_non_durable_store(make_redis_server: Any,
                                                       namespace: str,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    server = make_redis_server("--appendonly", "no")
    strict = FlowClient.from_url(server.url, namespace=namespace, durability="strict")
    with pytest.raises(DurabilityError) as err:
        strict.create("x", T, "queued")
    text = str(err.value)
    assert "appendonly" in text and "appendfsync" in text and "relaxed" in text

    everysec = make_redis_server("--appendfsync", "everysec")
    with pytest.raises(DurabilityError, match="appendfsync"):
        FlowClient.from_url(everysec.url, namespace=namespace).connect()

    relaxed = FlowClient.from_url(server.url, namespace=namespace, durability="relaxed")
    with caplog.at_level(logging.WARNING, logger="ferricflowd.flow.store"):
        assert relaxed.create("x", T, "queued") is True
    assert any("appendonly" in r.getMessage() for r in caplog.records)
    assert relaxed.get("x").state == "queued"  # type: ignore[union-attr]
    relaxed.close()


def test_strict_durability_checks_every_cluster_node(redis_cluster: Any,
                                                      namespace: str) -> None:
    for node in redis_cluster.nodes:
        with node.client() as conn:
            conn.config_set("appendfsync", "everysec")
            try:
                fc = FlowClient.from_url(redis_cluster.url, namespace=namespace, partitions=16)
                with pytest.raises(DurabilityError, match="appendfsync"):
                    fc.connect()
                fc.close()
            finally:
                conn.config_set("appendfsync", "always")
    fc = FlowClient.from_url(redis_cluster.url, namespace=namespace, partitions=16)
    try:
        assert fc.create("ok", T, "queued") is True
    finally:
        fc.close()
