"""ferricflowd.config: the example file, precedence, units, errors, and a fuzz corpus."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferricflowd.config import (
    SETTINGS,
    Config,
    ConfigError,
    ConsoleConfig,
    DaemonConfig,
    GroupConfig,
    StoreConfig,
    load_config,
    parse_duration,
    parse_size,
)
from ferricflowd.flow.errors import ConfigError as FlowConfigError
from tests.config_corpus import EXAMPLE, FUZZ_SEEDS, make_case

GROUP = '[groups.a]\ntype = "t"\nstates = ["s"]\nhandler = "m:f"\n'


def write(tmp_path: Path, text: str | bytes, name: str = "flows.toml") -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def load_error(path: Path, env: dict[str, str] | None = None, **kw: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(path, env=env or {}, **kw)
    return info.value


# --------------------------------------------------------------------------- the example


def test_example_loads() -> None:
    config = load_config(EXAMPLE, env={})
    assert config.path == EXAMPLE
    assert config.store.url is None and config.store.embedded
    assert config.daemon.data_dir == EXAMPLE.parent / "var" / "ferricflowd"
    assert [g.name for g in config.groups] == ["email", "orders"]
    email, orders = config.group("email"), config.group("orders")
    assert (email.type, email.states, email.handler) == (
        "email", ("queued",), "examples.emails:send_email")
    assert (orders.type, orders.states, orders.handler) == (
        "order", ("created", "charged", "shipped"), "examples.orders:order")
    assert email.processes == 2 and orders.processes == 1  # orders inherits [defaults]
    assert orders.lease_ms == 120_000 and orders.max_memory_bytes == 2**30
    assert email.max_memory_bytes == 512 * 2**20


def test_example_sets_every_declared_key() -> None:
    doc = tomllib.loads(EXAMPLE.read_text())
    written = {("store", k) for k in doc["store"]} | {("daemon", k) for k in doc["daemon"]}
    written |= {("console", k) for k in doc["console"]}
    written |= {("defaults", k) for k in doc["defaults"]}
    written |= {("group", k) for g in doc["groups"].values() for k in g}
    for s in SETTINGS:
        if s.key == "url":
            assert '# url = "redis://' in EXAMPLE.read_text()  # shown, but commented out
            continue
        where = ("defaults" if s.inherit else s.section, s.key)
        assert where in written or ("group", s.key) in written, s.key


def test_schema_fills_the_dataclasses_exactly() -> None:
    for section, cls in (("store", StoreConfig), ("daemon", DaemonConfig),
                         ("console", ConsoleConfig)):
        declared = [s.field_name for s in SETTINGS if s.section == section]
        assert declared == [f.name for f in dataclasses.fields(cls)]
    declared = ["name"] + [s.field_name for s in SETTINGS if s.section == "group"]
    assert declared == [f.name for f in dataclasses.fields(GroupConfig)]
    assert all(s.desc and "\n" not in s.desc for s in SETTINGS)
    assert ConfigError is FlowConfigError


def test_built_in_defaults(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GROUP), env={})
    assert config.store == StoreConfig(None, "ff", "strict", 0, 1, 7 * 86400.0, 5.0, 1.0)
    assert config.daemon == DaemonConfig(
        tmp_path / "var" / "ferricflowd", "127.0.0.1:9464", 30.0, None, (), "", "", False, 30.0,
        5, 60.0, 1.0, "text", "info")
    assert config.groups == (GroupConfig(
        "a", "t", ("s",), "m:f", 1, 8, 100, 30_000, 5_000, 512 * 2**20, 0, (), None),)
    assert config.console == ConsoleConfig("127.0.0.1:9465", "", 5.0)


def test_config_objects_are_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GROUP), env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.store.namespace = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------- precedence


def test_file_beats_default_env_beats_file_override_beats_env(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemon]\ndrain_timeout = "10s"\nlog_format = "text"\n' + GROUP)
    assert load_config(path, env={}).daemon.drain_timeout_s == 10.0
    env = {"FERRICFLOWD_DAEMON_DRAIN_TIMEOUT": "20s", "FERRICFLOWD_DAEMON_LOG_FORMAT": "json"}
    assert load_config(path, env=env).daemon.drain_timeout_s == 20.0
    config = load_config(path, env=env, overrides={"daemon.drain_timeout": "25s",
                                                   "daemon.log_format": "text"})
    assert (config.daemon.drain_timeout_s, config.daemon.log_format) == (25.0, "text")


def test_group_settings_inherit_defaults_but_specific_wins(tmp_path: Path) -> None:
    text = "[defaults]\nprocesses = 3\n" + GROUP + (
        '[groups.b]\ntype = "t"\nstates = ["u"]\nhandler = "m:g"\nprocesses = 5\n')
    path = write(tmp_path, text)
    assert [g.processes for g in load_config(path, env={}).groups] == [3, 5]
    env = {"FERRICFLOWD_DEFAULTS_PROCESSES": "4"}
    assert [g.processes for g in load_config(path, env=env).groups] == [4, 5]
    env["FERRICFLOWD_GROUPS_B_PROCESSES"] = "6"
    assert [g.processes for g in load_config(path, env=env).groups] == [4, 6]
    config = load_config(path, env=env, overrides={"groups.a.processes": 7,
                                                   "defaults.concurrency": "2"})
    assert [(g.processes, g.concurrency) for g in config.groups] == [(7, 2), (6, 2)]


def test_env_values_are_parsed_by_declared_type(tmp_path: Path) -> None:
    path = write(tmp_path, GROUP.replace("[groups.a]", "[groups.fast-lane]"))
    env = {
        "FERRICFLOWD_STORE_URL": "redis://db:6379/1",
        "FERRICFLOWD_STORE_PARTITIONS": " 4 ",
        "FERRICFLOWD_DAEMON_IMPORTS": "app.flows, app.more,",
        "FERRICFLOWD_DAEMON_LOG_LEVEL": "DEBUG",
        "FERRICFLOWD_DAEMON_DATA_DIR": "/srv/ff",
        "FERRICFLOWD_DEFAULTS_LEASE": "90s",
        "FERRICFLOWD_GROUPS_FAST_LANE_STATES": "s,t",
        "FERRICFLOWD_GROUPS_FAST_LANE_MAX_MEMORY": "0",
        "FERRICFLOWD_GROUPS_FAST_LANE_VALUE_MAX_BYTES": "64KiB",
        "FERRICFLOWD_WORKER_ID": "not a setting, not ours",
        "SENTRY_DSN": "https://k@sentry.example/1",
    }
    config = load_config(path, env=env)
    assert config.store.url == "redis://db:6379/1" and config.store.partitions == 4
    assert config.daemon.imports == ("app.flows", "app.more")
    assert config.daemon.log_level == "debug"
    assert config.daemon.data_dir == Path("/srv/ff")
    assert config.daemon.sentry_dsn == "https://k@sentry.example/1"
    group = config.group("fast-lane")
    assert (group.states, group.lease_ms, group.max_memory_bytes) == (("s", "t"), 90_000, 0)
    assert group.value_max_bytes == 64 * 1024


def test_empty_env_clears_optional_settings(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\nurl = "redis://x"\n[daemon]\nstop_grace = "60s"\n' + GROUP)
    config = load_config(path, env={"FERRICFLOWD_STORE_URL": "",
                                    "FERRICFLOWD_DAEMON_STOP_GRACE": ""})
    assert config.store.url is None and config.daemon.stop_grace_s is None


def test_sentry_dsn_in_config_beats_sentry_env(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemon]\nsentry_dsn = "https://file"\n' + GROUP)
    assert load_config(path, env={"SENTRY_DSN": "https://env"}).daemon.sentry_dsn == "https://file"


def test_stop_grace_from_env_checks_drain_timeout(tmp_path: Path) -> None:
    path = write(tmp_path, '[daemon]\ndrain_timeout = "30s"\n' + GROUP)
    assert load_config(path, env={"FERRICFLOWD_DAEMON_STOP_GRACE": "45s"}).daemon.stop_grace_s == 45
    err = load_error(path, {"FERRICFLOWD_DAEMON_STOP_GRACE": "20s"})
    assert err.key == "daemon.drain_timeout"
    assert "FERRICFLOWD_DAEMON_STOP_GRACE" in err.problem and "30s" in err.problem


@pytest.mark.parametrize(
    ("var", "value", "key"),
    [
        ("FERRICFLOWD_DEFAULTS_PROCESSES", "many", "defaults.processes"),
        ("FERRICFLOWD_DEFAULTS_PROCESSES", "0", "defaults.processes"),
        ("FERRICFLOWD_DAEMON_DRAIN_TIMEOUT", "30", "daemon.drain_timeout"),
        ("FERRICFLOWD_DAEMON_LISTEN", "nowhere", "daemon.listen"),
        ("FERRICFLOWD_STORE_DURABILITY", "sometimes", "store.durability"),
        ("FERRICFLOWD_GROUPS_A_HANDLER", "m.f", "groups.a.handler"),
        ("FERRICFLOWD_GROUPS_A_STATES", "", "groups.a.states"),
        ("FERRICFLOWD_GROUPS_A_LEASE", "10ms", "groups.a.lease"),
        ("FERRICFLOWD_STORE_URLL", "redis://x", "store.urll"),
        ("FERRICFLOWD_GROUPS_A_PROCESSEZ", "2", "groups.a.processez"),
        ("FERRICFLOWD_GROUPS_GHOST_PROCESSES", "2", "groups.ghost.processes"),
    ],
)
def test_bad_env_value_names_var_and_key(tmp_path: Path, var: str, value: str, key: str) -> None:
    path = write(tmp_path, GROUP)
    err = load_error(path, {var: value})
    assert (err.file, err.key) == (str(path), key)
    assert var in err.problem


def test_unknown_env_var_gets_a_hint(tmp_path: Path) -> None:
    err = load_error(write(tmp_path, GROUP), {"FERRICFLOWD_DAEMON_DRAIN_TIMOUT": "1s"})
    assert "did you mean 'FERRICFLOWD_DAEMON_DRAIN_TIMEOUT'" in err.problem


def test_overrides_accept_typed_values_and_none(tmp_path: Path) -> None:
    path = write(tmp_path, '[store]\nurl = "redis://x"\n' + GROUP)
    config = load_config(path, env={}, overrides={
        "store.url": None, "groups.a.claim_values": ["v"], "daemon.max_restarts": 0})
    assert config.store.url is None
    assert config.group("a").claim_values == ("v",) and config.daemon.max_restarts == 0


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        ({"daemon": "x"}, "daemon"),
        ({"daemon.nope": "x"}, "daemon.nope"),
        ({"groups.zz.processes": 1}, "groups.zz"),
        ({"store.partitions": "two"}, "store.partitions"),
        ({"defaults.lease": 30}, "defaults.lease"),
        ({"a.b.c.d": 1}, "a.b.c.d"),
    ],
)
def test_bad_overrides(tmp_path: Path, overrides: dict[str, Any], key: str) -> None:
    path = write(tmp_path, GROUP)
    err = load_error(path, overrides=overrides)
    assert (err.file, err.key) == (str(path), key)


# --------------------------------------------------------------------------- units


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("7d", 604800.0),
     ("0", 0.0), ("1.5s", 1.5), (" 2 s ", 2.0), ("10MS", 0.01), ("0.0", 0.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("512MiB", 512 * 2**20), ("1GiB", 2**30), ("64KiB", 65536), ("100kB", 100_000),
     ("0", 0), ("10B", 10), ("1.5KiB", 1536), ("2MB", 2_000_000), ("1 gib", 2**30)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("lease", "30", 'such as "30s"'),
        ("lease", 30, 'write "30s"'),
        ("lease", "-1s", "duration"),
        ("lease", "1y", "duration"),
        ("lease", "1e3s", "duration"),
        ("lease", "99999999999d", "100 years"),
        ("block", 1.5, 'write "1.5s"'),
        ("max_memory", 512, 'write "512B"'),
        ("max_memory", "512", "size"),
        ("max_memory", "12 parsecs", "size"),
        ("max_memory", "99999999999TiB", "2**63-1"),
        ("value_max_bytes", True, "boolean"),
    ],
)
def test_bad_units(tmp_path: Path, key: str, value: object, fragment: str) -> None:
    shown = f'"{value}"' if isinstance(value, str) else str(value).lower()
    path = write(tmp_path, GROUP + f"{key} = {shown}\n")
    err = load_error(path)
    assert err.key == f"groups.a.{key}" and fragment in err.problem


def test_zero_needs_no_unit(tmp_path: Path) -> None:
    path = write(tmp_path, GROUP + "block = 0\nmax_memory = 0\nvalue_max_bytes = 0\n")
    group = load_config(path, env={}).group("a")
    assert (group.block_ms, group.max_memory_bytes, group.value_max_bytes) == (0, 0, None)


_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


@settings(max_examples=200, deadline=None, database=None)
@given(st.integers(0, 36_500), st.sampled_from(sorted(_UNITS)))
def test_duration_units_scale(number: int, unit: str) -> None:
    assert parse_duration(f"{number}{unit}") == pytest.approx(number * _UNITS[unit])


# --------------------------------------------------------------------------- error table

BAD_CONFIGS: list[tuple[str, str, str, str]] = [
    # (id, file text, exact dotted key, fragment of the problem)
    ("unknown-table", "[stor]\n" + GROUP, "stor", "did you mean 'store'"),
    ("top-level-key", "verbose = true\n" + GROUP, "verbose", "unknown table"),
    ("unknown-store-key", '[store]\nurll = "redis://x"\n' + GROUP, "store.urll",
     "did you mean 'url'"),
    ("unknown-daemon-key", '[daemon]\ndrain_timout = "1s"\n' + GROUP, "daemon.drain_timout",
     "did you mean 'drain_timeout'"),
    ("unknown-group-key", GROUP + "proceses = 2\n", "groups.a.proceses",
     "did you mean 'processes'"),
    ("type-in-defaults", '[defaults]\ntype = "t"\n' + GROUP, "defaults.type",
     "cannot be inherited"),
    ("store-not-table", "store = 5\n" + GROUP, "store", "expected a table"),
    ("group-not-table", "[groups]\na = 5\n", "groups.a", "expected a table"),
    ("bad-group-name", GROUP.replace("groups.a", 'groups."a b"'), 'groups."a b"', "letters"),
    ("no-groups", "[store]\n", "groups", "no groups"),
    ("empty-groups", "[groups]\n", "groups", "no groups"),
    ("missing-handler", '[groups.a]\ntype = "t"\nstates = ["s"]\n', "groups.a.handler",
     "missing"),
    ("missing-type", '[groups.a]\nstates = ["s"]\nhandler = "m:f"\n', "groups.a.type", "missing"),
    ("processes-zero", "[defaults]\nprocesses = 0\n" + GROUP, "defaults.processes",
     "at least 1"),
    ("concurrency-zero", GROUP + "concurrency = 0\n", "groups.a.concurrency", "at least 1"),
    ("batch-negative", GROUP + "batch_size = -1\n", "groups.a.batch_size", "at least 1"),
    ("processes-string", GROUP + 'processes = "2"\n', "groups.a.processes",
     "expected an integer, got string '2'"),
    ("processes-bool", GROUP + "processes = true\n", "groups.a.processes", "boolean"),
    ("processes-float", GROUP + "processes = 2.0\n", "groups.a.processes", "float"),
    ("lease-too-short", GROUP + 'lease = "500ms"\n', "groups.a.lease", "at least 1s"),
    ("block-negative", GROUP + 'block = "-1s"\n', "groups.a.block", "duration"),
    ("drain-bare-int", "[daemon]\ndrain_timeout = 30\n" + GROUP, "daemon.drain_timeout",
     "expected a duration string"),
    ("drain-over-grace", '[daemon]\ndrain_timeout = "60s"\nstop_grace = "30s"\n' + GROUP,
     "daemon.drain_timeout", "shorter than stop_grace"),
    ("drain-equals-grace", '[daemon]\ndrain_timeout = "30s"\nstop_grace = "30s"\n' + GROUP,
     "daemon.drain_timeout", "shorter than stop_grace"),
    ("states-empty", GROUP.replace('["s"]', "[]"), "groups.a.states", "at least one"),
    ("states-not-array", GROUP.replace('["s"]', '"s"'), "groups.a.states", "expected an array"),
    ("states-twice", GROUP.replace('["s"]', '["s", "s"]'), "groups.a.states", "listed twice"),
    ("state-two-groups", GROUP + GROUP.replace("groups.a", "groups.b"), "groups.b.states",
     "already claimed by group 'a'"),
    ("state-with-space", GROUP.replace('["s"]', '["s t"]'), "groups.a.states", "whitespace"),
    ("type-empty", GROUP.replace('"t"', '""'), "groups.a.type", "empty"),
    ("handler-no-colon", GROUP.replace("m:f", "m.f"), "groups.a.handler", "module.path:attr"),
    ("handler-no-attr", GROUP.replace("m:f", "m:"), "groups.a.handler", "module.path:attr"),
    ("handler-bad-module", GROUP.replace("m:f", "1m:f"), "groups.a.handler", "module.path"),
    ("namespace-braces", '[store]\nnamespace = "f{f}"\n' + GROUP, "store.namespace", "braces"),
    ("namespace-space", '[store]\nnamespace = "f f"\n' + GROUP, "store.namespace", "whitespace"),
    ("durability", '[store]\ndurability = "fast"\n' + GROUP, "store.durability", "strict"),
    ("partitions-zero", "[store]\npartitions = 0\n" + GROUP, "store.partitions", "at least 1"),
    ("min-replicas-neg", "[store]\nmin_replicas = -1\n" + GROUP, "store.min_replicas",
     "at least 0"),
    ("wait-timeout-long", '[store]\nmin_replicas = 1\nwait_timeout = "5s"\n' + GROUP,
     "store.wait_timeout", "shorter than socket_timeout"),
    ("retention-zero", '[store]\nretention = "0s"\n' + GROUP, "store.retention", "greater than 0"),
    ("listen-no-port", '[daemon]\nlisten = "9464"\n' + GROUP, "daemon.listen", "host:port"),
    ("listen-big-port", '[daemon]\nlisten = "h:99999"\n' + GROUP, "daemon.listen", "host:port"),
    ("imports-string", '[daemon]\nimports = "app"\n' + GROUP, "daemon.imports", "array"),
    ("imports-bad-module", '[daemon]\nimports = ["my-app"]\n' + GROUP, "daemon.imports",
     "module path"),
    ("log-level", '[daemon]\nlog_level = "verbose"\n' + GROUP, "daemon.log_level", "debug"),
    ("log-format", '[daemon]\nlog_format = "xml"\n' + GROUP, "daemon.log_format", "json"),
    ("sentry-int", "[daemon]\nsentry_dsn = 5\n" + GROUP, "daemon.sentry_dsn", "expected a string"),
    ("bool-str", "[daemon]\nsentry_every_attempt = \"yes\"\n" + GROUP,
     "daemon.sentry_every_attempt", "expected true or false"),
    ("max-memory-bare", "[defaults]\nmax_memory = 512\n" + GROUP, "defaults.max_memory",
     "expected a size string"),
    ("claim-values-int", GROUP + "claim_values = [1]\n", "groups.a.claim_values", "integer"),
    ("quoted-table", '[groups."x.y"]\n', 'groups."x.y"', "letters"),
    ("env-twins", GROUP + GROUP.replace("groups.a", "groups.A").replace('"s"', '"u"'),
     "groups.A", "clashes with group 'a'"),
]


@pytest.mark.parametrize(("text", "key", "fragment"), [c[1:] for c in BAD_CONFIGS],
                         ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_names_file_and_key(tmp_path: Path, text: str, key: str, fragment: str) -> None:
    path = write(tmp_path, text)
    err = load_error(path)
    assert (err.file, err.key) == (str(path), key)
    assert fragment in err.problem
    assert str(err) == f"{path}: {key}: {err.problem}"


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read"),
        ("[store\n" + GROUP, "line 1"),
        (GROUP + "processes = = 2\n", "line 5"),
        (GROUP + "processes = 1\nprocesses = 2\n", "line 6"),
        (b"[store]\nnamespace = '\xff'\n", "UTF-8 (line 2)"),
        ("a = " + "[" * 5000 + "]" * 5000, "nested"),
        ("a = " + "9" * 5000, "TOML syntax error"),
    ],
    ids=["missing", "unclosed", "double-equals", "duplicate-key", "not-utf8", "deep", "long-int"],
)
def test_unreadable_files(tmp_path: Path, content: str | bytes | None, fragment: str) -> None:
    path = tmp_path / "flows.toml" if content is None else write(tmp_path, content)
    err = load_error(path)
    assert (err.file, err.key) == (str(path), "")
    assert fragment in err.problem and str(err).startswith(f"{path}: ")


def test_directory_is_not_a_config(tmp_path: Path) -> None:
    assert load_error(tmp_path).key == ""


# --------------------------------------------------------------------------- Config helpers


def test_group_lookup_unknown(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GROUP), env={})
    with pytest.raises(ConfigError) as info:
        config.group("nope")
    assert info.value.key == "groups.nope" and "known: a" in info.value.problem


def test_fingerprint_changes_only_for_the_changed_group(tmp_path: Path) -> None:
    text = EXAMPLE.read_text()
    before = load_config(write(tmp_path, text), env={})
    again = load_config(write(tmp_path, text), env={})
    assert before.fingerprint("email") == again.fingerprint("email")
    after = load_config(write(tmp_path, text.replace("concurrency = 16", "concurrency = 4")),
                        env={})
    assert before.fingerprint("email") != after.fingerprint("email")
    assert before.fingerprint("orders") == after.fingerprint("orders")
    # an inherited [defaults] value counts, for the groups that inherit it
    tuned = load_config(write(tmp_path, text), env={"FERRICFLOWD_DEFAULTS_LEASE": "40s"})
    assert before.fingerprint("orders") == tuned.fingerprint("orders")  # orders pins lease
    assert before.fingerprint("email") != tuned.fingerprint("email")
    # settings every worker sees change every group; supervisor-only ones change none
    logs = load_config(write(tmp_path, text), env={"FERRICFLOWD_DAEMON_LOG_LEVEL": "debug"})
    assert all(before.fingerprint(g) != logs.fingerprint(g) for g in ("email", "orders"))
    listen = load_config(write(tmp_path, text), env={"FERRICFLOWD_DAEMON_LISTEN": "0.0.0.0:1"})
    assert before.fingerprint("email") == listen.fingerprint("email")  # supervisor-only


# --------------------------------------------------------------------------- fuzz corpus
# (the corpus: tests/config_corpus.py)

@pytest.mark.parametrize("seed", FUZZ_SEEDS)
def test_fuzz_corpus_loads_or_raises_config_error(tmp_path: Path, seed: int) -> None:
    kind, data, env, overrides = make_case(seed, EXAMPLE.read_text())
    path = write(tmp_path, data)
    try:
        config = load_config(path, env=env, overrides=overrides)
    except ConfigError as err:
        assert err.file == str(path), kind
        assert str(err).startswith(f"{path}: "), kind
    else:
        assert isinstance(config, Config) and config.groups, kind
        assert all(g.processes >= 1 and g.lease_ms >= 1000 for g in config.groups), kind


def test_console_table(tmp_path: Path) -> None:
    path = write(tmp_path, '[console]\nlisten = ""\nrefresh = "2s"\n' + GROUP)
    config = load_config(path, env={"FERRICFLOWD_CONSOLE_TOKEN": "s3cret"})
    assert config.console == ConsoleConfig("", "s3cret", 2.0)
    assert not config.console.enabled
    with pytest.raises(ConfigError, match=r"console\.listen.*host:port"):
        load_config(write(tmp_path, '[console]\nlisten = "nope"\n' + GROUP), env={})
    with pytest.raises(ConfigError, match=r"console\.tokn: unknown key; did you mean 'token'"):
        load_config(write(tmp_path, '[console]\ntokn = "x"\n' + GROUP), env={})
    with pytest.raises(ConfigError, match=r"console\.token") as info:
        load_config(write(tmp_path, '[console]\ntoken = 12345678\n' + GROUP), env={})
    assert "12345678" not in str(info.value)  # a secret is never echoed
