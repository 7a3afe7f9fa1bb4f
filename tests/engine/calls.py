"""Engine calls the engine tests make by hand (no Runner): claims of the test type, the
store's clock, a key that hashes to another partition, a parent with claimed children."""

from __future__ import annotations

from typing import Any

from ferricflowd import ChildSpec, FlowClient, transition
from ferricflowd.flow.records import Job
from ferricflowd.flow.wire import LeaseRequest

T = "misc"
FAR = 10 ** 13  # a now_ms far in the future (year 2286)


def server_ms(fc: FlowClient) -> int:
    sec, usec = fc.store.execute(lambda r: r.time())
    return int(sec) * 1000 + int(usec) // 1000


def claim_jobs(fc: FlowClient, states: list[str], limit: int = 100, type: str = T,
               worker: str = "w", lease_ms: int = 60_000) -> list[Job]:
    return fc.claim(type, LeaseRequest(worker, states, lease_ms), limit=limit).jobs


def claim_one(fc: FlowClient, state: str = "queued", type: str = T,
              lease_ms: int = 60_000) -> Job:
    jobs = claim_jobs(fc, [state], 1, type, lease_ms=lease_ms)
    assert len(jobs) == 1
    return jobs[0]


def key_in_other_partition(fc: FlowClient, than: int, stem: str) -> str:
    for i in range(1000):
        if fc.partition_for(f"{stem}{i}") != than:
            return f"{stem}{i}"
    raise AssertionError("no key in another partition")


def parent_with_children(fc: FlowClient, n: int, type: str = T, **spawn: Any) -> list[Job]:
    """Flow "parent" of `type` spawns n children "kid-<i>" (type "kid") from state split
    (its group waits in merge; `spawn` are spawn_children's options) and moves on to
    waiting; the children, claimed, by id."""
    fc.create("parent", type, "split")
    job = claim_one(fc, "split", type)
    job.flow.spawn_children([ChildSpec(id=f"kid-{i}", type="kid") for i in range(n)],
                            wait_state="merge", **spawn)
    assert fc.apply_outcome(job, transition("waiting")) == b"ok"
    kids = sorted(claim_jobs(fc, ["queued"], n, "kid"), key=lambda j: j.id)
    assert len(kids) == n
    return kids
