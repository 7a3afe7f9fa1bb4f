"""Drive the real `ferricflowd` as a subprocess, with real signals, against a real Redis.

`start_daemon(groups, ...)` writes a flows.toml with short test timings, starts
`python -m ferricflowd run --config ...` in its own session (so teardown can kill the whole
process group) and returns a `Daemon` handle. Every wait is a poll on a condition with a
deadline (`wait_for`), never a bare sleep.
"""

from __future__ import annotations

import gzip
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from ferricflowd.flow.client import FlowClient

REPO_ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")

# Short timings so the suite stays fast; tests override what they exercise.
TEST_DAEMON: dict[str, Any] = {
    "drain_timeout": "5s",
    "heartbeat_timeout": "5s",
    "maintenance_interval": "200ms",
    "max_restarts": 5,
    "restart_window": "30s",
}
TEST_DEFAULTS: dict[str, Any] = {"block": "200ms", "lease": "30s", "concurrency": 8}


def wait_for(condition: Callable[[], T], timeout: float = 15.0, interval: float = 0.02,
             what: str = "") -> T:
    """Poll `condition` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what or condition}")
        time.sleep(interval)


def process_gone(proc: psutil.Process) -> bool:
    """The process exited (a zombie not yet reaped counts as exited)."""
    try:
        return proc.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def toml_table(name: str, values: dict[str, Any]) -> str:
    lines = [f"[{name}]"] + [f"{k} = {toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def write_config(
    path: Path,
    groups: dict[str, dict[str, Any]],
    store: dict[str, Any],
    daemon: dict[str, Any],
    defaults: dict[str, Any] | None = None,
    console: dict[str, Any] | None = None,
    schedules: dict[str, dict[str, Any]] | None = None,
) -> Path:
    parts = [toml_table("store", store), toml_table("daemon", daemon)]
    # No web console unless a test asks for one: it would take the same port in every test.
    parts.append(toml_table("console", console if console is not None else {"listen": ""}))
    parts.append(toml_table("defaults", {**TEST_DEFAULTS, **(defaults or {})}))
    parts += [toml_table(f"groups.{name}", values) for name, values in groups.items()]
    parts += [toml_table(f"schedules.{name}", values) for name, values in (schedules or {}).items()]
    path.write_text("\n".join(parts))
    return path


class MissingSeries(AssertionError):
    """No sample of the asked series (name and labels) is in the exposition."""


def metric_or_none(text: str, name: str, **labels: str) -> float | None:
    """Sum of the samples called `name` whose labels include `labels`; None if there is none
    (for conditions polled while a series may not exist yet)."""
    from prometheus_client.parser import text_string_to_metric_families

    values = [
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    ]
    return sum(values) if values else None


def metric(text: str, name: str, **labels: str) -> float:
    """Like metric_or_none, but a missing series fails the test: it is not a zero."""
    value = metric_or_none(text, name, **labels)
    if value is None:
        shown = ",".join(f'{k}="{v}"' for k, v in labels.items())
        raise MissingSeries(f"no series {name}{{{shown}}} in /metrics")
    return value


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    config_path: Path
    log_path: Path
    port: int
    client: FlowClient
    started_at: float = field(default_factory=time.monotonic)

    wrapped: bool = False  # started under a wrapper (unshare): the supervisor is its child

    @property
    def pid(self) -> int:
        """The supervisor's pid (as this test process sees it)."""
        if not self.wrapped:
            return self.proc.pid
        children = wait_for(lambda: psutil.Process(self.proc.pid).children(), timeout=5)
        return children[0].pid

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return 0, ""

    def ready(self) -> bool:
        return self.get("/readyz")[0] == 200

    def wait_ready(self, timeout: float = 15.0) -> None:
        wait_for(self.ready, timeout, 0.05, what=f"/readyz 200; log:\n{self.log_tail()}")

    def metrics(self) -> str:
        status, body = self.get("/metrics")
        assert status == 200, status
        return body

    def workers(self, group: str | None = None) -> dict[int, psutil.Process]:
        """Live worker processes (of `group`), by pid."""
        found = {}
        try:
            children = psutil.Process(self.pid).children()
        except psutil.Error:
            return {}
        for child in children:
            try:
                if child.status() == psutil.STATUS_ZOMBIE:
                    continue
                cmdline = child.cmdline()
            except psutil.Error:
                continue
            # setproctitle rewrites the command line: "ferricflowd: worker GROUP[states] ..."
            title = " ".join(cmdline)
            if not title.startswith("ferricflowd: worker "):
                continue
            if group is None or title.startswith(f"ferricflowd: worker {group}["):
                found[child.pid] = child
        return found

    def group_ready(self, group: str, count: int) -> bool:
        status, body = self.get("/readyz")
        if not body:
            return False
        doc = json.loads(body).get("groups", {}).get(group, {})
        return doc.get("ready") == count and len(self.workers(group)) == count

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait_exit(self, timeout: float = 15.0) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"daemon still running after {timeout}s:\n{self.log_tail()}"
            ) from None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def kill_all(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            pass


def daemon_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRICFLOWD_")}
    paths = [str(REPO_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env.update(extra or {})
    return env


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60):
    """`python -m ferricflowd ARGS`, waited for; a CompletedProcess with text output."""
    return subprocess.run(
        [sys.executable, "-m", "ferricflowd", *args],
        cwd=cwd, env=env or daemon_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


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


class SentryEnvelopes(BaseHTTPRequestHandler):
    """A fake Sentry ingest endpoint: keeps every envelope body it is sent."""

    received: list[bytes]

    def do_POST(self) -> None:  # noqa: N802
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.received.append(body)  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass
