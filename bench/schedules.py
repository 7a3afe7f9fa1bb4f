"""Schedules at scale (issue 19): N schedules due in the same second, fired by two daemons;
then the CPU of idle daemons holding N schedules that are not due.

    .venv/bin/python -m bench.schedules [--n 10000] [--partitions 1] [--idle-s 30]

Starts a durable private redis-server (tests.servers) and two `ferricflowd run` daemons on
it (their config declares one hourly schedule: a daemon needs a group or a schedule), creates
N one-shot schedules due at the same second T through the API, and reports when their Flows
were created (Flow created_at - T: the last one is "all fired within"). Then it creates N
daily cron schedules and samples both daemons' CPU (supervisor process, psutil) for --idle-s
seconds. Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psutil

from ferricflowd import FlowClient
from ferricflowd.flow.schedule_spec import Schedule
from tests.servers import RedisServer, free_port

ROOT = Path(__file__).resolve().parents[1]


def start_daemon(work: Path, name: str, url: str, namespace: str, partitions: int) -> Any:
    data = work / name
    config = work / f"{name}.toml"
    config.write_text(
        f'[store]\nurl = "{url}"\nnamespace = "{namespace}"\npartitions = {partitions}\n'
        f'[daemon]\ndata_dir = "{data}"\nlisten = "127.0.0.1:{free_port()}"\n'
        '[schedules.bench-hourly]\ntype = "bench"\ncron = "0 * * * *"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRICFLOWD_")}
    env["PYTHONPATH"] = str(ROOT)
    log = open(work / f"{name}.log", "wb")  # noqa: SIM115  # kept open for the daemon's life
    return subprocess.Popen([sys.executable, "-m", "ferricflowd", "run", "--config",
                             str(config)], stdout=log, stderr=subprocess.STDOUT, env=env,
                            cwd=work, start_new_session=True)


def put_all(client: FlowClient, specs: list[Schedule], threads: int = 16) -> float:
    """Create the schedules from `threads` clients at once (each put is one fsynced call)."""
    t = time.perf_counter()
    clients = [client] + [FlowClient.from_url(client.store.url, namespace=client.namespace)
                          for _ in range(threads - 1)]

    def put(k: int) -> None:
        for spec in specs[k::threads]:
            clients[k].schedules.put(spec)

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(put, range(threads)))
    for c in clients[1:]:
        c.close()
    return time.perf_counter() - t


def created_lags(client: FlowClient, n: int, due: int) -> list[int]:
    refs = [(client.keys.partition_of(f"s{i}"), f"s{i}:{due}") for i in range(n)]
    lags = []
    for k in range(0, n, 1000):
        for rec in client.get_many(refs[k:k + 1000], payload=False):
            if rec is not None:
                lags.append(rec.created_at_ms - due)
    return sorted(lags)


def cpu_percent(pids: list[int], seconds: float) -> list[float]:
    procs = [psutil.Process(p) for p in pids]
    before = [sum(p.cpu_times()[:2]) for p in procs]
    time.sleep(seconds)
    after = [sum(p.cpu_times()[:2]) for p in procs]
    return [round(100 * (a - b) / seconds, 3) for a, b in zip(after, before, strict=True)]


def run(n: int, partitions: int, idle_s: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ff-sched-bench-"))
    server = RedisServer(work / "redis").start()
    daemons = []
    try:
        client = FlowClient.from_url(server.url, namespace="bench", partitions=partitions)
        client.connect()
        daemons = [start_daemon(work, f"d{i}", server.url, "bench", partitions)
                   for i in range(2)]
        time.sleep(3)  # both daemons up and idle before the schedules exist
        due = (int(time.time()) + 5 + n // 2000) * 1000  # after the puts are done
        put_s = put_all(client, [Schedule(f"s{i}", "bench", at_ms=due) for i in range(n)])
        left = due - time.time() * 1000
        assert left > 500, f"creating {n} schedules took too long ({put_s:.1f}s)"
        deadline = due / 1000 + 30
        lags: list[int] = []
        while time.time() < deadline:
            time.sleep(0.5)
            lags = created_lags(client, n, due) if time.time() * 1000 > due + 1000 else []
            if len(lags) == n:
                break
        fired = {"n": n, "created": len(lags), "put_s": round(put_s, 2),
                 "lag_ms": {"p50": lags[len(lags) // 2] if lags else None,
                            "p99": lags[int(len(lags) * 0.99) - 1] if lags else None,
                            "max": lags[-1] if lags else None}}
        put_s = put_all(client, [Schedule(f"daily{i}", "bench", cron="0 3 * * *",
                                          timezone="Europe/Berlin") for i in range(n)])
        time.sleep(3)  # one sweep has seen them
        idle = cpu_percent([d.pid for d in daemons], idle_s)
        return {"partitions": partitions, "fire_same_second": fired,
                "idle": {"schedules": n + 1, "seconds": idle_s, "cpu_percent": idle},
                "cpus": os.cpu_count()}
    finally:
        for d in daemons:
            os.killpg(d.pid, signal.SIGTERM)
        for d in daemons:
            try:
                d.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(d.pid, signal.SIGKILL)
        server.terminate()


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.schedules", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--idle-s", type=float, default=30.0)
    args = ap.parse_args()
    print(json.dumps(run(args.n, args.partitions, args.idle_s), indent=2))


if __name__ == "__main__":
    main()
