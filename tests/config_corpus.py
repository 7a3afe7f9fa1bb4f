"""A fuzzed corpus of config files built from the example config/flows.toml: mutated TOML
documents, junk bytes, truncations, line edits, odd environment variables and overrides.
Loaded in-process by tests/unit/test_config.py and through `ferricflowd check` by
tests/hardening/test_bad_input.py."""

from __future__ import annotations

import datetime
import random
import tomllib
from pathlib import Path
from typing import Any

from ferricflowd.config import SETTINGS

EXAMPLE = Path(__file__).resolve().parents[1] / "config" / "flows.toml"


def _toml_string(text: str) -> str:
    out = []
    for ch in text:
        if ch in '"\\' or ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    bare = key and all(c.isascii() and (c.isalnum() or c in "_-") for c in key)
    return key if bare else _toml_string(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else (
            "nan" if value != value else ("inf" if value > 0 else "-inf"))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
    return value.isoformat()


def to_toml(doc: dict[str, Any], prefix: str = "") -> str:
    """A small TOML writer: enough for the corpus (tables become [headers])."""
    lines = [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in doc.items()
             if not isinstance(v, dict)]
    for key, value in doc.items():
        if isinstance(value, dict):
            name = f"{prefix}.{_toml_key(key)}" if prefix else _toml_key(key)
            lines.append(f"\n[{name}]")
            lines.append(to_toml(value, name))
    return "\n".join(lines) + "\n"


def random_text(rng: random.Random, limit: int = 12) -> str:
    pools = [(0x20, 0x7E), (0x00, 0x1F), (0xA0, 0x2FF), (0x400, 0x4FF), (0x4E00, 0x4EFF),
             (0x1F600, 0x1F64F), (0xE000, 0xE0FF), (0x10000, 0x10FFF)]
    chars = []
    for _ in range(rng.randint(0, limit)):
        low, high = rng.choice(pools)
        chars.append(chr(rng.randint(low, high)))
    return "".join(chars)


def random_value(rng: random.Random, depth: int = 0) -> Any:
    choices = [
        lambda: rng.choice([0, 1, -1, 2**31, 2**63 - 1, -(2**63), rng.randint(-10**6, 10**6)]),
        lambda: rng.choice([0.0, -0.0, 0.5, 1e300, float("inf"), float("nan")]),
        lambda: rng.choice([True, False]),
        lambda: rng.choice(["", "0", "30s", "250ms", "512MiB", "m:f", "a,b", "strict", "json",
                            "127.0.0.1:1", "{x}", " ", "7d", "-1s", "1e9s"]),
        lambda: random_text(rng),
        lambda: datetime.datetime(2024, 1, 2, 3, 4, 5),
        lambda: datetime.date(2024, 1, 2),
    ]
    if depth < 3:
        choices.append(lambda: [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))])
        choices.append(lambda: {random_text(rng, 4) or "k": random_value(rng, depth + 1)
                                for _ in range(rng.randint(0, 2))})
    return rng.choice(choices)()


def _paths(doc: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in doc.items():
        out.append((*prefix, key))
        if isinstance(value, dict):
            out.extend(_paths(value, (*prefix, key)))
    return out


def _parent(doc: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    for key in path[:-1]:
        doc = doc[key]
    return doc


def mutate_doc(rng: random.Random, doc: dict[str, Any]) -> str:
    path = rng.choice(_paths(doc))
    parent, key = _parent(doc, path), path[-1]
    kind = rng.choice(["delete", "retype", "unicode", "nest", "new-key", "new-table"])
    if kind == "delete":
        del parent[key]
    elif kind == "retype":
        parent[key] = random_value(rng)
    elif kind == "unicode":
        parent[key] = random_text(rng, 30)
    elif kind == "nest":
        parent[key] = rng.choice([[parent[key]], {"x": parent[key]}, [[parent[key]]]])
    elif kind == "new-key":
        parent[random_text(rng, 8) or "k"] = random_value(rng)
    else:
        target = parent[key] if isinstance(parent[key], dict) else parent
        target[random_text(rng, 6) or "t"] = {"a": {"b": random_value(rng)}}
    return kind


def make_case(seed: int, text: str) -> tuple[str, bytes, dict[str, str], dict[str, Any]]:
    """One corpus case: (what was done, file bytes, env, overrides)."""
    rng = random.Random(seed)
    kind = rng.choice(["doc", "doc", "doc", "bytes", "truncate", "lines", "env", "override"])
    env: dict[str, str] = {}
    overrides: dict[str, Any] = {}
    data = text.encode()
    if kind == "doc":
        doc = tomllib.loads(text)
        kind = "+".join(mutate_doc(rng, doc) for _ in range(rng.randint(1, 3)))
        data = to_toml(doc).encode()
    elif kind == "bytes":
        for _ in range(rng.randint(1, 8)):
            at = rng.randrange(len(data) + 1)
            junk = bytes(rng.randrange(256) for _ in range(rng.randint(1, 4)))
            data = data[:at] + junk + data[at:]
    elif kind == "truncate":
        data = data[: rng.randrange(len(data))]
    elif kind == "lines":
        lines = text.splitlines()
        for _ in range(rng.randint(1, 4)):
            at, action = rng.randrange(len(lines)), rng.choice(["drop", "repeat", "junk"])
            if action == "drop":
                lines.pop(at)
            else:
                lines.insert(at, lines[at] if action == "repeat" else random_text(rng, 20))
        data = "\n".join(lines).encode("utf-8", "surrogatepass")
    elif kind == "env":
        names = [s.env_var(g) for s in SETTINGS for g in (None, "email", "orders")
                 if s.section == "group" or g is None] + ["FERRICFLOWD_STORE_BOGUS"]
        for name in rng.sample(names, rng.randint(1, 4)):
            env[name] = rng.choice([random_text(rng), str(random_value(rng)), "", "1s", "0"])
    else:
        keys = [f"{'groups.email' if s.section == 'group' else s.section}.{s.key}"
                for s in SETTINGS] + ["daemon", "groups.nope.lease", "x.y"]
        for key in rng.sample(keys, rng.randint(1, 3)):
            overrides[key] = random_value(rng)
    return kind, data, env, overrides


FUZZ_SEEDS = range(240)
