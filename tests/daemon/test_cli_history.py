"""`ferricflowd history`: a missing Flow exits 1 like `get`; times are ISO 8601 for people
and epoch ms with --json."""

from __future__ import annotations

import json
import re

from tests.daemons import run_cli


def test_history_of_a_missing_flow_exits_1_and_times_are_iso(redis_server, namespace,
                                                             tmp_path):
    from ferricflowd.flow.client import FlowClient

    client = FlowClient.from_url(redis_server.url, namespace=namespace)
    try:
        client.create("h1", "t", "queued")
    finally:
        client.close()
    opts = ("--url", redis_server.url, "--namespace", namespace)
    missing = run_cli("history", *opts, "nope", cwd=tmp_path)
    assert missing.returncode == 1 and "not found" in missing.stderr, missing
    shown = run_cli("history", *opts, "h1", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert re.search(r"^\s+1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z created", shown.stdout,
                     re.M), shown.stdout
    as_json = run_cli("history", *opts, "--json", "h1", cwd=tmp_path)
    assert isinstance(json.loads(as_json.stdout)[0]["at_ms"], int)
    got = run_cli("get", *opts, "h1", cwd=tmp_path)
    assert re.search(r"^created_at +\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", got.stdout,
                     re.M), got.stdout
    assert "_ms" not in got.stdout, got.stdout
    got_json = json.loads(run_cli("get", *opts, "--json", "h1", cwd=tmp_path).stdout)
    assert isinstance(got_json["created_at_ms"], int)


def test_cli_errors_name_the_flag_as_typed_without_the_wire_prefix(redis_server, namespace,
                                                                   tmp_path):
    opts = ("--url", redis_server.url, "--namespace", namespace)
    assert run_cli("enqueue", *opts, "email", "e1", cwd=tmp_path).returncode == 0
    again = run_cli("enqueue", *opts, "email", "e1", cwd=tmp_path)
    assert again.returncode == 1 and again.stderr.startswith("ferricflowd: flow already exists")
    assert "ERR " not in again.stderr, again.stderr
    guard = run_cli("signal", *opts, "e1", "go", "--if-state", "bad!", cwd=tmp_path)
    assert guard.returncode == 2 and guard.stderr.startswith("ferricflowd: --if-state: "), guard
    assert "if_state" not in guard.stderr
    typed = run_cli("enqueue", *opts, "bad type!", "x", cwd=tmp_path)
    assert typed.returncode == 2 and typed.stderr.startswith("ferricflowd: TYPE: "), typed
