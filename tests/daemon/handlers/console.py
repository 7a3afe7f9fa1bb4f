"""A handler for the console's browser test: fails until a marker file exists.

FF_TEST_MARKERS names a directory; while it has no file `fixed`, every Flow fails (as a bug
would make it); once the test creates `fixed` (the bug is fixed), a requeued Flow completes.
"""

from __future__ import annotations

import os
from pathlib import Path

from ferricflowd.flow.outcomes import complete, fail


def flaky(job: object) -> object:
    if (Path(os.environ["FF_TEST_MARKERS"]) / "fixed").exists():
        return complete(b"done")
    return fail(b"RuntimeError: the report service answered 503 <html>")
