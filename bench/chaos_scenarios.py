"""Chaos scenarios of issue 4, shared by the short form (tests/chaos/) and the long form
(`python -m bench.chaos`): real redis-server, real `ferricflowd run` daemons, real signals.

Every scenario ends with `audit()`, exact accounting over every Flow it created:

- each Flow exists and is terminal (or due, where the scenario says);
- one `completed` event per completed Flow, history versions contiguous 1..N;
- per (flow, state) at most one *accepted* completing outcome (transitioned/completed), and
  the side effect recorded by the handler (bench/chaos_handlers.py, keyed by
  (id, state, fencing token)) exists exactly once for that accepted fencing token; side
  effects under other fencing tokens are at-least-once re-executions of killed workers
  (counted, allowed), each of which must belong to a claim in the history.

A scenario returns a JSON-able summary whose "problems" list is empty when it passed.
Waits are conditions with deadlines; sleeps appear only as the fault schedule.
"""

from __future__ import annotations

import json
import os
import random
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import psutil

from bench.chaos_handlers import SEP, effects_key
from ferricflowd.flow.client import CreateSpec, FlowClient
from ferricflowd.flow.errors import FlowError, StoreError
from ferricflowd.flow.policy import RetryPolicy
from ferricflowd.flow.records import record_fields
from tests.daemon.conftest import (
    TEST_DAEMON,
    Daemon,
    daemon_env,
    free_port,
    process_gone,
    wait_for,
    write_config,
)
from tests.servers import RedisServer

QUEUE_TYPE = "chaos_q"
WF_TYPE = "chaos_wf"
WF_STATES = ("a", "b", "c")
H = "bench.chaos_handlers"
NO_CRASH_LIMIT = 1_000_000  # kill storms: every Flow must finish, however often it is hit
_WORKER_IN_CAUSE = re.compile(r"worker \S*?:(\d+):\S+")

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


def percentile(values: Sequence[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[k]


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


# --------------------------------------------------------------------------- the audit


@dataclass
class FlowView:
    record: dict[str, bytes]
    events: list[tuple[int, int, str, dict[str, Any]]]  # (version, at_ms, name, details)

    @property
    def state(self) -> str:
        return self.record.get(b"state", b"").decode()


@dataclass
class Audit:
    flows: int = 0
    completed: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)
    lost: int = 0
    not_terminal: int = 0
    duplicates: int = 0
    reexecutions: int = 0
    views: dict[str, FlowView] = field(default_factory=dict)

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)
        elif len(self.problems) == 50:
            self.problems.append("... (more problems left out)")

    def summary(self) -> dict[str, Any]:
        return {"flows": self.flows, "completed": self.completed, "failed": self.failed,
                "lost": self.lost, "not_terminal": self.not_terminal,
                "duplicates": self.duplicates, "reexecutions": self.reexecutions}


def read_flows(client: FlowClient, ids: Sequence[str], chunk: int = 500) -> dict[str, FlowView]:
    keys = client.keys
    out: dict[str, FlowView] = {}
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]

        def read(r: Any, part: Sequence[str] = part) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for fid in part:
                p = client.partition_for(fid)
                pipe.get(keys.flow(p, fid))
                pipe.lrange(keys.history(p, fid), 0, -1)
            return pipe.execute()

        got = client.store.execute(read)
        for j, fid in enumerate(part):
            raw, hist = record_fields(got[2 * j]), got[2 * j + 1]
            events = []
            for entry in hist:
                ver, at, name, details = msgpack.unpackb(entry, raw=False,
                                                         unicode_errors="surrogateescape")
                events.append((int(ver), int(at), name, details or {}))
            out[fid] = FlowView(raw, events)
    return out


def read_effects(client: FlowClient) -> dict[tuple[str, str, int], int]:
    raw = client.store.execute(lambda r: r.hgetall(effects_key(client.namespace)))
    effects: dict[tuple[str, str, int], int] = defaultdict(int)
    for k in raw:  # one field per handler execution
        fid, state, fence, _run = k.decode().split(SEP)
        effects[(fid, state, int(fence))] += 1
    return dict(effects)


