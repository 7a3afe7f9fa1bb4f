"""Misbehaving handlers that the hardening tests' daemon workers import by name.

`misbehave` is a workflow whose `start` handler does what the Flow's payload says:

    raise | object | undeclared | reserved   misbehave that way
    block:<seconds>                          sleep, counting concurrent runs in Redis
    stale                                    on its first run (fencing 1) wait until the test
                                             creates FF_HARDEN_MARKERS/<id>, then return
    anything else                            transition("done")

Side effects go to the Redis at FF_HARDEN_REDIS under the prefix FF_HARDEN_PREFIX:
`<prefix>:active:<id>` (runs in progress), `<prefix>:overlap` (runs that found another run
of the same Flow in progress) and `<prefix>:runs:<id>` (a hash: "<state>:<fencing>" -> runs).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import redis

from ferricflowd.flow.outcomes import transition
from ferricflowd.flow.policy import RetryPolicy
from ferricflowd.flow.workflow import Workflow

misbehave = Workflow(type="misbehave", initial_state="start", states=["start", "done"],
                     retry_policy=RetryPolicy(max_retries=1, backoff="none"))

_client: redis.Redis | None = None


def _redis() -> redis.Redis:
    global _client
    if _client is None:
        _client = redis.Redis.from_url(os.environ["FF_HARDEN_REDIS"])
    return _client


def _key(*parts: str) -> str:
    return ":".join([os.environ["FF_HARDEN_PREFIX"], *parts])


def count_run(job: Any) -> None:
    """Record that this (flow, state, fencing token) ran once more."""
    _redis().hincrby(_key("runs", job.id), f"{job.state}:{job.fencing_token}", 1)


@misbehave.state("start")
def start(job: Any) -> Any:
    kind, _, arg = job.payload.partition(b":")
    if kind == b"raise":
        raise ValueError(f"bad input in {job.id}")
    if kind == b"object":
        return {"not": "storable"}
    if kind == b"undeclared":
        return transition("nowhere")
    if kind == b"reserved":
        return transition("completed")
    count_run(job)
    if kind == b"block":
        r = _redis()
        if r.incr(_key("active", job.id)) > 1:
            r.incr(_key("overlap"))
        try:
            time.sleep(float(arg))
        finally:
            r.decr(_key("active", job.id))
    elif kind == b"stale" and job.fencing_token == 1:
        marker = Path(os.environ["FF_HARDEN_MARKERS"]) / job.id
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return transition("done")


@misbehave.state("done")
def done(job: Any) -> bytes:
    count_run(job)
    return b"ok"
