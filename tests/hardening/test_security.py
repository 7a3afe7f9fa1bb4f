"""Scenario 9: authenticated and TLS stores work; secrets never leak; nothing listens where it
should not; payloads are only ever bytes.

Each daemon test checks every place a secret could surface: the daemon's stderr (supervisor
and workers), /metrics /readyz /healthz, the command lines of the supervisor and every worker
(`ps -o args` and /proc/PID/cmdline), and `ferricflowd check` on the same config.
"""

from __future__ import annotations

import ast
import json
import pickle
import re
import secrets
import stat
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil
import pytest
import redis

from ferricflowd import FlowClient, InvalidArgument, QueueClient, StoreError
from ferricflowd.config import load_config
from ferricflowd.flow.urls import redact as _redact
from ferricflowd.logs import redact_url
from ferricflowd.supervisor.http import HealthServer, parse_listen
from ferricflowd.supervisor.promdir import PromDir
from tests.daemons import REPO_ROOT, Daemon, daemon_env, proc_cmdline, process_tree, run_many
from tests.helpers import wait_for

ECHO = "tests.daemon.handlers.basic:echo"
PACKAGE = REPO_ROOT / "ferricflowd"


def make_secret(tag: str) -> str:
    """A password with characters that need URL quoting (and survive a naive redaction)."""
    return f"{tag}-{secrets.token_hex(6)}:/@%+ &"


def url_with(server: Any, user: str, password: str, query: str = "") -> str:
    scheme = "rediss" if server.tls else "redis"
    auth = f"{quote(user, safe='')}:{quote(password, safe='')}@"
    return f"{scheme}://{auth}{server.host}:{server.port}/0{query}"


def ca_query(server: Any) -> str:
    return "?ssl_ca_certs=" + quote(str(server.tls_files["ca"]), safe="/")


def assert_secret_nowhere(daemon: Daemon, tmp_path: Path, *secret_values: str) -> None:
    """None of `secret_values` (nor their URL-quoted forms) in any output of the daemon."""
    forms = {f for s in secret_values for f in (s, quote(s, safe=""), quote(s))}
    places: dict[str, str] = {"daemon stderr": daemon.log()}
    for path in ("/metrics", "/readyz", "/healthz"):
        status, body = daemon.get(path)
        assert status in (200, 503), path
        places[path] = body
    tree = process_tree(daemon.pid)
    assert len(tree) >= 2, "supervisor and at least one worker"
    for proc in tree:
        places[f"/proc/{proc.pid}/cmdline"] = proc_cmdline(proc.pid)
        ps = subprocess.run(["ps", "-o", "args=", "-p", str(proc.pid)], capture_output=True,
                            text=True)
        places[f"ps -o args {proc.pid}"] = ps.stdout
    titles = [places[f"/proc/{p.pid}/cmdline"] for p in tree]
    assert any(t.startswith("ferricflowd: supervisor") for t in titles), titles
    assert any(t.startswith("ferricflowd: worker") for t in titles), titles
    check = run_many([["check", "--config", str(daemon.config_path)]], cwd=tmp_path)[0]
    assert check.returncode == 0, check.stderr
    places["check"] = check.stdout + check.stderr
    for where, text in places.items():
        for form in forms:
            assert form not in text, f"secret found in {where}"


def flows_complete(daemon: Daemon, client: FlowClient, prefix: str, n: int) -> None:
    QueueClient(client).queue(type="q").enqueue_many([f"{prefix}{i}" for i in range(n)])
    wait_for(lambda: all(client.get(f"{prefix}{i}").state == "completed" for i in range(n)),
             timeout=20, what=f"{n} flows completed; log:\n{daemon.log_tail()}")


# -- password, ACL user, TLS -----------------------------------------------------------------

