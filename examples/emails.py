"""Queue seed: send emails from a durable job queue.

    FERRICFLOWD_URL=redis://127.0.0.1:6379/0 python -m examples.emails

The daemon's example config runs `send_email` for type "email", state "queued"
(`handler = "examples.emails:send_email"`). Importing this module never connects: clients
connect on their first command.
"""

from __future__ import annotations

import logging
import os

from ferricflowd import FlowClient, FlowRecord, Job, QueueClient

log = logging.getLogger(__name__)

URL = os.environ.get("FERRICFLOWD_URL", "redis://127.0.0.1:6379/0")
OPTIONS = {"namespace": os.environ.get("FERRICFLOWD_NAMESPACE", "ff"),
           "durability": os.environ.get("FERRICFLOWD_DURABILITY", "strict")}

client = QueueClient.from_url(URL, **OPTIONS)
emails = client.queue(type="email")


def send_email(job: Job) -> None:
    """Deliver one email; returning None completes the job."""
    recipient = job.payload.decode("utf-8", "replace")
    log.info("sending %s to %s (attempt %d)", job.id, recipient, job.attempt)


def main(url: str | None = None, namespace: str | None = None) -> list[FlowRecord]:
    """Enqueue three emails, run a worker until nothing is due, return the final records."""
    queue = emails
    if url is not None or namespace is not None:
        queue = emails.bind(FlowClient.from_url(url or URL, **{
            **OPTIONS, "namespace": namespace or OPTIONS["namespace"]}))
    ids = [f"email-{i}" for i in range(1, 4)]
    for i, flow_id in enumerate(ids, start=1):
        queue.enqueue(flow_id, payload=f"user-{i}@example.com".encode(), idempotent=True)
    handled = queue.worker(state="queued", concurrency=100, batch_size=500).run_until_idle(
        send_email, timeout=30.0)
    records = [queue.get(flow_id) for flow_id in ids]
    print(f"handled {handled} email(s)")
    for record in records:
        if record is not None:
            print(f"{record.id}: {record.state}")
    return [r for r in records if r is not None]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
