"""The chaos scenarios' audit: exact accounting over every Flow a scenario created.

- each Flow exists and is terminal (or due, where the scenario says);
- one `completed` event per completed Flow, history versions contiguous 1..N;
- per (flow, state) at most one *accepted* completing outcome (transitioned/completed), and
  the side effect recorded by the handler (tests/chaos/handlers.py, keyed by
  (id, state, fencing token)) exists exactly once for that accepted fencing token; side
  effects under other fencing tokens are at-least-once re-executions of killed workers
  (counted, allowed), each of which must belong to a claim in the history.

Also the recovery figures read from the histories (kill -> next claim, kill -> reclaim).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from ferricflowd.flow.client import FlowClient
from ferricflowd.flow.records import record_fields
from tests.chaos.handlers import SEP, effects_key

# A lease_released cause naming a worker id (host:pid:group): the pid of the dead worker.
WORKER_IN_CAUSE = re.compile(r"worker \S*?:(\d+):\S+")


def percentile(values: Sequence[float], pct: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(pct / 100.0 * (len(ordered) - 1))))
    return ordered[k]


@dataclass
class FlowView:
    record: dict[str, bytes]
    events: list[tuple[int, int, str, dict[str, Any]]]  # (version, at_ms, name, details)

    @property
    def state(self) -> str:
        return self.record.get(b"state", b"").decode()


@dataclass
class Audit:
    flows: int = 0
    completed: int = 0
    failed: int = 0
    problems: list[str] = field(default_factory=list)
    lost: int = 0
    not_terminal: int = 0
    duplicates: int = 0
    reexecutions: int = 0
    views: dict[str, FlowView] = field(default_factory=dict)

    def problem(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)
        elif len(self.problems) == 50:
            self.problems.append("... (more problems left out)")

    def summary(self) -> dict[str, Any]:
        return {"flows": self.flows, "completed": self.completed, "failed": self.failed,
                "lost": self.lost, "not_terminal": self.not_terminal,
                "duplicates": self.duplicates, "reexecutions": self.reexecutions}


def read_flows(client: FlowClient, ids: Sequence[str], chunk: int = 500) -> dict[str, FlowView]:
    keys = client.keys
    out: dict[str, FlowView] = {}
    for i in range(0, len(ids), chunk):
        part = ids[i:i + chunk]

        def read(r: Any, part: Sequence[str] = part) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for fid in part:
                p = client.partition_for(fid)
                pipe.get(keys.flow(p, fid))
                pipe.lrange(keys.history(p, fid), 0, -1)
            return pipe.execute()

        got = client.store.execute(read)
        for j, fid in enumerate(part):
            raw, hist = record_fields(got[2 * j]), got[2 * j + 1]
            events = []
            for entry in hist:
                ver, at, name, details = msgpack.unpackb(entry, raw=False,
                                                         unicode_errors="surrogateescape")
                events.append((int(ver), int(at), name, details or {}))
            out[fid] = FlowView(raw, events)
    return out


def read_effects(client: FlowClient) -> dict[tuple[str, str, int], int]:
    raw = client.store.execute(lambda r: r.hgetall(effects_key(client.namespace)))
    effects: dict[tuple[str, str, int], int] = defaultdict(int)
    for k in raw:  # one field per handler execution
        fid, state, fence, _run = k.decode().split(SEP)
        effects[(fid, state, int(fence))] += 1
    return dict(effects)


def audit(client: FlowClient, ids: dict[str, Sequence[str]], *,
          expect_failed: dict[str, str] | None = None, allow_due: bool = False,
          optional: Sequence[str] = ()) -> Audit:
    """Exact accounting over `ids` (type -> ids); see the module docstring.

    expect_failed: id -> text its error must contain (every other Flow must complete).
    allow_due: non-terminal Flows are fine when they rest due (not running, due <= now).
    optional: ids that may be missing (creates whose reply was lost), checked if present.
    """
    result = Audit()
    expect_failed = expect_failed or {}
    wanted = [i for group in ids.values() for i in group]
    views = read_flows(client, wanted + list(optional))
    effects = read_effects(client)
    by_flow: dict[str, list[tuple[str, int, int]]] = defaultdict(list)
    for (fid, state, fence), n in effects.items():
        by_flow[fid].append((state, fence, n))
    store_now = client.store.execute(lambda r: r.time())
    store_now_ms = int(store_now[0]) * 1000 + int(store_now[1]) // 1000
    optional_set = set(optional)
    for fid, view in views.items():
        if not view.record:
            if fid not in optional_set:
                result.lost += 1
                result.problem(f"{fid}: lost (no record)")
            continue
        result.flows += 1
        result.views[fid] = view
        _audit_one(result, fid, view, by_flow.get(fid, []), expect_failed, allow_due,
                   store_now_ms)
    return result


def _accepted_outcomes(view: FlowView) -> tuple[dict[str, list[int]], set[int]]:
    """(state -> fencing tokens of accepted completing outcomes, every claimed fence)."""
    accepted: dict[str, list[int]] = defaultdict(list)
    claimed: set[int] = set()
    state, fence = "", 0
    for _, _, name, d in view.events:
        if name == "created":
            state = str(d.get("state", ""))
        elif name == "claimed":
            fence = int(d.get("fencing", 0))
            claimed.add(fence)
        elif name == "transitioned":
            accepted[str(d.get("from"))].append(fence)
            state = str(d.get("to"))
        elif name == "completed":
            accepted[state].append(int(d.get("fencing", fence)))
    return accepted, claimed


def _audit_one(result: Audit, fid: str, view: FlowView, effects: list[tuple[str, int, int]],
               expect_failed: dict[str, str], allow_due: bool, store_now_ms: int) -> None:
    versions = [e[0] for e in view.events]
    if versions != list(range(1, len(versions) + 1)):
        result.problem(f"{fid}: history versions not contiguous: {versions[:20]}")
    if int(view.record.get(b"ver", b"0")) != len(versions):
        result.problem(f"{fid}: record version {view.record.get(b'ver')} != "
                       f"{len(versions)} history events")
    _audit_state(result, fid, view, expect_failed, allow_due, store_now_ms)
    _audit_effects(result, fid, view, effects)


def _audit_state(result: Audit, fid: str, view: FlowView, expect_failed: dict[str, str],
                 allow_due: bool, store_now_ms: int) -> None:
    state = view.state
    n_completed = sum(e[2] == "completed" for e in view.events)
    if state == "completed":
        result.completed += 1
        if n_completed != 1:
            result.duplicates += 1
            result.problem(f"{fid}: {n_completed} completed events")
    elif state == "failed":
        result.failed += 1
        error = view.record.get(b"error", b"").decode("utf-8", "replace")
        if fid not in expect_failed:
            result.problem(f"{fid}: failed unexpectedly: {error}")
        elif expect_failed[fid] not in error:
            result.problem(f"{fid}: error {error!r} lacks {expect_failed[fid]!r}")
    elif state in ("running", "cancelled") or not allow_due:
        result.not_terminal += 1
        result.problem(f"{fid}: ends {state} (not terminal)")
    else:
        due = view.record.get(b"due")
        if due is None or int(due) > store_now_ms:
            result.not_terminal += 1
            result.problem(f"{fid}: rests in {state} but is not due now (due={due})")
    if fid in expect_failed and state != "failed":
        result.problem(f"{fid}: expected to fail, ends {state}")


def _audit_effects(result: Audit, fid: str, view: FlowView,
                   effects: list[tuple[str, int, int]]) -> None:
    accepted, claimed = _accepted_outcomes(view)
    seen = {(s, f): n for s, f, n in effects}
    for st, fences in accepted.items():
        if len(set(fences)) > 1 or len(fences) > 1:
            result.duplicates += 1
            result.problem(f"{fid}: state {st} completed {len(fences)} times, fences {fences}")
        for fence in fences:
            if seen.get((st, fence), 0) != 1:
                result.problem(f"{fid}: accepted {st}@{fence} but its side effect was recorded "
                               f"{seen.get((st, fence), 0)} times")
    for st, fence, n in effects:
        if n > 1:
            result.duplicates += 1
            result.problem(f"{fid}: handler of {st}@{fence} ran {n} times under one fence")
        if fence not in claimed:
            result.problem(f"{fid}: side effect under fence {fence}, which was never claimed")
        if fence not in accepted.get(st, []):
            result.reexecutions += 1


def recovery_ms(views: dict[str, FlowView], kills: dict[int, int]) -> list[int]:
    """Per Flow lease of a killed worker: ms from the kill to the Flow's next claim."""
    out = []
    for view in views.values():
        pending: int | None = None
        for _, at, name, d in view.events:
            if name == "lease_released":
                m = WORKER_IN_CAUSE.search(str(d.get("cause", "")))
                pid = int(m.group(1)) if m else None
                pending = kills.get(pid) if pid is not None else None
            elif name == "claimed" and pending is not None:
                out.append(max(0, at - pending))
                pending = None
    return out


def reclaim_ms(views: dict[str, FlowView], kills: dict[int, int]) -> list[int]:
    """Per Flow lease of a killed worker: ms from the kill to its lease_released event (the
    supervisor's part of the recovery: reap, then reclaim)."""
    out = []
    for view in views.values():
        for _, at, name, d in view.events:
            if name == "lease_released":
                m = WORKER_IN_CAUSE.search(str(d.get("cause", "")))
                if m and int(m.group(1)) in kills:
                    out.append(max(0, at - kills[int(m.group(1))]))
    return out


def dist(values: Sequence[float]) -> dict[str, Any]:
    return {"n": len(values), "p50": percentile(values, 50), "p99": percentile(values, 99),
            "max": max(values) if values else None}
