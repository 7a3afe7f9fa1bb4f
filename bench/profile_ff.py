"""Where ferricflowd's time goes in W1 (queue drain) or W4 (3-state workflow):

    python -m bench.profile_ff W1 [--n 20000] [--profile fast|durable] [--no-py-spy]
                                  [--runner fallback|daemon] [--reps 3]

Runs the workload with 2 worker processes (the fallback runner's bench/ff_worker.py, or
the daemon's worker processes with their metrics hooks), samples both workers with py-spy
(if installed), and reports:

- wall time and CPU seconds of redis-server and of each worker (who is the bottleneck);
- worker CPU microseconds per job (or state step) in the steady part of the run (from 5 %
  to the end of the work, start-up imports excluded): less noisy than the rate;
- INFO commandstats: calls and server microseconds per command, per job;
- py-spy: the hottest functions by self time and by inclusive time, and the split of
  samples between the claim loop, the handler threads and the outcome flusher.

With --reps N the workload runs N times (fresh store each time) and the summary lines give
the median of each number.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from bench.common import BenchStore, bin_path, log, precompile, wait_counter
from bench.systems.base import THREADS
from bench.systems.ferricflowd_adapter import SETTINGS, Adapter
from bench.workloads import BATCH, _items, chunks


def cpu_seconds(pid: int) -> float:
    try:
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    except psutil.Error:
        return float("nan")


def commandstats(r: Any) -> dict[str, dict[str, float]]:
    return {k.removeprefix("cmdstat_"): v for k, v in r.info("commandstats").items()}


def collapse(path: Path) -> tuple[Counter[str], Counter[str], Counter[str], int]:
    """py-spy raw (collapsed) stacks -> self-time counter, inclusive counter, role counter."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return own, incl, roles, 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        own[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
        text = stack
        if "_handler_loop" in text:
            roles["handler threads"] += n
        elif "_flusher_loop" in text:
            roles["outcome flusher"] += n
        elif "run (ferricflowd/flow/worker.py" in text or "_turn" in text:
            roles["claim loop"] += n
        else:
            roles["other (start-up, imports)"] += n
    return own, incl, roles, total


def worker_pids(sysa: Adapter, workers: Any, runner: str) -> list[int]:
    """The 2 processes that run handlers: the fallback's own, or the daemon's children."""
    if runner == "fallback":
        return list(workers.pids)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        kids = [p for p in sysa.handler_pids(workers) if p not in workers.pids]
        if len(kids) >= 2:
            return kids
        time.sleep(0.01)
    raise RuntimeError("the daemon did not start 2 worker processes")


