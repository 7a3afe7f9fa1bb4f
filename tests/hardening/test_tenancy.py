"""Issue 18, item 7: tenancy of the server-global engine library.

The ACL users are created from the very commands in docs/security.md, on a real redis-server:
the admin sets the store up with `ferricflowd store-setup`, the daemon user runs a real
daemon without FUNCTION LOAD, the enqueue-only user enqueues and can do nothing else that
matters (load code, flush, touch another namespace). A library changed under our name is
refused by every client and by the daemon, naming the expected and found digests.
"""

from __future__ import annotations

import re
import secrets
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import redis

from ferricflowd import FlowClient, QueueClient, StoreError
from ferricflowd.flow import store as store_module
from ferricflowd.flow.errors import LibraryMismatch
from tests.daemons import REPO_ROOT, run_many
from tests.helpers import wait_for

ECHO = "tests.daemon.handlers.basic:echo"
SECURITY_MD = REPO_ROOT / "docs" / "security.md"


def acl_commands(namespace: str, passwords: dict[str, str]) -> dict[str, list[str]]:
    """role -> the ACL SETUSER arguments of docs/security.md, for `namespace`."""
    text = SECURITY_MD.read_text().replace("\\\n", " ")
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("redis-cli ACL SETUSER ff-"):
            continue
        args = shlex.split(line)[1:]
        role = args[2].removeprefix("ff-")
        args = [a.replace("NS", namespace).replace(f"{role.upper()}_PASSWORD", passwords[role])
                for a in args]
        found[role] = args
    assert set(found) == {"admin", "daemon", "producer"}, found
    return found


def user_url(server: Any, user: str, password: str) -> str:
    return f"redis://{quote(user)}:{quote(password, safe='')}@{server.host}:{server.port}/0"


@pytest.fixture
def acl_store(make_redis_server: Any, namespace: str) -> dict[str, Any]:
    """A fresh store (no library loaded) with the three users of docs/security.md."""
    passwords = {role: secrets.token_hex(8) for role in ("admin", "daemon", "producer")}
    server = make_redis_server(password=secrets.token_hex(8))
    root = server.client()
    for args in acl_commands(namespace, passwords).values():
        root.execute_command(*args)
    urls = {role: user_url(server, f"ff-{role}", pw) for role, pw in passwords.items()}
    yield {"server": server, "root": root, "urls": urls}
    root.close()


def denied(fn: Any) -> str:
    with pytest.raises(redis.exceptions.NoPermissionError) as caught:
        fn()
    return str(caught.value)


def test_minimal_acl_users_admin_sets_up_the_daemon_runs_the_producer_only_enqueues(
        acl_store: dict[str, Any], start_daemon: Any, namespace: str, tmp_path: Path,
        closing: Any) -> None:
    server, root, urls = acl_store["server"], acl_store["root"], acl_store["urls"]

    # Before the admin step, runtime users may not load the library: a clear, typed error.
    for role in ("daemon", "producer"):
        with pytest.raises(LibraryMismatch) as caught:
            FlowClient.from_url(urls[role], namespace=namespace).connect()
        assert caught.value.found is None
        assert caught.value.expected == store_module.LIBRARY_SHA256
        assert "may not load it" in str(caught.value) and "store-setup" in str(caught.value)
    assert root.function_list() == []

    setup = run_many([["store-setup", "--url", urls["admin"]]], cwd=tmp_path)[0]
    assert setup.returncode == 0, setup.stderr
    assert f"loaded {store_module.LIBRARY_NAME}" in setup.stdout and "verified" in setup.stdout
    [lib] = root.function_list(library=store_module.LIBRARY_NAME, withcode=True)
    assert dict(zip(lib[::2], lib[1::2], strict=True))[b"library_code"].decode() == (
        store_module.LIBRARY)

    # The producer enqueues into its namespace, and can do nothing that harms others.
    producer = closing(QueueClient.from_url(urls["producer"], namespace=namespace))
    emails = producer.queue(type="q")
    assert emails.enqueue_many([f"a{i}" for i in range(30)]) == [True] * 30
    raw = closing(redis.Redis.from_url(urls["producer"]))
    denied(lambda: raw.function_load(store_module.LIBRARY.replace("ff_", "xx_"), replace=True))
    denied(lambda: raw.function_delete(store_module.LIBRARY_NAME))
    denied(lambda: raw.function_flush())
    denied(raw.flushall)
    denied(raw.flushdb)
    denied(lambda: raw.eval("return 1", 0))
    denied(lambda: raw.config_set("appendfsync", "no"))
    denied(lambda: raw.scan(0))
    other = "o" + secrets.token_hex(4)
    assert "key" in denied(lambda: raw.get(f"{{{other}:0}}:f:x"))
    assert "key" in denied(lambda: raw.execute_command(
        "FCALL", store_module.FUNCTIONS["stats"], 1, f"{{{other}:0}}:", "", "q"))
    with pytest.raises(StoreError, match="permission"):
        FlowClient.from_url(urls["producer"], namespace=other).connect()

    # The daemon user runs the daemon: every Flow completes, no command of it is denied.
    daemon = start_daemon({"q": {"type": "q", "states": ["queued"], "handler": ECHO,
                                 "processes": 2}}, store={"url": urls["daemon"]})
    wait_for(lambda: all(daemon.client.get(f"a{i}").state == "completed" for i in range(30)),
             timeout=20, what=f"30 flows completed; log:\n{daemon.log_tail()}")
    users = re.findall(r"\buser=(\S+)", root.execute_command("CLIENT", "LIST").decode())
    assert users.count("ff-daemon") >= 3, users  # supervisor and two workers
    log = [entry for entry in root.acl_log() if entry.get("username") == "ff-daemon"]
    assert log == [], log
    # The admin can set up, and nothing else: it has no keys.
    admin = closing(redis.Redis.from_url(urls["admin"]))
    denied(lambda: admin.get(f"{namespace}:meta"))
    assert admin.function_list(library=store_module.LIBRARY_NAME)
    assert server.running


