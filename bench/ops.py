"""Operator commands under load (issue 20): browse paging, purge memory, bulk requeue.

    python -m bench.ops browse  [--flows 1000000] [--page 1000] [--partitions 4]
    python -m bench.ops purge   [--flows 100000]
    python -m bench.ops requeue [--flows 100000] [--rate 2000] [--interrupt-at 0.4]

Each starts its own redis-server (never the one on 6379) and prints one JSON document.

- browse: N queued Flows (created in batches, so many share a due time), paged through
  oldest first and newest first; the time per page at the start and at the end.
- purge: INFO used_memory before N Flows are created (after a warm-up cycle of 10,000), once
  they are completed, and after `ferricflowd purge` (the Python API the command calls)
  deleted them with their history.
- requeue: two `ferricflowd run` daemons drain a stream of `live` jobs while N failed
  `batch` Flows are requeued by the real `ferricflowd requeue` command (interrupted with
  SIGINT at a fraction and run again, with --interrupt-at); the live throughput per second
  before and during the run, and every batch Flow requeued exactly once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import REPO, precompile
from ferricflowd import FlowClient, FlowFilter, complete, fail
from ferricflowd.flow.wire import CreateSpec, LeaseRequest
from tests.daemons import daemon_env, free_port, write_config
from tests.servers import RedisServer


def live(job: Any) -> None:
    """The daemons' handler for the live work: complete at once."""
    return None


def _create(fc: FlowClient, type: str, n: int, prefix: str, chunk: int = 5_000) -> None:
    for start in range(0, n, chunk):
        fc.create_many([CreateSpec(f"{prefix}{i:07}", type, "queued", b"p")
                        for i in range(start, min(n, start + chunk))])


def _finish(fc: FlowClient, type: str, n: int, outcome: Any) -> None:
    done = 0
    while done < n:
        jobs = fc.claim(type, LeaseRequest("bench", ["queued"], 600_000), limit=1_000).jobs
        if not jobs:
            break
        fc.apply_outcomes([(j, outcome) for j in jobs])
        done += len(jobs)


def _ms(seconds: list[float]) -> float:
    return round(statistics.median(seconds) * 1000, 2)


