"""How a W1 job's CPU splits between ferricflowd and its handler's `INCR`:

    python -m bench.split_cost [--profile fast|durable|both] [--n 20000] [--reps 3]
                               [--threads 8] [--json F]

One in-process queue worker (`concurrency = --threads`, `batch_size = 100`, the daemon's
defaults) drains N pre-enqueued jobs three times per repetition, on a private redis-server
emptied before each drain: with a handler that does nothing, with W1's handler (`INCR
bench:done` through one redis-py client shared by the threads, as bench/handlers.py does),
and with its `async def` twin (the same `INCR` through one redis.asyncio client on the
worker's event loop). Per job it reports the worker process's CPU and redis-server's CPU.
The first drain is what ferricflowd itself costs; the differences are what the handler's one
round trip costs.

One process rather than the daemon's two, and no metrics hooks: this splits the cost, it
does not reproduce W1's rate (`python -m bench.profile_ff` does that).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import redis
import redis.asyncio

from bench.common import PROFILES, BenchStore, log
from bench.keys import DONE
from bench.systems.base import THREADS
from bench.workloads import BATCH, _items, chunks
from ferricflowd import QueueClient

HANDLERS = ("nothing", "incr", "incr_async")
NUMBERS = ("jobs_per_s", "worker_cpu_us", "store_cpu_us")


def drain(store: BenchStore, handler: str, n: int, threads: int) -> dict[str, float]:
    """N jobs enqueued, then one worker handles them all; rate and CPU per job."""
    store.reset()
    flows = QueueClient.from_url(store.url, namespace="split",
                                 durability="strict" if store.durable else "relaxed")
    bookkeeping = redis.Redis.from_url(store.url)
    try:
        queue = flows.queue(type="bq")
        for part in chunks(_items(n), BATCH):
            queue.enqueue_many(part)
        run = _handler(handler, store.url, bookkeeping)
        server = psutil.Process(store.server.pid)
        s0, c0, t0 = sum(server.cpu_times()[:2]), time.process_time(), time.perf_counter()
        handled = queue.worker(concurrency=threads, batch_size=100).run_until_idle(run, 600)
        wall = time.perf_counter() - t0
        cpu, server_cpu = time.process_time() - c0, sum(server.cpu_times()[:2]) - s0
        counted = int(bookkeeping.get(DONE) or 0)
    finally:
        bookkeeping.close()
        flows.close()
    if handled != n or counted != (0 if handler == "nothing" else n):
        raise RuntimeError(f"{handler}: handled {handled} of {n}, {counted} counted")
    return {"jobs_per_s": n / wall, "worker_cpu_us": 1e6 * cpu / n,
            "store_cpu_us": 1e6 * server_cpu / n}


def _handler(name: str, url: str, bookkeeping: redis.Redis) -> Callable[[Any], Any]:
    if name == "nothing":
        return lambda job: None
    if name == "incr":
        return lambda job: bookkeeping.incr(DONE)
    clients: list[redis.asyncio.Redis] = []  # made on the worker's loop, by its first job

    async def incr_async(job: Any) -> None:
        if not clients:
            clients.append(redis.asyncio.Redis.from_url(url))
        await clients[0].incr(DONE)

    return incr_async


def measure(profile: str, n: int, reps: int, threads: int, work: Path) -> dict[str, Any]:
    """Every handler's drain, `reps` rounds in turn; medians and each repetition's figures."""
    runs: dict[str, list[dict[str, float]]] = {h: [] for h in HANDLERS}
    with BenchStore(profile, work / profile) as store:
        for rep in range(reps):
            for handler in HANDLERS:
                runs[handler].append(drain(store, handler, n, threads))
                log(f"{profile} rep {rep + 1} {handler}: {runs[handler][-1]['jobs_per_s']:,.0f}"
                    " jobs/s")
    median = {h: {k: statistics.median(r[k] for r in rows) for k in NUMBERS}
              for h, rows in runs.items()}
    return {"profile": profile, "n": n, "threads": threads, "median": median,
            "handler_round_trip": {h: {k: median[h][k] - median["nothing"][k]
                                       for k in NUMBERS[1:]} for h in HANDLERS[1:]},
            "each": runs}


def table(reports: list[dict[str, Any]]) -> str:
    lines = ["| profile | handler | jobs/s | worker CPU per job | store CPU per job |",
             "|---|---|---|---|---|"]
    for rep in reports:
        for handler, row in rep["median"].items():
            lines.append(f"| {rep['profile']} | {handler} | {row['jobs_per_s']:,.0f} | "
                         f"{row['worker_cpu_us']:.1f} µs | {row['store_cpu_us']:.1f} µs |")
        for handler, diff in rep["handler_round_trip"].items():
            lines.append(f"| {rep['profile']} | {handler} − nothing | | "
                         f"{diff['worker_cpu_us']:.1f} µs | {diff['store_cpu_us']:.1f} µs |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.split_cost", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--profile", default="both", choices=[*PROFILES, "both"])
    ap.add_argument("--n", type=int, default=20_000, help="jobs per drain (default %(default)s)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions (default %(default)s)")
    ap.add_argument("--threads", type=int, default=THREADS,
                    help="handler threads (default %(default)s)")
    ap.add_argument("--json", type=Path, help="write the report here too")
    args = ap.parse_args(argv)
    profiles = PROFILES if args.profile == "both" else (args.profile,)
    with tempfile.TemporaryDirectory(prefix="ff-split-") as tmp:
        reports = [measure(p, args.n, args.reps, args.threads, Path(tmp)) for p in profiles]
    text = json.dumps(reports, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print()
    print(table(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