def start_spies(spy: str | None, pids: list[int], work: Path, rep: int,
                gil: bool = False) -> list[Any]:
    spies = []
    for pid in pids if spy else ():
        out = work / f"pyspy-{rep}-{pid}.txt"
        spies.append((out, subprocess.Popen(
            [spy, "record", "-p", str(pid), "-f", "raw", "-o", str(out), "--nolineno",
             "-r", "250", "--nonblocking", *(["--gil"] if gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
    return spies


def stop_spies(spies: list[Any]) -> None:
    for _, proc in spies:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
            proc.wait(timeout=10)


def enqueue(sysa: Adapter, kind: str, n: int) -> None:
    if kind == "noop":
        for part in chunks(_items(n), BATCH):
            sysa.enqueue_many("noop", part)
    else:
        for part in chunks([f"c{i}" for i in range(n)], BATCH):
            sysa.enqueue_chains(part)


class CpuWatch:
    """Polls the done counter and the workers' CPU; keeps the CPU at 5 % of the work so
    the steady CPU per job leaves out start-up (imports, connections, first claims)."""

    def __init__(self, store: Any, pids: list[int], n: int) -> None:
        self.store, self.pids, self.n = store, pids, n
        self.last = {pid: 0.0 for pid in pids}
        self.system = {pid: 0.0 for pid in pids}  # kernel share: syscalls, thread wake-ups
        self.mark: tuple[int, float] | None = None

    def read(self) -> int:
        for pid in self.pids:  # remember CPU while the workers still live
            try:
                t = psutil.Process(pid).cpu_times()
            except psutil.Error:
                continue
            self.last[pid] = max(self.last[pid], t.user + t.system)
            self.system[pid] = max(self.system[pid], t.system)
        done = int(self.store.done())
        if self.mark is None and done >= self.n // 20:
            self.mark = (done, sum(self.last.values()))
        return done

    def steady_us_per_unit(self, units_per_job: int) -> float:
        if self.mark is None or self.n <= self.mark[0]:
            return float("nan")
        cpu = sum(self.last.values()) - self.mark[1]
        return 1e6 * cpu / ((self.n - self.mark[0]) * units_per_job)


def run_once(args: argparse.Namespace, work: Path, rep: int, spy: str | None) -> dict[str, Any]:
    n = args.n
    kind = "noop" if args.workload == "W1" else "chain"
    units = 1 if kind == "noop" else 3
    with BenchStore(args.profile, work / f"redis-{rep}") as store:
        sysa = Adapter(runner=args.runner)
        sysa.setup(store, work / f"logs-{rep}")
        enqueue(sysa, kind, n)
        r = store.r
        r.config_resetstat()
        redis_pid = int(r.info("server")["process_id"])
        redis_cpu0 = cpu_seconds(redis_pid)
        t0 = time.perf_counter()
        workers = sysa.start_workers(kind)
        pids = worker_pids(sysa, workers, args.runner)
        spies = start_spies(spy, pids, work, rep, args.gil)
        watch = CpuWatch(store, pids, n)
        prog = wait_counter(watch.read, n, timeout_s=600, t0=t0, interval_s=0.02,
                            what=f"{args.workload} done", alive=workers.alive)
        wall = prog.samples[-1][0]
        redis_cpu = cpu_seconds(redis_pid) - redis_cpu0
        stats = commandstats(r)
        workers.signal(signal.SIGTERM)
        workers.wait(15)
        stop_spies(spies)
        workers.stop()
        sysa.teardown()
    log(f"rep {rep + 1}: {n / wall:,.0f}/s, worker CPU {sum(watch.last.values()):.2f}s, "
        f"steady {watch.steady_us_per_unit(units):.1f} us/unit")
    return {
        "wall_s": wall, "rate_per_s": n / wall, "steady_per_s": prog.steady_rate(n),
        "redis_cpu_s": redis_cpu, "redis_cpu_share_of_wall": redis_cpu / wall,
        "worker_cpu_s": watch.last, "worker_cpu_total_s": sum(watch.last.values()),
        "worker_system_cpu_s": sum(watch.system.values()),
        "worker_steady_cpu_us_per_unit": watch.steady_us_per_unit(units),
        "redis_cpu_us_per_unit": 1e6 * redis_cpu / (n * units),
        "commandstats_top": {
            k: {"calls": v["calls"], "usec": v["usec"], "usec_per_call": v["usec_per_call"],
                "calls_per_job_step": v["calls"] / (n * units),
                "usec_per_job_step": v["usec"] / (n * units)}
            for k, v in sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:15]},
        "spy_files": [str(out) for out, _ in spies],
    }


def spy_report(files: list[str], top: int) -> dict[str, Any]:
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    total = 0
    for out in files:
        o, i, ro, t = collapse(Path(out))
        own.update(o)
        incl.update(i)
        roles.update(ro)
        total += t
    if not total:
        return {}
    return {
        "py_spy_samples": total,
        "py_spy_roles_pct": {k: round(100 * v / total, 1) for k, v in roles.items()},
        "py_spy_self_pct": [(f, round(100 * c / total, 1)) for f, c in own.most_common(top)],
        "py_spy_inclusive_pct": [(f, round(100 * c / total, 1))
                                 for f, c in incl.most_common(top * 2)],
    }


MEDIAN_KEYS = ("rate_per_s", "steady_per_s", "wall_s", "redis_cpu_s", "worker_cpu_total_s",
               "worker_system_cpu_s", "worker_steady_cpu_us_per_unit", "redis_cpu_us_per_unit")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_ff")
    ap.add_argument("workload", choices=["W1", "W4"])
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--profile", default="fast", choices=["fast", "durable"])
    ap.add_argument("--runner", default="fallback", choices=["fallback", "daemon"],
                    help="fallback: 2 x bench.ff_worker; daemon: one daemon, processes = 2")
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--no-py-spy", action="store_true")
    ap.add_argument("--gil", action="store_true",
                    help="py-spy samples only the thread holding the GIL: where Python CPU goes")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--concurrency", type=int, default=None, help="handler threads/process")
    ap.add_argument("--batch-size", type=int, default=None, help="claim batch size")
    args = ap.parse_args(argv)
    args.n = args.n or (20_000 if args.workload == "W1" else 5_000)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    precompile()
    work = Path(tempfile.mkdtemp(prefix="ffprof-"))
    spy = None if args.no_py_spy else (bin_path("py-spy") or shutil.which("py-spy"))
    kind = "noop" if args.workload == "W1" else "chain"
    conc, batch = SETTINGS[kind]
    SETTINGS[kind] = (args.concurrency or conc or THREADS, args.batch_size or batch)
    runs = [run_once(args, work, rep, spy) for rep in range(args.reps)]
    report: dict[str, Any] = {
        "workload": args.workload, "n": args.n, "profile": args.profile,
        "runner": args.runner, "reps": args.reps, "concurrency_batch": SETTINGS[kind],
        "cores": os.cpu_count(),
        "median": {k: statistics.median(r[k] for r in runs) for k in MEDIAN_KEYS},
        "each": {k: [round(r[k], 2) for r in runs] for k in MEDIAN_KEYS},
        "last_run": runs[-1],
    }
    report.update(spy_report([f for r in runs for f in r["spy_files"]], args.top))
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    log(f"py-spy raw stacks and logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
