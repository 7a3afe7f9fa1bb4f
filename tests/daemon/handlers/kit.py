"""A queue handler that produces every outcome the deploy kit's queries count, chosen by the
payload: b"fail" fails, b"retry" retries once, b"raise" raises once, b"slow:S" sleeps S
seconds; anything else moves from state "new" to "next" and completes there."""

from __future__ import annotations

import time

from ferricflowd.flow.outcomes import complete, fail, retry, transition


def kit(job: object) -> object:
    payload = job.payload or b""  # type: ignore[attr-defined]
    first = job.attempt == 1  # type: ignore[attr-defined]
    if payload == b"fail":
        return fail("failed on purpose")
    if payload == b"retry" and first:
        return retry("again", delay_ms=10)
    if payload == b"raise" and first:
        raise RuntimeError("raised on purpose")
    if payload.startswith(b"slow:"):
        time.sleep(float(payload[5:]))
    if job.state == "new":  # type: ignore[attr-defined]
        return transition("next")
    return complete()


def boom(job: object) -> object:
    """Always raises: retried under the group's policy until it is exhausted."""
    raise RuntimeError("boom")
