"""Handlers for the death-blame tests (issue 18, items 3 and 4), imported by the daemon's
workers by name. Each marks its start in FF_TEST_MARKERS (a directory) so a test can wait
until a Flow is really running in a handler.

`park` sleeps (a well-behaved handler that takes long); the `gil` workflow's `spin` state
holds the GIL in a catastrophic regex (a hang no thread can interrupt), `nap` sleeps under a
generous time limit.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any

from ferricflowd.flow.workflow import Workflow


def _mark(job: Any) -> None:
    Path(os.environ["FF_TEST_MARKERS"], job.id).touch()


def park(job: Any) -> None:
    _mark(job)
    time.sleep(120)


gil = Workflow(type="gil", initial_state="nap", states=["nap", "spin"])


@gil.state("nap", timeout=60)
def nap(job: Any) -> None:
    _mark(job)
    time.sleep(120)


@gil.state("spin", timeout=1)
def spin(job: Any) -> None:
    _mark(job)
    re.match(r"(a+)+$", "a" * 64 + "b")  # exponential backtracking, GIL held throughout
