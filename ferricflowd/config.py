"""The configuration of ferricflowd: one declared schema, TOML in, frozen dataclasses out.

Every setting is declared once in `SETTINGS` (section, key, type, default, validator, one-line
description); the loader, the env-var names, the example file's test and the dataclasses are all
driven by that table. Sources, lowest to highest precedence:

    built-in default < TOML file < env FERRICFLOWD_<SECTION>_<KEY> < CLI overrides

Group settings are inherited: a group's value is its own (file < env < override) if set
anywhere, else the value of `[defaults]` (built-in < file < env < override). So
`FERRICFLOWD_DEFAULTS_PROCESSES=4` raises every group that does not pin `processes` itself.
Env vars cannot add groups; they tune the groups the file declares
(`FERRICFLOWD_GROUPS_<NAME>_<KEY>`, NAME upper-cased with `-` as `_`).

Every problem is a `ConfigError(file, dotted_key, problem)`; no input produces a traceback.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import date, datetime, time
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferricflowd.flow.errors import ConfigError

if TYPE_CHECKING:  # flow.client pulls in redis-py: only the processes that talk to Redis load it
    from ferricflowd.flow.client import FlowClient
    from ferricflowd.flow.schedule_spec import Schedule

__all__ = [
    "ENV_PREFIX",
    "SETTINGS",
    "Config",
    "ConfigError",
    "ConsoleConfig",
    "DaemonConfig",
    "GroupConfig",
    "Kind",
    "Setting",
    "StoreConfig",
    "load_config",
    "parse_duration",
    "parse_size",
]

ENV_PREFIX = "FERRICFLOWD_"


# --------------------------------------------------------------------------- the dataclasses


@dataclass(frozen=True)
class StoreConfig:
    url: str | None  # None: the supervisor runs an embedded redis-server under data_dir
    namespace: str
    durability: str
    min_replicas: int
    partitions: int
    retention_s: float
    socket_timeout_s: float

    @property
    def embedded(self) -> bool:
        return self.url is None

    def client(self, url: str) -> FlowClient:
        """The FlowClient of this store at `url` (store.url, or the embedded store's socket:
        Config.store_url), with every [store] setting applied; it connects on first use.
        The one way the daemon's processes and the CLI build a client from a config."""
        from ferricflowd.flow.client import FlowClient

        return FlowClient.from_url(
            url, namespace=self.namespace, durability=self.durability,
            min_replicas=self.min_replicas, partitions=self.partitions,
            socket_timeout_s=self.socket_timeout_s, retention_ms=round(self.retention_s * 1000),
        )  # fmt: skip


@dataclass(frozen=True)
class DaemonConfig:
    data_dir: Path
    listen: str
    drain_timeout_s: float
    stop_grace_s: float | None
    imports: tuple[str, ...]
    sentry_dsn: str
    heartbeat_timeout_s: float
    max_restarts: int
    restart_window_s: float
    maintenance_interval_s: float
    log_format: str
    log_level: str

    @property
    def embedded_socket(self) -> Path:
        """The unix socket of the embedded store (supervisor/embedded.py runs it there)."""
        return self.data_dir.absolute() / "redis" / "redis.sock"


@dataclass(frozen=True)
class ConsoleConfig:
    listen: str  # "" = no console
    token: str  # "" = read-only (no actions)
    refresh_s: float

    @property
    def enabled(self) -> bool:
        return bool(self.listen)


@dataclass(frozen=True)
class GroupConfig:
    name: str
    type: str
    states: tuple[str, ...]
    handler: str
    processes: int
    concurrency: int
    batch_size: int
    lease_ms: int
    block_ms: int
    max_memory_bytes: int  # 0: no memory recycling
    max_jobs: int  # 0: no recycling after N jobs
    claim_values: tuple[str, ...]
    value_max_bytes: int | None


