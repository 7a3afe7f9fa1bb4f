"""A handler module that cannot be imported."""

from __future__ import annotations

import ferricflowd_test_no_such_module  # noqa: F401


def handler(job: object) -> None:
    return None
