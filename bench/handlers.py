"""Handler bodies every system's tasks call, so all systems do exactly the same work.

Each process keeps one redis client to the bench store (URL from $BENCH_REDIS_URL).

- ``noop``: ``INCR bench:done`` and nothing else (W1, W2, W4, M1); ``noop_async`` is the same
  for `async def` handlers, through one redis.asyncio client per event loop (W1's async rows);
- ``lat``: record handler start minus the enqueue time carried in the payload (W3), then INCR;
- ``sleep``: record the start (job id, pid, time) and INCR bench:started, sleep
  $BENCH_SLEEP_S seconds, INCR bench:done (R1, D1).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

import redis
import redis.asyncio

from bench.keys import DONE, EVENTS, LAT, PAYLOAD, STARTED

_client: redis.Redis | None = None
_lock = threading.Lock()
_async_clients: dict[asyncio.AbstractEventLoop, redis.asyncio.Redis] = {}


def client() -> redis.Redis:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = redis.Redis.from_url(os.environ["BENCH_REDIS_URL"])
    return _client


def noop() -> None:
    client().incr(DONE)


async def noop_async() -> None:
    loop = asyncio.get_running_loop()
    aclient = _async_clients.get(loop)
    if aclient is None:  # the loop's thread only: no lock needed
        aclient = _async_clients[loop] = redis.asyncio.Redis.from_url(
            os.environ["BENCH_REDIS_URL"])
    await aclient.incr(DONE)


def lat_payload() -> bytes:
    """A 100-byte payload that starts with the enqueue time (unix seconds)."""
    stamp = f"{time.time():.6f} ".encode()
    return stamp + PAYLOAD[len(stamp):]


def lat(payload: bytes | str) -> None:
    start = time.time()
    if isinstance(payload, str):
        payload = payload.encode()
    sent = float(payload.split(b" ", 1)[0])
    pipe = client().pipeline(transaction=False)
    pipe.rpush(LAT, f"{start - sent:.6f}")
    pipe.incr(DONE)
    pipe.execute()


def sleep(job_id: str) -> None:
    pipe = client().pipeline(transaction=False)
    pipe.rpush(EVENTS, f"{job_id} {os.getpid()} {time.time():.6f}")
    pipe.incr(STARTED)
    pipe.execute()
    time.sleep(float(os.environ.get("BENCH_SLEEP_S", "1")))
    client().incr(DONE)