@dataclass(frozen=True)
class Config:
    path: Path
    store: StoreConfig
    daemon: DaemonConfig
    groups: tuple[GroupConfig, ...]
    console: ConsoleConfig
    schedules: tuple[Schedule, ...] = ()  # [schedules.NAME]: see schedules_config.py

    @property
    def store_url(self) -> str:
        """Where the store is: store.url, or the embedded store's socket under data_dir."""
        return self.store.url or f"unix://{self.daemon.embedded_socket}"

    def group(self, name: str) -> GroupConfig:
        """The group called `name`; a ConfigError naming the known groups otherwise."""
        for group in self.groups:
            if group.name == name:
                return group
        known = ", ".join(g.name for g in self.groups)
        raise ConfigError(str(self.path), _join("groups", name), f"no such group (known: {known})")

    def fingerprint(self, group_name: str) -> str:
        """A stable hash of everything a worker of this group is started with.

        The supervisor compares it across a HUP reload and replaces only the groups whose
        fingerprint changed. Besides the group's own settings it covers the store and the
        daemon settings a worker process sees (imports, Sentry, logging, heartbeats), since a
        change there also needs fresh workers.
        """
        worker_daemon = {
            k: v
            for k, v in asdict(self.daemon).items()
            if k in ("imports", "sentry_dsn", "log_format", "log_level", "heartbeat_timeout_s")
        }
        doc = {
            "group": asdict(self.group(group_name)),
            "store": asdict(self.store),
            "daemon": worker_daemon,
        }
        text = json.dumps(doc, sort_keys=True, default=str, ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()


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


# --------------------------------------------------------------------------- validators
# Each returns the problem as text, or None when the value is fine.

Check = Callable[[Any], str | None]


def _at_least(low: float, unit: str = "") -> Check:
    def check(value: float) -> str | None:
        if value < low:
            shown = f"{low:g}{unit}"
            return f"must be at least {shown}, got {value:g}{unit}"
        return None

    return check


def _positive(unit: str = "") -> Check:
    return lambda v: None if v > 0 else f"must be greater than 0{unit}, got {v:g}{unit}"


def _one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}; got {v!r}"


_BAD_NAME_CHARS = re.compile(r"[\s{}\x00-\x1f\x7f]")


def _check_name(value: str) -> str | None:
    # Names end up inside Redis keys: braces would break the partition hash tag.
    if not value:
        return "must not be empty"
    if _BAD_NAME_CHARS.search(value):
        return f"must not contain whitespace, braces or control characters, got {value!r}"
    return None


def _check_states(value: tuple[str, ...]) -> str | None:
    if not value:
        return "must list at least one state"
    for state in value:
        problem = _check_name(state)
        if problem:
            return f"state {state!r}: {problem}"
    seen = {s for s in value if value.count(s) > 1}
    return f"state {sorted(seen)[0]!r} is listed twice" if seen else None


def _is_dotted(text: str) -> bool:
    return all(part.isidentifier() for part in text.split("."))


def _check_handler(value: str) -> str | None:
    module, sep, attr = value.partition(":")
    if not sep or not _is_dotted(module) or not _is_dotted(attr):
        return f'must be "module.path:attr" (e.g. "examples.emails:send_email"), got {value!r}'
    return None


def _check_imports(value: tuple[str, ...]) -> str | None:
    bad = [m for m in value if not _is_dotted(m)]
    return f"not a module path: {bad[0]!r}" if bad else None


def _check_value_names(value: tuple[str, ...]) -> str | None:
    for name in value:
        problem = _check_name(name)
        if problem:
            return f"value name {name!r}: {problem}"
    return None


def _check_listen(value: str) -> str | None:
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # [::1]:9464
    ok = sep and host and " " not in host and port.isascii() and port.isdigit()
    if not ok or not 0 <= int(port) <= 65535:
        return f'must be "host:port" such as "127.0.0.1:9464", got {value!r}'
    return None


def _check_console_listen(value: str) -> str | None:
    return _check_listen(value) if value else None  # empty: the console is off


def _check_store_url(value: str) -> str | None:
    from ferricflowd.flow.urls import url_problem  # the URL is redacted in its message

    return url_problem(value)


def _check_data_dir(value: str) -> str | None:
    return None if value.strip() and "\x00" not in value else "must be a directory path"


# --------------------------------------------------------------------------- the schema

_REQUIRED = object()  # marks group keys that have no default


@dataclass(frozen=True)
class Setting:
    """One declared setting. `section` is "store", "daemon", "console" or "group"."""

    section: str
    key: str
    kind: Kind
    default: Any  # as written in TOML; None = unset; _REQUIRED = the group must set it
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
        return self.default is _REQUIRED

    def env_var(self, group: str | None = None) -> str:
        """The env var that sets this (`group=None` for [defaults] of a group setting)."""
        if self.section != "group":
            return f"{ENV_PREFIX}{self.section.upper()}_{self.key.upper()}"
        if group is None:
            return f"{ENV_PREFIX}DEFAULTS_{self.key.upper()}"
        return f"{ENV_PREFIX}GROUPS_{_env_part(group)}_{self.key.upper()}"


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _unset_zero(size: int) -> int | None:
    return size or None