def test_password_store_works_and_the_password_never_leaks(
        start_daemon: Any, make_redis_server: Any, namespace: str, tmp_path: Path,
        closing: Any) -> None:
    secret = make_secret("pw")
    server = make_redis_server(password=secret)
    client = closing(FlowClient.from_url(server.url, namespace=namespace))
    assert client.create("direct", "q", "queued") is True

    for bad_url in (url_with(server, "", "wrong" + secret), f"redis://{server.host}:"
                    f"{server.port}/0"):
        with pytest.raises(StoreError) as caught:
            FlowClient.from_url(bad_url, namespace=namespace).connect()
        assert secret not in str(caught.value) and quote(secret, safe="") not in str(
            caught.value)
        assert re.search("NOAUTH|authenticat|invalid username-password", str(caught.value),
                         re.IGNORECASE), caught.value

    daemon = start_daemon({"q": {"type": "q", "states": ["queued"], "handler": ECHO,
                                 "processes": 2}}, store={"url": server.url})
    flows_complete(daemon, client, "a", 40)

    # The store's password changes under the daemon and every connection is dropped: the
    # errors it logs while it cannot log in name the store without the password.
    admin = server.client()
    try:
        admin.config_set("requirepass", "temporary-" + secrets.token_hex(4))
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal")
        wait_for(lambda: "invalid username-password" in daemon.log(), timeout=15,
                 what=f"an auth failure logged; log:\n{daemon.log_tail()}")
    finally:
        admin.config_set("requirepass", secret)
        admin.close()
    wait_for(daemon.ready, timeout=20, what=f"ready again; log:\n{daemon.log_tail()}")
    flows_complete(daemon, client, "b", 20)
    assert ":***@" in daemon.log()

    wrong = run_many([["stats", "q", "--url", url_with(server, "", "x" + secret)]],
                     cwd=tmp_path)[0]
    assert wrong.returncode == 5 and ":***@" in wrong.stderr, wrong.stderr
    assert secret not in wrong.stderr and quote(secret, safe="") not in wrong.stderr
    assert_secret_nowhere(daemon, tmp_path, secret)


def test_acl_user_without_dangerous_commands_runs_clients_and_the_daemon(
        start_daemon: Any, make_redis_server: Any, namespace: str, tmp_path: Path,
        closing: Any) -> None:
    admin_secret, user_secret = make_secret("admin"), make_secret("user")
    server = make_redis_server(password=admin_secret)  # the default user needs a password
    admin = closing(server.client())
    admin.execute_command("ACL", "SETUSER", "ffuser", "on", f">{user_secret}", "~*", "&*",
                          "+@all", "-@dangerous", "+info", "+config|get")
    url = url_with(server, "ffuser", user_secret)
    client = closing(FlowClient.from_url(url, namespace=namespace))
    assert client.create("direct", "q", "queued") is True
    with pytest.raises(StoreError, match="invalid username-password"):
        FlowClient.from_url(url_with(server, "ffuser", "nope"), namespace=namespace).connect()

    daemon = start_daemon({"q": {"type": "q", "states": ["queued"], "handler": ECHO,
                                 "processes": 2}}, store={"url": url})
    flows_complete(daemon, client, "a", 40)
    users = re.findall(r"\buser=(\S+)", admin.execute_command("CLIENT", "LIST").decode())
    assert users.count("ffuser") >= 4, users  # 2 workers (+ blocking connections), supervisor
    denied = [e for e in admin.execute_command("ACL", "LOG") if b"ffuser" in repr(e).encode()]
    assert denied == [] or all(b"auth" in repr(e).encode() for e in denied), denied
    assert_secret_nowhere(daemon, tmp_path, user_secret, admin_secret)


def test_tls_store_with_a_self_signed_ca_works_for_clients_and_the_daemon(
        start_daemon: Any, make_redis_server: Any, namespace: str, tmp_path: Path,
        closing: Any) -> None:
    secret = make_secret("tls")
    server = make_redis_server(tls=True, password=secret)  # TLS port only: no plaintext
    url = server.url + ca_query(server)
    assert url.startswith("rediss://")
    client = closing(FlowClient.from_url(url, namespace=namespace))
    assert client.create("direct", "q", "queued", b"over tls") is True
    assert client.get("direct").payload == b"over tls"  # type: ignore[union-attr]

    with pytest.raises(StoreError, match="CERTIFICATE_VERIFY_FAILED") as caught:
        FlowClient.from_url(server.url, namespace=namespace).connect()  # no CA: refused
    assert secret not in str(caught.value)
    plain = url.replace("rediss://", "redis://", 1)
    with pytest.raises(InvalidArgument, match="TLS options need a rediss:// URL") as bad:
        FlowClient.from_url(plain, namespace=namespace)  # was a TypeError at first connect
    assert bad.value.argument == "url" and secret not in str(bad.value)
    with pytest.raises(StoreError):  # plain text to a TLS port
        FlowClient.from_url(plain.split("?")[0], namespace=namespace, socket_timeout_s=2).connect()

    daemon = start_daemon({"q": {"type": "q", "states": ["queued"], "handler": ECHO,
                                 "processes": 2}}, store={"url": url})
    flows_complete(daemon, client, "a", 40)
    tls_clients = server.info("clients")["connected_clients"]
    assert tls_clients >= 3, tls_clients  # every connection of the daemon is a TLS one
    assert_secret_nowhere(daemon, tmp_path, secret)


