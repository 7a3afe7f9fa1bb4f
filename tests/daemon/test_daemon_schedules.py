"""Schedules fired by real daemons: two daemons on one store fire each occurrence once (one
killed -9 midway), catch-up after both stopped, metrics, the CLI, and retirement of config
schedules that no daemon declares any more."""

from __future__ import annotations

import json
import math
import signal
import time
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ferricflowd import FlowClient
from ferricflowd.flow.schedule_spec import Schedule
from ferricflowd.supervisor import scheduler as scheduler_module
from ferricflowd.supervisor.scheduler import Scheduler
from tests.daemons import daemon_env, metric, run_cli
from tests.helpers import dues, wait_for


def flows_of(client: FlowClient, prefix: str) -> list[Any]:
    return [client.get(f"{prefix}:{d}", partition_key=prefix) for d in dues(client, prefix)]


@pytest.mark.slow
def test_two_daemons_fire_each_occurrence_exactly_once_even_when_one_is_killed(
        start_daemon: Any, tmp_path: Any) -> None:
    tick = {"tick": {"type": "tick", "every": "1s"}}
    a = start_daemon({}, schedules=tick, config_name="a.toml")
    b = start_daemon({}, schedules=tick, config_name="b.toml",
                     daemon={"data_dir": str(tmp_path / "data-b")})
    client = a.client
    first = wait_for(lambda: dues(client, "tick"), timeout=10, what="a first tick")[0]
    wait_for(lambda: len(dues(client, "tick")) >= 5, timeout=10, what="5 ticks")
    b.kill_all()  # kill -9 (the whole process group) midway
    wait_for(lambda: dues(client, "tick")[-1] >= first + 10_000, timeout=15,
             what="10 s of ticks")
    text = a.metrics()
    a.signal(signal.SIGTERM)
    assert a.wait_exit(15) == 0
    got = [d for d in dues(client, "tick") if d <= first + 10_000]
    assert got == list(range(first, first + 10_001, 1000))  # none missing, none twice
    assert client.schedules.get("tick").fired == len(dues(client, "tick"))
    lags = sorted(r.created_at_ms - int(r.id.split(":")[1]) for r in flows_of(client, "tick"))
    p99 = lags[math.ceil(0.99 * len(lags)) - 1]
    print(f"tick lags ms: p50 {lags[len(lags) // 2]} p99 {p99} max {lags[-1]} n {len(lags)}")
    assert 0 <= lags[0] and p99 < 250, lags
    assert metric(text, "ferricflowd_schedule_fires_total", schedule="tick", kind="on_time") > 0
    assert metric(text, "ferricflowd_schedule_lag_seconds_count") > 0
    assert metric(text, "ferricflowd_schedule_next_due_timestamp_seconds",
                  schedule="tick") > time.time() - 5


@pytest.mark.slow
def test_catch_up_after_both_daemons_stopped_follows_the_window(start_daemon: Any) -> None:
    ticks = {"win": {"type": "tick", "every": "1s", "catchup_window": "1m"},
             "nowin": {"type": "tock", "every": "1s"}}
    d = start_daemon({}, schedules=ticks)
    client = d.client
    wait_for(lambda: len(dues(client, "win")) >= 2 and len(dues(client, "nowin")) >= 2,
             timeout=10, what="two fires each")
    d.signal(signal.SIGTERM)
    assert d.wait_exit(15) == 0
    before = {n: set(dues(client, n)) for n in ticks}
    stopped = time.time()
    wait_for(lambda: time.time() - stopped >= 5, timeout=10, what="a 5 s outage")
    d2 = start_daemon({}, schedules=ticks)
    restart_ms = int(time.time() * 1000)
    wait_for(lambda: all(max(dues(client, n)) > restart_ms + 1000 for n in ticks), timeout=15,
             what="fires after the restart")
    text = d2.metrics()
    assert metric(text, "ferricflowd_schedule_fires_total", schedule="win", kind="catchup") == 1
    assert metric(text, "ferricflowd_schedule_fires_total", schedule="nowin",
                  kind="catchup") == 0
    assert metric(text, "ferricflowd_schedule_skipped_total", schedule="nowin",
                  reason="missed") >= 4
    d2.signal(signal.SIGTERM)
    assert d2.wait_exit(15) == 0
    for name, window in (("win", True), ("nowin", False)):
        info = client.schedules.get(name, history=100)
        new = sorted(set(dues(client, name)) - before[name])
        catchups = [e for e in info.recent if e.outcome == "catchup"]
        missed = [int(e.detail) for e in info.recent if e.outcome == "missed"]
        assert len(catchups) == (1 if window else 0), info.recent
        # 5 s without a daemon: 4 or more occurrences missed (the newest one due when the
        # daemon is back counts as on time), one of them fired late with a window.
        assert sum(missed) + len(catchups) >= 4, info.recent
        on_time = new[1:] if window else new
        assert on_time == list(range(on_time[0], on_time[-1] + 1, 1000))
        assert on_time[0] - max(before[name]) >= 4000  # nothing of the outage but a catch-up
        if window:
            assert new[0] == catchups[0].due_ms and max(before[name]) < new[0] < on_time[0]


