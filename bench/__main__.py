"""python -m bench [all|W1|W2|...] [--systems ferricflowd,celery,rq,dramatiq]
                  [--profile fast|durable|both] [--reps 3] [--size N] [--json out.json]
python -m bench table a.json [b.json ...]    one table from several runs' JSON

Prints the JSON result and a Markdown table (median and min–max per cell) on stdout;
progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bench.common import DEFAULT_SIZES, PROFILES
from bench.runner import ALL_WORKLOADS, format_table, merge, run
from bench.systems import PEERS, REGISTRY
from bench.systems.base import THREADS


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workloads", nargs="*", default=["all"],
                    help=f"all, or some of {' '.join(ALL_WORKLOADS)}")
    ap.add_argument("--systems", default="ferricflowd",
                    help=f"comma-separated: {','.join(REGISTRY)}; 'all' or 'peers' too "
                         "(default: ferricflowd)")
    ap.add_argument("--profile", default="both", choices=[*PROFILES, "both"])
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--size", type=int, default=None,
                    help="N for W1, W2, W4 and M1 (default: the issue's sizes)")
    ap.add_argument("--s1-sizes", default=None, metavar="SMALL,BIG",
                    help="S1 backlogs (default 10000,1000000)")
    ap.add_argument("--ff-runner", default="auto", choices=["auto", "daemon", "fallback"],
                    help="ferricflowd worker side: the daemon if it works (auto), or not")
    ap.add_argument("--lease-ms", type=int, default=30_000,
                    help="ferricflowd lease (R1 with the fallback runner waits for it)")
    ap.add_argument("--threads", type=int, default=THREADS,
                    help="handler threads per worker process of the threaded systems "
                         "(ferricflowd, dramatiq) in W1-W4 (default 8); Celery and RQ run "
                         "one job per process")
    ap.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    ap.add_argument("--work-dir", type=Path, default=None,
                    help="where the redis servers and worker logs live (default: a temp dir)")
    return ap.parse_args(argv)


def table(paths: list[str]) -> int:
    """`python -m bench table a.json b.json`: one table from the JSON of several runs."""
    results = [json.loads(Path(p).read_text()) for p in paths]
    merged = merge(results)
    for profile in PROFILES:
        if any(c["profile"] == profile for c in merged["cells"]):
            print(f"\n{profile} profile\n")
            print(format_table(merged, profile))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["table"]:
        return table(argv[1:])
    args = parse_args(argv)
    workloads = list(ALL_WORKLOADS) if "all" in args.workloads else []
    for w in args.workloads:
        if w == "all":
            continue
        if w.upper() not in ALL_WORKLOADS:
            print(f"unknown workload {w!r}; choose from all {' '.join(ALL_WORKLOADS)}",
                  file=sys.stderr)
            return 2
        workloads.append(w.upper())
    names = []
    for s in args.systems.split(","):
        s = s.strip()
        if s == "all":
            names += ["ferricflowd", *PEERS]
        elif s == "peers":
            names += list(PEERS)
        elif s:
            names.append(s)
    sizes = dict(DEFAULT_SIZES)
    if args.size is not None:
        for key in ("W1", "W2", "W4", "M1"):
            sizes[key] = args.size
    if args.s1_sizes:
        small, big = (int(x) for x in args.s1_sizes.split(","))
        sizes["S1_small"], sizes["S1_big"] = small, big
    profiles = list(PROFILES) if args.profile == "both" else [args.profile]
    result = run(workloads, systems=list(dict.fromkeys(names)), profiles=profiles,
                 reps=args.reps, sizes=sizes, work_dir=args.work_dir,
                 system_options=_options(args))
    text = json.dumps(result, indent=2, default=str)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    print()
    print(format_table(result))
    return 0


def _options(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    ff = {"runner": args.ff_runner, "lease_ms": args.lease_ms, "threads": args.threads}
    dramatiq = {"threads": args.threads}
    return {"ferricflowd": ff, "ferricflowd-async": ff,
            "dramatiq": dramatiq, "dramatiq-async": dramatiq}


if __name__ == "__main__":
    sys.exit(main())
