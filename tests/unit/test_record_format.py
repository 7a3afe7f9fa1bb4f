"""The record's field positions agree between lua/lib/record.lua and records.FIELDS."""

from __future__ import annotations

import re
from importlib import resources

import msgpack

from ferricflowd.flow.records import FIELDS, record_fields


def _lua_positions() -> dict[str, int]:
    lua = resources.files("ferricflowd.flow").joinpath("lua", "lib", "record.lua")
    text = lua.read_text("utf-8")
    block = text[text.index("-- Record positions"):text.index("local CORE")]
    found: dict[str, int] = {}
    for names, values in re.findall(r"local ([A-Z_, ]+) = ([0-9, ]+)\n", block):
        for name, value in zip(names.split(","), values.split(","), strict=True):
            found[name.strip().lower()] = int(value)
    return found


def test_positions_match_lua() -> None:
    positions = _lua_positions()
    assert positions.pop("id") == 1
    assert positions == {name: i + 1 for i, name in enumerate(FIELDS) if name}


def test_record_fields_reads_positions() -> None:
    rec: list[object] = [False] * len(FIELDS)
    rec[FIELDS.index("type")] = b"q"
    rec[FIELDS.index("attempt")] = 3
    rec[FIELDS.index("due")] = 1796024646151
    rec[FIELDS.index("si")] = {b"k": b"d1"}
    assert record_fields(msgpack.packb(rec)) == {
        b"type": b"q", b"attempt": b"3", b"due": b"1796024646151", b"si:k": b"d1"}
    assert record_fields(msgpack.packb(rec[:16])) == {  # fields past the 16 CORE ones unset
        b"type": b"q", b"attempt": b"3", b"due": b"1796024646151"}
    assert record_fields(None) == {}
