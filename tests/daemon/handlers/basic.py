"""Well-behaved handlers: a queue function, a client-less workflow, and slow ones.

Tests steer them through the environment the daemon passes on to its workers:
FF_TEST_MARKERS (a directory) makes `sleepy` sleep only on a Flow's first run, and
`asleep` mark each Flow it starts.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

from ferricflowd.flow.outcomes import complete, transition
from ferricflowd.flow.workflow import Workflow


def echo(job: object) -> None:
    """Complete at once."""
    return None


def sleepy(job: object) -> None:
    """Sleep `payload` seconds (default 1); with FF_TEST_MARKERS, only on the first run."""
    markers = os.environ.get("FF_TEST_MARKERS")
    if markers:
        marker = Path(markers) / job.id  # type: ignore[attr-defined]
        if marker.exists():
            return None
        marker.touch()
    time.sleep(float(job.payload or b"1"))  # type: ignore[attr-defined]
    return None


async def asleep(job: object) -> object:
    """`async def`: await `payload` seconds; the result names the thread it ran on."""
    markers = os.environ.get("FF_TEST_MARKERS")
    if markers:
        (Path(markers) / f"started-{job.id}").touch()  # type: ignore[attr-defined]
    await asyncio.sleep(float(job.payload or b"1"))  # type: ignore[attr-defined]
    return complete(threading.current_thread().name.encode())


_hoard: list[bytes] = []


def leak(job: object) -> None:
    """Keep 2 MiB per job for good (written, so it is resident), slowly."""
    _hoard.append(b"x" * (2 << 20))
    time.sleep(0.03)
    return None


order = Workflow(type="order", initial_state="created")


@order.state("created")
def created(job: object) -> object:
    return transition("charged")


@order.state("charged")
def charged(job: object) -> None:
    return None


half_order = Workflow(type="order", initial_state="created")


@half_order.state("created")
def only_created(job: object) -> object:
    return transition("charged")


def boom(job: object) -> None:
    """Always raises (the exception policy turns it into a retry)."""
    raise ValueError(f"boom in {job.id}")  # type: ignore[attr-defined]


def orphan(job: object) -> None:
    """Leave a grandchild behind: the shell exits at once, `sleep` is re-parented to PID 1."""
    import subprocess

    subprocess.run("sleep 0.2 &", shell=True, check=True)


strict_order = Workflow(type="strict", initial_state="created", states=["created", "done"])


@strict_order.state("created")
def lost_way(job: object) -> object:
    """A transition to a state the workflow does not declare (a typo)."""
    return transition("no_such_state")


def boom_secret(job: object) -> None:
    """Raises with the payload and a value in its locals (they must not reach Sentry)."""
    data = job.payload  # type: ignore[attr-defined]
    card = job.values.get("card")  # type: ignore[attr-defined]
    raise ValueError(f"boom in {job.id} ({len(data)} bytes, card {card is not None})")  # type: ignore[attr-defined]