def audit(client: FlowClient, ids: dict[str, Sequence[str]], *,
          expect_failed: dict[str, str] | None = None, allow_due: bool = False,
          optional: Sequence[str] = ()) -> Audit:
    """Exact accounting over `ids` (type -> ids); see the module docstring.

    expect_failed: id -> text its error must contain (every other Flow must complete).
    allow_due: non-terminal Flows are fine when they rest due (not running, due <= now).
    optional: ids that may be missing (creates whose reply was lost), checked if present.
    """
    result = Audit()
    expect_failed = expect_failed or {}
    wanted = [i for group in ids.values() for i in group]
    views = read_flows(client, wanted + list(optional))
    effects = read_effects(client)
    by_flow: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for (fid, state, fence), n in effects.items():
        by_flow[fid].append((state, fence, n))
    store_now = client.store.execute(lambda r: r.time())
    store_now_ms = int(store_now[0]) * 1000 + int(store_now[1]) // 1000
    optional_set = set(optional)
    for fid, view in views.items():
        if not view.record:
            if fid not in optional_set:
                result.lost += 1
                result.problem(f"{fid}: lost (no record)")
            continue
        result.flows += 1
        result.views[fid] = view
        _audit_one(result, fid, view, by_flow.get(fid, []), expect_failed, allow_due,
                   store_now_ms)
    return result


def _accepted_outcomes(view: FlowView) -> tuple[dict[str, list[int]], set[int]]:
    """(state -> fencing tokens of accepted completing outcomes, every claimed fence)."""
    accepted: dict[str, list[int]] = defaultdict(list)
    claimed: set[int] = set()
    state, fence = "", 0
    for _, _, name, d in view.events:
        if name == "created":
            state = str(d.get("state", ""))
        elif name == "claimed":
            fence = int(d.get("fencing", 0))
            claimed.add(fence)
        elif name == "transitioned":
            accepted[str(d.get("from"))].append(fence)
            state = str(d.get("to"))
        elif name == "completed":
            accepted[state].append(int(d.get("fencing", fence)))
    return accepted, claimed


def _audit_one(result: Audit, fid: str, view: FlowView, effects: list[tuple[str, int, int]],
               expect_failed: dict[str, str], allow_due: bool, store_now_ms: int) -> None:
    versions = [e[0] for e in view.events]
    if versions != list(range(1, len(versions) + 1)):
        result.problem(f"{fid}: history versions not contiguous: {versions[:20]}")
    if int(view.record.get(b"ver", b"0")) != len(versions):
        result.problem(f"{fid}: record version {view.record.get(b'ver')} != "
                       f"{len(versions)} history events")
    _audit_state(result, fid, view, expect_failed, allow_due, store_now_ms)
    _audit_effects(result, fid, view, effects)


def _audit_state(result: Audit, fid: str, view: FlowView, expect_failed: dict[str, str],
                 allow_due: bool, store_now_ms: int) -> None:
    state = view.state
    n_completed = sum(e[2] == "completed" for e in view.events)
    if state == "completed":
        result.completed += 1
        if n_completed != 1:
            result.duplicates += 1
            result.problem(f"{fid}: {n_completed} completed events")
    elif state == "failed":
        result.failed += 1
        error = view.record.get(b"error", b"").decode("utf-8", "replace")
        if fid not in expect_failed:
            result.problem(f"{fid}: failed unexpectedly: {error}")
        elif expect_failed[fid] not in error:
            result.problem(f"{fid}: error {error!r} lacks {expect_failed[fid]!r}")
    elif state in ("running", "cancelled") or not allow_due:
        result.not_terminal += 1
        result.problem(f"{fid}: ends {state} (not terminal)")
    else:
        due = view.record.get(b"due")
        if due is None or int(due) > store_now_ms:
            result.not_terminal += 1
            result.problem(f"{fid}: rests in {state} but is not due now (due={due})")
    if fid in expect_failed and state != "failed":
        result.problem(f"{fid}: expected to fail, ends {state}")


def _audit_effects(result: Audit, fid: str, view: FlowView,
                   effects: list[tuple[str, int, int]]) -> None:
    accepted, claimed = _accepted_outcomes(view)
    seen = {(s, f): n for s, f, n in effects}
    for st, fences in accepted.items():
        if len(set(fences)) > 1 or len(fences) > 1:
            result.duplicates += 1
            result.problem(f"{fid}: state {st} completed {len(fences)} times, fences {fences}")
        for fence in fences:
            if seen.get((st, fence), 0) != 1:
                result.problem(f"{fid}: accepted {st}@{fence} but its side effect was recorded "
                               f"{seen.get((st, fence), 0)} times")
    for st, fence, n in effects:
        if n > 1:
            result.duplicates += 1
            result.problem(f"{fid}: handler of {st}@{fence} ran {n} times under one fence")
        if fence not in claimed:
            result.problem(f"{fid}: side effect under fence {fence}, which was never claimed")
        if fence not in accepted.get(st, []):
            result.reexecutions += 1


