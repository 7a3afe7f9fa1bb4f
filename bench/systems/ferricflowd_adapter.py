"""ferricflowd: the system under test.

Worker side: exactly 2 worker processes. If the daemon works (`python -m ferricflowd run
--config F`, probed once per bench run), one daemon with one group of `processes = 2`;
otherwise 2 subprocesses of bench/ff_worker.py (`QueueClient...worker(...).run(handler)`).
Which one ran is reported as "runner". R1 with the daemon measures its reclaim-on-death; with
the fallback runner nobody watches the processes, so it measures lease expiry (lease_ms).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ferricflowd
from bench.common import REPO, Unavailable, free_port_for_bench, log, wait_counter
from bench.ff_handlers import CHAIN_TYPE, QUEUE_TYPE, chain
from bench.systems.base import THREADS, ProcGroup, System, tail
from ferricflowd import FlowClient, QueueClient
from ferricflowd.flow.wire import LeaseRequest

NAMESPACE = "bench"

# Worker settings per handler kind: (concurrency per process, batch_size); None is
# `--threads` (THREADS, 8, by default). R1/D1 set their concurrency to hold every Flow in flight
# (half on each process).
SETTINGS = {"noop": (None, 100), "lat": (None, 100), "chain": (None, 100), "sleep": (50, 50)}

# The fast profile runs without AOF on purpose: no "relaxed durability" warning per client.
logging.getLogger("ferricflowd.flow.store").setLevel(logging.ERROR)

_daemon_verdict: str | None = None  # "" = the daemon works; otherwise why not


class Adapter(System):
    name = "ferricflowd"

    def __init__(self, runner: str = "auto", lease_ms: int = 30_000,
                 threads: int = THREADS, handlers: str = "sync") -> None:
        super().__init__(handlers)
        self.threads = threads  # concurrency per process where SETTINGS says None
        self.runner_choice = runner  # auto | daemon | fallback
        self.lease_ms = lease_ms
        self.client: FlowClient | None = None
        self._queue: Any = None
        self._chain: Any = None
        self._runner_note = ""

    # -- lifecycle ---------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        return {"version": ferricflowd.__version__, "lease_ms": self.lease_ms,
                "settings": {k: {"concurrency": self._concurrency(k), "batch_size": b}
                             for k, (_, b) in SETTINGS.items()},
                "runner_choice": self.runner_choice, "runner_note": self._runner_note}

    @property
    def durability(self) -> str:
        return "strict" if self.s.durable else "relaxed"

    def setup(self, store: Any, log_dir: Path) -> None:
        super().setup(store, log_dir)
        self._connect()
        if _daemon_verdict is None and self.runner_choice != "fallback":
            self._use_daemon()  # the probe runs once, on the empty store, then empties it
            self.teardown()
            store.reset()
            self._connect()

    def _connect(self) -> None:
        store = self.s
        self.client = FlowClient.from_url(store.url, namespace=NAMESPACE,
                                          durability=self.durability)
        qc = QueueClient(self.client)
        self._queue = qc.queue(type=QUEUE_TYPE)
        self._chain = chain.bind(self.client)

    def teardown(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    @property
    def c(self) -> FlowClient:
        assert self.client is not None, "setup() first"
        return self.client

    # -- producing ---------------------------------------------------------------------------

    def enqueue(self, kind: str, job_id: str, payload: bytes) -> None:
        self._queue.enqueue(job_id, payload)

    def enqueue_many(self, kind: str, items: Sequence[tuple[str, bytes]]) -> None:
        for res in self._queue.enqueue_many(list(items)):
            if res is not True:
                raise RuntimeError(f"enqueue_many: {res!r}")

    def enqueue_chains(self, ids: Sequence[str]) -> None:
        from bench.common import PAYLOAD

        for res in self._chain.start_many([(i, PAYLOAD) for i in ids]):
            if res is not True:
                raise RuntimeError(f"start_many: {res!r}")

    # -- consuming ---------------------------------------------------------------------------

    def start_workers(self, kind: str, *, concurrency: int | None = None,
                      env: dict[str, str] | None = None) -> ProcGroup:
        conc, batch = self._concurrency(kind), SETTINGS[kind][1]
        if concurrency is not None:
            conc = batch = concurrency
        env = {"BENCH_REDIS_URL": self.s.url, **(env or {})}
        if self._use_daemon():
            return self._start_daemon(kind, conc, batch, env)
        return self._start_fallback(kind, conc, batch, env)

    def _concurrency(self, kind: str) -> int:
        return SETTINGS[kind][0] or self.threads

    def _start_fallback(self, kind: str, conc: int, batch: int,
                        env: dict[str, str]) -> ProcGroup:
        cmd = [sys.executable, "-m", "bench.ff_worker", "--url", self.s.url,
               "--namespace", NAMESPACE, "--kind", self.handler_name(kind),
               "--concurrency", str(conc), "--batch-size", str(batch),
               "--lease-ms", str(self.lease_ms), "--durability", self.durability]
        runner = "fallback: 2 x bench.ff_worker" + (f" ({self._runner_note})"
                                                     if self._runner_note else "")
        return ProcGroup.spawn([cmd, cmd], runner, self.log_dir, env=env, cwd=REPO)

    # -- the daemon --------------------------------------------------------------------------

    def _use_daemon(self) -> bool:
        global _daemon_verdict
        if self.runner_choice == "fallback":
            self._runner_note = "chosen with --ff-runner fallback"
            return False
        if _daemon_verdict is None:
            _daemon_verdict = self._probe_daemon()
            if _daemon_verdict:
                log(f"ferricflowd daemon unusable, using the fallback runner: {_daemon_verdict}")
            else:
                log("ferricflowd daemon works; using it")
        if _daemon_verdict and self.runner_choice == "daemon":
            raise Unavailable(f"daemon requested but unusable: {_daemon_verdict}")
        self._runner_note = f"daemon unusable: {_daemon_verdict}" if _daemon_verdict else ""
        return not _daemon_verdict

    def _daemon_cmd(self, config: Path) -> list[str]:
        return [sys.executable, "-m", "ferricflowd", "run", "--config", str(config)]

    def _probe_daemon(self) -> str:
        """'' when `ferricflowd run` drains one job with 2 processes; else the reason."""
        for mod in ("ferricflowd.__main__", "ferricflowd.cli"):
            try:
                if importlib.util.find_spec(mod) is None:
                    return f"{mod} does not exist yet"
            except (ImportError, ValueError) as exc:
                return f"{mod}: {exc}"
        self._queue.enqueue("probe", b"probe")
        try:
            procs = self._start_daemon("noop", 1, 10, {"BENCH_REDIS_URL": self.s.url})
        except Exception as exc:  # noqa: BLE001 - any failure means: use the fallback
            return f"could not start: {exc}"
        try:
            wait_counter(self.s.done, 1, timeout_s=30, what="daemon probe",
                         alive=procs.alive)
            kids = [p for p in procs.descendants() if p not in procs.pids]
            if len(kids) < 2:
                return f"expected 2 worker processes, saw {len(kids)}"
            return ""
        except (TimeoutError, RuntimeError) as exc:
            return f"{exc} {tail(procs.logs[0])}"[:600]
        finally:
            procs.stop(grace_s=10.0)

    def _start_daemon(self, kind: str, conc: int, batch: int,
                      env: dict[str, str]) -> ProcGroup:
        run_dir = self.log_dir / f"daemon-{int(time.time() * 1000)}"
        run_dir.mkdir(parents=True, exist_ok=True)
        if kind == "chain":
            type_, states, handler = CHAIN_TYPE, '["a", "b", "c"]', "bench.ff_handlers:chain"
        else:
            type_, states = QUEUE_TYPE, '["queued"]'
            handler = f"bench.ff_handlers:{self.handler_name(kind)}"
        config = run_dir / "flows.toml"
        config.write_text(f"""
