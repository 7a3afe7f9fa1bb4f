"""The chaos lab: a redis-server the scenarios may kill and stop, real `ferricflowd run`
daemons whose workers import tests/chaos/handlers.py, and a producer that keeps creating
Flows through store outages. Used by the scenarios (tests/chaos/scenarios.py), the short
form (tests/chaos/) and the long form (`python -m bench.chaos`).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from ferricflowd.flow.client import CreateSpec, FlowClient
from ferricflowd.flow.errors import FlowError, StoreError
from tests.daemons import TEST_DAEMON, Daemon, daemon_env, free_port, write_config
from tests.helpers import wait_for
from tests.servers import RedisServer

QUEUE_TYPE = "chaos_q"
WF_TYPE = "chaos_wf"
WF_STATES = ("a", "b", "c")
H = "tests.chaos.handlers"

# Daemon settings for chaos: external kills are not a crash loop to be throttled for 30 s.
CHAOS_DAEMON: dict[str, Any] = {
    **TEST_DAEMON,
    "maintenance_interval": "100ms",
    "max_restarts": 100_000,
    "restart_window": "10s",
    "heartbeat_timeout": "10s",
}


def now_ms() -> int:
    return int(time.time() * 1000)


# --------------------------------------------------------------------------- the lab


@dataclass
class Lab:
    """One redis-server and a work directory; daemons are started per scenario."""

    server: RedisServer
    work_dir: Path
    daemons: list[Daemon] = field(default_factory=list)
    clients: list[FlowClient] = field(default_factory=list)

    def client(self, namespace: str, timeout_s: float = 2.0) -> FlowClient:
        c = FlowClient.from_url(self.server.url, namespace=namespace, socket_timeout_s=timeout_s)
        self.clients.append(c)
        return c

    def start_daemon(self, namespace: str, groups: dict[str, dict[str, Any]], *,
                     daemon: dict[str, Any] | None = None, store: dict[str, Any] | None = None,
                     env: dict[str, str] | None = None, wait: bool = True) -> Daemon:
        n = len(self.daemons)
        run_dir = self.work_dir / f"{namespace}-d{n}"
        run_dir.mkdir(parents=True, exist_ok=True)
        port = free_port()
        store_table = {"url": self.server.url, "namespace": namespace, **(store or {})}
        daemon_table = {"data_dir": str(run_dir / "data"), "listen": f"127.0.0.1:{port}",
                        **CHAOS_DAEMON, **(daemon or {})}
        config = write_config(run_dir / "flows.toml", groups, store_table, daemon_table)
        log_path = run_dir / "daemon.log"
        chaos_env = {"FF_CHAOS_URL": self.server.url, "FF_CHAOS_NS": namespace,
                     **(env or {})}
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ferricflowd", "run", "--config", str(config)],
                cwd=run_dir, env=daemon_env(chaos_env), stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        handle = Daemon(proc, config, log_path, port, self.client(namespace))
        self.daemons.append(handle)
        if wait:
            handle.wait_ready(30.0)
        return handle

    def close(self) -> None:
        for d in self.daemons:
            d.kill_all()
        for c in self.clients:
            try:
                c.close()
            except Exception:  # noqa: BLE001 - best effort on the way out
                pass
        self.daemons.clear()
        self.clients.clear()


def groups_config(*, q_processes: int = 2, wf_processes: int = 2, concurrency: int = 4,
                  batch_size: int = 10, lease: str = "30s", block: str = "200ms",
                  queue: bool = True, workflow: bool = True) -> dict[str, dict[str, Any]]:
    common = {"concurrency": concurrency, "batch_size": batch_size, "lease": lease,
              "block": block}
    groups: dict[str, dict[str, Any]] = {}
    if queue:
        groups["q"] = {"type": QUEUE_TYPE, "states": ["queued"], "handler": f"{H}:queue_step",
                       "processes": q_processes, **common}
    if workflow:
        groups["wf"] = {"type": WF_TYPE, "states": list(WF_STATES), "handler": f"{H}:three",
                        "processes": wf_processes, **common}
    return groups


def stop_daemon(daemon: Daemon, timeout: float = 30.0) -> int | None:
    """SIGTERM (drain) and wait; SIGKILL the group if it does not exit in time."""
    if daemon.proc.poll() is None:
        try:
            os.kill(daemon.proc.pid, signal.SIGTERM)
            return daemon.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            daemon.kill_all()
    return daemon.proc.returncode


def worker_pids(daemon: Daemon, *, ready_only: bool = False) -> list[int]:
    """Live worker processes; with ready_only, those past boot (their title no longer says
    "booting"), i.e. the ones that may hold Flows."""
    return sorted(p for group in ready_workers(daemon, ready_only).values() for p in group)


def ready_workers(daemon: Daemon, ready_only: bool = True) -> dict[str, list[int]]:
    """group -> pids of its live (ready) workers, from the process titles."""
    out: dict[str, list[int]] = defaultdict(list)
    for pid, proc in daemon.workers().items():
        try:  # setproctitle pads the command line with empty arguments
            title = " ".join(part for part in proc.cmdline() if part)
        except psutil.Error:
            continue
        if ready_only and title.endswith(" booting"):
            continue
        group = title.removeprefix("ferricflowd: worker ").split("[", 1)[0]
        out[group].append(pid)
    return out


def pick_victim(daemon: Daemon, spare_last: bool) -> int | None:
    """A random ready worker; with spare_last, never a group's last ready one."""
    groups = ready_workers(daemon)
    pool = [p for pids in groups.values() if len(pids) > (1 if spare_last else 0)
            for p in pids]
    return random.choice(pool) if pool else None


