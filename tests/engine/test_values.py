"""Values: write once unless overridden, checked on outcomes too."""

from __future__ import annotations

import pytest

from ferricflowd import FlowClient, FlowNotFound, ValueConflict, complete
from tests.engine.calls import T, claim_one
from tests.helpers import events


def test_values_are_write_once(flow_client: FlowClient) -> None:
    fc = flow_client
    fc.create("v", T, "queued", values={"doc": b"1"})
    fc.put_value("v", "doc", b"1")  # the same bytes: a no-op
    assert events(fc, "v") == ["created"]
    with pytest.raises(ValueConflict, match="doc already exists with different digest"):
        fc.put_value("v", "doc", b"2")
    assert fc.get("v", values=["doc"]).values == {"doc": b"1"}  # type: ignore[union-attr]
    fc.put_value("v", "doc", b"2", override=True)
    fc.put_value("v", "extra", b"x")
    assert fc.get("v", values=["doc", "extra"]).values == {  # type: ignore[union-attr]
        "doc": b"2", "extra": b"x"}
    assert events(fc, "v") == ["created", "values_put", "values_put"]
    job = claim_one(fc)
    with pytest.raises(ValueConflict):
        fc.apply_outcome(job, complete(b"r", values={"doc": b"3"}))
    assert fc.get("v").state == "running"  # type: ignore[union-attr]
    assert fc.apply_outcome(job, complete(b"r", values={"doc": b"2", "out": b"o"})) == b"ok"
    with pytest.raises(FlowNotFound):
        fc.put_value("missing", "doc", b"1")
