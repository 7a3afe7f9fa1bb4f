"""ferricflowd benchmarks (issue 5): `python -m bench ...` or, from Python::

    from bench import run
    result = run(["W1"], systems=["ferricflowd"], profiles=["fast"], reps=1,
                 sizes={"W1": 1000})

See bench/README.md for the workloads and the latest results.
"""

from __future__ import annotations

from bench.runner import ALL_WORKLOADS, format_table, run

__all__ = ["ALL_WORKLOADS", "format_table", "run"]
