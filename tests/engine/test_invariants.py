"""A hypothesis state machine: random command sequences against the real engine, with the
record invariants of flow-semantics.md checked after every step by reading the keys directly.

Invariants (per Flow, across both partitions of a fresh namespace per example):
- a due Flow (not running, not terminal, not parked) has exactly one due-index entry, scored
  with its due time, in d:<type>:<state>:<prio>; every other Flow has none;
- running <=> lease fields set <=> in the lease zset (scored by the deadline) <=> in its
  owner's worker set; a Flow that is not running is in no worker set;
- version == number of history events, and their versions are 1..n;
- the fencing token never decreases;
- the counts hash c:<type> equals the number of Flows per state;
- a terminal Flow is in exactly one terminal zset (its status), others in none;
- a parked Flow (a parent waiting for its children) is in q:<type>:<state>, others are not.
Operator commands take part too: rewind (requeue), a bulk requeue and a purge.
"""

from __future__ import annotations

import secrets
from collections import Counter
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ferricflowd import (
    ChildSpec,
    FamilyConflict,
    FlowAlreadyExists,
    FlowClient,
    FlowFilter,
    FlowLeased,
    FlowNotFound,
    IdempotencyConflict,
    RetryPolicy,
    StaleLease,
    StateMismatch,
    TerminalFlow,
    WrongState,
    complete,
    fail,
    retry,
    transition,
)
from ferricflowd.flow.records import Job, record_fields
from ferricflowd.flow.store import Call, Store
from ferricflowd.flow.wire import LeaseRequest

TYPE = "prop"
STATES = ["a", "b", "c"]
TERMINAL = ("completed", "failed", "cancelled")
WORKERS = ["w1", "w2"]
IDS = [f"f{i}" for i in range(6)]
FAR = 10 ** 13

ids = st.sampled_from(IDS)
states = st.sampled_from(STATES)
index = st.integers(min_value=0, max_value=1_000)
outcomes = st.sampled_from(["complete", "transition", "retry", "fail"])


def _outcome(kind: str, to: str) -> Any:
    return {"complete": complete(b"r"), "transition": transition(to), "retry": retry(b"e"),
            "fail": fail(b"e")}[kind]


