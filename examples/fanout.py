"""Fanout seed: a rollout spawns one command per device and waits for all of them.

    FERRICFLOWD_URL=redis://127.0.0.1:6379/0 python -m examples.fanout

Children land in the parent's partition, so the last one to finish wakes the parent
atomically; the parent is then due at once in its wait_state ("done").
"""

from __future__ import annotations

import logging
import os
import time

from ferricflowd import (
    ChildSpec,
    FlowClient,
    FlowRecord,
    Job,
    QueueClient,
    WorkflowClient,
    complete,
    transition,
)

log = logging.getLogger(__name__)

URL = os.environ.get("FERRICFLOWD_URL", "redis://127.0.0.1:6379/0")
OPTIONS = {"namespace": os.environ.get("FERRICFLOWD_NAMESPACE", "ff"),
           "durability": os.environ.get("FERRICFLOWD_DURABILITY", "strict")}

client = WorkflowClient.from_url(URL, **OPTIONS)
rollout = client.workflow(type="device-rollout", initial_state="created")
commands = QueueClient(client.flow_client).queue(type="device-command")

DEVICES = 50


def device_ids(job: Job) -> list[str]:
    return [f"sensor-{i:03d}" for i in range(DEVICES)]


@rollout.state("created")
def created(job: Job) -> object:
    job.flow.spawn_children([ChildSpec(id=f"device:{d}:cmd:{job.id}", type="device-command",
                                       payload=d.encode()) for d in device_ids(job)],
                            wait_state="done")
    return transition("waiting_for_children")


@rollout.state("done")
def done(job: Job) -> object:
    children = job.flow.client.children(job.id)
    ok = sum(child.state == "completed" for child in children)
    return complete(f"{ok}/{len(children)} devices updated".encode())


def send_command(job: Job) -> bytes:
    """One device's command: returning bytes completes it with that result."""
    return b"ack from " + job.payload


def main(url: str | None = None, namespace: str | None = None,
         timeout: float = 30.0) -> list[FlowRecord]:
    """Start one rollout and run both workers until it has finished."""
    wf, queue = rollout, commands
    if url is not None or namespace is not None:
        fc = FlowClient.from_url(url or URL, **{
            **OPTIONS, "namespace": namespace or OPTIONS["namespace"]})
        wf, queue = rollout.bind(fc), commands.bind(fc)
    wf.start("rollout-1", payload=b"firmware 2.1", idempotent=True)
    end = time.monotonic() + timeout
    record = wf.get("rollout-1")
    while (record is None or not record.terminal) and time.monotonic() < end:
        # the parent spawns and parks, the devices run, the last one wakes the parent
        wf.worker(states=["created", "done"]).run_until_idle(timeout=10.0)
        queue.worker(state="queued", concurrency=16, batch_size=100).run_until_idle(
            send_command, timeout=10.0)
        record = wf.get("rollout-1")
    assert record is not None
    print(f"{record.id}: {record.state} {record.result!r}")
    return [record]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
