"""What one redis-py round trip costs a worker process with N handler threads:

    python -m bench.incr_threads [--threads 1,2,4,8,16] [--calls 20000] [--json F]

The bench handlers do `INCR bench:done` through redis-py (bench/handlers.py). This runs that
call alone, N threads sharing one client in one process against a private redis-server (no
persistence), and reports calls/s and the process's CPU per call: with more threads each
call also pays GIL hand-offs (its socket I/O releases the GIL; the reply wakes a thread that
must take it back), which is most of a short handler's cost in W1 (bench/README.md).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import BenchStore


def measure(url: str, threads: int, calls: int) -> dict[str, Any]:
    client = redis.Redis.from_url(url)
    client.incr("bench:warm")
    per_thread = max(1, calls // threads)

    def loop() -> None:
        for _ in range(per_thread):
            client.incr("bench:done")

    workers = [threading.Thread(target=loop) for _ in range(threads)]
    t0, c0 = time.perf_counter(), time.process_time()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    client.close()
    n = per_thread * threads
    return {"threads": threads, "calls": n, "calls_per_s": n / wall,
            "client_cpu_us_per_call": cpu / n * 1e6}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.incr_threads", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2,4,8,16", help="comma list of thread counts")
    ap.add_argument("--calls", type=int, default=20_000, help="calls per thread count")
    ap.add_argument("--json", type=Path, help="write the rows here too")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ff-incr-") as tmp:
        with BenchStore("fast", Path(tmp)) as store:
            rows = [measure(store.url, int(n), args.calls) for n in args.threads.split(",")]
    text = json.dumps(rows, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print("\n| threads | calls/s | client CPU per call |\n|---|---|---|")
    for row in rows:
        print(f"| {row['threads']} | {row['calls_per_s']:,.0f} | "
              f"{row['client_cpu_us_per_call']:.1f} µs |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