class FlowMachine(RuleBasedStateMachine):
    url = ""  # set by the test
    exercised: Counter[str] = Counter()  # what the runs reached, across examples

    def __init__(self) -> None:
        super().__init__()
        self.fc = FlowClient.from_url(self.url, namespace="h" + secrets.token_hex(5),
                                      partitions=2)
        self._fix_clock()
        self.fc.register_policy(TYPE, RetryPolicy(max_retries=2, backoff="none",
                                                  max_crashes=2))
        self.flows: dict[str, str | None] = {}  # id -> partition_key
        self.held: list[Job] = []  # jobs we believe may still hold their lease
        self.spent: list[Job] = []  # jobs whose outcome was sent or whose lease was lost
        self.fences: dict[str, int] = {}
        self.sent: dict[int, tuple[str, str]] = {}  # id(job) -> the outcome sent with it
        self.kids = 0

    def teardown(self) -> None:
        self.fc.close()

    def _fix_clock(self) -> None:
        """Run every script at a logical time, 1 s later per call (their now_ms override).
        Claim order is (due, id): on the wall clock, whether two Flows made due by
        consecutive commands share a millisecond decides which one a claim takes, and
        hypothesis needs every example to replay exactly."""
        store, clock = self.fc.store, iter(range(10**9, 10**12, 1000))

        def call_many(calls: Any, *, mutating: bool = True) -> list[Any]:
            timed = [Call(c.script, c.prefix, [next(clock), *c.args[1:]]) for c in calls]
            return Store.call_many(store, timed, mutating=mutating)

        store.call_many = call_many  # type: ignore[method-assign]

    # -- helpers ------------------------------------------------------------------------------

    def _retire(self, flow_id: str) -> None:
        """The Flow's lease (if we held it) is gone: move its job to the spent pool."""
        for job in [j for j in self.held if j.id == flow_id]:
            self.held.remove(job)
            self.spent.append(job)

    def _version(self, flow_id: str) -> int:
        record = self.fc.get(flow_id, partition_key=self.flows[flow_id])
        return record.version if record else 0

    # -- rules --------------------------------------------------------------------------------

    @initialize(plan=st.lists(st.tuples(states, st.integers(0, 2)), min_size=2, max_size=6),
                claimed=st.integers(0, 4), worker=st.sampled_from(WORKERS))
    def seed(self, plan: list[tuple[str, int]], claimed: int, worker: str) -> None:
        """Start every example with some Flows, a few of them claimed."""
        for flow_id, (state, priority) in zip(IDS, plan, strict=False):
            assert self.fc.create(flow_id, TYPE, state, b"p", priority=priority) is True
            self.flows[flow_id] = None
        if claimed:
            self.claim(worker, set(STATES), claimed)

    @rule(flow_id=ids, state=states, priority=st.integers(0, 2), idempotent=st.booleans(),
          when=st.sampled_from(["now", "past", "future"]))
    def create(self, flow_id: str, state: str, priority: int, idempotent: bool,
               when: str) -> None:
        run_at = {"now": None, "past": 1_000, "future": FAR}[when]
        try:
            created = self.fc.create(flow_id, TYPE, state, b"p", priority=priority,
                                     run_at_ms=run_at, idempotent=idempotent)
        except (FlowAlreadyExists, IdempotencyConflict):
            assert flow_id in self.flows
            return
        assert created == (flow_id not in self.flows)
        self.flows.setdefault(flow_id, None)

    @rule(worker=st.sampled_from(WORKERS), wanted=st.sets(states, min_size=1),
          limit=st.integers(1, 3))
    def claim(self, worker: str, wanted: set[str], limit: int) -> None:
        jobs = self.fc.claim(TYPE, LeaseRequest(worker, sorted(wanted), 600_000), limit=limit).jobs
        assert len(jobs) <= limit
        self.exercised["claimed"] += len(jobs)
        for job in jobs:
            assert job.state in wanted
            # fencing: +1 on every claim, so strictly above anything seen before
            assert job.fencing_token == self.fences.get(job.id, 0) + 1, job
            self._retire(job.id)  # an older lease on the same Flow is stale now
            self.held.append(job)

    @precondition(lambda self: self.held)
    @rule(i=index, kind=outcomes, to=states, keep=st.booleans())
    def outcome(self, i: int, kind: str, to: str, keep: bool) -> None:
        job = self.held.pop(i % len(self.held))
        self.spent.append(job)
        self.sent[id(job)] = (kind, to)
        # With keep, a transition may come back as the next Job, leased on to WORKERS[0].
        lease = LeaseRequest(WORKERS[0], STATES, 600_000) if keep else None
        reply = self.fc.apply_outcomes([(job, _outcome(kind, to))], keep=lease)[0]
        if isinstance(reply, StaleLease):  # taken away by a cascade (parent failed/cancelled)
            record = self.fc.get(job.id, partition_key=self.flows[job.id])
            assert record is not None
            assert record.state != "running" or record.lease_token != job.lease_token
            self.exercised["lease lost to a cascade"] += 1
            return
        if isinstance(reply, Job):
            assert keep and kind == "transition" and reply.state == to, reply
            assert reply.fencing_token == job.fencing_token + 1, reply
            self.held.append(reply)
            self.exercised["transition kept"] += 1
            return
        assert reply in (b"ok", b"scheduled", b"exhausted"), reply
        self.exercised[f"{kind} {reply.decode()}"] += 1

    @precondition(lambda self: self.spent)
    @rule(i=index, kind=outcomes, to=states, same=st.booleans())
    def stale_outcome(self, i: int, kind: str, to: str, same: bool) -> None:
        """An outcome with a spent lease: refused, or (the same outcome again) a no-op."""
        job = self.spent[i % len(self.spent)]
        if same and id(job) in self.sent:
            kind, to = self.sent[id(job)]
        before = self._version(job.id)
        try:
            reply = self.fc.apply_outcome(job, _outcome(kind, to))
        except StaleLease:
            reply = b"stale"
        assert reply in (b"stale", b"replay"), reply
        self.exercised[reply.decode()] += 1
        assert self._version(job.id) == before

    @precondition(lambda self: self.held)
    @rule(i=index, n=st.integers(0, 2), wait=st.sampled_from(["all", "any"]),
          on_fail=st.sampled_from(["fail_parent", "ignore"]), to=states)
    def spawn(self, i: int, n: int, wait: str, on_fail: str, to: str) -> None:
        job = self.held[i % len(self.held)]
        kids = [ChildSpec(id=f"k{self.kids + j}", type=TYPE, state="a") for j in range(n)]
        try:
            job.flow.spawn_children(kids, wait_state=to, wait=wait, on_child_failed=on_fail)
        except (StaleLease, WrongState, IdempotencyConflict):
            return
        self.kids += n
        self.exercised["spawned"] += 1
        parent_key = self.flows[job.id] or job.id
        for kid in kids:
            self.flows[kid.id] = parent_key

    @precondition(lambda self: self.flows)
    @rule(i=index, with_lease=st.booleans())
    def cancel(self, i: int, with_lease: bool) -> None:
        flow_id = sorted(self.flows)[i % len(self.flows)]
        job = next((j for j in self.held if j.id == flow_id), None) if with_lease else None
        try:
            self.fc.cancel(flow_id, "test", partition_key=self.flows[flow_id], job=job)
        except (StaleLease, TerminalFlow, FlowNotFound):
            return
        self.exercised["cancelled"] += 1
        self._retire(flow_id)

    @precondition(lambda self: self.flows)
    @rule(i=index, guard=st.sets(states, max_size=2), to=st.one_of(st.none(), states),
          key=st.one_of(st.none(), st.sampled_from(["k1", "k2"])))
    def signal(self, i: int, guard: set[str], to: str | None, key: str | None) -> None:
        flow_id = sorted(self.flows)[i % len(self.flows)]
        if to is not None and not guard:
            guard = set(STATES)  # matches any live Flow, running ones included
        try:
            self.fc.signal(flow_id, "sig", if_state=sorted(guard) or None, transition_to=to,
                           idempotency_key=key, partition_key=self.flows[flow_id])
        except (StateMismatch, TerminalFlow, IdempotencyConflict, FlowNotFound):
            return
        self.exercised["signal moved" if to else "signal passive"] += 1
        if to is not None:
            self._retire(flow_id)

    @precondition(lambda self: self.flows)
    @rule(i=index, to=st.one_of(st.none(), states), keep=st.booleans())
    def rewind(self, i: int, to: str | None, keep: bool) -> None:
        flow_id = sorted(self.flows)[i % len(self.flows)]
        try:
            self.fc.rewind(flow_id, to_state=to, keep_attempts=keep,
                           partition_key=self.flows[flow_id])
        except (FlowLeased, FamilyConflict, FlowNotFound, WrongState) as exc:
            self.exercised[f"rewind refused {type(exc).__name__}"] += 1
            return
        self.exercised["rewound"] += 1
        self._retire(flow_id)

    @rule(status=st.sampled_from(TERMINAL))
    def requeue_all(self, status: str) -> None:
        result = self.fc.requeue(TYPE, FlowFilter.of(state=status), rate=None, batch=2)
        self.exercised["requeued in bulk"] += result.done

    @rule(status=st.sampled_from(TERMINAL))
    def purge_all(self, status: str) -> None:
        result = self.fc.purge(TYPE, FlowFilter.of(state=status), rate=None, batch=2)
        self.exercised["purged"] += result.done
        gone = {fid for fid, key in self.flows.items()
                if self.fc.get(fid, partition_key=key) is None}
        for fid in gone:
            del self.flows[fid]
            self.fences.pop(fid, None)
        self.held = [j for j in self.held if j.id not in gone]
        self.spent = [j for j in self.spent if j.id not in gone]

    @rule(worker=st.sampled_from(WORKERS))
    def reclaim_worker(self, worker: str) -> None:
        released, failed = self.fc.reclaim_worker(worker, "crash")
        self.exercised["reclaimed"] += released
        self.exercised["crash failed"] += failed
        for job in [j for j in self.held if j.lease_token.startswith(worker + ":")]:
            self._retire(job.id)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def records_are_consistent(self) -> None:
        fc = self.fc
        keys = fc.keys
        known = sorted(self.flows)
        seen_states = set(STATES)
        for p in range(keys.partitions):
            members = fc.store.execute(lambda r, p=p: r.smembers(f"{keys.prefix(p)}s:{TYPE}"))
            seen_states.update(m.decode() for m in members)
        live_states = sorted(seen_states - set(TERMINAL) - {"running"})

        def read(r: Any) -> list[Any]:
            pipe = r.pipeline(transaction=False)
            for fid in known:
                p = fc.partition_for(fid, self.flows[fid])
                pre = keys.prefix(p)
                pipe.get(keys.flow(p, fid))
                pipe.lrange(keys.history(p, fid), 0, -1)
                for s in live_states:
                    for prio in (0, 1, 2):
                        pipe.zscore(f"{pre}d:{TYPE}:{s}:{prio}", fid)
                pipe.zscore(f"{pre}l:{TYPE}", fid)
                for st_ in live_states:
                    pipe.zscore(keys.parked(p, TYPE, st_), fid)
                for w in WORKERS:
                    pipe.sismember(f"{pre}w:{w}", fid)
                for status in TERMINAL:
                    pipe.zscore(keys.terminal(p, TYPE, status), fid)
            for p in range(keys.partitions):
                pipe.hgetall(f"{keys.prefix(p)}c:{TYPE}")
            return pipe.execute()

        got = iter(fc.store.execute(read))
        actual: Counter[str] = Counter()
        for fid in known:
            raw = {k.decode(): v.decode("utf-8", "replace")
                   for k, v in record_fields(next(got)).items()}
            history = [msgpack.unpackb(e, raw=False) for e in next(got)]
            due = {(s, prio): next(got) for s in live_states for prio in (0, 1, 2)}
            lease = next(got)
            parked = {st_ for st_ in live_states if next(got) is not None}
            in_workers = {w: bool(next(got)) for w in WORKERS}
            terminals = {status: next(got) for status in TERMINAL}
            assert raw, f"{fid} vanished"
            actual[raw["state"]] += 1
            self._check_flow(fid, raw, history, due, lease, in_workers, terminals)
            is_parked = raw["state"] in live_states and not raw.get("due")
            assert parked == ({raw["state"]} if is_parked else set()), (fid, raw, parked)

        counted: Counter[str] = Counter()
        for _ in range(keys.partitions):
            for k, v in next(got).items():
                counted[k.decode()] += int(v)
        assert +counted == +actual, (counted, actual)

    def _check_flow(self, fid: str, raw: dict[str, str], history: list[Any],
                    due: dict[tuple[str, int], Any], lease: Any, in_workers: dict[str, bool],
                    terminals: dict[str, Any]) -> None:
        state = raw["state"]
        where = f"{fid} in state {state}: {raw}"
        live = state != "running" and state not in TERMINAL

        entries = {k: v for k, v in due.items() if v is not None}
        if live and raw.get("due"):
            assert len(entries) == 1, where
            (s, prio), score = next(iter(entries.items()))
            assert s == state and str(prio) == raw.get("prio", "0"), where
            assert int(score) == int(raw["due"]), where
        else:
            assert entries == {}, where
            if live:
                assert raw.get("grp_parked"), f"lost (neither due nor parked): {where}"

        lease_fields = [bool(raw.get(f)) for f in ("owner", "token", "deadline", "run_state")]
        if state == "running":
            assert all(lease_fields), where
            assert lease is not None and int(lease) == int(raw["deadline"]), where
            assert raw["owner"] in WORKERS and in_workers[raw["owner"]], where
            assert sum(in_workers.values()) == 1, where
            assert "due" not in raw, where
        else:
            assert not any(lease_fields), where
            assert lease is None and not any(in_workers.values()), where

        assert int(raw["ver"]) == len(history), where
        assert [h[0] for h in history] == list(range(1, len(history) + 1)), where

        fence = int(raw.get("fence", 0))  # a Flow never claimed keeps no fence field
        assert fence >= self.fences.get(fid, 0), where
        self.fences[fid] = fence

        found = {status for status, score in terminals.items() if score is not None}
        assert found == ({state} if state in TERMINAL else set()), where
        if state in TERMINAL:
            assert "due" not in raw, where


