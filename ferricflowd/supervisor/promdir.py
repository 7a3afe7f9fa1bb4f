"""The Prometheus multiprocess directory: prometheus-client's multiprocess mode, owned by
the supervisor (the metric definitions are in ferricflowd/metrics.py).

Every process (supervisor and workers) writes its metric values to mmap files in one private
directory; the supervisor, the only process that lives as long as the daemon, merges them on
each scrape. The rules this module keeps (see shared/reference/daemon-anchors.md section 4.1):

- the directory is private to this daemon (under data_dir) and wiped at start, or stale files
  from a previous run would merge into the new totals;
- PROMETHEUS_MULTIPROC_DIR is in the environment before prometheus_client picks its value
  class, in this process and in every worker (they get it in their env before exec);
- `mark_process_dead` runs on every reap, including SIGKILL/OOM deaths, so `live*` gauges of
  dead workers disappear;
- each scrape builds a fresh registry with one MultiProcessCollector.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

__all__ = ["ENV_VAR", "PromDir"]

ENV_VAR = "PROMETHEUS_MULTIPROC_DIR"
log = logging.getLogger(__name__)


class PromDir:
    """The metrics directory of one supervisor: prepare, hand to workers, scrape, remove."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "prometheus"

    def prepare(self) -> None:
        """Wipe and create the directory (workers may be spawned from here on)."""
        shutil.rmtree(self.path, ignore_errors=True)
        self.path.mkdir(parents=True, mode=0o700)
        os.environ[ENV_VAR] = str(self.path)

    def activate(self) -> None:
        """Switch this process to multiprocess mode; before it creates any metric. Apart
        from prepare() so that workers start before this process imports prometheus_client
        (~50 ms)."""
        # prometheus_client chooses mmap-backed values when `values` is first imported. If
        # something imported it before the directory existed, re-choose now: metric objects
        # look the class up on the module each time one is created.
        from prometheus_client import values

        values.ValueClass = values.get_value_class()

    def worker_env(self) -> dict[str, str]:
        """Environment entries a worker needs to write into this directory."""
        return {ENV_VAR: str(self.path)}

    def mark_process_dead(self, pid: int) -> None:
        """Forget a reaped process's live gauges (counters stay, so totals never go back)."""
        from prometheus_client import multiprocess

        try:
            multiprocess.mark_process_dead(pid, str(self.path))
        except OSError as exc:  # a missing file is fine; log anything else and go on
            log.debug("mark_process_dead(%d): %s", pid, exc)

    def render(self) -> tuple[bytes, str]:
        """The merged exposition of every process: (body, content type)."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(self.path))
        return generate_latest(registry), CONTENT_TYPE_LATEST

    def remove(self) -> None:
        """Delete the directory at exit; the next start would wipe it anyway."""
        shutil.rmtree(self.path, ignore_errors=True)