# fmt: off
S = Setting
SETTINGS: tuple[Setting, ...] = (
    S("store", "url", OPT_STRING, None,
      "Redis URL (redis://, rediss://, unix://); unset = embedded redis-server under data_dir.",
      _check_store_url, secret=True),
    S("store", "namespace", STRING, "ff", "Key prefix of every Flow key.", _check_name),
    S("store", "durability", WORD, "strict",
      '"strict" refuses a store without appendfsync always; "relaxed" allows it.',
      _one_of("strict", "relaxed")),
    S("store", "min_replicas", INTEGER, 0,
      "Replicas that must acknowledge each mutating command (WAIT/WAITAOF).", _at_least(0)),
    S("store", "partitions", INTEGER, 1,
      "Partitions of the namespace (fixed when it is first used).", _at_least(1)),
    S("store", "retention", DURATION, "7d", "How long finished Flows are kept.",
      _positive("s"), "retention_s"),
    S("store", "socket_timeout", DURATION, "5s", "Timeout of a store command.",
      _positive("s"), "socket_timeout_s"),
    S("daemon", "data_dir", STRING, "./var/ferricflowd",
      "State directory (embedded store, metrics); relative to the config file's directory.",
      _check_data_dir),
    S("daemon", "listen", STRING, "127.0.0.1:9464", "host:port of /metrics /healthz /readyz.",
      _check_listen),
    S("daemon", "drain_timeout", DURATION, "30s",
      "How long running handlers may finish on SIGTERM/HUP.", _at_least(0, "s"),
      "drain_timeout_s"),
    S("daemon", "stop_grace", OPT_DURATION, None,
      "Service manager's grace before SIGKILL (TimeoutStopSec); must exceed drain_timeout.",
      _positive("s"), "stop_grace_s"),
    S("daemon", "imports", STRING_LIST, [], "Modules every worker imports at start.",
      _check_imports),
    S("daemon", "sentry_dsn", STRING, "", "Sentry DSN for workers; empty = SENTRY_DSN env.",
      secret=True),
    S("daemon", "heartbeat_timeout", DURATION, "30s",
      "A worker silent this long is killed and restarted.", _positive("s"),
      "heartbeat_timeout_s"),
    S("daemon", "max_restarts", INTEGER, 5,
      "Restarts within restart_window before a group counts as crash-looping.", _at_least(0)),
    S("daemon", "restart_window", DURATION, "60s", "Window for max_restarts.", _positive("s"),
      "restart_window_s"),
    S("daemon", "maintenance_interval", DURATION, "1s",
      "Period of lease reclaim, outbox delivery and retention.", _positive("s"),
      "maintenance_interval_s"),
    S("daemon", "log_format", WORD, "text", '"text" or "json".', _one_of("text", "json")),
    S("daemon", "log_level", WORD, "info", "debug, info, warning or error.",
      _one_of("debug", "info", "warning", "error")),
    S("console", "listen", STRING, "127.0.0.1:9465",
      "host:port of the web console; empty = no console.", _check_console_listen),
    S("console", "token", STRING, "",
      "Token for the console's actions (Bearer or login); empty = read-only console.",
      secret=True),
    S("console", "refresh", DURATION, "5s",
      "How often the console reads stats from the store (shared by every open page).",
      _at_least(1, "s"), "refresh_s"),
    S("group", "type", STRING, _REQUIRED, "Flow type the group works on.", _check_name),
    S("group", "states", STRING_LIST, _REQUIRED, "States of that type its workers claim.",
      _check_states, convert=tuple),
    S("group", "handler", STRING, _REQUIRED,
      '"module.path:attr": a function (queue) or a Workflow object.', _check_handler),
    S("group", "processes", INTEGER, 1, "Worker processes of the group.", _at_least(1),
      inherit=True),
    S("group", "concurrency", INTEGER, 8,
      "Handler threads per process (`async def` handlers: tasks on its event loop).",
      _at_least(1),
      inherit=True),
    S("group", "batch_size", INTEGER, 100, "Flows claimed per claim call.", _at_least(1),
      inherit=True),
    S("group", "lease", DURATION, "30s", "Lease of a claimed Flow (renewed at lease/3).",
      _at_least(1, "s"), "lease_ms", _ms, inherit=True),
    S("group", "block", DURATION, "5s", "Longest idle wait for new work.", _at_least(0, "s"),
      "block_ms", _ms, inherit=True),
    S("group", "max_memory", SIZE, "512MiB", "Recycle a worker above this RSS; 0 = off.",
      None, "max_memory_bytes", inherit=True),
    S("group", "max_jobs", INTEGER, 0, "Recycle a worker after this many jobs; 0 = off.",
      _at_least(0), inherit=True),
    S("group", "claim_values", STRING_LIST, [], "Named values fetched with each claim.",
      _check_value_names, convert=tuple, inherit=True),
    S("group", "value_max_bytes", SIZE, None, "Largest value a handler may store; 0 = no cap.",
      convert=_unset_zero, inherit=True),
)
del S
# fmt: on