def test_a_library_changed_under_our_name_is_refused_naming_both_digests(
        make_redis_server: Any, start_daemon: Any, namespace: str, tmp_path: Path,
        closing: Any) -> None:
    """A tenant who may FUNCTION LOAD replaces the library (one changed comment is enough):
    every client and the daemon refuse it until an admin runs store-setup."""
    server = make_redis_server()
    tenant = closing(server.client())
    tampered = store_module.LIBRARY.replace("\n", "\n-- tenant was here\n", 2)
    tenant.function_load(tampered, replace=True)
    found = store_module.hashlib.sha256(tampered.encode()).hexdigest()

    with pytest.raises(LibraryMismatch) as caught:
        FlowClient.from_url(server.url, namespace=namespace).connect()
    err = caught.value
    assert (err.expected, err.found) == (store_module.LIBRARY_SHA256, found)
    assert f"expected sha256 {store_module.LIBRARY_SHA256[:16]}, found {found[:16]}" in str(err)
    assert isinstance(err, StoreError)
    # Connecting did not "fix" it by loading over it: it is still the tenant's code.
    [lib] = tenant.function_list(library=store_module.LIBRARY_NAME, withcode=True)
    assert dict(zip(lib[::2], lib[1::2], strict=True))[b"library_code"].decode() == tampered

    daemon = start_daemon({"q": {"type": "q", "states": ["queued"], "handler": ECHO}},
                          store={"url": server.url}, wait=False)
    wait_for(lambda: f"found {found[:16]}" in daemon.log(), timeout=20,
             what=f"the mismatch logged; log:\n{daemon.log_tail()}")
    assert not daemon.ready()

    setup = run_many([["store-setup", "--url", server.url]], cwd=tmp_path)[0]
    assert setup.returncode == 0, setup.stderr
    client = closing(FlowClient.from_url(server.url, namespace=namespace))
    assert client.create("after-setup", "q", "queued") is True
    daemon.wait_ready(timeout=30)
    wait_for(lambda: client.get("after-setup").state == "completed", timeout=20,
             what=f"completed after store-setup; log:\n{daemon.log_tail()}")


def test_our_function_names_held_by_another_library_are_refused(
        make_redis_server: Any, namespace: str) -> None:
    """Function names are server-wide: a library of another name that registered ours
    first would run instead of ours. Loading ours then fails, and the client says why."""
    server = make_redis_server()
    squatter = store_module.FUNCTIONS["create"]
    with server.client() as tenant:
        tenant.function_load(f"#!lua name=squat\nredis.register_function('{squatter}', "
                             "function(keys, args) return {'ok'} end)\n")
    with pytest.raises(LibraryMismatch, match="another library holds its function names"):
        FlowClient.from_url(server.url, namespace=namespace).connect()


def test_store_setup_on_a_cluster_loads_and_verifies_every_primary(
        redis_cluster: Any, namespace: str, tmp_path: Path, closing: Any) -> None:
    """The library is per node: store-setup loads it on each primary, and a client checks
    each of them (one primary with other code is enough to refuse)."""
    closing(FlowClient.from_url(redis_cluster.url, namespace=namespace)).connect()
    last = redis_cluster.nodes[-1]
    with last.client() as conn:
        conn.function_delete(store_module.LIBRARY_NAME)
    setup = run_many([["store-setup", "--url", redis_cluster.url]], cwd=tmp_path)[0]
    assert setup.returncode == 0, setup.stderr
    assert "on 3 node(s); verified" in setup.stdout
    for node in redis_cluster.nodes:
        with node.client() as conn:
            assert conn.function_list(library=store_module.LIBRARY_NAME)
    tampered = store_module.LIBRARY.replace("\n", "\n-- one node only\n", 1)
    with last.client() as conn:
        conn.function_load(tampered, replace=True)
    try:
        with pytest.raises(LibraryMismatch, match=f"primary 127.0.0.1:{last.port}"):
            FlowClient.from_url(redis_cluster.url, namespace=namespace).connect()
    finally:
        with last.client() as conn:
            conn.function_load(store_module.LIBRARY, replace=True)
    assert closing(FlowClient.from_url(redis_cluster.url, namespace=namespace)).create(
        "ok", "q", "queued") is True
