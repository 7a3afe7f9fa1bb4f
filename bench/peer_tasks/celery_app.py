"""Celery app for the bench: `celery -A bench.peer_tasks.celery_app worker ...`.

Broker: $BENCH_REDIS_URL. $BENCH_CELERY_ACKS=1 selects `acks_late=True` with prefetch 1;
otherwise Celery's defaults (early ack, prefetch multiplier 4). No result backend.
"""

from __future__ import annotations

import os

from celery import Celery

from bench import handlers

QUEUE = "bench"


def make_app(url: str, acks_late: bool) -> Celery:
    app = Celery("bench", broker=url, set_as_current=False)
    app.conf.update(
        task_default_queue=QUEUE,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
    if acks_late:
        app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1)
    return app


app = make_app(os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:1/0"),
               os.environ.get("BENCH_CELERY_ACKS") == "1")


@app.task(name="bench.noop")
def noop(payload: str) -> None:
    handlers.noop()


@app.task(name="bench.lat")
def lat(payload: str) -> None:
    handlers.lat(payload)


@app.task(name="bench.sleep")
def sleep(job_id: str) -> None:
    handlers.sleep(job_id)  # the bench passes the job's id as the argument


@app.task(name="bench.chain_a")
def chain_a(payload: str) -> None:
    return None


@app.task(name="bench.chain_b")
def chain_b(payload: str) -> None:
    return None


@app.task(name="bench.chain_c")
def chain_c(payload: str) -> None:
    handlers.noop()
