"""A handler module whose import kills the process (a crash, not a boot error)."""

from __future__ import annotations

import os

os._exit(1)


def handler(job: object) -> None:  # never reached
    return None
