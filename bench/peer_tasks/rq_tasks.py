"""RQ job functions for the bench (`rq worker-pool -n 2 bench`)."""

from __future__ import annotations

from rq import Worker

from bench import handlers


def noop(payload: str) -> None:
    handlers.noop()


def lat(payload: str) -> None:
    handlers.lat(payload)


def sleep(job_id: str) -> None:
    handlers.sleep(job_id)  # the bench passes the job's id as the argument


def chain_a(payload: str) -> None:
    return None


def chain_b(payload: str) -> None:
    return None


def chain_c(payload: str) -> None:
    handlers.noop()


class BenchWorker(Worker):
    """RQ's default Worker (a work horse forked per job); naming it as the worker class makes
    the pool import this module, and so the job functions, before it forks."""
