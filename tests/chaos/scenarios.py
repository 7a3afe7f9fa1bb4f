"""Chaos scenarios of issue 4, shared by the short form (tests/chaos/) and the long form
(`python -m bench.chaos`): real redis-server, real `ferricflowd run` daemons, real signals.

Every scenario ends with `audit()` (tests/chaos/audit.py: exact accounting over every Flow
it created) and returns a JSON-able summary whose "problems" list is empty when it passed.
Waits are conditions with deadlines; sleeps appear only as the fault schedule.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil

from ferricflowd.flow.errors import StoreError
from ferricflowd.flow.policy import RetryPolicy
from tests.chaos.audit import (
    WORKER_IN_CAUSE,
    Audit,
    audit,
    dist,
    percentile,
    reclaim_ms,
    recovery_ms,
)
from tests.chaos.lab import (
    QUEUE_TYPE,
    Lab,
    Producer,
    all_ids,
    count_state,
    groups_config,
    now_ms,
    pick_victim,
    produce_now,
    restarts,
    stop_daemon,
    wait_terminal,
    worker_pids,
)
from tests.daemons import process_gone
from tests.helpers import wait_for

NO_CRASH_LIMIT = 1_000_000  # kill storms: every Flow must finish, however often it is hit


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
                   and (m := WORKER_IN_CAUSE.search(str(e[3].get("cause", ""))))}),
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
