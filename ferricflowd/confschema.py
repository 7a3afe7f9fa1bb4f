"""The machinery behind config.py's declared schema: value kinds, validators, the loader.

config.py declares what ferricflowd's settings are (the dataclasses and the `SETTINGS`
table); this module knows how any such table is read:

- value kinds (`Kind`): how a setting is written in TOML and as env/CLI text, and parsed
  (durations "250ms".."7d", sizes "64KiB".."1GiB", integers, strings, string lists);
- validators (`at_least`, `positive`, `one_of`): each returns the problem as text or None;
- `Setting`: one declared setting, with its env var name;
- `Loader`: reads the TOML file, overlays env vars and CLI overrides by scope ("store",
  "daemon", "defaults", "groups.NAME"), and resolves inherited values and defaults.
  Every problem is a ConfigError(file, dotted.key, problem) whose text says where the value
  came from, with a "did you mean" hint for typos; no input produces a traceback.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from fractions import Fraction
from pathlib import Path
from typing import Any

from ferricflowd.flow.errors import ConfigError

__all__ = [
    "BOOLEAN", "DURATION", "ENV_PREFIX", "INTEGER", "OPT_DURATION", "OPT_STRING", "REQUIRED",
    "SIZE", "STRING", "STRING_LIST", "WORD", "Check", "Kind", "Loader", "Setting", "Value",
    "at_least", "join_key", "one_of", "parse_duration", "parse_size", "positive",
]  # fmt: skip

ENV_PREFIX = "FERRICFLOWD_"
_SECTION_TABLES = ("store", "daemon", "console", "defaults", "groups", "schedules")
PLAIN_SCOPES = ("store", "daemon", "console")  # sections without groups or inheritance


# --------------------------------------------------------------------------- value kinds


class _Bad(Exception):
    """A value problem, not yet located by file and key."""


_NUMBER_UNIT_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_DURATION_UNITS = {"ms": Fraction(1, 1000), "s": Fraction(1), "m": Fraction(60),
                   "h": Fraction(3600), "d": Fraction(86400)}
_MAX_DURATION_S = 100 * 365 * 86400  # anything longer is a typo, and keeps ms ints sane
# kB/MB/GB are powers of 1000, KiB/MiB/GiB powers of 1024; unit case is not significant.
_SIZE_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}
_MAX_INT = 2**63 - 1  # TOML integers are 64-bit; so is everything we pass to Redis


def _describe(value: object) -> str:
    """`integer 30`, `string 'abc'`: what the user wrote, short enough for one line."""
    try:
        text = repr(value)
    except ValueError:  # an int of more than 4300 digits refuses to be shown
        text = "(too long to show)"
    text = text if len(text) <= 40 else text[:37] + "..."
    return f"{_type_name(value)} {text}"


def _type_name(value: object) -> str:
    names: tuple[tuple[type, str], ...] = (
        (bool, "boolean"), (int, "integer"), (float, "float"), (str, "string"),
        (list, "array"), (dict, "table"), (datetime, "datetime"), (date, "date"), (time, "time"),
    )
    for cls, name in names:
        if isinstance(value, cls):
            return name
    return type(value).__name__


def _is_zero(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


def _is_plain_number(value: object) -> bool:
    """A finite int/float (not a bool): worth a "write it with a unit" hint."""
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and abs(value) < 1e15  # type: ignore[arg-type]  # False for nan/inf too


def parse_duration(text: str) -> float:
    """`"250ms"`, `"30s"`, `"5m"`, `"1h"`, `"7d"` (or `"0"`) -> seconds."""
    match = _NUMBER_UNIT_RE.fullmatch(text)
    if match and not match.group(2) and Fraction(match.group(1)) == 0:
        return 0.0
    unit = _DURATION_UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise _Bad(f'expected a duration with a unit (ms, s, m, h, d) such as "30s", got {text!r}')
    seconds = Fraction(match.group(1)) * unit
    if seconds > _MAX_DURATION_S:
        raise _Bad(f"duration {text!r} is longer than 100 years")
    return float(seconds)


def parse_size(text: str) -> int:
    """`"512MiB"`, `"1GiB"`, `"64KiB"`, `"100kB"`, `"0"` -> bytes."""
    match = _NUMBER_UNIT_RE.fullmatch(text)
    if match and not match.group(2) and Fraction(match.group(1)) == 0:
        return 0
    unit = _SIZE_UNITS.get(match.group(2).lower()) if match else None
    if match is None or unit is None:
        raise _Bad(f'expected a size with a unit (B, kB, MB, GB, KiB, MiB, GiB) such as "512MiB",'
                   f" got {text!r}")
    size = int(Fraction(match.group(1)) * unit)
    if size > _MAX_INT:
        raise _Bad(f"size {text!r} is larger than 2**63-1 bytes")
    return size


def _duration(value: object) -> float:
    if isinstance(value, str):
        return parse_duration(value)
    if _is_zero(value):
        return 0.0
    hint = f' (write "{value}s" or "{value}ms")' if _is_plain_number(value) else ""
    raise _Bad(f'expected a duration string such as "30s", got {_describe(value)}{hint}')


def _size(value: object) -> int:
    if isinstance(value, str):
        return parse_size(value)
    if _is_zero(value):
        return 0
    hint = f' (write "{value}B" or "{value}MiB")' if _is_plain_number(value) else ""
    raise _Bad(f'expected a size string such as "512MiB", got {_describe(value)}{hint}')


def _integer(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise _Bad(f"expected an integer, got {_describe(value)}")
    if abs(value) > _MAX_INT:
        raise _Bad(f"{_describe(value)} does not fit in 64 bits")
    return value


def _integer_text(text: str) -> int:
    try:
        return _integer(int(text.strip()))
    except ValueError:
        raise _Bad(f"expected an integer, got {text!r}") from None


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise _Bad(f"expected a string, got {_describe(value)}")
    return value


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Bad(f"expected true or false, got {_describe(value)}")
    return value


def _boolean_text(text: str) -> bool:
    word = text.strip().lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off"):
        return False
    raise _Bad(f"expected true or false, got {text!r}")


def _word(value: object) -> str:
    """A choice such as "json": case and surrounding blanks are not significant."""
    return _string(value).strip().lower()


def _string_list(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise _Bad(f"expected an array of strings, got {_describe(value)}")
    for item in value:
        if not isinstance(item, str):
            raise _Bad(f"expected an array of strings, got an item {_describe(item)}")
    return tuple(value)


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _optional(parse: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """An empty string means "unset", so an env var can clear an optional setting."""
    return lambda value: None if value == "" else parse(value)


@dataclass(frozen=True)
class Kind:
    """How a setting's value is written (in TOML and as env/CLI text) and parsed."""

    name: str
    from_toml: Callable[[Any], Any]
    from_text: Callable[[str], Any]