_SECTION_TABLES = ("store", "daemon", "console", "defaults", "groups", "schedules")
_PLAIN_SCOPES = ("store", "daemon", "console")  # sections without groups or inheritance
_GROUP_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")


def _settings_of(scope: str) -> dict[str, Setting]:
    """The settings a scope may set: "store", "daemon", "console", "defaults" or
    "groups.NAME"."""
    if scope in _PLAIN_SCOPES:
        return {s.key: s for s in SETTINGS if s.section == scope}
    if scope == "defaults":
        return {s.key: s for s in SETTINGS if s.section == "group" and s.inherit}
    return {s.key: s for s in SETTINGS if s.section == "group"}


def _env_part(group: str) -> str:
    return group.upper().replace("-", "_")


_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _join(*parts: str) -> str:
    """A dotted key as TOML would write it: quote the parts that are not bare."""
    return ".".join(p if _BARE_KEY.fullmatch(p) else json.dumps(p) for p in parts)


def _hint(word: str, choices: list[str] | tuple[str, ...]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else f"; known: {', '.join(choices)}"


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class _Value:
    value: Any
    source: str  # "default", "file", "env NAME" or "override KEY"


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read, overlay and validate the config at `path`; raises ConfigError for any problem."""
    loader = _Loader(path)
    doc = loader.read()
    loader.take_file(doc)
    loader.take_env(env)
    loader.take_overrides(overrides or {})
    return loader.build(env)


class _Loader:
    """Collects explicitly set values per scope, then resolves defaults and builds Config."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.file = os.fspath(path)
        # absolute() without resolve(): a k8s ConfigMap swaps a symlink, which we keep following
        self.path = Path(self.file).absolute()
        self.groups: list[str] = []
        self.schedule_tables: object = {}  # parsed in build(), by schedules_config
        self.explicit: dict[str, dict[str, _Value]] = {
            scope: {} for scope in (*_PLAIN_SCOPES, "defaults")}

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
                raise self.error(_join(name), f"unknown table{_hint(name, _SECTION_TABLES)}")
            if not isinstance(table, dict):
                raise self.error(name, f"expected a table [{name}], got {_describe(table)}")
        for scope in (*_PLAIN_SCOPES, "defaults"):
            for key, raw in doc.get(scope, {}).items():
                self.set(scope, key, raw, "file")
        self.schedule_tables = doc.get("schedules", {})
        for name, table in doc.get("groups", {}).items():
            self.add_group(name, table)
            for key, raw in table.items():
                self.set(f"groups.{name}", key, raw, "file")

    def add_group(self, name: str, table: object) -> None:
        dotted = _join("groups", name)
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
        known = _settings_of(scope)
        if key in known:
            return known[key]
        dotted = _join(*scope.split(".", 1), key)
        if scope == "defaults" and key in _settings_of("groups.x"):
            raise self.error(dotted, f"{key!r} cannot be inherited; set it in each [groups.NAME]")
        raise self.error(dotted, f"unknown key{_hint(key, tuple(known))}")

    def set(self, scope: str, key: str, raw: object, source: str, text: bool = False) -> None:
        """Parse and check one value, and record it; errors say where the value came from."""
        setting = self.setting(scope, key)
        dotted = _join(*scope.split(".", 1), key)
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
        self.explicit[scope][key] = _Value(value, source)

    # ---- env and overrides

    def env_names(self) -> dict[str, tuple[str, str]]:
        """env var -> (scope, key) for every setting of every scope the file declares."""
        names: dict[str, tuple[str, str]] = {}
        for setting in SETTINGS:
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
                raise self.error(_join("groups", group, key), f"env {var} is not a known "
                                 f"setting{_hint(key, tuple(_settings_of('groups.x')))}")
            key = next((k for k in _settings_of("groups.x") if tail.endswith("_" + k.upper())), "")
            if key:
                group = tail[: -len(key) - 1].lower()
                raise self.error(_join("groups", group, key),
                                 f"env {var} names group {group!r}, which the file does not "
                                 f"declare (env can tune groups, not add them)")
            raise self.error("groups", f"env {var} is not a known setting")
        known = [n for n in names if n.startswith(f"{ENV_PREFIX}{section.upper()}_")]
        raise self.error(_join(section, tail.lower()),
                         f"env {var} is not a known setting{_hint(var, known)}")

    def take_overrides(self, overrides: Mapping[str, Any]) -> None:
        for dotted, raw in overrides.items():
            parts = str(dotted).split(".")
            if len(parts) == 3 and parts[0] == "groups":
                scope = f"groups.{parts[1]}"
                if parts[1] not in self.groups:
                    raise self.error(_join("groups", parts[1]),
                                     f"override {dotted!r} names a group the file does not declare")
            elif len(parts) == 2 and parts[0] in (*_PLAIN_SCOPES, "defaults"):
                scope = parts[0]
            else:
                raise self.error(str(dotted), "override keys are SECTION.KEY or groups.NAME.KEY")
            self.set(scope, parts[-1], raw, f"override {dotted}", text=isinstance(raw, str))

    # ---- resolution

    def resolve(self, scope: str, base: dict[str, _Value] | None = None) -> dict[str, _Value]:
        """Every setting of a scope: explicit value, else inherited `base`, else the default."""
        out: dict[str, _Value] = {}
        for key, setting in _settings_of(scope).items():
            if key in self.explicit[scope]:
                out[key] = self.explicit[scope][key]
            elif base is not None and key in base:
                out[key] = base[key]
            elif setting.required:
                raise self.error(_join(*scope.split(".", 1), key),
                                 "missing; every group needs type, states and handler")
            elif setting.default is None:
                out[key] = _Value(None, "default")
            else:
                out[key] = _Value(setting.kind.from_toml(setting.default), "default")
        return out

    def build(self, env: Mapping[str, str]) -> Config:
        store = self.resolve("store")
        daemon = self.resolve("daemon")
        defaults = self.resolve("defaults")
        groups = {name: self.resolve(f"groups.{name}", defaults) for name in self.groups}
        from ferricflowd.schedules_config import parse_schedules  # loads the cron library

        first_states = {v["type"].value: v["states"].value[0] for v in reversed(groups.values())}
        schedules = parse_schedules(self.file, self.schedule_tables, first_states)
        self.validate(daemon, groups, bool(schedules))
        try:
            data_dir = Path(daemon["data_dir"].value).expanduser()
        except RuntimeError as exc:  # "~nobody/..." with no such user
            raise self.error("daemon.data_dir", str(exc)) from None
        daemon["data_dir"] = _Value(self.path.parent / data_dir, daemon["data_dir"].source)
        if not daemon["sentry_dsn"].value:
            daemon["sentry_dsn"] = _Value(env.get("SENTRY_DSN", ""), "env SENTRY_DSN")
        return Config(
            path=self.path,
            store=StoreConfig(**_fields("store", store)),
            daemon=DaemonConfig(**_fields("daemon", daemon)),
            groups=tuple(
                GroupConfig(name=name, **_fields(f"groups.{name}", values))
                for name, values in groups.items()
            ),
            console=ConsoleConfig(**_fields("console", self.resolve("console"))),
            schedules=schedules,
        )

    def validate(self, daemon: dict[str, _Value], groups: dict[str, dict[str, _Value]],
                 schedules: bool = False) -> None:
        """Rules that span settings."""
        if not groups and not schedules:  # a daemon that only fires schedules is fine
            raise self.error("groups", "no groups: declare at least one [groups.NAME] table "
                             "(or [schedules.NAME])")
        drain, grace = daemon["drain_timeout"], daemon["stop_grace"]
        if grace.value is not None and drain.value >= grace.value:
            raise self.error("daemon.drain_timeout",
                             f"drain_timeout ({drain.value:g}s, {drain.source}) must be shorter "
                             f"than stop_grace ({grace.value:g}s, {grace.source}), or workers "
                             "are SIGKILLed mid-drain")
        owner: dict[tuple[str, str], str] = {}
        for name, values in groups.items():
            flow_type = values["type"].value
            for state in values["states"].value:
                other = owner.setdefault((flow_type, state), name)
                if other != name:
                    raise self.error(_join("groups", name, "states"),
                                     f"state {state!r} of type {flow_type!r} is already "
                                     f"claimed by group {other!r}")


def _fields(scope: str, values: dict[str, _Value]) -> dict[str, Any]:
    settings = _settings_of(scope)
    return {settings[k].field_name: settings[k].convert(v.value) for k, v in values.items()}
