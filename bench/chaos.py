"""Issue 4, the long form: every chaos scenario at full size, one JSON summary on stdout.

    python -m bench.chaos                       # all six scenarios, full size
    python -m bench.chaos --flows 5000 --workflows 1000 --kill-every 0.2 --storm 30
    python -m bench.chaos --only kill_storm,poison_pill --flows 500 --workflows 100

The scenarios are the ones the short form (tests/chaos/) runs, from tests/chaos/scenarios.py,
against a throwaway durable redis-server (AOF, appendfsync always) and real `ferricflowd run`
daemons. Exit status 0 when every scenario's exact accounting passed (lost = 0,
duplicates = 0, ...), 1 otherwise. Daemon logs stay in --work-dir (a temp dir by default).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.chaos.lab import Lab
from tests.chaos.scenarios import SCENARIOS, Result
from tests.servers import RedisServer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flows", type=int, default=5000, help="queue Flows per scenario")
    p.add_argument("--workflows", type=int, default=1000, help="three-state workflows")
    p.add_argument("--kill-every", type=float, default=0.2, help="kill storm period (s)")
    p.add_argument("--storm", type=float, default=30.0, help="kill storm length (s)")
    p.add_argument("--processes", type=int, default=3, help="worker processes per group")
    p.add_argument("--concurrency", type=int, default=4, help="handler threads per worker")
    p.add_argument("--drain-flows", type=int, default=10_000, help="drain-under-load Flows")
    p.add_argument("--poison-flows", type=int, default=2000, help="poison-pill queue Flows")
    p.add_argument("--down", type=float, default=2.0, help="store crash: seconds down")
    p.add_argument("--stall", type=float, default=5.0, help="store stall: seconds stopped")
    p.add_argument("--only", default="", help="comma-separated scenario names")
    p.add_argument("--work-dir", type=Path, default=None)
    return p.parse_args(argv)


def plan(a: argparse.Namespace) -> dict[str, dict[str, Any]]:
    big = max(60.0, (a.flows + 3 * a.workflows) / 50.0)  # generous finish deadlines
    return {
        "kill_storm": dict(flows=a.flows, workflows=a.workflows, kill_every=a.kill_every,
                           storm_s=a.storm, processes=a.processes, concurrency=a.concurrency,
                           finish_timeout=big),
        "supervisor_kill": dict(flows=a.flows, workflows=a.workflows, finish_timeout=big),
        "store_crash": dict(flows=a.flows, workflows=a.workflows, down_s=a.down,
                            spread_s=max(4.0, (a.flows + a.workflows) / 400.0),
                            finish_timeout=big),
        "store_stall": dict(flows=a.flows, workflows=a.workflows, stall_s=a.stall,
                            finish_timeout=big),
        "drain_under_load": dict(flows=a.drain_flows, finish_timeout=big),
        "poison_pill": dict(flows=a.poison_flows, finish_timeout=big),
    }


def headline(r: Result) -> dict[str, Any]:
    """The figures issue 4 asks for, per scenario."""
    s = r.summary
    rec = s.get("recovery_ms") or {}
    return {"scenario": r.name, "ok": r.ok, "flows": s.get("flows"), "kills": s.get("kills"),
            "recovery_p50_ms": rec.get("p50"), "recovery_p99_ms": rec.get("p99"),
            "lost": s.get("lost"), "duplicates": s.get("duplicates")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="ferricflowd-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    chosen = plan(args)
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - set(chosen))
        if unknown:
            print(f"unknown scenario(s): {', '.join(unknown)}; known: {', '.join(chosen)}",
                  file=sys.stderr)
            return 2
        chosen = {n: chosen[n] for n in names}
    server = RedisServer(work / "redis").start()
    results: list[Result] = []
    started = time.monotonic()
    try:
        for name, kwargs in chosen.items():
            lab = Lab(server, work / name)
            t0 = time.monotonic()
            try:
                result = SCENARIOS[name](lab, **kwargs)
            except AssertionError as exc:  # a deadline passed: report it as a problem
                result = Result(name, problems=[str(exc)])
            finally:
                lab.close()
                server.ensure_running()
            result.summary["seconds"] = round(time.monotonic() - t0, 1)
            results.append(result)
            print(f"{name}: {'ok' if result.ok else 'FAILED'} in "
                  f"{result.summary['seconds']}s", file=sys.stderr)
    finally:
        server.terminate()
    report = {
        "command": "python -m bench.chaos " + " ".join(sys.argv[1:] if argv is None else argv),
        "seconds": round(time.monotonic() - started, 1),
        "ok": all(r.ok for r in results),
        "totals": {"flows": sum(r.summary.get("flows") or 0 for r in results),
                   "kills": sum(r.summary.get("kills") or 0 for r in results),
                   "lost": sum(r.summary.get("lost") or 0 for r in results),
                   "duplicates": sum(r.summary.get("duplicates") or 0 for r in results)},
        "headline": [headline(r) for r in results],
        "scenarios": [r.as_dict() for r in results],
        "work_dir": str(work),
    }
    print(json.dumps(report, indent=1, default=str))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
