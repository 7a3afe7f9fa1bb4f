"""Schedules against a real store: fire idempotency, concurrent fires, overlap, catch-up,
DST, pause/resume, trigger, backfill, bad input, config declarations, Redis Cluster."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from ferricflowd import FlowClient, InvalidArgument, LeaseRequest, complete
from ferricflowd.flow.errors import ScheduleExists, ScheduleNotFound
from ferricflowd.flow.schedule_spec import Schedule
from ferricflowd.flow.store import Call
from tests.helpers import dues, flow_ids

BERLIN = ZoneInfo("Europe/Berlin")


def ms(*args: int, tz: Any = BERLIN) -> int:
    return round(datetime(*args, tzinfo=tz).timestamp() * 1000)


def now_ms() -> int:
    return int(time.time() * 1000)


def outcomes(report: Any) -> list[str]:
    return [r.outcome for r in getattr(report, "results", report)]


def wait_until(t_ms: int) -> None:
    """Until the wall clock passes t_ms (the scenario needs time to go by)."""
    while now_ms() <= t_ms:
        time.sleep(min(0.05, max(0.001, (t_ms - now_ms()) / 1000)))


@pytest.fixture
def sched(flow_client: FlowClient) -> Any:
    return flow_client.schedules


# --------------------------------------------------------------------------- create, read


def test_put_get_list_update_delete(flow_client: FlowClient, sched: Any) -> None:
    spec = Schedule("report", "report", cron="0 3 * * *", timezone="Europe/Berlin",
                    payload=b"full", values={"region": b"eu"}, overlap="skip",
                    catchup_window_ms=3_600_000)
    assert sched.put(spec) == "created"
    assert sched.put(spec) == "unchanged"
    assert sched.create(spec) is False  # the same spec: idempotent
    with pytest.raises(ScheduleExists):
        sched.create(Schedule("report", "report", cron="0 4 * * *"))
    info = sched.get("report")
    assert info.spec == spec and info.origin == "api" and not info.paused
    due = datetime.fromtimestamp(info.next_due_ms / 1000, BERLIN)
    assert (due.hour, due.minute) == (3, 0) and info.next_due_ms > now_ms()
    assert len(info.upcoming(3)) == 3 and info.upcoming(3)[1] - info.upcoming(3)[0] in (
        23 * 3_600_000, 24 * 3_600_000, 25 * 3_600_000)
    assert [i.name for i in sched.list()] == ["report"]
    assert sched.update(Schedule("report", "report", cron="0 4 * * *")) is True
    assert datetime.fromtimestamp(sched.get("report").next_due_ms / 1000).astimezone(
        ZoneInfo("UTC")).hour == 4
    with pytest.raises(ScheduleNotFound):
        sched.update(Schedule("nope", "report", every_ms=1000))
    assert sched.delete("report") is True and sched.delete("report") is False
    assert sched.get("report") is None and sched.list() == []


@pytest.mark.parametrize("kwargs, argument", [
    ({"cron": "0 3 * *"}, "cron"),
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "0 3 * * *", "timezone": "Mars/Olympus"}, "timezone"),
    ({"cron": "0 3 * * *", "every_ms": 1000}, "every_ms"),
    ({}, "cron"),
    ({"every_ms": 999}, "every_ms"),
    ({"every_ms": 1000, "overlap": "sometimes"}, "overlap"),
])
def test_bad_input_names_the_argument_and_writes_nothing(sched: Any, kwargs: dict[str, Any],
                                                         argument: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        sched.put(Schedule("bad", "t", **kwargs))
    assert info.value.argument == argument
    assert sched.list() == []


# --------------------------------------------------------------------------- firing


def test_fire_creates_one_flow_per_occurrence_and_a_replay_is_a_no_op(
        flow_client: FlowClient, sched: Any) -> None:
    t0 = ms(2026, 6, 1, 12, 0, 0)
    sched.put(Schedule("tick", "tick", every_ms=60_000, payload=b"p", priority=2),
              now_ms=t0 + 1)
    assert sched.fire_due(now_ms=t0 + 30_000).results == []  # nothing due yet
    report = sched.fire_due(now_ms=t0 + 60_000 + 5)
    assert outcomes(report) == ["fired"] and report.results[0].detail == f"tick:{t0 + 60_000}"
    assert report.results[0].lag_ms == 5 and report.next_dues == {"tick": t0 + 120_000}
    rec = flow_client.get(f"tick:{t0 + 60_000}", partition_key="tick")
    assert (rec.type, rec.state, rec.payload, rec.priority) == ("tick", "queued", b"p", 2)
    assert rec.partition_key == "tick" and rec.correlation_id == "tick"
    # The same fire item again (a retried call whose reply was lost): refused, nothing new.
    info = sched.get("tick")
    item = ["tick", t0 + 60_000, info.spec.timing_digest, t0 + 60_000, "0", t0 + 60_000, 0,
            t0 + 120_000]
    p = sched.partition_of("tick")
    reply = flow_client.store.call(Call("schedule_fire", flow_client.keys.prefix(p),
                                        [t0 + 60_010, "due", 1, *item]))
    assert reply[1][0] == b"stale"
    assert dues(flow_client, "tick") == [t0 + 60_000] and sched.get("tick").fired == 1


def test_concurrent_fires_from_eight_clients_make_one_flow_per_occurrence(
        redis_server: Any, namespace: str, closing: Callable[[Any], Any]) -> None:
    clients = [closing(FlowClient.from_url(redis_server.url, namespace=namespace,
                                           partitions=4)) for _ in range(8)]
    start = (now_ms() // 1000 + 1) * 1000
    clients[0].schedules.put(Schedule("tick", "tick", every_ms=1000))
    for i in range(20):
        clients[0].schedules.put(Schedule(f"once{i}", "once", at_ms=start + 500))
    fired: list[str] = []
    lock = threading.Lock()
    stop = start + 3200

    def fire(c: FlowClient) -> None:
        while now_ms() < stop:
            got = [r.detail for r in c.schedules.fire_due().results if r.outcome == "fired"]
            with lock:
                fired.extend(got)

    threads = [threading.Thread(target=fire, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    ticks = dues(clients[0], "tick")
    assert ticks == [start, start + 1000, start + 2000, start + 3000]
    assert sum(len(flow_ids(clients[0], f"once{i}")) for i in range(20)) == 20
    assert sorted(fired) == sorted(set(fired)) and len(fired) == 24  # each reported once
    assert clients[0].schedules.get("tick").fired == 4
    assert all(clients[0].schedules.get(f"once{i}").next_due_ms is None for i in range(20))


def test_catch_up_fires_at_most_one_missed_occurrence(flow_client: FlowClient,
                                                      sched: Any) -> None:
    t0 = ms(2026, 6, 1, 12, 0, 0)
    sched.put(Schedule("win", "t", every_ms=1000, catchup_window_ms=60_000), now_ms=t0)
    sched.put(Schedule("nowin", "t", every_ms=1000), now_ms=t0)
    sched.put(Schedule("old", "t", every_ms=1000, catchup_window_ms=2000), now_ms=t0)
    # An outage: nothing fired for 10.3 s.
    report = sched.fire_due(now_ms=t0 + 10_300)
    by = {(r.schedule, r.outcome): r for r in report.results}
    assert by[("win", "missed")].detail == "9" and by[("win", "catchup")].due_ms == t0 + 9000
    assert by[("win", "fired")].due_ms == t0 + 10_000
    assert by[("nowin", "missed")].detail == "10" and ("nowin", "catchup") not in by
    assert by[("old", "catchup")].due_ms == t0 + 9000  # 1.3 s old: inside its 2 s window
    assert dues(flow_client, "win") == [t0 + 9000, t0 + 10_000]
    assert dues(flow_client, "nowin") == [t0 + 10_000]
    assert sched.get("nowin").skipped == 10 and sched.get("win").skipped == 9
    # A one-shot that is an hour late: skipped without a window, fired with one.
    sched.put(Schedule("late", "t", at_ms=t0), now_ms=t0)
    sched.put(Schedule("late2", "t", at_ms=t0, catchup_window_ms=7_200_000), now_ms=t0)
    report = sched.fire_due(now_ms=t0 + 3_600_000)
    got = {r.schedule: r.outcome for r in report.results if r.schedule.startswith("late")}
    assert got == {"late": "missed", "late2": "catchup"}
    assert dues(flow_client, "late") == [] and dues(flow_client, "late2") == [t0]


def test_cron_across_both_dst_changes(flow_client: FlowClient, sched: Any) -> None:
    fixed = Schedule("fixed", "t", cron="30 2 * * *", timezone="Europe/Berlin")
    wild = Schedule("wild", "t", cron="*/30 * * * *", timezone="Europe/Berlin")
    start = ms(2026, 3, 28, 12, 0)
    sched.put(fixed, now_ms=start)
    sched.put(wild, now_ms=start)
    t = start
    while t < ms(2026, 3, 30, 12, 0):  # the scheduler looks every 10 minutes of fake time
        t += 600_000
        sched.fire_due(now_ms=t, limit=1000)
    # Spring forward: 02:30 does not exist on March 29; it runs at 03:00 CEST.
    assert dues(flow_client, "fixed") == [ms(2026, 3, 29, 3, 0), ms(2026, 3, 30, 2, 30)]
    wild_dues = dues(flow_client, "wild")  # real time: every 30 minutes, across the gap
    assert {b - a for a, b in zip(wild_dues, wild_dues[1:], strict=False)} == {1_800_000}
    assert len(wild_dues) == 94  # 48 h of wall clock, 47 h of real time
    sched.delete("fixed")
    sched.delete("wild")
    start = ms(2026, 10, 24, 12, 0)
    sched.put(Schedule("fall", "t", cron="30 2 * * *", timezone="Europe/Berlin"), now_ms=start)
    sched.put(Schedule("fallwild", "t", cron="*/30 * * * *", timezone="Europe/Berlin"),
              now_ms=start)
    t = start
    while t < ms(2026, 10, 26, 12, 0):
        t += 600_000
        sched.fire_due(now_ms=t, limit=1000)
    # Fall back: 02:30 happens twice on October 25; it runs once, at the first (CEST).
    assert dues(flow_client, "fall") == [ms(2026, 10, 25, 2, 30), ms(2026, 10, 26, 2, 30)]
    both = [d for d in dues(flow_client, "fallwild")
            if ms(2026, 10, 25, 2, 0) <= d < ms(2026, 10, 25, 3, 0, tz=ZoneInfo("UTC")) - 3600_000]
    assert len(both) == 4  # 02:00 and 02:30 in CEST and again in CET: real time
    gaps = {b - a for a, b in zip(dues(flow_client, "fallwild"), dues(flow_client, "fallwild")[1:],
                                  strict=False)}
    assert gaps == {1_800_000}


# --------------------------------------------------------------------------- overlap


def _finish_all(client: FlowClient, type: str) -> None:
    got = client.claim(type, LeaseRequest("w", ["queued"], 30_000), limit=100)
    client.apply_outcomes([(j, complete()) for j in got.jobs])


def test_overlap_skip_and_allow(flow_client: FlowClient, sched: Any) -> None:
    sched.put(Schedule("s", "s", every_ms=3_600_000, overlap="skip"))
    sched.put(Schedule("a", "a", every_ms=3_600_000))
    first = sched.trigger("s")
    assert outcomes(first) == ["triggered"]
    assert outcomes(sched.trigger("s")) == ["overlap"]  # the first is still queued
    assert outcomes(sched.trigger("a")) == ["triggered"]
    time.sleep(0.002)
    assert outcomes(sched.trigger("a")) == ["triggered"]
    assert len(flow_ids(flow_client, "a")) == 2 and len(flow_ids(flow_client, "s")) == 1
    _finish_all(flow_client, "s")
    time.sleep(0.002)
    assert outcomes(sched.trigger("s")) == ["triggered"]
    assert sched.get("s").skipped == 1


def test_overlap_buffer_one_waits_for_the_previous_flow(flow_client: FlowClient,
                                                        sched: Any) -> None:
    t0 = ms(2026, 6, 1, 12, 0, 0)
    sched.put(Schedule("b", "b", every_ms=60_000, overlap="buffer_one"), now_ms=t0 + 1)
    assert outcomes(sched.fire_due(now_ms=t0 + 60_000)) == ["fired"]
    assert outcomes(sched.fire_due(now_ms=t0 + 120_000)) == ["buffered"]
    assert outcomes(sched.fire_due(now_ms=t0 + 180_000)) == ["overlap"]  # one waits, no more
    assert sched.get("b").buffered_due_ms == t0 + 120_000
    assert sched.fire_due(now_ms=t0 + 181_000).results == []  # a look: still running
    _finish_all(flow_client, "b")
    report = sched.fire_due(now_ms=t0 + 182_000)  # looked at every second while buffered
    assert [(r.outcome, r.due_ms) for r in report.results] == [("fired", t0 + 120_000)]
    assert dues(flow_client, "b") == [t0 + 60_000, t0 + 120_000]
    assert sched.get("b").buffered_due_ms is None and sched.get("b").skipped == 1


def test_overlap_cancel_other_cancels_the_running_flow(flow_client: FlowClient,
                                                       sched: Any) -> None:
    sched.put(Schedule("c", "c", every_ms=3_600_000, overlap="cancel_other"))
    old = sched.trigger("c")[0].detail
    claimed = flow_client.claim("c", LeaseRequest("w", ["queued"], 30_000), limit=1).jobs
    assert [j.id for j in claimed] == [old]
    time.sleep(0.002)
    events = sched.trigger("c")
    assert outcomes(events) == ["cancelled", "triggered"] and events[0].detail == old
    assert flow_client.get(old, partition_key="c").state == "cancelled"
    new = flow_client.get(events[1].detail, partition_key="c")
    assert new.state == "queued"
    # The handler of the cancelled one finishes later: its lease is gone.
    assert isinstance(flow_client.apply_outcomes([(claimed[0], complete())])[0], Exception)


# --------------------------------------------------------------------------- operations


def test_pause_resume_trigger_backfill(flow_client: FlowClient, sched: Any) -> None:
    t0 = ms(2026, 6, 1, 12, 0, 0)
    sched.put(Schedule("h", "h", every_ms=3_600_000), now_ms=t0 + 1)
    assert sched.pause("h") is True and sched.pause("h") is False
    assert sched.fire_due(now_ms=t0 + 7_200_000).results == []  # paused: not fired
    assert sched.get("h").paused and sched.get("h").upcoming() == []
    assert outcomes(sched.trigger("h")) == ["triggered"]  # trigger works while paused
    assert sched.resume("h") is True and sched.resume("h") is False
    info = sched.get("h")
    assert not info.paused and info.next_due_ms > now_ms()  # from now on, none caught up
    assert [e.outcome for e in info.recent][:3] == ["resumed", "triggered", "paused"]
    got = sched.backfill("h", t0, t0 + 3 * 3_600_000)
    assert outcomes(got) == ["backfilled"] * 4
    assert outcomes(sched.backfill("h", t0, t0 + 3 * 3_600_000)) == ["dup"] * 4
    assert set(dues(flow_client, "h")) >= {t0 + k * 3_600_000 for k in range(4)}
    with pytest.raises(InvalidArgument):
        sched.backfill("h", t0, t0 + 10 * 3_600_000, limit=5)
    with pytest.raises(ScheduleNotFound):
        sched.trigger("nope")
    with pytest.raises(ScheduleNotFound):
        sched.pause("nope")


def test_jitter_is_fixed_per_occurrence(flow_client: FlowClient, sched: Any) -> None:
    t0 = ms(2026, 6, 1, 12, 0, 0)
    spec = Schedule("j", "j", every_ms=60_000, jitter_ms=30_000)
    sched.put(spec, now_ms=t0 + 1)
    sched.fire_due(now_ms=t0 + 60_000)
    rec = flow_client.get(f"j:{t0 + 60_000}", partition_key="j")
    assert rec.next_run_at_ms == t0 + 60_000 + spec.jitter_for(t0 + 60_000)
    assert 0 <= spec.jitter_for(t0 + 60_000) <= 30_000


def test_declarations_name_the_config_schedules_nobody_declares(sched: Any) -> None:
    a, b = Schedule("a", "t", every_ms=1000), Schedule("b", "t", every_ms=1000)
    assert sched.reconcile([a, b]) == {"a": "created", "b": "created"}
    assert sched.reconcile([a, b]) == {"a": "unchanged", "b": "unchanged"}
    sched.put(Schedule("api", "t", every_ms=1000))
    sched.declare("d1", ["a"], 60_000)
    sched.declare("d2", ["a", "b"], 60_000)
    assert sched.undeclared() == []
    sched.declare("d2", ["a"], 60_000)
    assert sched.undeclared() == ["b"]  # never the API schedule
    sched.declare("d1", ["a", "b"], 1)
    time.sleep(0.01)  # an expired declaration does not count
    assert sched.undeclared() == ["b"]
    assert sched.retire("b") is True and sched.retire("api") is False
    assert sorted(i.name for i in sched.list()) == ["a", "api"]


# --------------------------------------------------------------------------- cluster


def test_schedules_on_single_node_and_cluster(url_and_opts: tuple[str, dict[str, Any]],
                                              closing: Callable[[Any], Any]) -> None:
    url, opts = url_and_opts
    clients = [closing(FlowClient.from_url(url, **opts)) for _ in range(3)]
    sched = clients[0].schedules
    at = now_ms() - 10
    for i in range(30):
        sched.put(Schedule(f"s{i}", "t", at_ms=at))
    assert len({sched.partition_of(f"s{i}") for i in range(30)}) > 3
    reports: list[Any] = []
    threads = [threading.Thread(target=lambda c=c: reports.append(c.schedules.fire_due()))
               for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    fired = [r for rep in reports for r in rep.results if r.outcome == "fired"]
    assert sorted(r.schedule for r in fired) == sorted(f"s{i}" for i in range(30))
    for i in range(30):
        rec = clients[1].get(f"s{i}:{at}", partition_key=f"s{i}")
        assert rec is not None and rec.state == "queued"
    assert outcomes(clients[2].schedules.trigger("s3")) == ["triggered"]
    assert len(sched.list()) == 30