def recovery_ms(views: dict[str, FlowView], kills: dict[int, int]) -> list[int]:
    """Per Flow lease of a killed worker: ms from the kill to the Flow's next claim."""
    out = []
    for view in views.values():
        pending: int | None = None
        for _, at, name, d in view.events:
            if name == "lease_released":
                m = _WORKER_IN_CAUSE.search(str(d.get("cause", "")))
                pid = int(m.group(1)) if m else None
                pending = kills.get(pid) if pid is not None else None
            elif name == "claimed" and pending is not None:
                out.append(max(0, at - pending))
                pending = None
    return out


def reclaim_ms(views: dict[str, FlowView], kills: dict[int, int]) -> list[int]:
    """Per Flow lease of a killed worker: ms from the kill to its lease_released event (the
    supervisor's part of the recovery: reap, then reclaim)."""
    out = []
    for view in views.values():
        for _, at, name, d in view.events:
            if name == "lease_released":
                m = _WORKER_IN_CAUSE.search(str(d.get("cause", "")))
                if m and int(m.group(1)) in kills:
                    out.append(max(0, at - kills[int(m.group(1))]))
    return out


def dist(values: Sequence[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else None}


# --------------------------------------------------------------------------- scenarios


@dataclass
class Result:
    name: str
    summary: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict, repr=False)  # not in the JSON

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"scenario": self.name, "ok": self.ok, **self.summary,
                "problems": self.problems}

    def check(self) -> None:
        """For tests: fail with every problem listed."""
        if self.problems:
            raise AssertionError(f"{self.name}: {len(self.problems)} problem(s):\n" +
                                 "\n".join(self.problems) + "\n" +
                                 json.dumps(self.summary, indent=1, default=str))


def _finish(result: Result, a: Audit, extra: dict[str, Any] | None = None) -> Result:
    result.summary.update(a.summary())
    result.summary.update(extra or {})
    result.problems.extend(a.problems)
    return result


def _namespace(tag: str) -> str:
    return f"chaos{tag}{secrets.token_hex(3)}"


def kill_storm(lab: Lab, *, flows: int = 500, workflows: int = 100, kill_every: float = 0.2,
               storm_s: float = 4.0, processes: int = 3, concurrency: int = 4,
               spare_last: bool = True, min_kills: int = 0, recovery_limit_ms: int = 1000,
               finish_timeout: float = 90.0) -> Result:
    """1. SIGKILL a random ready worker every `kill_every` s while Flows are being enqueued
    and processed; all finish, and a killed worker's Flows are claimed again within
    `recovery_limit_ms` of its death (p99, from history).

    With `spare_last` the storm never takes a group's last ready worker: a replacement needs
    more than a second to boot on a loaded 2-core machine, so recovery within 1 s needs a
    survivor; a group wiped out entirely is what supervisor_kill covers."""
    res = Result("kill_storm")
    ns = _namespace("ks")
    client = lab.client(ns)
    client.register_policy(QUEUE_TYPE, RetryPolicy(max_crashes=NO_CRASH_LIMIT))
    d = lab.start_daemon(ns, groups_config(q_processes=processes, wf_processes=processes,
                                           concurrency=concurrency),
                         env={"FF_CHAOS_MAX_CRASHES": str(NO_CRASH_LIMIT)})
    producer = Producer(client, flows, workflows, spread_s=storm_s, batch=10)
    kills: dict[int, int] = {}
    started = time.monotonic()
    producer.start()
    # The schedule runs `storm_s`, longer (up to 3x) until `min_kills` landed: a loaded
    # machine has fewer ready workers to pick from.
    while (time.monotonic() - started < storm_s
           or (len(kills) < min_kills and time.monotonic() - started < 3 * storm_s)):
        time.sleep(kill_every)  # the fault schedule
        victim = pick_victim(d, spare_last)
        if victim is not None:
            try:
                os.kill(victim, signal.SIGKILL)
                kills[victim] = now_ms()
            except ProcessLookupError:
                pass
    producer.join(60)
    if producer.error is not None:
        res.problems.append(f"producer failed: {producer.error!r}")
    total = producer.total_acked()
    wait_terminal(client, total, finish_timeout, f"{total} Flows finished after the storm")
    a = audit(client, all_ids(producer))
    rec = recovery_ms(a.views, kills)
    res.details.update(kills=kills, views=a.views)
    summary = {"kills": len(kills), "kills_holding_flows": len({
                   int(m.group(1)) for v in a.views.values() for e in v.events
                   if e[2] == "lease_released"
                   and (m := _WORKER_IN_CAUSE.search(str(e[3].get("cause", ""))))}),
               "recovery_ms": dist(rec), "reclaim_ms": dist(reclaim_ms(a.views, kills)),
               "worker_restarts": restarts(d)}
    stop_daemon(d)
    if not rec and kills:
        res.problems.append("no killed worker held a Flow: the storm hit nothing")
    p99 = percentile(rec, 99)
    if p99 is not None and p99 > recovery_limit_ms:
        res.problems.append(f"recovery p99 {p99} ms > {recovery_limit_ms} ms")
    return _finish(res, a, summary)


