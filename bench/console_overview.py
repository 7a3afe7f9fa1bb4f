"""How fast the web console answers with a big store: 50 types x 10 states, 1,000,000 Flows.

    .venv/bin/python -m bench.console_overview [--flows 1000000] [--types 50] [--states 10]
        [--requests 30] [--json out.json]

Starts a private redis-server (no persistence: the store's write speed is not what is
measured), creates the Flows with pipelined create_many (plus some completed and failed ones
for the throughput figures), serves the console in this process on a free loopback port, and
times over HTTP:

- `overview_cold`: GET / with the stats read forced on every request (the cache emptied
  first): what the one request per refresh interval costs; the target is < 200 ms;
- `overview_cached`: GET / within the refresh interval (what every other open page costs);
- `browse_first` / `browse_deep`: a page of 50 Flows of one state, first and after 100 pages;
- `flow`: one Flow's page.

Prints one JSON document (milliseconds: p50, p95, max per measurement).
"""

from __future__ import annotations

import argparse
import http.client
import json
import re
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import RedisServer  # also puts the checkout on sys.path
from ferricflowd.config import load_config
from ferricflowd.flow.client import CreateSpec, FlowClient
from ferricflowd.flow.outcomes import complete, fail
from ferricflowd.flow.queue import QueueClient
from tests.servers import free_port

NAMESPACE = "bench-console"


def populate(client: FlowClient, flows: int, types: int, states: int) -> float:
    """`flows` Flows spread over types x states, due over the last hour; seconds taken."""
    started = time.perf_counter()
    now = int(time.time() * 1000)
    chunk = 20_000
    for lo in range(0, flows, chunk):
        specs = []
        for i in range(lo, min(lo + chunk, flows)):
            t, s = i % types, (i // types) % states
            specs.append(CreateSpec(f"f-{i}", f"type-{t:02d}", f"state-{s}", b"payload", {},
                                    None, now - (i % 3_600_000), 0, False, None, None, None))
        client.create_many(specs)
    # A few finished ones, for the completed/failed per minute and the chart.
    for t in range(types):
        for i in range(20):
            client.create(f"done-{t}-{i}", f"type-{t:02d}", "finishing", b"")
        QueueClient(client).queue(type=f"type-{t:02d}").worker(state="finishing") \
            .run_until_idle(lambda job: fail(b"no") if job.id.endswith("7") else complete())
    return time.perf_counter() - started


def serve(config_path: Path) -> tuple[Any, int]:
    import uvicorn

    from ferricflowd.console.app import create_app
    from ferricflowd.console.server import bind

    config = load_config(config_path, env={})
    app = create_app(config, config.store.client(config.store_url), daemon_url=None)
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, lifespan="off",
                                           access_log=False))
    sock = bind(config.console.listen)
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.01)
    return app.app.state.console, sock.getsockname()[1]


def timed_get(port: int, path: str) -> tuple[float, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    started = time.perf_counter()
    conn.request("GET", path)
    reply = conn.getresponse()
    body = reply.read().decode()
    took = (time.perf_counter() - started) * 1000
    conn.close()
    assert reply.status == 200, (path, reply.status, body[:300])
    return took, body


def summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))], 1),
            "max": round(ordered[-1], 1), "n": len(ordered)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.console_overview")
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--types", type=int, default=50)
    parser.add_argument("--states", type=int, default=10)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp:
        server = RedisServer(Path(tmp) / "redis", durable=False).start()
        try:
            print(json.dumps(run(args, Path(tmp), server.url), indent=2))
        finally:
            server.terminate()


def run(args: argparse.Namespace, tmp: Path, url: str,
        namespace: str = NAMESPACE) -> dict[str, Any]:
    client = FlowClient.from_url(url, namespace=namespace, durability="relaxed")
    created_s = populate(client, args.flows, args.types, args.states)
    config = tmp / "flows.toml"
    config.write_text(
        f'[store]\nurl = "{url}"\nnamespace = "{namespace}"\ndurability = "relaxed"\n'
        f'[daemon]\ndata_dir = "{tmp}"\nlisten = "127.0.0.1:1"\n'
        f'[console]\nlisten = "127.0.0.1:{free_port()}"\nrefresh = "1h"\n'
        '[groups.g]\ntype = "type-00"\nstates = ["state-0"]\nhandler = "m:f"\n')
    console, port = serve(config)
    timed_get(port, "/")  # warm up: templates compiled, the ring's hour filled in
    cold, cached = [], []
    for _ in range(args.requests):
        console.overview.expire()  # what the first request after `refresh` pays
        took, body = timed_get(port, "/")
        cold.append(took)
        cached.append(timed_get(port, "/")[0])
    rows = len(re.findall(r"<tr", body))
    store_ms = [console.overview.snapshot().took_ms]
    first, deep = [], []
    path = "/types/type-07/state-3?limit=50"
    for _ in range(args.requests):
        first.append(timed_get(port, path)[0])
    _, page = timed_get(port, path)
    nxt, pages = path, 0
    while pages < 100:  # walk up to 100 pages in
        found = re.search(r'rel="next" href="([^"]+)"', page)
        if found is None:
            break
        nxt = found.group(1).replace("&amp;", "&")
        _, page = timed_get(port, nxt)
        pages += 1
    for _ in range(args.requests):
        deep.append(timed_get(port, nxt)[0])
    flow = [timed_get(port, f"/flows/f-{args.flows // 2}")[0] for _ in range(args.requests)]
    info = client.store.execute(lambda r: r.info("memory"))
    return {
        "flows": args.flows, "types": args.types, "states": args.states,
        "created_in_s": round(created_s, 1), "used_memory_mb": info["used_memory"] >> 20,
        "overview_rows": rows, "stats_read_ms": store_ms[0],
        "overview_cold_ms": summary(cold), "overview_cached_ms": summary(cached),
        "browse_first_ms": summary(first), "browse_deep_ms": summary(deep),
        "browse_deep_page": pages,
        "flow_ms": summary(flow), "python": sys.version.split()[0],
    }


if __name__ == "__main__":
    main()
