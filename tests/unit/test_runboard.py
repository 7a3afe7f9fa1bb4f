"""The run board (runboard.py): what a worker writes as its handlers start and end is
what the supervisor reads back after the worker is gone, and whom a death blames."""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import SimpleNamespace

from ferricflowd.runboard import (
    STRIDE,
    InHandler,
    RunBoard,
    blame,
    board_path,
    read_board,
)


def _job(flow_id: str, state: str = "send") -> SimpleNamespace:
    return SimpleNamespace(id=flow_id, state=state)


def _sha(flow_id: str) -> bytes:
    return hashlib.sha1(flow_id.encode()).digest()


def test_the_board_shows_the_handlers_running_at_the_end(tmp_path: Path) -> None:
    path = board_path(tmp_path, 4242)
    board = RunBoard(path, 4, {"send": 30.0})
    board.begin(0, _job("a"))
    board.begin(1, _job("é" * 3000, "other"))  # an id longer than a slot: only its digest
    board.begin(3, _job("c"))
    board.end(3)
    board.begin(3, _job("d"))
    board.end(0)
    board.close()
    running = read_board(path)
    assert running is not None and not path.exists()
    assert [(r.digest, r.state, r.limit_s) for r in running] == [
        (_sha("é" * 3000), "other", 0.0), (_sha("d"), "send", 30.0)]
    assert read_board(path) is None  # removed once read


def test_a_slot_whose_start_was_not_written_counts_as_empty(tmp_path: Path) -> None:
    """A death between the two stores of begin(): the Flow is named, `started` not yet."""
    path = board_path(tmp_path, 1)
    board = RunBoard(path, 2, {})
    board.begin(0, _job("a"))
    board.begin(1, _job("b"))
    board._map[STRIDE:STRIDE + 8] = bytes(8)  # slot 1: `started` still 0
    board.close()
    assert [r.digest for r in read_board(path) or []] == [_sha("a")]


def test_a_crash_blames_every_handler_a_hang_only_the_late_one() -> None:
    now = 1000.0
    late = InHandler(_sha("late"), "spin", now - 10, 1.0)
    fresh = InHandler(_sha("fresh"), "nap", now - 20, 60.0)
    unlimited = InHandler(_sha("free"), "nap", now - 3, 0.0)
    running = [late, fresh, unlimited]
    assert blame(running, hang=False, now=now, default_limit_s=5) == dict.fromkeys(
        (late.digest, fresh.digest, unlimited.digest), True)
    assert blame(running, hang=True, now=now, default_limit_s=5) == {
        late.digest: True, fresh.digest: False, unlimited.digest: False}
    # None past its limit: the longest-running one is the likeliest culprit.
    assert blame([fresh, unlimited], hang=True, now=now, default_limit_s=5) == {
        fresh.digest: True, unlimited.digest: False}
    assert blame([], hang=True, now=now, default_limit_s=5) == {}