def supervisor_kill(lab: Lab, *, flows: int = 300, workflows: int = 60, slow: int = 4,
                    finish_timeout: float = 60.0) -> Result:
    """2. SIGKILL the supervisor mid-run: its workers exit; a second daemon finishes
    everything, including Flows whose leases were left to expire."""
    res = Result("supervisor_kill")
    ns = _namespace("sk")
    client = lab.client(ns)
    slow_ids = [f"q-{i}" for i in range(1, slow + 1)]
    env = {"FF_CHAOS_SLOW_FIRST_S": "60"}
    groups = groups_config(lease="2s")
    d1 = lab.start_daemon(ns, groups, env=env)
    producer = produce_now(client, flows, workflows, slow=slow_ids)
    total = producer.total_acked()

    def slow_running() -> bool:
        return all((r := client.get(i)) is not None and r.state == "running" for i in slow_ids)

    wait_for(slow_running, 20, 0.05, what="the slow Flows running")
    wait_for(lambda: count_state(client, "completed") >= total // 5, 30, 0.05,
             what="20% completed")
    workers = [psutil.Process(p) for p in worker_pids(d1)]
    # The same incident takes one worker with it (an OOM kill of the whole unit would take
    # all): the leases that worker held can only come back by expiring.
    holder = client.get(slow_ids[0])
    holder_pid = int(holder.lease_owner.split(":")[-2]) if holder and holder.lease_owner else 0
    os.kill(d1.proc.pid, signal.SIGKILL)
    if holder_pid:
        os.kill(holder_pid, signal.SIGKILL)
    killed = time.monotonic()

    wait_for(lambda: all(process_gone(p) for p in workers), 10, 0.05,
             what="workers exited after the supervisor")
    workers_exit_s = time.monotonic() - killed
    left = total - count_state(client, "completed")
    still_running = sum(1 for i in slow_ids if (r := client.get(i)) and r.state == "running")
    d2 = lab.start_daemon(ns, groups, env=env)
    wait_terminal(client, total, finish_timeout, "the second daemon finishing everything")
    a = audit(client, all_ids(producer))
    stop_daemon(d2)
    # Slow Flows of the SIGKILLed worker come back when their leases expire; the other
    # workers exit on their own (parent gone) and release what they held on the way out.
    first_release = {i: next((str(e[3].get("cause")) for e in a.views[i].events
                              if e[2] == "lease_released"), None) for i in slow_ids}
    expired = sum(c == "expired" for c in first_release.values())
    if left <= 0:
        res.problems.append("nothing was left for the second daemon: the kill came too late")
    if expired == 0 or first_release[slow_ids[0]] != "expired":
        res.problems.append(f"the killed worker's leases were not reclaimed as expired: "
                            f"{first_release}")
    if any(c not in ("expired", "drain", "drain deadline") for c in first_release.values()):
        res.problems.append(f"slow Flows freed in an unexpected way: {first_release}")
    return _finish(res, a, {"workers_exit_s": round(workers_exit_s, 3),
                            "left_for_second_daemon": left, "slow_released_by": first_release,
                            "abandoned_running": still_running, "expired_reclaimed": expired})


