"""Issue 18, item 6: store.min_replicas with real replicas, on a single node and on Cluster.

A write that its replicas acknowledge in time returns as usual; one they do not (the replica
stopped) is applied and raises UnderReplicated (never a StoreError, which would invite a
duplicate retry) after store.wait_timeout. The daemon is not ready while a primary has too
few replicas, says so naming min_replicas, and keeps completing Flows, counting each
under-replicated write in a metric.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from ferricflowd import FlowClient, QueueClient, StoreError
from ferricflowd.flow.errors import FlowAlreadyExists, UnderReplicated
from ferricflowd.flow.wire import CreateSpec
from tests.daemons import metric
from tests.helpers import wait_for
from tests.servers import RedisClusterServers, RedisServer

ECHO = "tests.daemon.handlers.basic:echo"
UNDER = "ferricflowd_store_under_replicated_writes_total"
# A healthy replica acknowledges in about a millisecond; the generous timeout where one is
# expected keeps a loaded test machine from turning that into a false under-replication,
# the short one keeps the waits for a missing replica short.
PATIENT, HASTY = 2.0, 0.3


def online_replicas(primary: RedisServer) -> int:
    return primary.raw_command("INFO", "replication").count("state=online")


def start_replica(make_redis_server: Any, primary: RedisServer) -> RedisServer:
    # Diskless sync waits 5 s by default for more replicas to share the transfer.
    primary.raw_command("CONFIG", "SET", "repl-diskless-sync-delay", "0")
    replica = make_redis_server("--replicaof", primary.host, str(primary.port))
    wait_for(lambda: online_replicas(primary) == 1, timeout=15, what="the replica online")
    replica.wait_aof_written()  # else SIGTERM waits for it (terminate() then takes 5 s)
    return replica


def test_min_replicas_with_a_real_replica_then_with_it_stopped(
        make_redis_server: Any, namespace: str, closing: Any) -> None:
    primary = make_redis_server()
    replica = start_replica(make_redis_server, primary)
    patient = closing(FlowClient.from_url(primary.url, namespace=namespace, min_replicas=1,
                                          wait_timeout_s=PATIENT, partitions=4))
    assert patient.replica_shortfall() is None
    assert patient.create("one", "q", "queued") is True
    assert patient.create_many([CreateSpec(f"m{i}", "q", "queued") for i in range(50)]) == (
        [True] * 50)
    with replica.client() as conn:  # it really is on the replica when the call returns
        assert conn.exists(patient.keys.flow(patient.partition_for("one"), "one"))

    client = closing(FlowClient.from_url(primary.url, namespace=namespace, min_replicas=1,
                                         wait_timeout_s=HASTY, partitions=4))
    replica.terminate()
    wait_for(lambda: online_replicas(primary) == 0, what="the primary sees it gone")
    assert "store.min_replicas = 1" in (client.replica_shortfall() or "")
    started = time.monotonic()
    with pytest.raises(UnderReplicated) as caught:
        client.create("two", "q", "queued")
    waited = time.monotonic() - started
    err = caught.value
    assert not isinstance(err, StoreError)  # a generic retry handler must not catch it
    assert (err.acked, err.wanted, err.results) == (0, 1, [True])
    assert "IS applied" in str(err) and "wait_timeout" in str(err)
    assert HASTY <= waited < client.store.socket_timeout_s  # its own timeout, not the socket's
    assert client.get("two").state == "queued"  # applied

    with pytest.raises(UnderReplicated) as caught:
        client.create_many([CreateSpec("one", "q", "queued"), CreateSpec("three", "q", "queued")])
    first, second = caught.value.results
    assert isinstance(first, FlowAlreadyExists) and second is True
    # An engine error wrote nothing: it is raised as itself, not as under-replicated.
    with pytest.raises(FlowAlreadyExists):
        client.create("two", "q", "queued")

    replica.restart()
    wait_for(lambda: online_replicas(primary) == 1, timeout=15, what="the replica back")
    replica.wait_aof_written()
    assert patient.create("four", "q", "queued") is True


def test_wait_timeout_must_be_shorter_than_the_socket_timeout(redis_server: Any) -> None:
    with pytest.raises(ValueError, match="wait_timeout_s.*shorter than socket_timeout_s"):
        FlowClient.from_url(redis_server.url, min_replicas=1, wait_timeout_s=5.0,
                            socket_timeout_s=5.0)
    FlowClient.from_url(redis_server.url, min_replicas=0, wait_timeout_s=5.0,
                        socket_timeout_s=5.0).close()  # no WAIT: not checked


@pytest.mark.slow
@pytest.mark.cluster
def test_min_replicas_on_cluster_waits_on_the_primary_that_took_the_write(
        tmp_path: Path, namespace: str, closing: Any) -> None:
    """Three primaries, one of them with a replica: a write to that primary's slots is
    acknowledged; one that touches another primary (no replica) is applied and
    under-replicated; and so is the first kind once the replica is stopped."""
    with RedisClusterServers(tmp_path / "cluster") as cluster:
        with_replica = cluster.nodes[0]
        replica = cluster.add_replica(0)
        client = closing(FlowClient.from_url(cluster.url, namespace=namespace, partitions=12,
                                             min_replicas=1, wait_timeout_s=HASTY))
        patient = closing(FlowClient.from_url(cluster.url, namespace=namespace,
                                              min_replicas=1, wait_timeout_s=PATIENT))
        keys = client.keys
        route = {p: client.store.client.get_node_from_key(keys.prefix(p)).port
                 for p in range(keys.partitions)}
        assert set(route.values()) == {n.port for n in cluster.nodes}
        ids: dict[int, list[str]] = {}
        for i in range(400):
            ids.setdefault(keys.partition_of(f"f{i}"), []).append(f"f{i}")
        covered = [i for p, found in ids.items() if route[p] == with_replica.port
                   for i in found]
        others = [i for p, found in ids.items() if route[p] != with_replica.port
                  for i in found]
        assert covered and others
        short = client.replica_shortfall() or ""
        assert "store.min_replicas = 1" in short and "(primary " in short
        assert f":{with_replica.port})" not in short  # that one has its replica

        assert patient.create_many([CreateSpec(i, "q", "queued") for i in covered[:20]]) == (
            [True] * 20)
        assert patient.create(covered[20], "q", "queued") is True
        with pytest.raises(UnderReplicated) as caught:
            client.create_many([CreateSpec(i, "q", "queued") for i in covered[21:25]
                                + others[:5]])
        assert caught.value.results == [True] * 9 and caught.value.acked == 0
        assert all(r.state == "queued" for r in client.get_many(
            [(client.partition_for(i), i) for i in covered[21:25] + others[:5]]))

        replica.terminate()
        wait_for(lambda: online_replicas(with_replica) == 0, what="the replica gone")
        with pytest.raises(UnderReplicated) as caught:
            client.create(covered[30], "q", "queued")
        assert caught.value.results == [True]


def test_the_daemon_with_min_replicas_is_not_ready_without_them_and_keeps_working(
        make_redis_server: Any, start_daemon: Any, namespace: str, closing: Any) -> None:
    primary = make_redis_server()
    daemon = start_daemon({"q": {"type": "q", "states": ["queued"], "handler": ECHO,
                                 "processes": 2}},
                          store={"url": primary.url, "min_replicas": 1,
                                 "wait_timeout": f"{PATIENT}s"}, wait=False)

    def reasons() -> list[str]:
        status, body = daemon.get("/readyz")
        return json.loads(body).get("reasons", []) if status == 503 and body else []

    # At start: not ready, and the log says why, naming the setting.
    wait_for(lambda: any("store.min_replicas = 1" in r for r in reasons()), timeout=20,
             what=f"/readyz names min_replicas; log:\n{daemon.log_tail()}")
    assert "has 0 online replica(s), store.min_replicas = 1" in daemon.log()
    wait_for(lambda: daemon.group_ready("q", 2), what="the workers themselves up")
    # Their idle claims (a claim writes leases) waited for the replica in vain.
    wait_for(lambda: metric(daemon.metrics(), UNDER) > 0, timeout=20,
             what=f"under-replicated claims counted; log:\n{daemon.log_tail()}")

    replica = start_replica(make_redis_server, primary)
    daemon.wait_ready(timeout=20)
    assert "store.min_replicas met" in daemon.log()
    producer = closing(QueueClient.from_url(primary.url, namespace=namespace,
                                            min_replicas=1, wait_timeout_s=PATIENT))
    emails = producer.queue(type="q")
    assert emails.enqueue_many([f"a{i}" for i in range(20)]) == [True] * 20
    wait_for(lambda: all(daemon.client.get(f"a{i}").state == "completed" for i in range(20)),
             timeout=20, what=f"20 completed; log:\n{daemon.log_tail()}")
    before = metric(daemon.metrics(), UNDER)  # nothing is counted while the replica is there
    assert emails.enqueue_many([f"c{i}" for i in range(20)]) == [True] * 20
    wait_for(lambda: all(daemon.client.get(f"c{i}").state == "completed" for i in range(20)),
             timeout=20, what=f"20 more completed; log:\n{daemon.log_tail()}")
    assert metric(daemon.metrics(), UNDER) == before

    replica.terminate()
    wait_for(lambda: any("store.min_replicas = 1" in r for r in reasons()), timeout=20,
             what=f"not ready without the replica; log:\n{daemon.log_tail()}")
    with pytest.raises(UnderReplicated):
        emails.enqueue_many([f"b{i}" for i in range(10)])
    # The daemon completes them all the same: each write waits wait_timeout, then counts.
    wait_for(lambda: all(daemon.client.get(f"b{i}").state == "completed" for i in range(10)),
             timeout=30, what=f"10 completed without the replica; log:\n{daemon.log_tail()}")
    wait_for(lambda: metric(daemon.metrics(), UNDER) > before, timeout=10,
             what="under-replicated writes counted")
    assert "applied but under-replicated" in daemon.log()


def test_a_cluster_failover_keeps_every_replicated_flow_and_the_client_goes_on(
        tmp_path: Path, namespace: str, closing: Any) -> None:
    """The primary of some partitions is killed (-9); its replica is promoted. Every Flow
    written with min_replicas = 1 before the kill is there afterwards, and the same client
    creates and reads again once the cluster has failed over (docs/failure-semantics.md)."""
    with RedisClusterServers(tmp_path / "cluster", node_timeout_ms=1000) as cluster:
        primary = cluster.nodes[0]
        replica = cluster.add_replica(0)
        # The other primaries vote for a replica only once gossip has told them of it, as
        # the replica of that primary.
        replica_id = replica.raw_command("CLUSTER", "MYID").strip()
        primary_id = primary.raw_command("CLUSTER", "MYID").strip()

        def known_as_replica(node: RedisServer) -> bool:
            line = next((ln for ln in node.raw_command("CLUSTER", "NODES").splitlines()
                         if ln.startswith(replica_id)), "")
            return "slave" in line and primary_id in line

        wait_for(lambda: all(known_as_replica(n) for n in cluster.nodes), timeout=15,
                 what="the replica known to every primary")
        client = closing(FlowClient.from_url(cluster.url, namespace=namespace, partitions=12,
                                             min_replicas=1, wait_timeout_s=PATIENT,
                                             socket_timeout_s=3.0))
        keys = client.keys
        on_primary = [f"f{i}" for i in range(300) if client.store.client.get_node_from_key(
            keys.prefix(keys.partition_of(f"f{i}"))).port == primary.port]
        assert len(on_primary) > 20
        before, after = on_primary[:20], on_primary[20:]
        assert client.create_many([CreateSpec(i, "q", "queued") for i in before]) == [True] * 20
        primary.kill()

        def promoted() -> bool:
            return "role:master" in replica.raw_command("INFO", "replication")

        try:
            wait_for(promoted, timeout=20, what="the replica promoted by the cluster")
        except AssertionError:
            # The election can stall on a machine too loaded for 1 s node timeouts; a
            # takeover is what an operator or an orchestrator then does. The client's side,
            # which this test is about, is the same.
            replica.raw_command("CLUSTER", "FAILOVER", "TAKEOVER")
            wait_for(promoted, timeout=10, what="the replica promoted by a takeover")

        def create_after() -> bool:
            try:
                client.create(after[0], "q", "queued", idempotent=True)
            except UnderReplicated:
                return True  # applied: the promoted primary has no replica of its own
            except StoreError:
                return False  # the old topology, until the client learns the new one
            return True

        wait_for(create_after, timeout=20, what="a create through the promoted replica")
        records = client.get_many([(keys.partition_of(i), i) for i in before + after[:1]])
        assert all(r is not None and r.state == "queued" for r in records), records