[store]
url = "{self.s.url}"
namespace = "{NAMESPACE}"
durability = "{self.durability}"

[daemon]
data_dir = "{run_dir}"
listen = "127.0.0.1:{free_port_for_bench()}"
drain_timeout = "30s"
log_level = "warning"

[console]
listen = ""

[groups.bench]
type = "{type_}"
states = {states}
handler = "{handler}"
processes = 2
concurrency = {conc}
batch_size = {batch}
lease = "{self.lease_ms}ms"
""")
        return ProcGroup.spawn([self._daemon_cmd(config)], "daemon (1 group, processes = 2)",
                               run_dir, env=env, cwd=REPO)

    def handler_pids(self, workers: ProcGroup) -> list[int]:
        kids = [p for p in workers.descendants() if p not in workers.pids]
        return kids or workers.pids

    # -- inspection --------------------------------------------------------------------------

    def pending(self) -> int:
        return self.c.stats(QUEUE_TYPE).counts.get("queued", 0)

    def drain_accounting(self, n: int) -> dict[str, Any]:
        counts = self.c.stats(QUEUE_TYPE).counts
        completed = counts.get("completed", 0)
        requeued = counts.get("queued", 0)
        return {"completed": completed, "requeued": requeued,
                "stranded_running": counts.get("running", 0),
                "lost": max(0, n - completed - requeued)}

    def recovered_after(self, killed_ids: Sequence[str], t_kill: float,
                        timeout_s: float) -> float | None:
        """From the history: the first `claimed` event after the kill, for every killed Flow."""
        kill_ms = t_kill * 1000
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            again: dict[str, int] = {}
            for fid in killed_ids:
                for ev in self.c.history(fid):
                    if ev.event == "claimed" and ev.at_ms >= kill_ms:
                        again[fid] = ev.at_ms
                        break
            if len(again) == len(killed_ids):
                return (max(again.values()) - kill_ms) / 1000.0
            time.sleep(0.05)
        return None

    # -- M1 and S1 (in process) --------------------------------------------------------------

    def memory(self, n: int) -> dict[str, Any]:
        from bench.workloads import queued_memory

        out = queued_memory(self, n)
        before = out["baseline_bytes"]
        # Drive them to completed with an in-process worker and big batches.
        worker = self._queue.worker(concurrency=4, batch_size=1000, lease_ms=600_000)
        t0 = time.perf_counter()
        handled = worker.run_until_idle(lambda job: None, timeout=max(600.0, n / 100))
        took = time.perf_counter() - t0
        if handled < n:
            raise RuntimeError(f"M1: only {handled} of {n} completed")
        after = self.s.used_memory()
        sample = self.c.keys
        r = self.s.r
        flow_bytes = r.memory_usage(sample.flow(0, "m0"), samples=0) or 0
        hist_bytes = r.memory_usage(sample.history(0, "m0"), samples=0) or 0
        out.update({
            "completed_bytes_per_flow": (after - before) / n,
            "sample_record_bytes": flow_bytes, "sample_history_bytes": hist_bytes,
            "history_events_per_flow": r.llen(sample.history(0, "m0")),
            "in_process_complete_per_s": n / took,
        })
        return out

    def scale(self, small: int, big: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for label, size in (("small", small), ("big", big)):
            self.s.reset()
            self.teardown()
            self.setup(self.s, self.log_dir)
            t0 = time.perf_counter()
            self._build_backlog(size)
            out[f"{label}_build_s"] = time.perf_counter() - t0
            times, inside = self._claim_times(20)
            out[f"{label}_flows"] = size
            out[f"{label}_claim_ms"] = statistics.median(times)
            out[f"{label}_claim_max_ms"] = max(times)
            out[f"{label}_claim_server_ms"] = statistics.median(inside)
            log(f"S1 {size} due: claim of 100 median {out[f'{label}_claim_ms']:.2f} ms")
        out["ratio_big_to_small"] = out["big_claim_ms"] / out["small_claim_ms"]
        out["server_ratio_big_to_small"] = (out["big_claim_server_ms"]
                                            / out["small_claim_server_ms"])
        return out

    def _build_backlog(self, size: int) -> None:
        from bench.common import PAYLOAD
        from bench.workloads import BIG_BATCH

        for start in range(0, size, BIG_BATCH):
            items = [(f"s{i}", PAYLOAD) for i in range(start, min(size, start + BIG_BATCH))]
            self.enqueue_many("noop", items)

    def _claim_times(self, reps: int) -> tuple[list[float], list[float]]:
        """Time `reps` claims of 100 (after two warm-ups), on the client and inside the server
        (INFO commandstats FCALL microseconds around each claim); after each, 100 fresh
        due Flows replace the claimed ones so the backlog stays at its size."""
        from bench.common import PAYLOAD

        r = self.s.r

        def server_usec() -> int:
            return int(r.info("commandstats").get("cmdstat_fcall", {}).get("usec", 0))

        client, server = [], []
        for i in range(reps + 2):
            u0 = server_usec()
            t0 = time.perf_counter()
            lease = LeaseRequest(f"s1-claimer-{os.getpid()}", ["queued"], 600_000)
            got = self.c.claim(QUEUE_TYPE, lease, limit=100)
            took = (time.perf_counter() - t0) * 1000
            inside = (server_usec() - u0) / 1000
            if len(got.jobs) != 100:
                raise RuntimeError(f"S1 claim got {len(got.jobs)} of 100")
            if i >= 2:
                client.append(took)
                server.append(inside)
            self.enqueue_many("noop", [(f"s1r{i}-{j}", PAYLOAD) for j in range(100)])
        return client, server