def store_crash(lab: Lab, *, flows: int = 600, workflows: int = 100, down_s: float = 2.0,
                spread_s: float = 4.0, finish_timeout: float = 90.0) -> Result:
    """3. kill -9 the redis-server (AOF always) during enqueue and processing and restart it
    on the same dir after `down_s`: every acknowledged create exists, the daemon reconnects
    by itself (readiness false while down, true after), nothing stays running."""
    res = Result("store_crash")
    ns = _namespace("sc")
    client = lab.client(ns, timeout_s=1.0)
    d = lab.start_daemon(ns, groups_config(), store={"socket_timeout": "1s"})
    producer = Producer(client, flows, workflows, spread_s=spread_s, batch=10)
    producer.start()
    wait_for(lambda: producer.total_acked() >= (flows + workflows) // 3, 30, 0.05,
             what="a third of the Flows created")
    lab.server.kill()
    killed = time.monotonic()
    try:
        wait_for(lambda: not d.ready(), down_s, 0.02,
                 what="/readyz false while the store is down")
        unready_after: float | None = time.monotonic() - killed
    except AssertionError as exc:
        unready_after = None
        res.problems.append(str(exc))
    time.sleep(max(0.0, down_s - (time.monotonic() - killed)))  # the fault schedule
    lab.server.restart()
    restarted = time.monotonic()
    try:
        d.wait_ready(30.0)
        ready_after = time.monotonic() - restarted
    except AssertionError as exc:
        ready_after = None
        res.problems.append(f"readiness did not come back: {exc}")
    producer.join(60)
    if producer.error is not None:
        res.problems.append(f"producer failed: {producer.error!r}")
    total = producer.total_acked()
    wait_terminal(client, total, finish_timeout, "every acknowledged Flow finished")
    optional = [i for ids in producer.uncertain.values() for i in ids]
    a = audit(client, all_ids(producer), optional=optional)
    uncertain_created = sum(1 for i in optional if i in a.views)
    summary = {"acked": total, "failed_create_calls": producer.failures,
               "uncertain_creates": len(optional), "uncertain_that_exist": uncertain_created,
               "unready_after_s": unready_after, "ready_again_after_s": ready_after,
               "worker_restarts": restarts(d)}
    stop_daemon(d)
    if producer.failures == 0:
        res.problems.append("no create failed: the store was not down during enqueue")
    return _finish(res, a, summary)


def store_stall(lab: Lab, *, flows: int = 600, workflows: int = 100, stall_s: float = 5.0,
                socket_timeout_s: float = 1.0, finish_timeout: float = 90.0) -> Result:
    """4. SIGSTOP the redis-server for `stall_s`, then SIGCONT: store calls fail within a
    bound instead of hanging, nothing is double-completed, processing resumes."""
    res = Result("store_stall")
    ns = _namespace("ss")
    client = lab.client(ns, timeout_s=socket_timeout_s)
    d = lab.start_daemon(ns, groups_config(lease="3s"),
                         store={"socket_timeout": f"{socket_timeout_s:g}s"})
    producer = produce_now(client, flows, workflows)
    total = producer.total_acked()
    wait_for(lambda: count_state(client, "completed") >= total // 5, 30, 0.05,
             what="20% completed")
    probe = lab.client(ns, timeout_s=socket_timeout_s).connect()  # a pooled connection,
    probe.store.execute(lambda r: r.get("chaos-probe"))  # as the workers hold theirs
    lab.server.stop_process()
    stopped = time.monotonic()
    t0 = time.monotonic()
    try:
        probe.store.execute(lambda r: r.get("chaos-probe"))
        res.problems.append("a store call succeeded while the store was stopped")
    except StoreError:
        pass
    probe_s = time.monotonic() - t0
    bound = 2 * socket_timeout_s + 1.0
    if probe_s > bound:
        res.problems.append(f"a store call took {probe_s:.1f}s to fail during the stall "
                            f"(bound {bound:g}s)")
    time.sleep(max(0.0, stall_s - (time.monotonic() - stopped)))  # the fault schedule
    before = count_state(client, "completed")  # store stopped: -1 (tolerated below)
    lab.server.cont_process()
    resumed = time.monotonic()
    wait_for(lambda: count_state(client, "completed") > max(before, 0), 20, 0.05,
             what="processing resumed")
    resume_s = time.monotonic() - resumed
    wait_terminal(client, total, finish_timeout, "every Flow finished after the stall")
    a = audit(client, all_ids(producer))
    summary = {"probe_fail_s": round(probe_s, 3), "resume_s": round(resume_s, 3),
               "worker_restarts": restarts(d),
               "stale_outcomes": d.log().count("outcome rejected (lease lost)")}
    stop_daemon(d)
    if summary["worker_restarts"]:  # bounded store calls keep the claim loops turning
        res.problems.append(f"{summary['worker_restarts']} worker(s) were restarted during "
                            "the stall (taken for hung?)")
    return _finish(res, a, summary)


