"""Dramatiq actors for the bench: `dramatiq bench.peer_tasks.dramatiq_tasks -p 2 -t N`.

Broker: RedisBroker on $BENCH_REDIS_URL; with $BENCH_DRAMATIQ_ASYNCIO=1 it also gets the AsyncIO
middleware, which runs the `async def` actor (noop_async) on an event loop thread.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from bench import handlers

broker = RedisBroker(url=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"))
if os.environ.get("BENCH_DRAMATIQ_ASYNCIO") == "1":
    from dramatiq.middleware.asyncio import AsyncIO

    broker.add_middleware(AsyncIO())
dramatiq.set_broker(broker)
OPTS = {"max_retries": 0}


@dramatiq.actor(actor_name="noop", **OPTS)
def noop(payload: str) -> None:
    handlers.noop()


@dramatiq.actor(actor_name="noop_async", **OPTS)
async def noop_async(payload: str) -> None:
    await handlers.noop_async()


@dramatiq.actor(actor_name="lat", **OPTS)
def lat(payload: str) -> None:
    handlers.lat(payload)


@dramatiq.actor(actor_name="sleep", **OPTS)
def sleep(job_id: str) -> None:
    handlers.sleep(job_id)  # the bench passes the job's id as the argument


@dramatiq.actor(actor_name="chain_a", **OPTS)
def chain_a(payload: str) -> None:
    return None


@dramatiq.actor(actor_name="chain_b", **OPTS)
def chain_b(payload: str) -> None:
    return None


@dramatiq.actor(actor_name="chain_c", **OPTS)
def chain_c(payload: str) -> None:
    handlers.noop()