# -- secrets in config errors, the CLI and URLs ----------------------------------------------

def test_redaction_covers_user_part_and_query() -> None:
    secret = make_secret("r")
    q = quote(secret, safe="")
    urls = [f"redis://:{q}@h:1/0", f"redis://user:{q}@h:1/0?db=1",
            f"rediss://u:{q}@h:1/0?ssl_ca_certs=/ca.crt", f"redis://h:1/0?password={q}&db=0",
            f"unix://:{q}@/run/redis.sock?db=0", f"redis://:{q}@[::1]:6379/0",
            f"redis://h:1/0?ssl_password={q}"]
    for url in urls:
        for shown in (_redact(url), redact_url(url)):
            assert secret not in shown and q not in shown and "***" in shown, shown
    assert _redact("unix:///run/redis.sock") == "unix:///run/redis.sock"
    assert _redact("redis://h:1/0?db=2") == "redis://h:1/0?db=2"
    assert _redact("rediss://u:p@h:1/0?ssl_ca_certs=/ca.crt").endswith("?ssl_ca_certs=/ca.crt")
    with pytest.raises(StoreError) as caught:  # ?password= is a redis-py URL option
        FlowClient.from_url(f"redis://127.0.0.1:1/0?password={q}", socket_timeout_s=1).connect()
    assert secret not in str(caught.value) and q not in str(caught.value)


def test_check_and_config_errors_never_echo_secrets(tmp_path: Path) -> None:
    secret = make_secret("cfg")
    q = quote(secret, safe="")
    group = f'\n[groups.g]\ntype = "q"\nstates = ["queued"]\nhandler = "{ECHO}"\n'
    files = {
        "url-array": f'[store]\nurl = ["redis://:{q}@127.0.0.1:1/0"]\n' + group,
        "url-table": f'[store]\nurl = {{ u = "redis://:{q}@h/0" }}\n' + group,
        "dsn-array": f'[daemon]\nsentry_dsn = ["https://{q}@sentry.invalid/1"]\n' + group,
        "good": f'[store]\nurl = "redis://:{q}@127.0.0.1:1/0"\n' + group,
        "bad-handler": f'[store]\nurl = "redis://:{q}@127.0.0.1:1/0"\n'
                       + group.replace(ECHO, "tests.daemon.handlers.broken:handler"),
        "env-url": group,
        "env-bad-url": group,
        "tls-option-on-redis": f'[store]\nurl = "redis://:{q}@h:1/0?ssl_ca_certs=/ca.crt"\n'
                               + group,
    }
    paths = {}
    for name, text in files.items():
        paths[name] = tmp_path / f"{name}.toml"
        paths[name].write_text(text)
    env_urls = {"env-url": f"redis://:{q}@127.0.0.1:1/0", "env-bad-url": f"redis://:{q}@h:x/0"}
    envs = [daemon_env({"FERRICFLOWD_STORE_URL": env_urls[name]} if name in env_urls else {})
            for name in files]
    results = dict(zip(files, run_many([["check", "--config", str(p)] for p in paths.values()],
                                       cwd=tmp_path, env=envs), strict=True))
    expected = {"url-array": 2, "url-table": 2, "dsn-array": 2, "good": 0, "bad-handler": 1,
                "env-url": 0, "env-bad-url": 2, "tls-option-on-redis": 2}
    for name, result in results.items():
        output = result.stdout + result.stderr
        assert result.returncode == expected[name], (name, output)
        assert secret not in output and q not in output, (name, output)
        assert "Traceback" not in output, (name, output)
    assert "store.url: expected a string" in results["url-array"].stderr
    assert "(value not shown)" in results["dsn-array"].stderr
    assert "store.url: env FERRICFLOWD_STORE_URL: Port could not be cast" in results[
        "env-bad-url"].stderr
    tls = results["tls-option-on-redis"].stderr
    assert "store.url: unknown option(s) ssl_ca_certs (TLS options need a rediss:// URL)" in tls
    assert "redis://:***@h:1/0" in tls


# -- listeners --------------------------------------------------------------------------------

def test_the_health_listener_is_loopback_unless_configured(tmp_path: Path) -> None:
    path = tmp_path / "flows.toml"
    path.write_text(f'[groups.g]\ntype = "q"\nstates = ["a"]\nhandler = "{ECHO}"\n')
    default = load_config(path, {}).daemon.listen
    host, port = parse_listen(default)
    assert (host, port) == ("127.0.0.1", 9464)
    # the default host, a name for it, and a configured other address (all of 127/8 is lo)
    for listen, bound in ((f"{host}:0", "127.0.0.1"), ("localhost:0", "127.0.0.1"),
                          ("127.0.0.2:0", "127.0.0.2")):
        server = HealthServer(listen, lambda: None, PromDir(tmp_path), 5)  # type: ignore
        server.start()
        try:
            assert server.address.startswith(bound + ":"), (listen, server.address)
        finally:
            server.stop()