def drain_under_load(lab: Lab, *, flows: int = 1000, slow: int = 3, drain_timeout: float = 2.0,
                     finish_timeout: float = 90.0) -> Result:
    """5. SIGTERM while Flows are being processed: nothing lost; Flows not finished by the
    drain deadline are due again at once (not after their lease), then a new daemon
    finishes everything."""
    res = Result("drain_under_load")
    ns = _namespace("dr")
    client = lab.client(ns)
    slow_ids = [f"q-{i}" for i in range(1, slow + 1)]
    env = {"FF_CHAOS_SLOW_FIRST_S": "60"}
    groups = groups_config(workflow=False, q_processes=2, lease="60s")
    d1 = lab.start_daemon(ns, groups, env=env, daemon={"drain_timeout": f"{drain_timeout:g}s"})
    producer = produce_now(client, flows, 0, slow=slow_ids)
    total = producer.total_acked()
    wait_for(lambda: count_state(client, "completed", [QUEUE_TYPE]) >= total // 5, 30, 0.05,
             what="20% completed")
    os.kill(d1.proc.pid, signal.SIGTERM)
    termed = time.monotonic()
    try:
        code = d1.proc.wait(drain_timeout + 15)
    except subprocess.TimeoutExpired:
        code = None
        res.problems.append("the daemon did not exit after its drain")
    exit_s = time.monotonic() - termed
    if code != 0:
        res.problems.append(f"the daemon exited {code} after SIGTERM")
    mid = audit(client, all_ids(producer), allow_due=True)
    left = total - mid.completed
    causes = Counter(
        str(v.events[-1][3].get("cause", ""))[:40] for v in mid.views.values()
        if v.state != "completed" and v.events and v.events[-1][2] == "lease_released")
    if left <= slow:
        res.problems.append(f"only {left} Flows were unfinished at the drain: no load")
    crashed = {i: v.record.get(b"crashes", b"0").decode() for i, v in mid.views.items()
               if v.record.get(b"crashes", b"0") not in (b"0", b"")}
    if crashed:  # a deploy's drain is not a crash: three deploys must not fail a Flow
        res.problems.append(f"the drain counted crashes on Flows: {crashed}")
    res.problems.extend(f"after drain: {p}" for p in mid.problems)
    d2 = lab.start_daemon(ns, groups, env=env)
    wait_terminal(client, total, finish_timeout, "the second daemon finishing everything")
    a = audit(client, all_ids(producer))
    stop_daemon(d2)
    return _finish(res, a, {"exit_s": round(exit_s, 3), "exit_code": code,
                            "unfinished_at_drain": left, "release_causes": dict(causes)})


def poison_pill(lab: Lab, *, flows: int = 200, poison: str = "q-poison",
                finish_timeout: float = 60.0) -> Result:
    """6. A handler SIGKILLs its own process for one Flow: that Flow fails with the crash
    count in its error after max_crashes (3), every other Flow completes."""
    res = Result("poison_pill")
    ns = _namespace("pp")
    client = lab.client(ns)
    d = lab.start_daemon(ns, groups_config(workflow=False), env={"FF_CHAOS_POISON": poison})
    client.create(poison, QUEUE_TYPE, "queued")
    producer = produce_now(client, flows - 1, 0)
    ids = all_ids(producer)
    ids[QUEUE_TYPE].insert(0, poison)
    wait_terminal(client, flows, finish_timeout, "every Flow terminal")
    a = audit(client, ids, expect_failed={poison: "crashed worker 3 times"})
    record = client.get(poison)
    hit = [int(v.record.get(b"crashes", b"0") or 0) for i, v in a.views.items() if i != poison]
    summary = {"bystanders_crashed": sum(1 for n in hit if n),
               "bystander_max_crashes": max(hit, default=0),
               "poison_error": (record.error or b"").decode() if record else None,
               "poison_crashes": record.crash_count if record else None,
               "worker_restarts": restarts(d)}
    stop_daemon(d)
    if summary["bystander_max_crashes"] > 2:  # one crash short of max_crashes: runs alone
        res.problems.append(f"a bystander was blamed for {summary['bystander_max_crashes']} "
                            "crashes: crash suspects are not run in isolation")
    return _finish(res, a, summary)


SCENARIOS: dict[str, Callable[..., Result]] = {
    "kill_storm": kill_storm,
    "supervisor_kill": supervisor_kill,
    "store_crash": store_crash,
    "store_stall": store_stall,
    "drain_under_load": drain_under_load,
    "poison_pill": poison_pill,
}
