"""Handlers the chaos scenarios' daemon workers import (see tests/chaos/scenarios.py).

Every handler records its side effect before returning: HSET on the hash
`<FF_CHAOS_NS>:chaos:fx`, field `<id>\\x1f<state>\\x1f<fencing_token>\\x1f<run token>`,
where the run token is fresh per handler execution, so re-sending the write after a store
timeout cannot count one execution twice. The audit compares
these with the fencing tokens whose outcome the engine accepted (from the history). A worker
killed after the side effect and before its outcome leaves an extra record under a fencing
token that never completed: allowed (at-least-once execution). Two accepted completions of
one state, or one fencing token running its handler twice, are not.

Steered by the environment the daemon passes on to its workers:
    FF_CHAOS_URL           the store (side effects go there too)
    FF_CHAOS_NS            the namespace under test
    FF_CHAOS_SLEEP_MS      handlers sleep uniform 0..N ms (default 50)
    FF_CHAOS_POISON        a Flow id whose handler SIGKILLs its own worker process
    FF_CHAOS_SLOW_FIRST_S  Flows whose payload is b"slow" sleep this long on their first
                           claim (fencing token 1) only
    FF_CHAOS_MAX_CRASHES   max_crashes of the workflow's retry policy (default 3)
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from ferricflowd.flow.outcomes import transition
from ferricflowd.flow.policy import RetryPolicy
from ferricflowd.flow.workflow import Workflow

SEP = "\x1f"
EFFECT_DEADLINE_S = 120.0  # keep trying to record the side effect through store outages
_conn: Any = None


def effects_key(namespace: str) -> str:
    return f"{namespace}:chaos:fx"


def _redis() -> Any:
    global _conn
    if _conn is None:
        _conn = redis.Redis.from_url(os.environ["FF_CHAOS_URL"], socket_timeout=2.0,
                                     socket_connect_timeout=2.0, retry=Retry(NoBackoff(), 0))
    return _conn


def record_effect(job: Any) -> None:
    """The handler's side effect; retried through store crashes and stalls."""
    key = effects_key(os.environ["FF_CHAOS_NS"])
    field = SEP.join((job.id, job.state, str(job.fencing_token), secrets.token_hex(8)))
    deadline = time.monotonic() + EFFECT_DEADLINE_S
    pause = 0.05
    while True:
        try:
            _redis().hset(key, field, 1)
            return
        except (redis.RedisError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)


def _work(job: Any) -> None:
    if job.id == os.environ.get("FF_CHAOS_POISON"):
        os.kill(os.getpid(), signal.SIGKILL)
    slow = float(os.environ.get("FF_CHAOS_SLOW_FIRST_S") or 0)
    if slow and job.payload == b"slow" and job.fencing_token == 1:
        time.sleep(slow)
    top = float(os.environ.get("FF_CHAOS_SLEEP_MS", "50"))
    if top > 0:
        time.sleep(random.uniform(0, top) / 1000.0)
    record_effect(job)


def queue_step(job: Any) -> None:
    """A queue-style handler: work, record, complete."""
    _work(job)
    return None


three = Workflow(type="chaos_wf", initial_state="a", retry_policy=RetryPolicy(
    max_crashes=int(os.environ.get("FF_CHAOS_MAX_CRASHES", "3"))))


@three.state("a")
def state_a(job: Any) -> Any:
    _work(job)
    return transition("b")


@three.state("b")
def state_b(job: Any) -> Any:
    _work(job)
    return transition("c")


@three.state("c")
def state_c(job: Any) -> None:
    _work(job)
    return None
