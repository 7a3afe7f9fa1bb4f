"""keys.py and the Lua builders of lua/lib/keys.lua name every key family alike.

The catalogue is FAMILIES (keys.py) and the table heading lib/keys.lua; the builders are
KeySpace's methods and the k<family> functions, run here through the real library text on
the test store (EVAL), so a family spelt differently on one side fails."""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

import pytest
import redis

from ferricflowd.flow import store
from ferricflowd.flow.keys import FAMILIES, KeySpace

LUA = resources.files("ferricflowd.flow").joinpath("lua")
KEYS_LUA = LUA.joinpath("lib", "keys.lua").read_text("utf-8")
# A value per pattern argument; the ids and worker ids carry ':' as real ones may.
SAMPLES: dict[str, Any] = {"id": "job:7", "type": "email", "state": "send", "priority": 2,
                           "status": "completed", "worker": "host-1:4242:ab12",
                           "name": "nightly:report"}


def _args(pattern: str) -> list[str]:
    return re.findall(r"<(\w+)>", pattern)


def _expected(prefix: str, pattern: str) -> str:
    return prefix + re.sub(r"<(\w+)>", lambda m: str(SAMPLES[m.group(1)]), pattern)


def _code(text: str) -> str:
    """Lua source without its comments."""
    return re.sub(r"--[^\n]*", "", re.sub(r"--\[\[.*?\]\]", "", text, flags=re.S))


def test_the_lua_catalogue_is_families() -> None:
    header = KEYS_LUA.split("]]", 1)[0]
    rows = re.findall(r"^  (\S+) +(string|list|hash|zset|set) +(k\w+) +(.+)$", header, re.M)
    assert rows == [(f.pattern, f.kind, f"k{f.name}", f.holds) for f in FAMILIES]


def test_every_lua_builder_is_a_family() -> None:
    code = _code(KEYS_LUA)
    builders = set(re.findall(r"^local function (k\w+)\(", code, re.M))
    builders |= set(re.findall(r"^local (k\w+) = ", code, re.M))
    assert builders == {f"k{f.name}" for f in FAMILIES}


def test_every_keyspace_builder_is_a_family() -> None:
    ks = KeySpace("ns", 4)
    for f in FAMILIES:
        built = getattr(ks, f.name)(3, *(SAMPLES[a] for a in _args(f.pattern)))
        assert built == _expected("{ns:3}:", f.pattern), f.name
    methods = {n for n, v in vars(KeySpace).items() if callable(v) and not n.startswith("_")}
    namespace_keys = {"schedule_declared"}  # of no partition: no script names them
    assert methods - {"partition_of", "prefix", "all_prefixes", *namespace_keys} == {
        f.name for f in FAMILIES}


def test_no_other_lua_file_builds_a_key() -> None:
    """T (KEYS[1], the partition prefix) is used by the key builders only."""
    files = [p for p in LUA.iterdir() if p.name.endswith(".lua")]
    files += [p for p in LUA.joinpath("lib").iterdir() if p.name not in ("keys.lua", "call.lua")]
    assert len(files) == len(store.SCRIPTS) + len(store.INCLUDES) - 2
    offenders = [p.name for p in files
                 if re.search(r"\bT\b|\bKEYS\b", _code(p.read_text("utf-8")))]
    assert offenders == []


@pytest.mark.parametrize("partitions,p", [(1, 0), (16, 11)])
def test_lua_builders_build_the_python_names(redis_server: Any, namespace: str,
                                             partitions: int, p: int) -> None:
    ks = KeySpace(namespace, partitions)
    argv = [str(v) for v in SAMPLES.values()]
    index = {name: i + 1 for i, name in enumerate(SAMPLES)}

    def call(builder: str, pattern: str) -> str:
        args = [f"ARGV[{index[a]}]" for a in _args(pattern)]
        return f"{builder}({', '.join(args)})"

    exprs = [call(f"k{f.name}", f.pattern) for f in FAMILIES]
    # kdue takes a number too (a record's or a loop's priority), and names are kept per call.
    exprs += ["kdue(ARGV[2], ARGV[3], 2)", "kdue(ARGV[2], ARGV[3], ARGV[4])",
              "kwake(ARGV[2], ARGV[3])"]
    script = ("local keys, args = KEYS, ARGV\n" + store.library_head()
              + "\nbegin(keys, args)\nreturn {" + ", ".join(exprs) + "}\n")
    client = redis.Redis.from_url(redis_server.url)
    try:
        got = [k.decode() for k in client.eval(script, 1, ks.prefix(p), *argv)]
    finally:
        client.close()
    python = [getattr(ks, f.name)(p, *(SAMPLES[a] for a in _args(f.pattern)))
              for f in FAMILIES]
    assert got[:len(FAMILIES)] == python
    due, wake = ks.due(p, "email", "send", 2), ks.wake(p, "email", "send")
    assert got[len(FAMILIES):] == [due, due, wake]
