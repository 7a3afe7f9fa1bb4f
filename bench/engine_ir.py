"""Store-side cost of the Flow engine in instructions, not seconds:

    python -m bench.engine_ir [--n 2000] [--claim-batch 100] [--outcome-batch 17] [--json F]
                              [--keep DIR]

This machine's timings drift by 2x from one minute to the next; an instruction count does
not. The script runs a private `redis-server` (AOF on, `appendfsync always`) under
`valgrind --tool=callgrind`, drives the engine through FlowClient, and prints the store's
instructions (Ir) per job for each step of W1 and W4: create (batches of 1,000), claim,
complete, and a transition kept by the same worker (W4's a -> b). It also splits each step
into where the instructions go: the data commands the scripts run, the AOF propagation of
their writes, and the rest of the script call (the Lua interpreter, argument and reply
conversion); what is left of the total is reading requests and writing replies.
Roughly 10,000 Ir is 1 us of store CPU here. It needs valgrind (`apt-get install valgrind`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from bench.common import free_port
from ferricflowd import complete, transition
from ferricflowd.flow.client import CreateSpec, FlowClient
from ferricflowd.flow.wire import LeaseRequest

PAYLOAD = b"x" * 100  # the fixed 100-byte payload
# Inclusive cost centres of redis-server 7 (exported symbols): the whole script call, the
# commands it runs (call'2 = the nested call()), and, after the script, writing those
# commands to the AOF buffer (effects replication: every write command inside is propagated).
CENTRES = {"script": "luaCallFunction", "commands": "call'2",
           "propagation": "propagatePendingCommands"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.engine_ir", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="jobs per step (default 2000)")
    ap.add_argument("--claim-batch", type=int, default=100)
    ap.add_argument("--outcome-batch", type=int, default=17,
                    help="outcomes per call (17: W1's mean flush size with c8 x 2)")
    ap.add_argument("--json", help="write the report here too")
    ap.add_argument("--keep", metavar="DIR",
                    help="copy the callgrind dumps here (callgrind.out.<step>), for "
                         "callgrind_annotate")
    args = ap.parse_args(argv)
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate", "redis-server"):
        if shutil.which(tool) is None:
            print(f"engine_ir: {tool} not found (apt-get install valgrind redis-server)",
                  file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(prefix="ff-ir-") as tmp:
        report = measure(Path(tmp), args.n, args.claim_batch, args.outcome_batch, args.keep)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print("\n| step | Ir per job | commands | AOF propagation | Lua and conversion |")
    print("|---|---|---|---|---|")
    for step, row in report["steps"].items():
        print(f"| {step} | {row['ir_per_job']:,} | {row.get('commands', '-'):,} | "
              f"{row.get('propagation', '-'):,} | {row.get('lua_and_conversion', '-'):,} |")
    return 0


def measure(tmp: Path, n: int, claim_batch: int, outcome_batch: int,
            keep: str | None = None) -> dict[str, Any]:
    port = free_port("127.0.0.1")
    out = tmp / "callgrind.out"
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", "redis-server",
         "--port", str(port), "--bind", "127.0.0.1", "--appendonly", "yes",
         "--appendfsync", "always", "--save", "", "--dir", str(tmp)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_ping(port)
        fc = FlowClient.from_url(f"redis://127.0.0.1:{port}", namespace="ir")
        dumps = _drive(fc, server.pid, n, claim_batch, outcome_batch)
        fc.close()
        steps = {step: _analyse(Path(f"{out}.{server.pid}.{i}"), n)
                 for i, step in enumerate(dumps, start=1)}
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            for i, step in enumerate(dumps, start=1):
                shutil.copy(f"{out}.{server.pid}.{i}", Path(keep) / f"callgrind.out.{step}")
    finally:
        server.terminate()
        server.wait(timeout=60)
    version = redis.__version__
    return {"n": n, "claim_batch": claim_batch, "outcome_batch": outcome_batch,
            "redis_py": version, "steps": steps}


def _drive(fc: FlowClient, pid: int, n: int, claim_batch: int,
           outcome_batch: int) -> list[str]:
    """Run each step between a zeroing and a dump of the counters; returns the dump names."""
    def ctl(*a: str) -> None:
        subprocess.run(["callgrind_control", *a, str(pid)], check=True,
                       stdout=subprocess.DEVNULL)

    def claim_all(type_: str, states: list[str]) -> list[Any]:
        jobs: list[Any] = []
        while len(jobs) < n:
            got = fc.claim(type_, LeaseRequest("w1", states, 60_000), limit=claim_batch).jobs
            if not got:
                raise RuntimeError(f"claimed {len(jobs)} of {n}")
            jobs += got
        return jobs

    def outcomes(jobs: list[Any], outcome: Any, keep: LeaseRequest | None = None) -> list[Any]:
        replies: list[Any] = []
        for i in range(0, len(jobs), outcome_batch):
            batch = jobs[i:i + outcome_batch]
            replies += fc.apply_outcomes([(j, outcome) for j in batch], keep)
        return replies

    # Warm up: load the scripts and create the partition's keys outside the counts.
    fc.create_many([CreateSpec(f"warm{i}", "q", "queued", PAYLOAD) for i in range(10)])
    outcomes(fc.claim("q", LeaseRequest("w1", ["queued"], 60_000), limit=10).jobs, complete())
    steps: list[str] = []

    def step(name: str) -> None:
        ctl(f"--dump={name}")
        steps.append(name)

    ctl("-z")
    for b in range(0, n, 1000):
        fc.create_many([CreateSpec(f"j{i}", "q", "queued", PAYLOAD)
                        for i in range(b, min(n, b + 1000))])
    step("create")
    jobs = claim_all("q", ["queued"])
    step("claim")
    outcomes(jobs, complete())
    step("complete")
    for b in range(0, n, 1000):
        fc.create_many([CreateSpec(f"c{i}", "chain", "a", PAYLOAD)
                        for i in range(b, min(n, b + 1000))])
    jobs = claim_all("chain", ["a", "b", "c"])
    ctl("-z")
    keep = LeaseRequest("w1", ("a", "b", "c"), 60_000)
    kept = outcomes(jobs, transition("b"), keep)
    step("transition_kept")
    if not all(hasattr(k, "lease_token") for k in kept):
        raise RuntimeError("a transition was not kept")
    return steps


def _analyse(path: Path, n: int) -> dict[str, int]:
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                           str(path)], check=True, capture_output=True, text=True).stdout
    total = 0
    found: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3 or not parts[0][0].isdigit():
            continue
        ir = int(parts[0].replace(",", ""))
        if "PROGRAM TOTALS" in line:
            total = ir
        for key, symbol in CENTRES.items():
            if f":{symbol} " in line and key not in found:
                found[key] = ir
    row = {"ir_per_job": total // n}
    if "script" in found:
        commands = found.get("commands", 0)
        row.update(commands=commands // n, propagation=found.get("propagation", 0) // n,
                   lua_and_conversion=(found["script"] - commands) // n)
    return row


def _wait_ping(port: int, timeout_s: float = 60.0) -> None:
    client = redis.Redis(port=port)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            client.ping()
            return
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


if __name__ == "__main__":
    sys.exit(main())