STRING = Kind("string", _string, str)
OPT_STRING = Kind("string (empty: unset)", _optional(_string), _optional(str))
WORD = Kind("string", _word, _word)
INTEGER = Kind("integer", _integer, _integer_text)
DURATION = Kind('duration ("250ms", "30s", "5m", "1h", "7d")', _duration, parse_duration)
OPT_DURATION = Kind("duration (empty: unset)", _optional(_duration), _optional(parse_duration))
SIZE = Kind('size ("64KiB", "512MiB", "1GiB", "100kB"; 0 = off)', _size, parse_size)
STRING_LIST = Kind("array of strings (env: comma-separated)", _string_list, _comma_list)
BOOLEAN = Kind("boolean (env: true/false)", _boolean, _boolean_text)


# --------------------------------------------------------------------------- validators
# Each returns the problem as text, or None when the value is fine.

Check = Callable[[Any], str | None]


def at_least(low: float, unit: str = "") -> Check:
    def check(value: float) -> str | None:
        if value < low:
            shown = f"{low:g}{unit}"
            return f"must be at least {shown}, got {value:g}{unit}"
        return None

    return check


def positive(unit: str = "") -> Check:
    return lambda v: None if v > 0 else f"must be greater than 0{unit}, got {v:g}{unit}"


def one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}; got {v!r}"



# --------------------------------------------------------------------------- settings

REQUIRED = object()  # marks group keys that have no default


@dataclass(frozen=True)
class Setting:
    """One declared setting. `section` is "store", "daemon", "console" or "group"."""

    section: str
    key: str
    kind: Kind
    default: Any  # as written in TOML; None = unset; REQUIRED = the group must set it
    desc: str
    check: Check | None = None
    dest: str = ""  # dataclass field name when it differs from `key`
    convert: Callable[[Any], Any] = lambda value: value
    inherit: bool = False  # a group setting that [defaults] may also set
    secret: bool = False  # may hold a password/token: errors never echo its value

    @property
    def field_name(self) -> str:
        return self.dest or self.key

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def env_var(self, group: str | None = None) -> str:
        """The env var that sets this (`group=None` for [defaults] of a group setting)."""
        if self.section != "group":
            return f"{ENV_PREFIX}{self.section.upper()}_{self.key.upper()}"
        if group is None:
            return f"{ENV_PREFIX}DEFAULTS_{self.key.upper()}"
        return f"{ENV_PREFIX}GROUPS_{_env_part(group)}_{self.key.upper()}"



