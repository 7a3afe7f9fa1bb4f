"""Schedule specs without a store: occurrences (every, at, cron with seconds, time zones and
DST), the catch-up plan, and the [schedules.NAME] config tables."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ferricflowd.config import ConfigError, load_config
from ferricflowd.flow.errors import InvalidArgument
from ferricflowd.flow.schedule_spec import ON_TIME_MS, FireStep, Schedule, iso_ms, plan

NY = ZoneInfo("America/New_York")


def ms(*args: int, tz: ZoneInfo = NY) -> int:
    return round(datetime(*args, tzinfo=tz).timestamp() * 1000)


def test_every_is_aligned_to_the_epoch_or_to_start_at() -> None:
    s = Schedule("e", "t", every_ms=60_000)
    assert s.next_after(90_000) == 120_000 and s.next_after(120_000) == 180_000
    assert s.last_at_or_before(179_999) == 120_000 and s.last_at_or_before(180_000) == 180_000
    anchored = Schedule("e", "t", every_ms=60_000, start_at_ms=10_000, end_at_ms=130_000)
    assert anchored.next_after(0) == 10_000 and anchored.next_after(10_000) == 70_000
    assert anchored.next_after(70_000) == 130_000 and anchored.next_after(130_000) is None
    assert anchored.last_at_or_before(9_999) is None
    assert anchored.count(10_000, 130_000) == 2 and anchored.count(10_000, 130_001) == 3


def test_at_and_iso_times() -> None:
    at = iso_ms("2026-07-01T09:00:00", "America/New_York")
    assert at == ms(2026, 7, 1, 9, 0)
    assert iso_ms("2026-07-01T13:00:00Z") == at == iso_ms("2026-07-01T15:00:00+02:00")
    s = Schedule("a", "t", at_ms=at)
    assert s.next_after(at - 1) == at and s.next_after(at) is None
    assert s.first_due(at + 3_600_000) == at  # a past one-shot keeps its time


def test_cron_with_seconds_macros_and_time_zones() -> None:
    s = Schedule("c", "t", cron="*/15 * * * * *")  # six fields: seconds first
    assert s.next_after(ms(2026, 1, 1, 0, 0) + 1) == ms(2026, 1, 1, 0, 0) + 15_000
    assert Schedule("d", "t", cron="@daily").cron == "0 0 * * *"
    ny = Schedule("n", "t", cron="0 9 * * MON-FRI", timezone="America/New_York")
    assert ny.next_after(ms(2026, 7, 3, 12, 0)) == ms(2026, 7, 6, 9, 0)  # Fri -> Mon
    assert ny.upcoming(ms(2026, 7, 6, 9, 0), 2) == [ms(2026, 7, 7, 9, 0), ms(2026, 7, 8, 9, 0)]


def test_dst_like_debian_cron() -> None:
    fixed = Schedule("f", "t", cron="30 2 * * *", timezone="America/New_York")
    # March 8, 2026: 02:00 -> 03:00. The skipped 02:30 runs at 03:00 EDT.
    assert fixed.next_after(ms(2026, 3, 7, 12, 0)) == ms(2026, 3, 8, 3, 0)
    # November 1, 2026: 02:00 -> 01:00. A time in the repeated hour runs once, at the first.
    once = Schedule("o", "t", cron="30 1 * * *", timezone="America/New_York")
    first = once.next_after(ms(2026, 10, 31, 12, 0))
    assert once.next_after(first) - first == 25 * 3_600_000  # not again an hour later
    hourly = Schedule("h", "t", cron="*/30 * * * *", timezone="America/New_York")
    t, seen = ms(2026, 11, 1, 0, 0), []
    while t < ms(2026, 11, 1, 3, 0):
        t = hourly.next_after(t)
        seen.append(t)
    assert {b - a for a, b in zip(seen, seen[1:], strict=False)} == {1_800_000}  # real time


@pytest.mark.parametrize("kwargs, argument", [
    ({"cron": "0 3 * * *", "at_ms": 5}, "at_ms"),
    ({"every_ms": 500}, "every_ms"),
    ({"cron": "0 0 30 2 *"}, "cron"),  # February 30th never comes
    ({"cron": "0 3 * * *", "timezone": "Europe/Nowhere"}, "timezone"),
    ({"every_ms": 1000, "end_at_ms": 1, "start_at_ms": 2}, "end_at_ms"),
    ({"every_ms": 1000, "priority": 3}, "priority"),
    ({"every_ms": 1000, "id_prefix": "a b"}, "id_prefix"),
])
def test_bad_specs_name_their_argument(kwargs: dict, argument: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        Schedule("x", "t", **kwargs)
    assert info.value.argument == argument


# --------------------------------------------------------------------------- plan

EVERY = Schedule("p", "t", every_ms=1000, catchup_window_ms=60_000)
NO_WINDOW = Schedule("p", "t", every_ms=1000)


def test_plan_on_time_and_future() -> None:
    assert plan(EVERY, 5000, 4000) == [FireStep(5000, None, False, 0, 5000)]
    assert plan(EVERY, 5000, 5003) == [FireStep(5000, 5000, False, 0, 6000)]
    late = 5000 + ON_TIME_MS - 1  # busy, but on time: fired, and the next ones caught up
    steps = plan(NO_WINDOW, 5000, 5000 + 400)
    assert steps == [FireStep(5000, 5000, False, 0, 6000)]
    assert plan(NO_WINDOW, 5000, late)[-1].fire_due == (late // 1000) * 1000


def test_plan_after_an_outage_fires_one_catch_up_and_the_current_occurrence() -> None:
    assert plan(EVERY, 1000, 10_200) == [FireStep(1000, 9000, True, 8, 10_000),
                                         FireStep(10_000, 10_000, False, 0, 11_000)]
    assert plan(NO_WINDOW, 1000, 10_200) == [FireStep(1000, None, False, 9, 10_000),
                                             FireStep(10_000, 10_000, False, 0, 11_000)]
    day = Schedule("d", "t", every_ms=86_400_000, catchup_window_ms=3_600_000)
    hours = 3_600_000
    assert plan(day, 86_400_000, 86_400_000 + 2 * hours) == [
        FireStep(86_400_000, None, False, 1, 2 * 86_400_000)]  # older than the window
    assert plan(day, 86_400_000, 86_400_000 + hours // 2) == [
        FireStep(86_400_000, 86_400_000, True, 0, 2 * 86_400_000)]


# --------------------------------------------------------------------------- config


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "flows.toml"
    path.write_text(text)
    return path


def test_config_schedules_parse(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, """
[groups.reports]
type = "report"
states = ["requested", "rendered"]
handler = "examples.emails:send_email"

