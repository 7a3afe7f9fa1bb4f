"""Where ferricflowd's time goes in W1 (queue drain) or W4 (3-state workflow):

    python -m bench.profile_ff W1 [--n 20000] [--profile fast|durable] [--no-py-spy]

Runs the workload once with the fallback runner (2 worker processes whose pids we know),
samples both workers with py-spy (if installed), and reports:

- wall time and CPU seconds of redis-server and of each worker (who is the bottleneck);
- INFO commandstats: calls and server microseconds per command, per job;
- py-spy: the hottest functions by self time and by inclusive time, and the split of
  samples between the claim loop, the handler threads and the outcome flusher.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil

from bench.common import BenchStore, bin_path, log, wait_counter
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.profile_ff")
    ap.add_argument("workload", choices=["W1", "W4"])
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--profile", default="fast", choices=["fast", "durable"])
    ap.add_argument("--no-py-spy", action="store_true")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON report here")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--concurrency", type=int, default=None, help="handler threads/process")
    ap.add_argument("--batch-size", type=int, default=None, help="claim batch size")
    args = ap.parse_args(argv)
    n = args.n or (20_000 if args.workload == "W1" else 5_000)
    work = Path(tempfile.mkdtemp(prefix="ffprof-"))
    spy = None if args.no_py_spy else (bin_path("py-spy") or shutil.which("py-spy"))
    with BenchStore(args.profile, work / "redis") as store:
        sysa = Adapter(runner="fallback")
        sysa.setup(store, work / "logs")
        kind = "noop" if args.workload == "W1" else "chain"
        conc, batch = SETTINGS[kind]
        SETTINGS[kind] = (args.concurrency or conc, args.batch_size or batch)
        if kind == "noop":
            for part in chunks(_items(n), BATCH):
                sysa.enqueue_many("noop", part)
        else:
            for part in chunks([f"c{i}" for i in range(n)], BATCH):
                sysa.enqueue_chains(part)
        r = store.r
        r.config_resetstat()
        redis_pid = int(r.info("server")["process_id"])
        redis_cpu0 = cpu_seconds(redis_pid)
        t0 = time.perf_counter()
        workers = sysa.start_workers(kind)
        spies = []
        if spy:
            for pid in workers.pids:
                out = work / f"pyspy-{pid}.txt"
                spies.append((out, subprocess.Popen(
                    [spy, "record", "-p", str(pid), "-f", "raw", "-o", str(out), "--nolineno",
                     "-r", "250", "--nonblocking"],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        cpu_last = {pid: 0.0 for pid in workers.pids}

        def read_done() -> int:
            for pid in workers.pids:  # remember CPU while the workers still live
                cpu_last[pid] = max(cpu_last[pid], cpu_seconds(pid))
            return store.done()

        prog = wait_counter(read_done, n, timeout_s=600, t0=t0, interval_s=0.02,
                            what=f"{args.workload} done", alive=workers.alive)
        wall = prog.samples[-1][0]
        redis_cpu = cpu_seconds(redis_pid) - redis_cpu0
        stats = commandstats(r)
        workers.signal(signal.SIGTERM)
        workers.wait(15)
        for _, proc in spies:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.send_signal(signal.SIGINT)
                proc.wait(timeout=10)
        workers.stop()
        sysa.teardown()
    units = n if kind == "noop" else n * 3
    report: dict[str, Any] = {
        "workload": args.workload, "n": n, "profile": args.profile, "wall_s": wall,
        "concurrency_batch": SETTINGS[kind],
        "rate_per_s": n / wall, "steady_per_s": prog.steady_rate(n),
        "redis_cpu_s": redis_cpu, "redis_cpu_share_of_wall": redis_cpu / wall,
        "worker_cpu_s": cpu_last, "cores": os.cpu_count(),
        "commandstats_top": {
            k: {"calls": v["calls"], "usec": v["usec"], "usec_per_call": v["usec_per_call"],
                "calls_per_job_step": v["calls"] / units, "usec_per_job_step": v["usec"] / units}
            for k, v in sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:15]},
    }
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    roles: Counter[str] = Counter()
    total = 0
    for out, _ in spies:
        o, i, ro, t = collapse(out)
        own.update(o)
        incl.update(i)
        roles.update(ro)
        total += t
    if total:
        report["py_spy_samples"] = total
        report["py_spy_roles_pct"] = {k: round(100 * v / total, 1) for k, v in roles.items()}
        report["py_spy_self_pct"] = [(f, round(100 * c / total, 1))
                                     for f, c in own.most_common(args.top)]
        report["py_spy_inclusive_pct"] = [(f, round(100 * c / total, 1))
                                          for f, c in incl.most_common(args.top * 2)]
    text = json.dumps(report, indent=2, default=str)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    log(f"py-spy raw stacks and logs in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
