"""The operator commands' time and duration arguments (no store needed)."""

from __future__ import annotations

from datetime import datetime

import click
import pytest

from ferricflowd.cli_admin import duration_ms, when_ms

NOW = 1_800_000_000_000


@pytest.mark.parametrize("text,ms", [("250ms", 250), ("30s", 30_000), ("5m", 300_000),
                                     ("2h", 7_200_000), ("1.5d", 129_600_000),
                                     ("1w", 604_800_000)])
def test_durations(text: str, ms: int) -> None:
    assert duration_ms(text) == ms


@pytest.mark.parametrize("text", ["", "5", "5 minutes", "-1h", "1y"])
def test_bad_durations_name_the_form(text: str) -> None:
    with pytest.raises(click.BadParameter, match="30s"):
        duration_ms(text)


def test_points_in_time() -> None:
    assert when_ms("now", NOW) == NOW
    assert when_ms("30m", NOW) == NOW - 1_800_000  # an age: that long ago
    assert when_ms("1700000000123", NOW) == 1_700_000_000_123
    assert when_ms("2026-12-01T08:00:00+00:00", NOW) == 1_796_112_000_000
    local = int(datetime(2026, 12, 1, 8, 0).timestamp() * 1000)
    assert when_ms("2026-12-01T08:00", NOW) == local
    with pytest.raises(click.BadParameter, match="ISO 8601"):
        when_ms("yesterday", NOW)
