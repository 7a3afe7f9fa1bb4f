"""The worker process of the daemon (`python -m ferricflowd.worker`); see process.py.

The supervisor never imports this package: it starts it by fork+exec, so user handler code
is only ever imported here.
"""

from __future__ import annotations

__all__: list[str] = []
