"""Support of the console tests: `Served` (a console served in this process, with a tiny
HTTP client that does not follow redirects, so tests see exactly what the console answers),
its config file and fixtures' data. The `console_app` fixture is in tests/console/conftest.py.
"""

from __future__ import annotations

import http.client
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from ferricflowd.config import Config
from ferricflowd.flow.client import FlowClient

TOKEN = "test-token-0123456789"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: str
    cookies: dict[str, str]


@dataclass
class Served:
    url: str
    port: int
    config: Config
    client: FlowClient
    console: Any  # ferricflowd.console.app.Console

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            raw_cookies = resp.headers.get_all("set-cookie") or []
            jar: SimpleCookie = SimpleCookie()
            for c in raw_cookies:
                jar.load(c)
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                         resp.read().decode("utf-8", "replace"),
                         {k: m.value for k, m in jar.items()})
        finally:
            conn.close()

    def get(self, path: str, **headers: str) -> Reply:
        return self.request("GET", path, headers=_headers(headers))

    def post(self, path: str, fields: dict[str, Any] | list[tuple[str, str]] | None = None,
             **headers: str) -> Reply:
        body = urlencode(fields or {}, doseq=True).encode()
        hdrs = {"Content-Type": "application/x-www-form-urlencoded", **_headers(headers)}
        return self.request("POST", path, body, hdrs)

    def login(self) -> dict[str, str]:
        """Log in with the token; the headers (cookie) and CSRF token of that session."""
        reply = self.post("/login", {"token": TOKEN, "next": "/"})
        assert reply.status == 303, reply.body
        cookie = f"ffconsole={reply.cookies['ffconsole']}"
        session = self.console.auth.session(reply.cookies["ffconsole"])
        return {"cookie": cookie, "csrf": self.console.auth.csrf(session)}


def fail_all(client: FlowClient, type: str, message: bytes = b"boom") -> int:
    """Run every due Flow of `type` in `queued` once, failing each with `message`."""
    from ferricflowd.flow.outcomes import fail
    from ferricflowd.flow.queue import QueueClient

    return QueueClient(client).queue(type=type).worker(state="queued").run_until_idle(
        lambda job: fail(message), timeout=10)


def _headers(kw: dict[str, str]) -> dict[str, str]:
    return {k.replace("_", "-"): v for k, v in kw.items()}


def write_console_config(path: Path, url: str, namespace: str, port: int, token: str,
                         refresh: str = "5s", extra: str = "") -> Path:
    path.write_text(
        f'[store]\nurl = "{url}"\nnamespace = "{namespace}"\n'
        f'[daemon]\ndata_dir = "{path.parent / "data"}"\nlisten = "127.0.0.1:1"\n'
        f'[console]\nlisten = "127.0.0.1:{port}"\ntoken = "{token}"\nrefresh = "{refresh}"\n'
        '[groups.q]\ntype = "job"\nstates = ["queued"]\nhandler = "m:f"\n' + extra)
    return path
