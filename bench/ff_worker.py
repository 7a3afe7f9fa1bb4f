"""One ferricflowd worker process for the bench's fallback runner (no daemon):

    python -m bench.ff_worker --url URL --kind noop|noop_async|lat|sleep|chain [--concurrency 8]
        [--batch-size 100] [--lease-ms 30000] [--durability strict|relaxed]

It runs `QueueClient...worker(...).run(handler)` (or the chain Workflow's worker) until
SIGTERM/SIGINT, which drains: no more claims, unstarted jobs released, running handlers finish.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from typing import Any

from bench import ff_handlers
from ferricflowd import QueueClient, WorkflowClient


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.ff_worker")
    ap.add_argument("--url", required=True)
    ap.add_argument("--namespace", default="bench")
    ap.add_argument("--kind", required=True,
                    choices=["noop", "noop_async", "lat", "sleep", "chain"])
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=100)
    ap.add_argument("--lease-ms", type=int, default=30_000)
    ap.add_argument("--block-ms", type=int, default=5_000)
    ap.add_argument("--durability", default="strict", choices=["strict", "relaxed"])
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    opts = dict(concurrency=args.concurrency, batch_size=args.batch_size,
                lease_ms=args.lease_ms, block_ms=args.block_ms)
    worker: Any
    if args.kind == "chain":
        client: Any = WorkflowClient.from_url(args.url, namespace=args.namespace,
                                              durability=args.durability)
        worker = ff_handlers.chain.bind(client.flow_client).worker(**opts)
        run = worker.run
    else:
        client = QueueClient.from_url(args.url, namespace=args.namespace,
                                      durability=args.durability)
        worker = client.queue(type=ff_handlers.QUEUE_TYPE).worker(**opts)
        handler = ff_handlers.QUEUE_HANDLERS[args.kind]

        def run() -> int:
            return worker.run(handler)

    def on_signal(signum: int, frame: Any) -> None:
        worker.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    run()
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