_GROUP_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _env_part(group: str) -> str:
    return group.upper().replace("-", "_")


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def join_key(*parts: str) -> str:
    """A dotted key as TOML would write it: quote the parts that are not bare."""
    return ".".join(p if _BARE_KEY.fullmatch(p) else json.dumps(p) for p in parts)


def _hint(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(choices)}"



# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class Value:
    value: Any
    source: str  # "default", "file", "env NAME" or "override KEY"


class Loader:
    """Collects explicitly set values per scope (file < env < overrides); `resolve` then
    fills in inherited values and defaults. The caller builds its dataclasses from that."""

    def __init__(self, path: str | os.PathLike[str], settings: tuple[Setting, ...]) -> None:
        self.settings = settings
        self.file = os.fspath(path)
        # absolute() without resolve(): a k8s ConfigMap swaps a symlink, which we keep following
        self.path = Path(self.file).absolute()
        self.groups: list[str] = []
        self.schedule_tables: object = {}  # parsed when the config is built (schedules_config)
        self.explicit: dict[str, dict[str, Value]] = {
            scope: {} for scope in (*PLAIN_SCOPES, "defaults")}

    def settings_of(self, scope: str) -> dict[str, Setting]:
        """The settings a scope may set: "store", "daemon", "console", "defaults" or
        "groups.NAME"."""
        if scope in PLAIN_SCOPES:
            return {s.key: s for s in self.settings if s.section == scope}
        if scope == "defaults":
            return {s.key: s for s in self.settings if s.section == "group" and s.inherit}
        return {s.key: s for s in self.settings if s.section == "group"}

    def fields(self, scope: str, values: dict[str, Value]) -> dict[str, Any]:
        """Keyword arguments of a scope's dataclass from its resolved values."""
        settings = self.settings_of(scope)
        return {settings[k].field_name: settings[k].convert(v.value) for k, v in values.items()}

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(self.file, key, problem)

    def read(self) -> dict[str, Any]:
        try:
            data = Path(self.file).read_bytes()
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            problem = getattr(exc, "strerror", None) or str(exc)
            raise self.error("", f"cannot read config file: {problem}") from None
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = data[: exc.start].count(b"\n") + 1
            raise self.error("", f"not valid UTF-8 (line {line})") from None
        try:
            return tomllib.loads(text)
        except ValueError as exc:  # TOMLDecodeError, or int() of a 5000-digit number
            raise self.error("", f"TOML syntax error: {exc}") from None
        except RecursionError:
            raise self.error("", "TOML syntax error: nested too deeply") from None

    # ---- the file

    def take_file(self, doc: dict[str, Any]) -> None:
        for name, table in doc.items():
            if name not in _SECTION_TABLES:
                raise self.error(join_key(name), f"unknown table{_hint(name, _SECTION_TABLES)}")
            if not isinstance(table, dict):
                raise self.error(name, f"expected a table [{name}], got {_describe(table)}")
        for scope in (*PLAIN_SCOPES, "defaults"):
            for key, raw in doc.get(scope, {}).items():
                self.set(scope, key, raw, "file")
        self.schedule_tables = doc.get("schedules", {})
        for name, table in doc.get("groups", {}).items():
            self.add_group(name, table)
            for key, raw in table.items():
                self.set(f"groups.{name}", key, raw, "file")

    def add_group(self, name: str, table: object) -> None:
        dotted = join_key("groups", name)
        if not _GROUP_NAME_RE.fullmatch(name):
            raise self.error(dotted, "group names use letters, digits, '_' and '-' only")
        if not isinstance(table, dict):
            raise self.error(dotted, f"expected a table [groups.{name}], got {_describe(table)}")
        twin = next((g for g in self.groups if _env_part(g) == _env_part(name)), None)
        if twin is not None:
            raise self.error(dotted, f"clashes with group {twin!r}: both use env prefix "
                                     f"{ENV_PREFIX}GROUPS_{_env_part(name)}_")
        self.groups.append(name)
        self.explicit[f"groups.{name}"] = {}

    def setting(self, scope: str, key: str) -> Setting:
        known = self.settings_of(scope)
        if key in known:
            return known[key]
        dotted = join_key(*scope.split(".", 1), key)
        if scope == "defaults" and key in self.settings_of("groups.x"):
            raise self.error(dotted, f"{key!r} cannot be inherited; set it in each [groups.NAME]")
        raise self.error(dotted, f"unknown key{_hint(key, tuple(known))}")

    def set(self, scope: str, key: str, raw: object, source: str, text: bool = False) -> None:
        """Parse and check one value, and record it; errors say where the value came from."""
        setting = self.setting(scope, key)
        dotted = join_key(*scope.split(".", 1), key)
        where = "" if source == "file" else f"{source}: "
        try:
            if raw is None and setting.default is None:
                value = None  # an override may clear an optional setting
            elif text:
                value = setting.kind.from_text(raw)  # type: ignore[arg-type]
            else:
                value = setting.kind.from_toml(raw)
        except _Bad as exc:
            problem = (f"expected a {setting.kind.name}, got {_type_name(raw)} (value not shown)"
                       if setting.secret else str(exc))  # a secret's value is never echoed
            raise self.error(dotted, f"{where}{problem}") from None
        problem = setting.check(value) if setting.check and value is not None else None
        if problem:
            raise self.error(dotted, f"{where}{problem}")
        self.explicit[scope][key] = Value(value, source)

    # ---- env and overrides

    def env_names(self) -> dict[str, tuple[str, str]]:
        """env var -> (scope, key) for every setting of every scope the file declares."""
        names: dict[str, tuple[str, str]] = {}
        for setting in self.settings:
            if setting.section != "group":
                names[setting.env_var()] = (setting.section, setting.key)
                continue
            if setting.inherit:
                names[setting.env_var()] = ("defaults", setting.key)
            for group in self.groups:
                names[setting.env_var(group)] = (f"groups.{group}", setting.key)
        return names

    def take_env(self, env: Mapping[str, str]) -> None:
        names = self.env_names()
        for var in sorted(k for k in env if k.startswith(ENV_PREFIX)):
            if var in names:
                scope, key = names[var]
                raw = env[var]
                self.set(scope, key, raw, f"env {var}", text=isinstance(raw, str))
            else:
                self.reject_env(var, names)

    def reject_env(self, var: str, names: dict[str, tuple[str, str]]) -> None:
        """Unknown FERRICFLOWD_<SECTION>_* vars are typos; other FERRICFLOWD_* are not ours."""
        rest = var[len(ENV_PREFIX):]
        section = next((t for t in _SECTION_TABLES if rest.startswith(t.upper() + "_")), None)
        if section is None:
            return
        tail = rest[len(section) + 1:]
        if section == "groups":
            group = next((g for g in self.groups if tail.startswith(_env_part(g) + "_")), "")
            if group:
                key = tail[len(_env_part(group)) + 1:].lower()
                raise self.error(join_key("groups", group, key), f"env {var} is not a known "
                                 f"setting{_hint(key, tuple(self.settings_of('groups.x')))}")
            group_keys = self.settings_of("groups.x")
            key = next((k for k in group_keys if tail.endswith("_" + k.upper())), "")
            if key:
                group = tail[: -len(key) - 1].lower()
                raise self.error(join_key("groups", group, key),
                                 f"env {var} names group {group!r}, which the file does not "
                                 f"declare (env can tune groups, not add them)")
            raise self.error("groups", f"env {var} is not a known setting")
        known = [n for n in names if n.startswith(f"{ENV_PREFIX}{section.upper()}_")]
        raise self.error(join_key(section, tail.lower()),
                         f"env {var} is not a known setting{_hint(var, known)}")

    def take_overrides(self, overrides: Mapping[str, Any]) -> None:
        for dotted, raw in overrides.items():
            parts = str(dotted).split(".")
            if len(parts) == 3 and parts[0] == "groups":
                scope = f"groups.{parts[1]}"
                if parts[1] not in self.groups:
                    raise self.error(join_key("groups", parts[1]),
                                     f"override {dotted!r} names a group the file does not declare")
            elif len(parts) == 2 and parts[0] in (*PLAIN_SCOPES, "defaults"):
                scope = parts[0]
            else:
                raise self.error(str(dotted), "override keys are SECTION.KEY or groups.NAME.KEY")
            self.set(scope, parts[-1], raw, f"override {dotted}", text=isinstance(raw, str))

    # ---- resolution

    def resolve(self, scope: str, base: dict[str, Value] | None = None) -> dict[str, Value]:
        """Every setting of a scope: explicit value, else inherited `base`, else the default."""
        out: dict[str, Value] = {}
        for key, setting in self.settings_of(scope).items():
            if key in self.explicit[scope]:
                out[key] = self.explicit[scope][key]
            elif base is not None and key in base:
                out[key] = base[key]
            elif setting.required:
                raise self.error(join_key(*scope.split(".", 1), key),
                                 "missing; every group needs type, states and handler")
            elif setting.default is None:
                out[key] = Value(None, "default")
            else:
                out[key] = Value(setting.kind.from_toml(setting.default), "default")
        return out
