"""ferricflowd benchmarks (issue 5): `python -m bench ...` or, from Python::

    from bench import run
    result = run(["W1"], systems=["ferricflowd"], profiles=["fast"], reps=1,
                 sizes={"W1": 1000})

See bench/README.md for the workloads and the latest results. Imports are lazy: worker
processes import bench.handlers and must not pay for the runner.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ALL_WORKLOADS", "format_table", "merge", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from bench import runner

        return getattr(runner, name)
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
