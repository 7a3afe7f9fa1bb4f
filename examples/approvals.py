"""Signal seed: an approval waits in "waiting" until a signal moves it to "approved".

    FERRICFLOWD_URL=redis://127.0.0.1:6379/0 python -m examples.approvals
"""

from __future__ import annotations

import logging
import os

from ferricflowd import FlowClient, FlowRecord, Job, WorkflowClient, complete, transition

log = logging.getLogger(__name__)

URL = os.environ.get("FERRICFLOWD_URL", "redis://127.0.0.1:6379/0")
OPTIONS = {"namespace": os.environ.get("FERRICFLOWD_NAMESPACE", "ff"),
           "durability": os.environ.get("FERRICFLOWD_DURABILITY", "strict")}

client = WorkflowClient.from_url(URL, **OPTIONS)
approval = client.workflow(type="approval", initial_state="requested")


@approval.state("requested")
def requested(job: Job) -> object:
    log.info("asking a human to approve %s", job.id)
    return transition("waiting")  # no handler: it rests there until signalled


@approval.state("approved")
def approved(job: Job) -> object:
    return complete(b"approved: " + job.payload)


def main(url: str | None = None, namespace: str | None = None) -> list[FlowRecord]:
    """Request two approvals, approve them by signal, and finish them."""
    wf = approval
    if url is not None or namespace is not None:
        wf = approval.bind(FlowClient.from_url(url or URL, **{
            **OPTIONS, "namespace": namespace or OPTIONS["namespace"]}))
    ids = [f"approval-{i}" for i in range(1, 3)]
    for flow_id in ids:
        wf.start(flow_id, payload=f"expense report {flow_id}".encode(), idempotent=True)
    wf.worker(states=["requested"]).run_until_idle(timeout=30.0)
    for flow_id in ids:
        # The human said yes; the idempotency key makes a repeated click harmless.
        wf.signal(flow_id, signal="approved", if_state="waiting", transition_to="approved",
                  idempotency_key=f"approve-{flow_id}")
    wf.worker(states=["approved"]).run_until_idle(timeout=30.0)
    records = [r for r in (wf.get(flow_id) for flow_id in ids) if r is not None]
    for record in records:
        print(f"{record.id}: {record.state} {record.result!r}")
    return records


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
