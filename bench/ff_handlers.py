"""ferricflowd handlers for the bench: named by the daemon (`bench.ff_handlers:noop`)
and by the fallback runner (bench/ff_worker.py). They only call bench/handlers.py."""

from __future__ import annotations

from typing import Any

from bench import handlers
from ferricflowd import Workflow, complete, transition

QUEUE_TYPE = "bq"
CHAIN_TYPE = "bchain"


def noop(job: Any) -> None:
    handlers.noop()


async def noop_async(job: Any) -> None:
    await handlers.noop_async()


def lat(job: Any) -> None:
    handlers.lat(job.payload)


def sleep(job: Any) -> None:
    handlers.sleep(job.id)


# W4: a -> b -> c -> complete. Only the last state does the bookkeeping (one INCR per Flow).
chain = Workflow(type=CHAIN_TYPE, initial_state="a")


@chain.state("a")
def chain_a(job: Any) -> Any:
    return transition("b")


@chain.state("b")
def chain_b(job: Any) -> Any:
    return transition("c")


@chain.state("c")
def chain_c(job: Any) -> Any:
    handlers.noop()
    return complete()


QUEUE_HANDLERS = {"noop": noop, "noop_async": noop_async, "lat": lat, "sleep": sleep}
