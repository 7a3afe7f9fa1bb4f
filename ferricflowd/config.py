"""The configuration of ferricflowd: one declared schema, TOML in, frozen dataclasses out.

Every setting is declared once in `SETTINGS` (section, key, type, default, validator, one-line
description); the loader, the env-var names, the example file's test and the dataclasses are all
driven by that table. This module says *what* the settings are; how such a table is read,
parsed and checked (value kinds, validators, the loader) is in confschema.py. Sources, lowest
to highest precedence:

    built-in default < TOML file < env FERRICFLOWD_<SECTION>_<KEY> < CLI overrides

Group settings are inherited: a group's value is its own (file < env < override) if set
anywhere, else the value of `[defaults]` (built-in < file < env < override). So
`FERRICFLOWD_DEFAULTS_PROCESSES=4` raises every group that does not pin `processes` itself.
Env vars cannot add groups; they tune the groups the file declares
(`FERRICFLOWD_GROUPS_<NAME>_<KEY>`, NAME upper-cased with `-` as `_`).

Every problem is a `ConfigError(file, dotted_key, problem)`; no input produces a traceback.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ferricflowd.confschema import (
    BOOLEAN,
    DURATION,
    ENV_PREFIX,
    INTEGER,
    OPT_DURATION,
    OPT_STRING,
    REQUIRED,
    SIZE,
    STRING,
    STRING_LIST,
    WORD,
    Kind,
    Loader,
    Setting,
    Value,
    at_least,
    join_key,
    one_of,
    parse_duration,
    parse_size,
    positive,
)
from ferricflowd.flow.errors import ConfigError
from ferricflowd.flow.policy import BACKOFFS, RetryPolicy

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
    wait_timeout_s: float

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
            socket_timeout_s=self.socket_timeout_s, wait_timeout_s=self.wait_timeout_s,
            retention_ms=round(self.retention_s * 1000),
        )  # fmt: skip


@dataclass(frozen=True)
class DaemonConfig:
    data_dir: Path
    listen: str
    drain_timeout_s: float
    stop_grace_s: float | None
    imports: tuple[str, ...]
    sentry_dsn: str
    sentry_environment: str
    sentry_every_attempt: bool
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
    timeout_s: float | None = None  # a handler's time limit; None: none
    # The retry policy of the group's states, where the TOML sets one (None: not set).
    max_retries: int | None = None
    backoff: str | None = None
    backoff_base_ms: int | None = None
    backoff_max_ms: int | None = None
    max_crashes: int | None = None
    exhausted_to: str | None = None

    def retry_policy(self) -> RetryPolicy | None:
        """The RetryPolicy its TOML sets for its states (unset fields: RetryPolicy's
        defaults), or None when it sets none (the code's, or the engine's, applies)."""
        fields = {"max_retries": self.max_retries, "backoff": self.backoff,
                  "base_ms": self.backoff_base_ms, "max_ms": self.backoff_max_ms,
                  "max_crashes": self.max_crashes, "exhausted_to": self.exhausted_to}
        chosen = {k: v for k, v in fields.items() if v is not None}
        return RetryPolicy(**chosen) if chosen else None


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
        problem = f"no such group (known: {known})"
        raise ConfigError(str(self.path), join_key("groups", name), problem)

    def needs_restart(self, new: Config) -> str | None:
        """The first setting that differs in `new` and that a running daemon holds open
        (the store, data_dir, listen): a HUP cannot apply it. None if there is none."""
        for key, before, after in (
            ("store", self.store, new.store),
            ("daemon.data_dir", self.daemon.data_dir, new.daemon.data_dir),
            ("daemon.listen", self.daemon.listen, new.daemon.listen),
        ):
            if before != after:
                return key
        return None

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
            if k in ("imports", "sentry_dsn", "sentry_environment", "sentry_every_attempt",
                     "log_format", "log_level", "heartbeat_timeout_s")
        }
        doc = {
            "group": asdict(self.group(group_name)),
            "store": asdict(self.store),
            "daemon": worker_daemon,
        }
        text = json.dumps(doc, sort_keys=True, default=str, ensure_ascii=True)
        return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- checks
# Each returns the problem as text, or None when the value is fine.

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


def _ms(seconds: float) -> int:
    return round(seconds * 1000)


def _unset_zero(size: int) -> int | None:
    return size or None


def _opt_ms(seconds: float | None) -> int | None:
    return None if seconds is None else _ms(seconds)


# fmt: off
S = Setting
SETTINGS: tuple[Setting, ...] = (
    S("store", "url", OPT_STRING, None,
      "Redis URL (redis://, rediss://, unix://); unset = embedded redis-server under data_dir.",
      _check_store_url, secret=True),
    S("store", "namespace", STRING, "ff", "Key prefix of every Flow key.", _check_name),
    S("store", "durability", WORD, "strict",
      '"strict" refuses a store without appendfsync always; "relaxed" allows it.',
      one_of("strict", "relaxed")),
    S("store", "min_replicas", INTEGER, 0,
      "Replicas that must acknowledge each mutating command (WAIT, on every primary).",
      at_least(0)),
    S("store", "partitions", INTEGER, 1,
      "Partitions of the namespace (fixed when it is first used).", at_least(1)),
    S("store", "retention", DURATION, "7d", "How long finished Flows are kept.",
      positive("s"), "retention_s"),
    S("store", "socket_timeout", DURATION, "5s", "Timeout of a store command.",
      positive("s"), "socket_timeout_s"),
    S("store", "wait_timeout", DURATION, "1s",
      "How long a write waits for min_replicas acks (WAIT); shorter than socket_timeout.",
      positive("s"), "wait_timeout_s"),
    S("daemon", "data_dir", STRING, "./var/ferricflowd",
      "State directory (embedded store, metrics); relative to the config file's directory.",
      _check_data_dir),
    S("daemon", "listen", STRING, "127.0.0.1:9464", "host:port of /metrics /healthz /readyz.",
      _check_listen),
    S("daemon", "drain_timeout", DURATION, "30s",
      "How long running handlers may finish on SIGTERM/HUP.", at_least(0, "s"),
      "drain_timeout_s"),
    S("daemon", "stop_grace", OPT_DURATION, None,
      "Service manager's grace before SIGKILL (TimeoutStopSec); must exceed drain_timeout.",
      positive("s"), "stop_grace_s"),
    S("daemon", "imports", STRING_LIST, [], "Modules every worker imports at start.",
      _check_imports),
    S("daemon", "sentry_dsn", STRING, "", "Sentry DSN for workers; empty = SENTRY_DSN env.",
      secret=True),
    S("daemon", "sentry_environment", STRING, "",
      "Sentry environment; empty = SENTRY_ENVIRONMENT env, else Sentry's default."),
    S("daemon", "sentry_every_attempt", BOOLEAN, False,
      "Report a handler exception on every attempt, not only on a Flow's first."),
    S("daemon", "heartbeat_timeout", DURATION, "30s",
      "A worker silent this long is killed and restarted.", positive("s"),
      "heartbeat_timeout_s"),
    S("daemon", "max_restarts", INTEGER, 5,
      "Restarts within restart_window before a group counts as crash-looping.", at_least(0)),
    S("daemon", "restart_window", DURATION, "60s", "Window for max_restarts.", positive("s"),
      "restart_window_s"),
    S("daemon", "maintenance_interval", DURATION, "1s",
      "Period of lease reclaim, outbox delivery and retention.", positive("s"),
      "maintenance_interval_s"),
    S("daemon", "log_format", WORD, "text", '"text" or "json".', one_of("text", "json")),
    S("daemon", "log_level", WORD, "info", "debug, info, warning or error.",
      one_of("debug", "info", "warning", "error")),
    S("console", "listen", STRING, "127.0.0.1:9465",
      "host:port of the web console; empty = no console.", _check_console_listen),
    S("console", "token", STRING, "",
      "Token for the console's actions (Bearer or login); empty = read-only console.",
      secret=True),
    S("console", "refresh", DURATION, "5s",
      "How often the console reads stats from the store (shared by every open page).",
      at_least(1, "s"), "refresh_s"),
    S("group", "type", STRING, REQUIRED, "Flow type the group works on.", _check_name),
    S("group", "states", STRING_LIST, REQUIRED, "States of that type its workers claim.",
      _check_states, convert=tuple),
    S("group", "handler", STRING, REQUIRED,
      '"module.path:attr": a function (queue) or a Workflow object.', _check_handler),
    S("group", "processes", INTEGER, 1, "Worker processes of the group.", at_least(1),
      inherit=True),
    S("group", "concurrency", INTEGER, 8,
      "Handler threads per process (`async def` handlers: tasks on its event loop).",
      at_least(1),
      inherit=True),
    S("group", "batch_size", INTEGER, 100, "Flows claimed per claim call.", at_least(1),
      inherit=True),
    S("group", "lease", DURATION, "30s", "Lease of a claimed Flow (renewed at lease/3).",
      at_least(1, "s"), "lease_ms", _ms, inherit=True),
    S("group", "block", DURATION, "5s", "Longest idle wait for new work.", at_least(0, "s"),
      "block_ms", _ms, inherit=True),
    S("group", "max_memory", SIZE, "512MiB", "Recycle a worker above this RSS; 0 = off.",
      None, "max_memory_bytes", inherit=True),
    S("group", "max_jobs", INTEGER, 0, "Recycle a worker after this many jobs; 0 = off.",
      at_least(0), inherit=True),
    S("group", "claim_values", STRING_LIST, [], "Named values fetched with each claim.",
      _check_value_names, convert=tuple, inherit=True),
    S("group", "value_max_bytes", SIZE, None, "Largest value a handler may store; 0 = no cap.",
      convert=_unset_zero, inherit=True),
    S("group", "timeout", OPT_DURATION, None,
      "Time limit of one handler run; past it the Flow is retried or failed under its "
      "policy, an async handler is cancelled, a hung thread's worker is replaced. "
      "Off by default; a workflow state's own timeout= wins.", positive("s"),
      "timeout_s", inherit=True),
    # The retry policy of the group's states (a queue group has no code to declare it in);
    # each unset field keeps RetryPolicy's default, and with none set the code's applies.
    S("group", "max_retries", INTEGER, None, "Retries before a Flow is exhausted.",
      at_least(0), inherit=True),
    S("group", "backoff", WORD, None, "exponential, linear, fixed or none.",
      one_of(*BACKOFFS), inherit=True),
    S("group", "backoff_base", OPT_DURATION, None, "The first retry's delay.", at_least(0, "s"),
      "backoff_base_ms", _opt_ms, inherit=True),
    S("group", "backoff_max", OPT_DURATION, None, "The longest retry delay.", at_least(0, "s"),
      "backoff_max_ms", _opt_ms, inherit=True),
    S("group", "max_crashes", INTEGER, None,
      "Worker deaths in a handler before the Flow fails as a poison pill.", at_least(0),
      inherit=True),
    S("group", "exhausted_to", OPT_STRING, None,
      'State of a Flow out of retries (default "failed").', _check_name, inherit=True),
)
del S
# fmt: on


# --------------------------------------------------------------------------- loading


def load_config(
    path: str | os.PathLike[str],
    env: Mapping[str, str] = os.environ,
    overrides: Mapping[str, Any] | None = None,
) -> Config:
    """Read, overlay and validate the config at `path`; raises ConfigError for any problem."""
    loader = Loader(path, SETTINGS)
    loader.take_file(loader.read())
    loader.take_env(env)
    loader.take_overrides(overrides or {})
    return _build(loader, env)


def _build(loader: Loader, env: Mapping[str, str]) -> Config:
    store = loader.resolve("store")
    daemon = loader.resolve("daemon")
    defaults = loader.resolve("defaults")
    groups = {name: loader.resolve(f"groups.{name}", defaults) for name in loader.groups}
    from ferricflowd.schedules_config import parse_schedules  # loads the cron library

    first_states = {v["type"].value: v["states"].value[0] for v in reversed(groups.values())}
    schedules = parse_schedules(loader.file, loader.schedule_tables, first_states)
    _validate(loader, daemon, groups, bool(schedules))
    wait, sock = store["wait_timeout"], store["socket_timeout"]
    if store["min_replicas"].value and wait.value >= sock.value:
        raise loader.error("store.wait_timeout",
                           f"wait_timeout ({wait.value:g}s, {wait.source}) must be shorter "
                           f"than socket_timeout ({sock.value:g}s, {sock.source}), or a "
                           "WAIT that times out fails as a socket error after the write")
    try:
        data_dir = Path(daemon["data_dir"].value).expanduser()
    except RuntimeError as exc:  # "~nobody/..." with no such user
        raise loader.error("daemon.data_dir", str(exc)) from None
    daemon["data_dir"] = Value(loader.path.parent / data_dir, daemon["data_dir"].source)
    if not daemon["sentry_dsn"].value:
        daemon["sentry_dsn"] = Value(env.get("SENTRY_DSN", ""), "env SENTRY_DSN")
    return Config(
        path=loader.path,
        store=StoreConfig(**loader.fields("store", store)),
        daemon=DaemonConfig(**loader.fields("daemon", daemon)),
        groups=tuple(
            GroupConfig(name=name, **loader.fields(f"groups.{name}", values))
            for name, values in groups.items()
        ),
        console=ConsoleConfig(**loader.fields("console", loader.resolve("console"))),
        schedules=schedules,
    )


def _validate(
    loader: Loader, daemon: dict[str, Value], groups: dict[str, dict[str, Value]],
    schedules: bool = False,
) -> None:
    """Rules that span settings."""
    if not groups and not schedules:  # a daemon that only fires schedules is fine
        raise loader.error("groups", "no groups: declare at least one [groups.NAME] table "
                           "(or [schedules.NAME])")
    drain, grace = daemon["drain_timeout"], daemon["stop_grace"]
    if grace.value is not None and drain.value >= grace.value:
        raise loader.error("daemon.drain_timeout",
                           f"drain_timeout ({drain.value:g}s, {drain.source}) must be shorter "
                           f"than stop_grace ({grace.value:g}s, {grace.source}), or workers "
                           "are SIGKILLed mid-drain")
    owner: dict[tuple[str, str], str] = {}
    for name, values in groups.items():
        flow_type = values["type"].value
        for state in values["states"].value:
            other = owner.setdefault((flow_type, state), name)
            if other != name:
                raise loader.error(join_key("groups", name, "states"),
                                   f"state {state!r} of type {flow_type!r} is already "
                                   f"claimed by group {other!r}")
