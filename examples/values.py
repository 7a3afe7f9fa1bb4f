"""Value refs seed: big data travels as named values, hydrated only where asked for.

    FERRICFLOWD_URL=redis://127.0.0.1:6379/0 python -m examples.values

The payload stays small routing data; the invoice PDF and the customer record are stored
beside the Flow, and the worker claims only the "customer" value with each job.
"""

from __future__ import annotations

import json
import logging
import os

from ferricflowd import FlowClient, FlowRecord, Job, QueueClient, complete

log = logging.getLogger(__name__)

URL = os.environ.get("FERRICFLOWD_URL", "redis://127.0.0.1:6379/0")
OPTIONS = {"namespace": os.environ.get("FERRICFLOWD_NAMESPACE", "ff"),
           "durability": os.environ.get("FERRICFLOWD_DURABILITY", "strict")}

client = QueueClient.from_url(URL, **OPTIONS)
orders = client.queue(type="order-document")


def handle_customer_step(job: Job) -> object:
    """Sees job.values["customer"] only; the invoice is never transferred to this worker."""
    customer = json.loads(job.values["customer"])
    greeting = f"Dear {customer['name']}, your {job.payload.decode()} is on its way"
    job.flow.put_value("letter", greeting.encode())
    return complete(b"letter written", values={"letter_lang": b"en"})


def main(url: str | None = None, namespace: str | None = None) -> list[FlowRecord]:
    queue = orders
    if url is not None or namespace is not None:
        queue = orders.bind(FlowClient.from_url(url or URL, **{
            **OPTIONS, "namespace": namespace or OPTIONS["namespace"]}))
    invoice_pdf_bytes = b"%PDF-1.7\n" + b"\x00invoice-bytes" * 20_000  # ~280 KB
    customer_bytes = json.dumps({"name": "Ada Lovelace", "tier": "gold"}).encode()
    queue.enqueue("order-1-documents", payload=b"small routing bytes",
                  values={"invoice": invoice_pdf_bytes, "customer": customer_bytes},
                  idempotent=True)
    queue.worker(claim_values=["customer"]).run_until_idle(handle_customer_step, timeout=30.0)
    record = queue.get("order-1-documents", values=["letter", "letter_lang", "invoice"])
    assert record is not None
    print(f"{record.id}: {record.state}; letter: {record.values.get('letter', b'')!r}; "
          f"invoice kept beside it: {len(record.values.get('invoice', b''))} bytes")
    return [record]


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    main()