def bench_browse(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    with RedisServer(root / "browse", durable=False).start() as server:
        fc = FlowClient.from_url(server.url, namespace="b", partitions=args.partitions,
                                 durability="relaxed")
        started = time.monotonic()
        _create(fc, "q", args.flows, "f")
        out: dict[str, Any] = {"flows": args.flows, "partitions": args.partitions,
                               "page": args.page,
                               "create_s": round(time.monotonic() - started, 1)}
        for order in ("oldest", "newest"):
            times: list[float] = []
            seen, cursor = 0, None
            while True:
                t0 = time.perf_counter()
                page = fc.browse("q", FlowFilter(states=("queued",)), order=order,
                                 limit=args.page, cursor=cursor)
                times.append(time.perf_counter() - t0)
                seen += len(page.items)
                cursor = page.cursor
                if cursor is None:
                    break
            full = times[:-1] or times  # the last call may be a short remainder
            out[order] = {"pages": len(times), "flows_seen": seen,
                          "first_10_pages_ms": _ms(full[:10]), "last_10_pages_ms": _ms(full[-10:]),
                          "p50_ms": _ms(full), "p99_ms": round(sorted(full)[int(len(full) * .99)]
                                                               * 1000, 2),
                          "ratio_last_to_first": round(_ms(full[-10:]) / _ms(full[:10]), 2)}
        fc.close()
        return out


def bench_purge(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    with RedisServer(root / "purge", durable=True).start() as server:
        fc = FlowClient.from_url(server.url, namespace="p", partitions=args.partitions)
        fc.connect()

        def used() -> int:
            time.sleep(1.0)  # the store's cron shrinks emptied hash tables (hz 10)
            return int(fc.store.execute(lambda r: r.info("memory"))["used_memory"])

        cold = used()
        # One cycle of 10,000 Flows first: the store's own buffers (the Lua call argument
        # arrays, the script client's reply buffers) grow to their working size once; what
        # the purge must give back is what the measured Flows took.
        _create(fc, "warmup", 10_000, "w")
        _finish(fc, "warmup", 10_000, complete(b"result"))
        fc.purge("warmup", FlowFilter.of(state="completed"), rate=None, batch=500)
        before = used()
        _create(fc, "done", args.flows, "c")
        _finish(fc, "done", args.flows, complete(b"result"))
        full = used()
        keys_full = fc.store.execute(lambda r: r.dbsize())
        t0 = time.monotonic()
        result = fc.purge("done", FlowFilter.of(state="completed"), rate=None, batch=500)
        took = time.monotonic() - t0
        after = used()
        out = {"flows": args.flows, "purged": result.done, "purge_s": round(took, 2),
               "used_memory_cold": cold, "used_memory_before": before,
               "used_memory_completed": full, "used_memory_after": after,
               "after_vs_before_pct": round((after - before) / before * 100, 2),
               "keys_completed": keys_full, "keys_after": fc.store.execute(lambda r: r.dbsize()),
               "history_left": sum(1 for _ in fc.store.execute(
                   lambda r: list(r.scan_iter(match="{p:*}:h:*", count=10_000))))}
        fc.close()
        return out


class _Live:
    """Samples the live jobs' completions once a second; tops the backlog up only if it
    ever runs low (the run starts with a backlog that outlasts it, so the workers are
    never short of work and no producer competes for the CPU while it is measured)."""

    def __init__(self, fc: FlowClient, low: int) -> None:
        self.fc, self.low = fc, low
        self.samples: list[tuple[float, int]] = []
        self.stop = threading.Event()
        self.topped_up = 0
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            stats = self.fc.stats("live")
            self.samples.append((time.monotonic(), stats.counts.get("completed", 0)))
            if stats.counts.get("queued", 0) < self.low:
                _create(self.fc, "live", 4 * self.low, f"l{self.topped_up:04}-", chunk=2_000)
                self.topped_up += 1
            self.stop.wait(max(0.0, 1.0 - (time.monotonic() - self.samples[-1][0])))

    def wait_for(self, ready: Callable[[list[tuple[float, int]]], bool],
                 timeout: float = 120.0) -> None:
        """Until `ready(samples)` (the daemons booted, a window has its samples)."""
        deadline = time.monotonic() + timeout
        while not ready(list(self.samples)):
            if time.monotonic() > deadline:
                raise RuntimeError("the live load made no progress; see the daemons' logs")
            time.sleep(0.1)

    def rate(self, start: float, end: float) -> float:
        inside = [(t, n) for t, n in self.samples if start <= t <= end]
        if len(inside) < 2:
            return 0.0
        return (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])


def _daemons(root: Path, url: str, n: int,
             args: argparse.Namespace) -> list[subprocess.Popen[bytes]]:
    procs = []
    store = {"url": url, "namespace": "r", "partitions": args.partitions,
             "durability": "strict" if args.profile == "durable" else "relaxed"}
    for i in range(n):
        cfg = write_config(root / f"d{i}.toml",
                           {"live": {"type": "live", "states": ["queued"],
                                     "handler": "bench.ops:live"}},
                           store,
                           {"data_dir": str(root / f"data{i}"),
                            "listen": f"127.0.0.1:{free_port()}"},
                           {"concurrency": 8, "batch_size": 100})
        log = open(root / f"d{i}.log", "wb")  # noqa: SIM115 - closed with the process
        procs.append(subprocess.Popen([sys.executable, "-m", "ferricflowd", "run", "--config",
                                       str(cfg)], cwd=REPO, env=daemon_env(), stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True))
    return procs


def _requeue(url: str, rate: float, interrupt: float | None, fc: FlowClient,
             n: int) -> tuple[list[dict[str, Any]], int]:
    """Run `ferricflowd requeue`, SIGINT it once `interrupt` of the Flows are requeued;
    the runs' JSON summaries and exit codes."""
    cmd = [sys.executable, "-m", "ferricflowd", "requeue", "batch", "--state", "failed",
           "--yes", "--json", "--rate", str(rate), "--url", url, "--namespace", "r"]
    reports, codes = [], []
    proc = subprocess.Popen(cmd, cwd=REPO, env=daemon_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    if interrupt is not None:
        while proc.poll() is None:
            if fc.count_matching("batch", FlowFilter.of(state="queued")) >= interrupt * n:
                proc.send_signal(signal.SIGINT)
                break
            time.sleep(0.2)
    out, _ = proc.communicate()
    reports.append(json.loads(out))
    codes.append(proc.returncode)
    if interrupt is not None:
        again = subprocess.run(cmd, cwd=REPO, env=daemon_env(), capture_output=True)
        reports.append(json.loads(again.stdout))
        codes.append(again.returncode)
    return reports, codes[-1] if codes[0] in (0, 130) else codes[0]


def bench_requeue(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    # No automatic AOF rewrite: the live backlog made up front would start one (a fork and
    # a copy of the whole dataset) in the middle of the measured windows.
    with RedisServer(root / "requeue", durable=args.profile == "durable",
                     args=("--auto-aof-rewrite-percentage", "0")).start() as server:
        fc = FlowClient.from_url(server.url, namespace="r", partitions=args.partitions,
                                 durability="relaxed")
        t0 = time.monotonic()
        _create(fc, "batch", args.flows, "b")
        _finish(fc, "batch", args.flows, fail(b"boom"))
        seeded = time.monotonic() - t0
        _create(fc, "live", args.backlog, "l-first-")
        daemons = _daemons(root, server.url, 2, args)
        live_load = _Live(fc, max(1, args.backlog // 20))
        try:
            live_load.thread.start()
            # The warm-up counts from the daemons' first completions: a cold start (a fresh
            # checkout compiles every module) can take longer than the warm-up itself.
            live_load.wait_for(lambda s: bool(s) and s[-1][1] > 0)
            time.sleep(args.warmup)
            base_start = time.monotonic()
            time.sleep(args.baseline)
            live_load.wait_for(lambda s: sum(t >= base_start for t, _ in s) >= 2)
            run_start = time.monotonic()
            reports, code = _requeue(server.url, args.rate, args.interrupt_at, fc, args.flows)
            run_end = time.monotonic()
            time.sleep(3)
        finally:
            live_load.stop.set()
            live_load.thread.join(10)
            for d in daemons:
                os.killpg(d.pid, signal.SIGTERM)
            for d in daemons:
                d.wait(30)
        if not live_load.rate(base_start, run_start):
            for i in range(2):
                print((root / f"d{i}.log").read_text()[-3000:], file=sys.stderr)
        base = live_load.rate(base_start, run_start)
        during = live_load.rate(run_start, run_end)
        rewound = _rewound_counts(fc, args.flows)
        out = {"profile": args.profile, "flows": args.flows, "rate_limit": args.rate,
               "seed_s": round(seeded, 1), "requeue_s": round(run_end - run_start, 1),
               "requeued_per_s": round(args.flows / (run_end - run_start)),
               "exit_code": code, "runs": [{k: r[k] for k in ("done", "skipped", "refused",
                                                               "interrupted")} for r in reports],
               "live_per_s_before": round(base), "live_per_s_during": round(during),
               "live_drop_pct": round((1 - during / base) * 100, 1) if base else None,
               "live_backlog_topped_up": live_load.topped_up,
               "batch_queued": fc.stats("batch").counts.get("queued", 0),
               "rewound_once": rewound.get(1, 0),
               "rewound_other": {k: v for k, v in rewound.items() if k != 1}}
        fc.close()
        return out


def _rewound_counts(fc: FlowClient, n: int) -> dict[int, int]:
    """How many batch Flows have 0, 1, 2, ... rewound events in their history."""
    counts: dict[int, int] = {}
    keys = fc.keys
    ids = [f"b{i:07}" for i in range(n)]
    for start in range(0, n, 5_000):
        chunk = ids[start:start + 5_000]
        got = fc.store.batch([("LRANGE", keys.history(fc.partition_for(i), i), 0, -1)
                              for i in chunk])
        for events in got:
            k = sum(b"rewound" in e for e in events)
            counts[k] = counts.get(k, 0) + 1
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ops", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("browse", "purge", "requeue"))
    parser.add_argument("--flows", type=int, default=None)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--page", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=2_000)
    parser.add_argument("--interrupt-at", type=float, default=None)
    parser.add_argument("--profile", choices=("fast", "durable"), default="durable")
    parser.add_argument("--backlog", type=int, default=2_500_000,
                        help="live jobs created before the daemons start (requeue)")
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--baseline", type=float, default=15.0)
    args = parser.parse_args(argv)
    if args.flows is None:
        args.flows = 1_000_000 if args.what == "browse" else 100_000
    precompile()
    run = {"browse": bench_browse, "purge": bench_purge, "requeue": bench_requeue}[args.what]
    with tempfile.TemporaryDirectory(prefix="ff-bench-ops-") as tmp:
        result = run(args, Path(tmp))
    print(json.dumps({"bench": f"ops.{args.what}", **result}, indent=2))


if __name__ == "__main__":
    main()