def restarts(daemon: Daemon) -> int:
    """Worker restarts the supervisor counted (from its log; works after it exited too)."""
    return daemon.log().count("restarting in ")


# --------------------------------------------------------------------------- producing


class Producer(threading.Thread):
    """Creates `flows` queue Flows and `workflows` workflow Flows in batches, spread over
    `spread_s` seconds. Creates that returned success are `acked`; a batch whose call failed
    (store down) is `uncertain`: those Flows may or may not exist, and are retried under new
    ids so the totals are still reached."""

    def __init__(self, client: FlowClient, flows: int, workflows: int, *, spread_s: float = 0.0,
                 batch: int = 50, slow: Iterable[str] = (), prefix: str = "") -> None:
        super().__init__(name="chaos-producer", daemon=True)
        self.client = client
        self.want = {QUEUE_TYPE: flows, WF_TYPE: workflows}
        self.spread_s = spread_s
        self.batch = batch
        self.slow = set(slow)
        self.prefix = prefix
        self.acked: dict[str, list[str]] = {QUEUE_TYPE: [], WF_TYPE: []}
        self.uncertain: dict[str, list[str]] = {QUEUE_TYPE: [], WF_TYPE: []}
        self.rejected: list[tuple[str, str]] = []
        self.failures = 0
        self.error: BaseException | None = None
        self._seq = 0

    def total_acked(self) -> int:
        return sum(len(v) for v in self.acked.values())

    def _next_specs(self, ftype: str, n: int) -> list[CreateSpec]:
        specs = []
        for _ in range(n):
            self._seq += 1
            tag = "q" if ftype == QUEUE_TYPE else "w"
            fid = f"{self.prefix}{tag}-{self._seq}"
            state = "queued" if ftype == QUEUE_TYPE else WF_STATES[0]
            payload = b"slow" if fid in self.slow else b""
            specs.append(CreateSpec(fid, ftype, state, payload))
        return specs

    def run(self) -> None:
        try:
            self._produce()
        except BaseException as exc:  # noqa: BLE001 - reported by the scenario
            self.error = exc

    def _produce(self) -> None:
        total = sum(self.want.values())
        start = time.monotonic()
        made = 0
        while any(len(self.acked[t]) < n for t, n in self.want.items()):
            for ftype, n in self.want.items():
                left = n - len(self.acked[ftype])
                if left <= 0:
                    continue
                specs = self._next_specs(ftype, min(self.batch, left))
                try:
                    results = self.client.create_many(specs)
                except StoreError:
                    self.failures += 1
                    self.uncertain[ftype].extend(s.id for s in specs)
                    time.sleep(0.05)  # the store is down: the fault, not a sync point
                    continue
                for spec, result in zip(specs, results, strict=True):
                    if isinstance(result, FlowError):
                        self.rejected.append((spec.id, str(result)))
                    elif result:
                        self.acked[ftype].append(spec.id)
                made += len(specs)
            if self.spread_s > 0:  # pace: made/total of the flows by made/total of spread_s
                ahead = start + self.spread_s * made / max(1, total) - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)


def produce_now(client: FlowClient, flows: int, workflows: int, *, slow: Iterable[str] = (),
                prefix: str = "") -> Producer:
    """Create everything at once (in this thread)."""
    p = Producer(client, flows, workflows, slow=slow, prefix=prefix, batch=200)
    p.run()
    if p.error is not None:
        raise p.error
    return p


def all_ids(producer: Producer) -> dict[str, list[str]]:
    return {t: list(ids) for t, ids in producer.acked.items()}


def count_state(client: FlowClient, state: str, types: Sequence[str] = (QUEUE_TYPE, WF_TYPE)
                ) -> int:
    try:
        return sum(client.stats(t).counts.get(state, 0) for t in types)
    except StoreError:
        return -1


def wait_terminal(client: FlowClient, total: int, timeout: float, what: str = "") -> None:
    def done() -> bool:
        got = sum(count_state(client, s) for s in ("completed", "failed", "cancelled"))
        return got >= total

    wait_for(done, timeout, 0.1, what=what or f"{total} Flows terminal")
