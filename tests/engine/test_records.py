"""Records built without their __init__ (speed) equal the dataclass-built ones."""

from __future__ import annotations

from ferricflowd import FlowClient
from ferricflowd.flow.client import CreateSpec
from ferricflowd.flow.records import Job
from tests.engine.calls import T, claim_one


def test_a_claimed_job_has_every_field_of_job(flow_client: FlowClient) -> None:
    """_job builds a Job without its __init__ (speed): it must still set exactly its fields."""
    import dataclasses

    flow_client.create("jf", T, "queued", b"p", priority=1)
    job = claim_one(flow_client)
    names = {f.name for f in dataclasses.fields(Job)}
    assert set(vars(job)) == names
    assert job == Job(**{n: getattr(job, n) for n in names})
    assert (job.id, job.state, job.payload, job.priority) == ("jf", "queued", b"p", 1)


def test_plain_spec_equals_the_dataclass_built_one() -> None:
    from ferricflowd.flow.wire import plain_spec

    spec = plain_spec("i", "t", "queued", b"p", True)
    assert spec == CreateSpec("i", "t", "queued", b"p", idempotent=True)
    assert set(vars(spec)) == set(vars(CreateSpec("i", "t", "queued")))
    assert spec.values == {} and spec.values is not plain_spec("j", "t", "q", b"", False).values
