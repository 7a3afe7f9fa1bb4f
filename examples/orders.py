"""State-machine seed: an order goes created -> charged -> shipped -> completed.

    FERRICFLOWD_URL=redis://127.0.0.1:6379/0 python -m examples.orders

The daemon's example config runs this workflow (`handler = "examples.orders:order"`) for the
states created, charged and shipped, and claims the named value "payment" with each job.
"""

from __future__ import annotations

import logging
import os
import time

from ferricflowd import (
    ExceptionPolicy,
    FlowClient,
    FlowRecord,
    Job,
    RetryPolicy,
    WorkflowClient,
    complete,
    retry,
    transition,
)

log = logging.getLogger(__name__)

URL = os.environ.get("FERRICFLOWD_URL", "redis://127.0.0.1:6379/0")
OPTIONS = {"namespace": os.environ.get("FERRICFLOWD_NAMESPACE", "ff"),
           "durability": os.environ.get("FERRICFLOWD_DURABILITY", "strict")}

client = WorkflowClient.from_url(URL, **OPTIONS)
order = client.workflow(type="order", initial_state="created",
                        retry_policy=RetryPolicy(max_retries=5, backoff="exponential",
                                                 base_ms=200))


def charge_card(payload: bytes, payment: bytes | None) -> None:
    log.info("charging %r with %r", payload, payment)


def rate_limited(job: Job) -> bool:
    """The payment provider turns every order's first charge attempt away."""
    return job.attempt == 1


def ship(payload: bytes) -> bytes:
    return b"parcel for " + payload


@order.state("created")
def created(job: Job) -> object:
    return transition("charged")


@order.state("charged", exception_policy=ExceptionPolicy.RETRY)
def charged(job: Job) -> object:
    if rate_limited(job):
        return retry(error=b"rate limited")
    charge_card(job.payload, job.values.get("payment"))
    return transition("shipped")


@order.state("shipped")
def shipped(job: Job) -> object:
    return complete(ship(job.payload))


def main(url: str | None = None, namespace: str | None = None,
         timeout: float = 30.0) -> list[FlowRecord]:
    """Start three orders and run a worker until every one of them has finished."""
    wf = order
    if url is not None or namespace is not None:
        wf = order.bind(FlowClient.from_url(url or URL, **{
            **OPTIONS, "namespace": namespace or OPTIONS["namespace"]}))
    ids = [f"order-{i}" for i in range(1, 4)]
    for flow_id in ids:
        wf.start(flow_id, payload=f"{flow_id} payload".encode(),
                 values={"payment": b"card-token"}, idempotent=True)
    end = time.monotonic() + timeout
    while True:  # a retried order is due again after its backoff: go round until all ended
        wf.worker(states=["created", "charged", "shipped"], claim_values=["payment"],
                  block_ms=100).run_until_idle(timeout=max(0.1, end - time.monotonic()))
        records = [r for r in (wf.get(flow_id) for flow_id in ids) if r is not None]
        if all(r.terminal for r in records) or time.monotonic() > end:
            break
        time.sleep(0.05)
    for record in records:
        print(f"{record.id}: {record.state} {record.result!r}")
    return records


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
