"""Issue 18 item 9: text from Flows never reaches a terminal raw.

A handler error (or a Flow id) holding terminal escapes, a window-title OSC ending in BEL,
a screen clear, a C1 CSI, is shown by the CLI's human output and by the text log with each
control character escaped (ESC as the four characters `\\x1b`); a traceback keeps its lines.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ferricflowd import FlowClient, fail
from ferricflowd.flow.wire import LeaseRequest
from ferricflowd.logs import TEXT_FORMAT, TextFormatter
from ferricflowd.safetext import CLI_KEEP, TRACEBACK_KEEP, escape_controls
from tests.daemons import run_many

T = "esc"
# OSC 0 (set the window title) ended by BEL, clear screen, CSI as the C1 byte, DEL
EVIL = "boom \x1b]0;pwned\x07\x1b[2J\x9b31mred\x7f\r\nline two"
EVIL_ID = "id-\x1b[8mhidden"  # SGR 8 would hide the rest of the line
RAW = ("\x1b", "\x07", "\x9b", "\x7f", "\r")


def _assert_escaped(text: str, *, what: str) -> None:
    raw = [c for c in RAW if c in text]
    assert not raw, (what, raw, text)
    assert "boom \\x1b]0;pwned\\x07\\x1b[2J\\x9b31mred\\x7f\\x0d" in text, (what, text)


def _fail_flows(client: FlowClient) -> None:
    for flow_id in ("esc-1", EVIL_ID):
        client.create(flow_id, T, "queued", b"p")
    jobs = client.claim(T, LeaseRequest("w", ["queued"], 60_000), limit=2).jobs
    assert len(jobs) == 2
    client.apply_outcomes([(job, fail(EVIL)) for job in jobs])


def test_cli_shows_handler_errors_escaped(redis_server: Any, namespace: str,
                                          tmp_path: Path) -> None:
    client = FlowClient.from_url(redis_server.url, namespace=namespace)
    try:
        _fail_flows(client)
    finally:
        client.close()
    opts = ["--url", redis_server.url, "--namespace", namespace]
    commands = {
        "get": ["get", *opts, "esc-1"],
        "history": ["history", *opts, "esc-1"],
        "terminals": ["terminals", *opts, T, "--state", "failed"],
        "browse": ["browse", *opts, T],
        "get --json": ["get", *opts, "--json", "esc-1"],
    }
    done = dict(zip(commands, run_many(list(commands.values()), cwd=tmp_path), strict=True))
    for name in ("get", "history", "terminals", "browse"):
        result = done[name]
        assert result.returncode == 0, (name, result.stderr)
        _assert_escaped(result.stdout, what=name)
    assert "line two" in done["get"].stdout  # the error is all there, only escaped
    # A Flow id is shown escaped too: hidden-text SGR in an id must not act.
    assert "id-\\x1b[8mhidden" in done["terminals"].stdout
    assert "id-\\x1b[8mhidden" in done["browse"].stdout
    # --json was already safe (JSON escapes controls) and keeps the exact text.
    raw_json = done["get --json"].stdout
    assert "\x1b" not in raw_json and json.loads(raw_json)["error"] == EVIL


def _record(msg: str, args: tuple[Any, ...] = (), exc: BaseException | None = None) -> Any:
    exc_info = (type(exc), exc, exc.__traceback__) if exc is not None else None
    return logging.LogRecord("ferricflowd.worker", logging.ERROR, __file__, 1, msg, args,
                             exc_info)


def test_text_log_escapes_controls_and_keeps_tracebacks_readable() -> None:
    try:
        raise RuntimeError(EVIL + "\tend")
    except RuntimeError as caught:
        exc = caught
    text = TextFormatter(TEXT_FORMAT).format(_record("flow %s failed: %s", ("esc-1", EVIL), exc))
    assert not [c for c in RAW if c in text], text
    first, *rest = text.split("\n")
    # The message is one line (no forged lines); the traceback follows on its own lines.
    assert first.endswith("flow esc-1 failed: " + escape_controls(EVIL)), first
    assert "\\x0aline two" in first
    assert rest[0] == "Traceback (most recent call last):", rest
    # newline and tab kept in a traceback, every other control escaped
    assert rest[-2:] == ["RuntimeError: boom \\x1b]0;pwned\\x07\\x1b[2J\\x9b31mred\\x7f\\x0d",
                         "line two\tend"], rest


def test_escape_controls_covers_c0_del_and_c1_only() -> None:
    every = "".join(map(chr, range(0x00, 0x100)))
    shown = escape_controls(every)
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in shown)
    assert shown.count("\\x") == 0x20 + 1 + 0x20  # C0, DEL, C1: nothing else
    assert escape_controls("é ü ✓ 日本") == "é ü ✓ 日本"
    assert escape_controls("a\nb\tc\x1b", TRACEBACK_KEEP) == "a\nb\tc\\x1b"
    assert escape_controls("a\nb\tc\x1b", CLI_KEEP) == "a\\x0ab\tc\\x1b"