def test_engine_invariants_hold_under_random_commands(redis_server: Any) -> None:
    FlowMachine.url = redis_server.url
    FlowMachine.TestCase.settings = settings(
        # derandomize: the same 30 command sequences every run, so the coverage check below
        # (stale and replayed outcomes were exercised) cannot flake on an unlucky seed.
        max_examples=30, stateful_step_count=25, deadline=None, database=None, derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
    FlowMachine.exercised.clear()
    FlowMachine.TestCase().runTest()
    reached = FlowMachine.exercised
    outcomes_sent = sum(n for what, n in reached.items()
                        if what.split()[0] in ("complete", "transition", "retry", "fail"))
    assert outcomes_sent > 0 and reached["stale"] + reached["replay"] > 0, reached
    for what in ("claimed", "spawned", "cancelled", "reclaimed", "transition kept", "rewound",
                 "requeued in bulk", "purged"):
        assert reached[what] > 0, f"the random runs never reached {what!r}: {reached}"


def test_machine_catches_a_broken_invariant(redis_server: Any) -> None:
    """The checks are live: corrupting a count in the store makes the invariant fail."""
    FlowMachine.url = redis_server.url
    machine = FlowMachine()
    try:
        machine.create("f0", "a", 0, False, "now")
        machine.records_are_consistent()
        p = machine.fc.partition_for("f0")
        machine.fc.store.execute(
            lambda r: r.hincrby(f"{machine.fc.keys.prefix(p)}c:{TYPE}", "a", 1))
        with pytest.raises(AssertionError):
            machine.records_are_consistent()
    finally:
        machine.teardown()