[schedules.nightly-report]
type = "report"
cron = "0 3 * * *"
timezone = "Europe/Berlin"
payload = "full"
overlap = "skip"
catchup_window = "1h"

[schedules.tick]
type = "tick"
every = "1s"
start_at = 2026-01-01T00:00:00Z
jitter = "250ms"
values = { region = "eu" }
paused = true

[schedules.once]
type = "report"
state = "rendered"
at = "2027-01-01T09:00:00"
timezone = "Asia/Tokyo"
"""), env={})
    nightly, tick, once = config.schedules
    assert (nightly.name, nightly.state, nightly.cron, nightly.timezone) == (
        "nightly-report", "requested", "0 3 * * *", "Europe/Berlin")  # the group's first state
    assert nightly.payload == b"full" and nightly.catchup_window_ms == 3_600_000
    assert tick.every_ms == 1000 and tick.state == "queued" and tick.jitter_ms == 250
    assert tick.values == {"region": b"eu"} and tick.paused
    assert tick.start_at_ms == iso_ms("2026-01-01T00:00:00Z")
    assert once.at_ms == iso_ms("2027-01-01T00:00:00Z") and once.state == "rendered"


def test_a_daemon_may_have_only_schedules(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, '[schedules.t]\ntype = "t"\nevery = "1m"\n'), env={})
    assert config.groups == () and config.schedules[0].every_ms == 60_000
    with pytest.raises(ConfigError, match="no groups"):
        load_config(write(tmp_path, "[daemon]\n"), env={})


@pytest.mark.parametrize("body, key, problem", [
    ('cron = "0 3 * *"', "schedules.x.cron", "5 fields"),
    ('cron = "0 25 * * *"', "schedules.x.cron", "Bad hour"),
    ('cron = "0 3 * * *"\ntimezone = "Europe/Atlantis"', "schedules.x.timezone",
     "unknown IANA time zone"),
    ('cron = "0 3 * * *"\nevery = "1m"', "schedules.x.every", "exactly one of cron, every, at"),
    ('every = "1m"\nat = "2026-01-01T00:00"', "schedules.x.at", "exactly one"),
    ("", "schedules.x.cron", "exactly one"),
    ('every = "999ms"', "schedules.x.every", "at least 1000 ms"),
    ('every = 60', "schedules.x.every", "duration"),
    ('every = "1m"\noverlap = "queue"', "schedules.x.overlap", "allow, skip"),
    ('every = "1m"\ncatchup = "1h"', "schedules.x.catchup", "unknown key"),
    ('every = "1m"\nat_ms = 5', "schedules.x.at_ms", "unknown key"),
    ('at = "soon"', "schedules.x.at", "ISO 8601"),
    ('every = "1m"\nstate = "running"', "schedules.x.state", "reserved"),
])
def test_config_schedule_errors_name_the_key(tmp_path: Path, body: str, key: str,
                                             problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, f'[schedules.x]\ntype = "t"\n{body}\n'), env={})
    assert info.value.key == key and problem in info.value.problem, str(info.value)


def test_config_schedule_needs_a_type_and_a_good_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[schedules.x]\nevery = "1m"\n'), env={})
    assert info.value.key == "schedules.x.type"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[schedules."a b"]\ntype = "t"\nevery = "1m"\n'), env={})
    assert info.value.key == "schedules.a b"
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, '[schedules.x]\ntype = "t"\nevery = "1m"\n'),
                    env={"FERRICFLOWD_SCHEDULES_X_EVERY": "2m"})
    assert "not a known setting" in str(info.value)
