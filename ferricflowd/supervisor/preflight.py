"""Start-up warnings about what the workers will import and read (never a refusal).

Workers run `python -m ferricflowd.worker` in the supervisor's working directory, so that
directory comes first on their import path, then PYTHONPATH; handler modules usually sit
there or next to the config file. A `redis.py` (or `redis/` package) in one of them is
loaded instead of the real redis-py, and a directory or config file that anyone may write
lets anyone run code as the daemon. Both are easy to miss and cheap to check once.
"""

from __future__ import annotations

import importlib.machinery
import logging
import os
import site
import stat
import sysconfig
from collections.abc import Mapping
from pathlib import Path

from ferricflowd.procenv import pythonpath

__all__ = ["DAEMON_PACKAGES", "handler_dirs", "warn_unsafe"]

log = logging.getLogger(__name__)

# Top-level packages the daemon and its workers import; a handler module must not take one.
DAEMON_PACKAGES = ("ferricflowd", "redis", "hiredis", "click", "setproctitle",
                   "prometheus_client", "msgpack", "psutil")
_OWN_ROOT = Path(__file__).resolve().parents[2]  # holds the real ferricflowd


def _site_dirs() -> set[Path]:
    """Where installed packages live: the real redis-py there is no shadow."""
    found = [*site.getsitepackages(), site.getusersitepackages(),
             *(sysconfig.get_paths().get(k, "") for k in ("purelib", "platlib", "stdlib"))]
    return {Path(p).resolve() for p in found if p}


def handler_dirs(config_path: Path, env: Mapping[str, str] | None = None,
                 cwd: Path | None = None) -> list[Path]:
    """The config file's directory, the workers' working directory and their PYTHONPATH
    entries, resolved and deduplicated, without the directories of installed packages."""
    source = os.environ if env is None else env
    entries = [p for p in pythonpath(source.get("PYTHONPATH")).split(os.pathsep) if p]
    candidates = [config_path.resolve().parent, (cwd or Path.cwd()).resolve(),
                  *(Path(p).resolve() for p in entries)]
    skip = _site_dirs()
    out: list[Path] = []
    for path in candidates:
        if path not in out and path not in skip and path.name not in ("site-packages",
                                                                      "dist-packages"):
            out.append(path)
    return out


def _shadows(directory: Path) -> list[tuple[str, str]]:
    """(package, file) for each module of `directory` named like a package we import."""
    found = []
    for name in DAEMON_PACKAGES:
        if name == "ferricflowd" and directory == _OWN_ROOT:
            continue  # a checkout on the path: that is the real one
        spec = importlib.machinery.PathFinder.find_spec(name, [str(directory)])
        # A namespace portion (a directory without __init__.py) loses to the real package.
        if spec is not None and spec.origin is not None and spec.loader is not None:
            found.append((name, spec.origin))
    return found


def _world_writable(path: Path) -> bool:
    try:
        return bool(path.stat().st_mode & stat.S_IWOTH)
    except OSError:
        return False


def warn_unsafe(config_path: Path, env: Mapping[str, str] | None = None,
                cwd: Path | None = None) -> list[str]:
    """Log one warning per shadowing module and per file or directory anyone may write;
    returns the warnings."""
    warnings: list[str] = []
    if _world_writable(config_path):
        warnings.append(f"config file {config_path} is writable by any user (chmod o-w): "
                        f"anyone can change what the daemon runs")
    for directory in handler_dirs(config_path, env, cwd):
        for name, origin in _shadows(directory):
            warnings.append(f"handler directory {directory}: {origin} shadows the {name!r} "
                            f"package ferricflowd imports; a worker importing from there "
                            f"loads it instead (rename it)")
        if _world_writable(directory):
            warnings.append(f"handler directory {directory} is writable by any user "
                            f"(chmod o-w): anyone can put a module there that workers import")
    for text in warnings:
        log.warning("%s", text)
    return warnings
