"""Fixtures of the engine tests: clients on the session servers, parametrized topologies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ferricflowd import FlowClient, QueueClient, WorkflowClient


@pytest.fixture(params=["single", "cluster"])
def url_and_opts(request: pytest.FixtureRequest, namespace: str) -> tuple[str, dict[str, Any]]:
    """(url, client options) on a single node or on the 3-master cluster, 16 partitions."""
    server = request.getfixturevalue("redis_server" if request.param == "single"
                                     else "redis_cluster")
    return server.url, {"namespace": namespace, "partitions": 16}


@pytest.fixture
def flow_client(redis_server: Any, namespace: str,
                closing: Callable[[Any], Any]) -> FlowClient:
    """A FlowClient on the single node, 4 partitions (so multi-partition paths run)."""
    return closing(FlowClient.from_url(redis_server.url, namespace=namespace, partitions=4))


@pytest.fixture
def queues(redis_server: Any, namespace: str, closing: Callable[[Any], Any]) -> QueueClient:
    return closing(QueueClient.from_url(redis_server.url, namespace=namespace, partitions=4))


@pytest.fixture
def workflows(redis_server: Any, namespace: str,
              closing: Callable[[Any], Any]) -> WorkflowClient:
    return closing(WorkflowClient.from_url(redis_server.url, namespace=namespace, partitions=4))
