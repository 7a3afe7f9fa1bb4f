"""The workloads of issue 5, written once against the adapter interface (systems/base.py).

Every function takes a set-up adapter and the sizes, and returns one repetition's metrics
(numbers, plus a few descriptive strings). Times are wall-clock seconds on the bench's side.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from bench.common import EVENTS, LAT, PAYLOAD, log, percentile, wait_counter
from bench.handlers import lat_payload
from bench.systems.base import ProcGroup, System

T = TypeVar("T")
BATCH = 1_000  # W2's batch size (and how W1/W4 pre-enqueue)
BIG_BATCH = 5_000  # M1/S1 backlog building


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


def _items(n: int, prefix: str = "j") -> list[tuple[str, bytes]]:
    return [(f"{prefix}{i}", PAYLOAD) for i in range(n)]


def _drain_timeout(n: int) -> float:
    return max(120.0, n / 50.0)


# --------------------------------------------------------------------------- W1 W2 W3 W4


def w1_drain(sys: System, n: int) -> dict[str, Any]:
    """N jobs pre-enqueued, then the workers start; jobs/s with start-up included."""
    for part in chunks(_items(n), BATCH):
        sys.enqueue_many("noop", part)
    t0 = time.perf_counter()
    workers = sys.start_workers("noop")
    try:
        prog = wait_counter(sys.s.done, n, timeout_s=_drain_timeout(n), t0=t0,
                            what="W1 done", alive=workers.alive)
    finally:
        workers.stop()
    total = prog.samples[-1][0]
    return {"jobs_per_s": n / total, "total_s": total, "first_done_s": prog.first_at(1),
            "steady_jobs_per_s": prog.steady_rate(n), "runner": workers.runner}


def w2_enqueue(sys: System, n: int, reset: Callable[[], None]) -> dict[str, Any]:
    """One producer: N single enqueue calls, then N in batches of BATCH."""
    items = _items(n)
    t0 = time.perf_counter()
    for jid, payload in items:
        sys.enqueue("noop", jid, payload)
    single = time.perf_counter() - t0
    reset()
    t0 = time.perf_counter()
    for part in chunks(items, BATCH):
        sys.enqueue_many("noop", part)
    batched = time.perf_counter() - t0
    return {"single_jobs_per_s": n / single, "batched_jobs_per_s": n / batched,
            "batch_size": BATCH}


def w3_latency(sys: System, n: int, interval_s: float = 0.010) -> dict[str, Any]:
    """Idle workers; N jobs one every 10 ms; handler start minus enqueue time."""
    r = sys.s.r
    workers = sys.start_workers("lat")
    try:
        # Warm up: the workers are up, connected and idle before the first timed job.
        for i in range(3):
            sys.enqueue("lat", f"warm{i}", lat_payload())
        wait_counter(sys.s.done, 3, timeout_s=60, what="W3 warm-up", alive=workers.alive)
        time.sleep(0.5)
        r.delete(LAT, "bench:done")
        start = time.perf_counter()
        for i in range(n):
            pause = start + i * interval_s - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
            sys.enqueue("lat", f"l{i}", lat_payload())
        wait_counter(sys.s.done, n, timeout_s=60, what="W3 done", alive=workers.alive)
    finally:
        workers.stop()
    lat_ms = [float(v) * 1000 for v in r.lrange(LAT, 0, -1)]
    return {"p50_ms": percentile(lat_ms, 50), "p99_ms": percentile(lat_ms, 99),
            "max_ms": max(lat_ms), "jobs": len(lat_ms), "runner": workers.runner}


def w4_workflow(sys: System, n: int) -> dict[str, Any]:
    """N three-state flows (a -> b -> c -> complete) pre-started; flows/s incl. start-up."""
    ids = [f"c{i}" for i in range(n)]
    for part in chunks(ids, BATCH):
        sys.enqueue_chains(part)
    t0 = time.perf_counter()
    workers = sys.start_workers("chain")
    try:
        prog = wait_counter(sys.s.done, n, timeout_s=_drain_timeout(3 * n), t0=t0,
                            what="W4 done", alive=workers.alive)
    finally:
        workers.stop()
    total = prog.samples[-1][0]
    # No "steady" rate: a system that runs the oldest work first finishes most flows at the
    # end (all a, then all b, then all c), so the done counter is no measure of the pace.
    return {"flows_per_s": n / total, "steps_per_s": 3 * n / total, "total_s": total,
            "first_done_s": prog.first_at(1), "runner": workers.runner}


# --------------------------------------------------------------------------- R1 D1


def _start_sleepers(sys: System, n: int, sleep_s: float) -> ProcGroup:
    return sys.start_workers("sleep", concurrency=max(1, n // 2),
                             env={"BENCH_SLEEP_S": str(sleep_s)})


def _events(sys: System) -> list[tuple[str, int, float]]:
    out = []
    for raw in sys.s.r.lrange(EVENTS, 0, -1):
        jid, pid, at = raw.decode().split()
        out.append((jid, int(pid), float(at)))
    return out


def r1_recovery(sys: System, n: int, cap_s: float = 120.0, sleep_s: float = 2.0
                ) -> dict[str, Any]:
    """N flows sleeping 2 s on 2 processes; SIGKILL the process running the most; seconds
    until every Flow it was running is claimed again (ferricflowd: history `claimed`
    events; peers: the handler starting again). A system that cannot run all N at once is
    killed after 10 s with what it runs then."""
    workers = _start_sleepers(sys, n, sleep_s)
    try:
        sys.enqueue_many("sleep", _items(n, "r"))
        try:
            wait_counter(sys.s.started, n, timeout_s=10, what="R1 all started",
                         alive=workers.alive)
        except TimeoutError:
            pass
        now = time.time()
        events = _events(sys)
        running = [(jid, pid) for jid, pid, at in events if at > now - sleep_s + 0.05]
        if not running:
            raise RuntimeError(f"R1: nothing running after 10 s ({len(events)} started)")
        per_pid = Counter(pid for _, pid in running)
        victim = per_pid.most_common(1)[0][0]
        killed = [jid for jid, pid in running if pid == victim]
        t_kill = time.time()
        os.kill(victim, signal.SIGKILL)
        log(f"R1 killed pid {victim} running {len(killed)} of {len(running)} in flight; "
            f"split {dict(per_pid)}")
        took = sys.recovered_after(killed, t_kill, cap_s)
    finally:
        workers.stop(grace_s=2.0)
    out: dict[str, Any] = {"killed_flows": len(killed), "in_flight": len(running),
                           "runner": workers.runner, "processes_with_work": len(per_pid)}
    if took is None:
        out["recovery"] = f"> {cap_s:.0f} s"
    else:
        out["recovery_s"] = took
    return out


def d1_drain(sys: System, n: int, cap_s: float = 60.0) -> dict[str, Any]:
    """N handlers in flight sleeping 1 s; SIGTERM; seconds to exit and Flows lost."""
    workers = _start_sleepers(sys, n, 1.0)
    try:
        sys.enqueue_many("sleep", _items(n, "d"))
        try:
            wait_counter(sys.s.started, n, timeout_s=10, what="D1 all started",
                         alive=workers.alive)
        except TimeoutError:
            pass  # a system that cannot hold N in flight is measured with what it has
        in_flight = sys.s.started() - sys.s.done()
        t0 = time.perf_counter()
        workers.signal(signal.SIGTERM)
        exited = workers.wait(cap_s)
        exit_s = time.perf_counter() - t0
    finally:
        workers.stop(grace_s=1.0)
    out: dict[str, Any] = {"in_flight_at_term": in_flight, "runner": workers.runner}
    if exited:
        out["exit_s"] = exit_s
    else:
        out["exit"] = f"> {cap_s:.0f} s"
    out.update(sys.drain_accounting(n))
    return out


# --------------------------------------------------------------------------- M1


def queued_memory(sys: System, n: int) -> dict[str, Any]:
    """INFO used_memory delta per job for N queued jobs (batches of BIG_BATCH)."""
    before = sys.s.used_memory()
    for part in chunks(_items(n, "m"), BIG_BATCH):
        sys.enqueue_many("noop", part)
    after = sys.s.used_memory()
    return {"queued_bytes_per_flow": (after - before) / n, "baseline_bytes": before}


WorkloadFn = Callable[[System, dict[str, int]], dict[str, Any]]
