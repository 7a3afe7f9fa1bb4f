"""The outcome constructors' shared instances (built once for the common no-argument forms)."""

from __future__ import annotations

import pytest

from ferricflowd import complete, transition
from ferricflowd.flow.outcomes import Complete, Transition
from ferricflowd.flow.runner import to_outcome


def test_plain_outcomes_equal_fresh_ones_and_cannot_be_changed() -> None:
    t = transition("b")
    assert t == Transition("b") and t is transition("b")
    assert complete() == Complete() and to_outcome(None) is complete()
    for shared in (t, complete()):
        with pytest.raises(TypeError):
            shared.values["x"] = b"y"  # type: ignore[index]


def test_outcomes_with_arguments_are_new_and_checked() -> None:
    t = transition("b", payload="p", values={"k": b"v"})
    assert t is not transition("b") and t.payload == b"p" and dict(t.values) == {"k": b"v"}
    assert complete(b"r").result == b"r" and complete(b"r") is not complete()
    with pytest.raises(TypeError):
        transition("")
    with pytest.raises(TypeError):
        transition(["b"])  # type: ignore[arg-type]
