"""Package layout: flow/ imports nothing of the daemon, every Lua script ships, and no test
module imports another test module or a conftest (shared helpers live in support modules)."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import pytest

from ferricflowd.flow import store

ROOT = Path(__file__).resolve().parents[1]
FLOW = ROOT / "ferricflowd" / "flow"
FORBIDDEN = ("ferricflowd.config", "ferricflowd.cli", "ferricflowd.supervisor",
             "ferricflowd.worker", "ferricflowd.console")


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute names of every module `source` (the code of `module`) imports."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            names.add(target)
            names.update(f"{target}.{alias.name}" for alias in node.names)
    return names


def forbidden_imports(names: set[str]) -> set[str]:
    return {n for n in names for f in FORBIDDEN if n == f or n.startswith(f + ".")}


def _flow_modules() -> list[tuple[Path, str]]:
    out = []
    for path in sorted(FLOW.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        out.append((path, ".".join(parts)))
    return out


def test_flow_modules_import_nothing_of_the_daemon() -> None:
    modules = _flow_modules()
    assert len(modules) >= 10  # client, worker, store, ... (the walk found them)
    offenders = {}
    for path, module in modules:
        names = imported_modules(path.read_text("utf-8"), module, path.name == "__init__.py")
        bad = forbidden_imports(names)
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


@pytest.mark.parametrize("source,bad", [
    ("from ..worker import process", True),
    ("from ferricflowd.supervisor.arbiter import Arbiter", True),
    ("import ferricflowd.config", True),
    ("from .. import cli", True),
    ("from .runner import Runner", False),  # ferricflowd.flow.runner is flow's own
    ("from . import records", False),
    ("import ferricflowd.flow.client", False),
])
def test_the_import_check_itself(source: str, bad: bool) -> None:
    names = imported_modules(source, "ferricflowd.flow.client")
    assert bool(forbidden_imports(names)) is bad, names


def imports_of_test_modules(names: set[str]) -> set[str]:
    """The imported names that reach into a test module (test_*.py) or a conftest.py."""
    bad = set()
    for name in names:
        parts = name.split(".")
        if parts[0] != "tests" and parts[0] != "conftest" and not parts[0].startswith("test_"):
            continue  # not ours: a library may well name a module test_*
        if any(p == "conftest" or p.startswith("test_") for p in parts):
            bad.add(name)
    return bad


def _modules_under(*dirs: str) -> list[tuple[Path, str]]:
    out = []
    for top in dirs:
        for path in sorted((ROOT / top).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out.append((path, ".".join(parts)))
    return out


def test_no_test_module_imports_another_or_a_conftest() -> None:
    """Helpers and fakes shared by several test modules live in plain support modules
    (tests/helpers.py, tests/daemons.py, ...); fixtures in a conftest.py that pytest loads."""
    modules = _modules_under("tests", "bench")
    assert len(modules) >= 40
    offenders = {}
    for path, module in modules:
        names = imported_modules(path.read_text("utf-8"), module, path.name == "__init__.py")
        bad = imports_of_test_modules(names)
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


@pytest.mark.parametrize("source,bad", [
    ("from tests.daemon.conftest import wait_for", True),
    ("from tests.unit.test_config import make_case", True),
    ("from tests.unit import test_config", True),
    ("from .test_leases import helper", True),
    ("from . import conftest", True),
    ("import conftest", True),
    ("from tests.helpers import wait_for", False),
    ("from tests.chaos.lab import Lab", False),
    ("from .calls import claim_one", False),
    ("import pytest", False),
])
def test_the_test_import_check_itself(source: str, bad: bool) -> None:
    names = imported_modules(source, "tests.engine.test_cancel")
    assert bool(imports_of_test_modules(names)) is bad, names


def _lua_on_disk() -> set[str]:
    """Every Lua file under lua/, as a path relative to it (lib/record.lua)."""
    lua = FLOW / "lua"
    return {str(p.relative_to(lua)) for p in lua.rglob("*.lua")}


def test_package_resources_list_every_lua_file() -> None:
    lua = resources.files("ferricflowd.flow").joinpath("lua")
    listed = {entry.name for entry in lua.iterdir() if entry.name.endswith(".lua")}
    listed |= {f"lib/{entry.name}" for entry in lua.joinpath("lib").iterdir()
               if entry.name.endswith(".lua")}
    assert listed == _lua_on_disk()
    # one file per command, plus the library's includes
    assert listed == ({f"{name}.lua" for name in store.SCRIPTS}
                      | {f"lib/{name}.lua" for name in store.INCLUDES})


def test_lua_includes_say_what_they_hold_and_use() -> None:
    for name in store.INCLUDES:
        header = (FLOW / "lua" / "lib" / f"{name}.lua").read_text("utf-8").split("]]", 1)[0]
        assert header.startswith(f"--[[ lib/{name}.lua: "), name
        assert "Uses " in header or "uses nothing" in header, f"lib/{name}.lua: what it uses"


def test_lua_headers_document_the_command() -> None:
    for name in store.SCRIPTS:
        text = (FLOW / "lua" / f"{name}.lua").read_text("utf-8")
        header = text.split("]]", 1)[0]
        assert header.startswith(f"--[[ {name}:"), name
        for section in ("KEYS[1]", "ARGV", "Reply"):
            assert section in header, f"{name}.lua header lacks {section}"


def test_package_data_globs_cover_every_lua_file() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    globs = config["tool"]["setuptools"]["package-data"]["ferricflowd.flow"]
    # Expanded as setuptools does (a glob's * stops at a /), not with fnmatch.
    covered = {str(p.relative_to(FLOW / "lua")) for g in globs for p in FLOW.glob(g)}
    assert covered == _lua_on_disk()


def test_built_package_ships_every_lua_file(tmp_path: Path) -> None:
    """setuptools' build_py (what a wheel is made of) copies every Lua file."""
    code = ("import sys\nfrom setuptools import setup\n"
            f"sys.argv = ['setup.py', '-q', 'egg_info', '--egg-base', {str(tmp_path)!r}, "
            f"'build_py', '--build-lib', {str(tmp_path / 'lib')!r}]\nsetup()\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    lua = tmp_path / "lib" / "ferricflowd" / "flow" / "lua"
    built = {str(p.relative_to(lua)) for p in lua.rglob("*.lua")}
    assert built == _lua_on_disk()
    console = ROOT / "ferricflowd" / "console"
    for folder in ("templates", "static", "static/vendor"):
        on_disk = {p.name for p in (console / folder).iterdir() if p.is_file()}
        shipped = {p.name for p in (tmp_path / "lib" / "ferricflowd" / "console" / folder)
                   .iterdir() if p.is_file()}
        assert shipped == on_disk, folder


def test_the_supervisor_spawns_without_importing_what_only_it_needs_later(
        tmp_path: Path) -> None:
    """A cold start is CPU-bound: the supervisor loads its config and spawns its workers
    before it imports redis-py or prometheus_client (Supervisor.start, flow/urls.py) or psutil
    (only a group with max_memory needs it)."""
    config = tmp_path / "flows.toml"
    config.write_text('[store]\nurl = "redis://127.0.0.1:1/0"\n[daemon]\n'
                      f'data_dir = "{tmp_path}"\n[groups.g]\ntype = "t"\n'
                      'states = ["s"]\nhandler = "m:f"\n')
    code = (
        "import os, sys\n"
        "from ferricflowd import cli\n"
        "from ferricflowd.config import load_config\n"
        "from ferricflowd.logs import redact_url\n"
        "from ferricflowd.supervisor.arbiter import Supervisor\n"
        f"c = load_config({str(config)!r}, os.environ, {{}})\n"
        "redact_url(c.store.url)\n"
        "print(sorted(m for m in ('redis', 'prometheus_client', 'psutil', 'starlette', "
        "'uvicorn', 'jinja2') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True, cwd=ROOT, timeout=60).stdout
    assert out.strip() == "[]"
