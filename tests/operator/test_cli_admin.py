"""The operator commands as an operator runs them: the real `ferricflowd` in a subprocess
(browse/flows, stuck, requeue, cancel, purge, rewind, stats --watch), against the session
redis-server; the store is checked through FlowClient."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ferricflowd import ChildSpec, FlowClient, FlowFilter, complete, fail, transition
from ferricflowd.flow.wire import CreateSpec, LeaseRequest
from tests.daemons import daemon_env
from tests.helpers import out_json, wait_for

T = "email"


def _failed(fc: FlowClient, n: int, error: bytes = b"SMTP timeout", prefix: str = "e") -> None:
    fc.create_many([CreateSpec(f"{prefix}{i:03}", T, "queued", b"p") for i in range(n)])
    jobs = fc.claim(T, LeaseRequest("w", ["queued"], 60_000), limit=n).jobs
    fc.apply_outcomes([(j, fail(error)) for j in jobs])
    now = fc.server_ms()
    wait_for(lambda: fc.server_ms() > now)  # bulk runs take Flows updated before they start


def _rewound(fc: FlowClient, flow_id: str) -> int:
    return sum(e.event == "rewound" for e in fc.history(flow_id))


def test_requeue_dry_run_prompt_and_yes(fc: FlowClient, cli: Any) -> None:
    _failed(fc, 30)
    fc.create("other", T, "queued")
    dry = cli("requeue", T, "--state", "failed", "--dry-run", "--sample", "3", "--json")
    assert dry.returncode == 0, dry.stderr
    data = out_json(dry)
    assert data["matched"] == 30 and len(data["sample"]) == 3 and data["dry_run"] is True
    assert fc.count_matching(T, FlowFilter.of(state="failed")) == 30  # nothing changed
    # No terminal to ask on and no --yes: refused, nothing changed.
    asked = cli("requeue", T, "--state", "failed")
    assert asked.returncode == 2 and "--yes" in asked.stderr
    assert fc.count_matching(T, FlowFilter.of(state="failed")) == 30
    done = cli("requeue", T, "--state", "failed", "--yes", "--json", "--batch", "7",
               "--reason", "smtp fixed", "--by", "alice")
    assert done.returncode == 0, done.stderr
    assert out_json(done) | {"snapshot_ms": 0} == {
        "action": "requeue", "matched": 30, "done": 30, "skipped": 0, "refused": {},
        "interrupted": False, "snapshot_ms": 0, "errors": []}
    assert fc.stats(T).counts == {"queued": 31}
    last = fc.history("e000")[-1]
    assert last.event == "rewound" and last.details["by"] == "alice"
    assert last.details["reason"] == "smtp fixed"
    again = cli("requeue", T, "--state", "failed", "--yes")
    assert again.returncode == 0 and "nothing to requeue" in again.stdout


def test_requeue_filters_target_state_and_refusals(fc: FlowClient, cli: Any) -> None:
    _failed(fc, 10, b"SMTP timeout")
    _failed(fc, 5, b"bad address", prefix="b")
    done = cli("requeue", T, "-s", "failed", "--error-contains", "TIMEOUT", "--to", "retry",
               "--delay", "1h", "--yes", "--json")
    assert out_json(done)["done"] == 10
    assert fc.count_matching(T, FlowFilter.of(state="retry")) == 10
    rec = fc.get("e000")
    assert rec is not None and rec.next_run_at_ms > fc.server_ms() + 3_500_000  # type: ignore
    # A finished child whose parent's group resolved is refused: exit 1, counted.
    fc.create("parent", "order", "split")
    [job] = fc.claim("order", LeaseRequest("w", ["split"], 60_000), limit=1).jobs
    job.flow.spawn_children([ChildSpec(id="kid", type=T)], wait_state="merge")
    fc.apply_outcome(job, transition("waiting"))
    [kid] = fc.claim(T, LeaseRequest("w", ["queued"], 60_000), limit=1).jobs
    fc.apply_outcome(kid, fail(b"x"))
    refused = cli("requeue", T, "-s", "failed", "--error-contains", "x", "--yes")
    assert refused.returncode == 1, refused.stderr
    assert "refused: 1 FamilyConflict" in refused.stdout and "kid" in refused.stderr


def test_cancel_one_or_many_and_purge(fc: FlowClient, cli: Any) -> None:
    fc.create_many([CreateSpec(f"q{i}", T, "queued") for i in range(12)])
    one = cli("cancel", "q0")
    assert one.returncode == 0 and "cancelled q0" in one.stdout
    time.sleep(0.002)
    many = cli("cancel", T, "--state", "queued", "--yes", "--json", "--reason", "test data")
    assert out_json(many)["done"] == 11
    assert fc.stats(T).counts == {"cancelled": 12}
    assert fc.get("q5").error == b"test data"  # type: ignore[union-attr]
    bad = cli("purge", T, "--state", "queued", "--yes")
    assert bad.returncode == 2 and "queued" in bad.stderr
    dry = cli("purge", T, "--state", "cancelled", "--dry-run")
    assert dry.returncode == 0 and "would purge: 12 Flow(s)" in dry.stdout
    purged = cli("purge", T, "--state", "cancelled", "--yes", "--json")
    assert out_json(purged)["done"] == 12
    assert fc.get("q5") is None and fc.history("q5") == [] and fc.stats(T).counts == {}


def test_browse_pages_with_a_cursor_and_the_flows_alias(fc: FlowClient, cli: Any) -> None:
    _failed(fc, 9)
    first = out_json(cli("browse", T, "--state", "failed", "--limit", "4", "--json"))
    assert len(first["flows"]) == 4 and first["cursor"]
    second = out_json(cli("flows", T, "-s", "failed", "--limit", "10", "--json",
                          "--cursor", first["cursor"]))
    ids = [f["id"] for f in first["flows"] + second["flows"]]
    assert sorted(ids) == [f"e{i:03}" for i in range(9)] and second["cursor"] is None
    text = cli("browse", T, "--newest", "--limit", "2")
    assert text.returncode == 0 and text.stdout.splitlines()[0].startswith("ID")
    assert len(text.stdout.splitlines()) == 3 and "--cursor" in text.stderr
    bad = cli("browse", T, "--cursor", "nonsense")
    assert bad.returncode == 2 and "cursor" in bad.stderr


def test_stuck_and_rewind(fc: FlowClient, cli: Any) -> None:
    assert cli("stuck").returncode == 0  # nothing stuck yet
    fc.create("old", T, "queued", run_at_ms=fc.server_ms() - 3_600_000)
    fc.create("held", T, "queued", run_at_ms=fc.server_ms() + 3_600_000)
    found = cli("stuck", T, "--due-for", "10m", "--json")
    assert found.returncode == 1 and [f["id"] for f in out_json(found)[T]] == ["old"]
    [job] = fc.claim(T, LeaseRequest("w", ["queued"], 60_000), limit=1).jobs
    leased = cli("rewind", "old")
    assert leased.returncode == 1 and "leased" in leased.stderr
    fc.apply_outcome(job, complete())
    back = cli("rewind", "old", "--to", "again", "--json")
    assert back.returncode == 0 and out_json(back) == {"id": "old", "state": "again"}
    stale = cli("rewind", "old", "--if-version", "1")
    assert stale.returncode == 1 and "stale version" in stale.stderr


def test_a_config_file_names_the_store(fc: FlowClient, cli: Any, redis_server: Any,
                                       namespace: str, tmp_path: Path) -> None:
    _failed(fc, 3)
    config = tmp_path / "flows.toml"
    config.write_text(f'[store]\nurl = "{redis_server.url}"\nnamespace = "{namespace}"\n'
                      'durability = "relaxed"\npartitions = 4\n'
                      f'[groups.g]\ntype = "{T}"\nstates = ["queued"]\nhandler = "m:f"\n')
    done = cli("requeue", T, "--state", "failed", "--yes", "--config", str(config), url=False)
    assert done.returncode == 0, done.stderr
    assert fc.stats(T).counts == {"queued": 3}


def test_store_unreachable_and_help(cli: Any) -> None:
    done = cli("browse", T, "--url", "redis://127.0.0.1:1/0", url=False)
    assert done.returncode == 5 and "unreachable" in done.stderr
    for command in ("requeue", "purge", "cancel", "browse", "stuck", "rewind", "stats"):
        helped = cli(command, "--help", url=False)
        assert helped.returncode == 0 and "Exit codes" in helped.stdout, command


def _popen(redis_server: Any, namespace: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "ferricflowd", *args, "--url",
                             redis_server.url, "--namespace", namespace],
                            env=daemon_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, text=True)


def test_ctrl_c_stops_a_bulk_run_between_batches_and_a_rerun_finishes(
        fc: FlowClient, redis_server: Any, namespace: str, cli: Any) -> None:
    ids = [f"e{i:03}" for i in range(300)]
    _failed(fc, 300)
    proc = _popen(redis_server, namespace, "requeue", T, "--state", "failed", "--yes",
                  "--batch", "10", "--rate", "100")
    try:
        wait_for(lambda: fc.count_matching(T, FlowFilter.of(state="queued")) >= 30, 30)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "--updated-before" in err
    states = {i: fc.get(i).state for i in ids}  # type: ignore[union-attr]
    queued = sum(s == "queued" for s in states.values())
    assert 30 <= queued < 300
    assert all(_rewound(fc, i) == (states[i] == "queued") for i in ids)  # no half-done Flow
    rerun = cli("requeue", T, "--state", "failed", "--yes", "--rate", "0", "--json")
    assert rerun.returncode == 0 and out_json(rerun)["done"] == 300 - queued
    assert all(_rewound(fc, i) == 1 for i in ids)  # every Flow requeued exactly once


@pytest.mark.parametrize("as_json", [False, True])
def test_stats_watch_redraws_until_ctrl_c(fc: FlowClient, redis_server: Any, namespace: str,
                                          as_json: bool) -> None:
    _failed(fc, 4)
    fc.create_many([CreateSpec(f"q{i}", T, "queued") for i in range(3)])
    fc.claim(T, LeaseRequest("host:7:g", ["queued"], 60_000), limit=1)
    proc = _popen(redis_server, namespace, "stats", "--watch", "--interval", "200ms",
                  *(["--json"] if as_json else []))
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        frames = 0
        deadline = time.monotonic() + 30
        while frames < 2 and time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            frames += line.startswith("{" if as_json else "ferricflowd stats")
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    if as_json:
        frame = json.loads(lines[-1])
        email = frame["types"][T]
        assert email["per_minute"]["failed"] == 4 and email["running"] == 1
        assert frame["longest_running"][0]["worker"] == "host:7:g"
    else:
        text = "".join(lines) + rest
        assert "DONE/MIN" in text and "LONGEST RUNNING" in text and "host:7:g" in text


def test_the_commands_on_redis_cluster(redis_cluster: Any, namespace: str,
                                       tmp_path: Path) -> None:
    fc = FlowClient.from_url(redis_cluster.url, namespace=namespace, partitions=16).connect()
    try:
        _failed(fc, 40)
        fc.create("old", T, "queued", run_at_ms=fc.server_ms() - 3_600_000)

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "ferricflowd", *args, "--url",
                                   redis_cluster.url, "--namespace", namespace, "--json"],
                                  cwd=tmp_path, env=daemon_env(), capture_output=True,
                                  text=True, timeout=60, stdin=subprocess.DEVNULL)

        page = out_json(run("browse", T, "--state", "failed", "--limit", "15"))
        assert len(page["flows"]) == 15 and page["cursor"]
        stuck = run("stuck", T)
        assert stuck.returncode == 1 and [f["id"] for f in out_json(stuck)[T]] == ["old"]
        stats = out_json(run("stats", T))
        assert stats[T]["counts"] == {"queued": 1, "failed": 40}
        assert stats[T]["per_minute"] == {"completed": 0, "failed": 40, "cancelled": 0}
        assert out_json(run("requeue", T, "--state", "failed", "--yes"))["done"] == 40
        assert fc.stats(T).counts == {"queued": 41}
    finally:
        fc.close()