def test_cli_lists_shows_pauses_triggers_backfills_and_deletes(
        redis_server: Any, namespace: str, tmp_path: Any) -> None:
    client = FlowClient.from_url(redis_server.url, namespace=namespace)
    try:
        client.schedules.put(Schedule("hourly", "report", cron="0 * * * *",
                                      timezone="Europe/Berlin"))
    finally:
        client.close()
    base = ("--url", redis_server.url, "--namespace", namespace)

    def cli(*args: str) -> Any:
        done = run_cli("schedules", *args, *base, cwd=tmp_path, env=daemon_env())
        assert done.returncode == 0, done.stderr
        return done

    listed = json.loads(cli("list", "--json").stdout)
    assert [s["name"] for s in listed] == ["hourly"]
    assert listed[0]["next_due"]["utc"].endswith("+00:00") and listed[0]["next_due"]["local"]
    assert "hourly" in cli("list").stdout
    shown = json.loads(cli("show", "hourly", "--json", "--next", "3").stdout)
    assert len(shown["upcoming"]) == 3 and shown["recent"][0]["outcome"] == "created"
    assert "(20" in cli("show", "hourly").stdout  # local time, then (UTC)
    assert json.loads(cli("pause", "hourly", "--json").stdout) == {"name": "hourly",
                                                                   "pause": True}
    assert json.loads(cli("show", "hourly", "--json").stdout)["paused"] is True
    assert "resumed" in cli("resume", "hourly").stdout
    fired = json.loads(cli("trigger", "hourly", "--json").stdout)
    assert [f["outcome"] for f in fired] == ["triggered"]
    back = json.loads(cli("backfill", "hourly", "--start", "2026-01-01T00:00:00",
                          "--end", "2026-01-01T02:00:00", "--json").stdout)
    assert [f["outcome"] for f in back] == ["backfilled"] * 3
    assert "deleted" in cli("delete", "hourly").stdout
    gone = run_cli("schedules", "show", "hourly", *base, cwd=tmp_path, env=daemon_env())
    assert gone.returncode == 1 and "not found" in gone.stderr


def test_config_schedules_are_retired_only_when_no_daemon_declares_them(
        redis_server: Any, namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two daemons' schedulers with different configs: neither deletes what the other
    declares; a schedule removed from both is deleted after RETIRE_AFTER_S."""
    monkeypatch.setattr(scheduler_module, "RETIRE_AFTER_S", 0.0)
    monkeypatch.setattr(scheduler_module, "RENEW_S", 0.0)  # every step renews and retires
    clients = [FlowClient.from_url(redis_server.url, namespace=namespace) for _ in range(2)]
    try:
        a_specs = [Schedule("shared", "t", every_ms=60_000), Schedule("only-a", "t",
                                                                      every_ms=60_000)]
        a = Scheduler(a_specs, daemon_id="a")
        b = Scheduler([Schedule("shared", "t", every_ms=60_000)], daemon_id="b")
        workers = Scheduler([], daemon_id="w")  # a daemon without schedules deletes nothing
        for s, c in ((a, clients[0]), (b, clients[1]), (workers, clients[1])):
            s.step(c)
        b.step(clients[1])
        names = sorted(i.name for i in clients[0].schedules.list())
        assert names == ["only-a", "shared"]
        a.set_declared([Schedule("shared", "t", every_ms=60_000)])  # HUP: only-a removed
        a.step(clients[0])
        b.step(clients[1])
        assert sorted(i.name for i in clients[0].schedules.list()) == ["shared"]
        a.set_declared([])
        a.step(clients[0])
        a.step(clients[0])
        assert [i.name for i in clients[0].schedules.list()] == ["shared"]  # b declares it
        b.stop(clients[1])  # b stops: it withdraws its declaration
        a.step(clients[0])
        a.step(clients[0])
        assert clients[0].schedules.list() == []
        clients[0].schedules.put(Schedule("api", "t", every_ms=60_000))
        a.step(clients[0])
        a.step(clients[0])
        assert [i.name for i in clients[0].schedules.list()] == ["api"]
    finally:
        for c in clients:
            c.close()


def test_hup_reconciles_the_config_schedules(start_daemon: Any, tmp_path: Any) -> None:
    d = start_daemon({}, schedules={"a": {"type": "t", "every": "1h"}})
    client = d.client
    wait_for(lambda: client.schedules.get("a"), timeout=10, what="schedule a")
    text = d.config_path.read_text()
    d.config_path.write_text(text.replace('every = "1h"', 'cron = "0 4 * * *"\ntimezone = '
                                          '"Asia/Tokyo"') + '[schedules.b]\ntype = "t"\n'
                             'every = "1m"\npaused = true\n')
    d.signal(signal.SIGHUP)
    wait_for(lambda: client.schedules.get("b") is not None, timeout=10, what="schedule b")
    a, b = client.schedules.get("a"), client.schedules.get("b")
    assert a.spec.cron == "0 4 * * *" and a.origin == "config"
    assert datetime.fromtimestamp(a.next_due_ms / 1000, ZoneInfo("Asia/Tokyo")).hour == 4
    assert b.paused and b.upcoming() == []
    assert "schedules: a updated, b created" in d.log()