def _listening(pid: int) -> list[tuple[int, str, int]]:
    out = []
    for proc in process_tree(pid):
        try:
            conns = proc.net_connections(kind="inet")
        except psutil.Error:
            continue
        out.extend((proc.pid, c.laddr.ip, c.laddr.port) for c in conns
                   if c.status == psutil.CONN_LISTEN)
    return out


def test_embedded_store_is_a_unix_socket_in_a_0700_directory(start_daemon: Any,
                                                              tmp_path: Path) -> None:
    loose = tmp_path / "data" / "redis"
    loose.mkdir(parents=True)
    loose.chmod(0o777)  # left behind by someone else: tightened at start
    daemon = start_daemon({"q": {"type": "q", "states": ["queued"], "handler": ECHO}},
                          store={"url": None})
    sock = loose / "redis.sock"
    assert stat.S_IMODE(loose.stat().st_mode) == 0o700
    assert stat.S_ISSOCK(sock.stat().st_mode) and stat.S_IMODE(sock.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "data" / "prometheus").stat().st_mode) == 0o700
    flows_complete(daemon, daemon.client, "e", 20)
    store = redis.Redis(unix_socket_path=str(sock))
    try:
        assert store.config_get("port") == {"port": "0"}  # no TCP at all
        assert store.config_get("unixsocketperm") == {"unixsocketperm": "700"}
    finally:
        store.close()
    redis_pids = [p.pid for p in process_tree(daemon.pid) if p.name() == "redis-server"]
    assert len(redis_pids) == 1
    # The whole tree listens on one TCP socket - the loopback health endpoint - and the
    # store and the workers on none.
    assert _listening(daemon.pid) == [(daemon.pid, "127.0.0.1", daemon.port)]


# -- payloads are bytes -----------------------------------------------------------------------

_FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle",
                      "jsonpickle"}


def test_the_package_never_unpickles_or_evaluates() -> None:
    sources = sorted(PACKAGE.rglob("*.py"))
    assert len(sources) > 20
    for path in sources:
        text = path.read_text()
        assert not re.search(r"pickle|marshal|(?<![\w.])(eval|exec)\(", text), path
        for node in ast.walk(ast.parse(text, str(path))):
            if isinstance(node, ast.Import):
                assert not {a.name.split(".")[0] for a in node.names} & _FORBIDDEN_MODULES, path
            elif isinstance(node, ast.ImportFrom):
                assert (node.module or "").split(".")[0] not in _FORBIDDEN_MODULES, path
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in ("eval", "exec", "compile"), (path, node.lineno)
    for path in sorted(PACKAGE.rglob("*.lua")):
        assert not re.search(r"loadstring|dofile|loadfile", path.read_text()), path


class _Bomb:
    """Unpickling this touches a file: proof that something unpickled a payload."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def test_a_pickled_payload_stays_inert_bytes(redis_server: Any, namespace: str,
                                             tmp_path: Path, closing: Any) -> None:
    marker = tmp_path / "unpickled"
    bomb = pickle.dumps(_Bomb(marker))
    fc = closing(FlowClient.from_url(redis_server.url, namespace=namespace))
    q = QueueClient(fc).queue(type="q")
    q.enqueue("bomb", payload=bomb, values={"v": bomb})
    seen: list[tuple[bytes, dict[str, bytes]]] = []

    def handler(job: Any) -> bytes:
        seen.append((job.payload, dict(job.values)))
        job.flow.put_value("w", job.payload)
        return job.payload

    assert q.worker(claim_values=["v"], block_ms=50).run_until_idle(handler, timeout=10) == 1
    assert seen == [(bomb, {"v": bomb})] and isinstance(seen[0][0], bytes)
    record = fc.get("bomb", values=["v", "w"])
    assert record is not None and record.state == "completed"
    assert record.payload == bomb and record.result == bomb
    assert record.values == {"v": bomb, "w": bomb}
    assert fc.history("bomb")[-1].event == "completed"
    cli = run_many([["get", "--json", "--values", "v", "--url", redis_server.url,
                     "--namespace", namespace, "bomb"]], cwd=tmp_path)[0]
    assert cli.returncode == 0 and json.loads(cli.stdout)["state"] == "completed", cli.stderr
    assert not marker.exists()
