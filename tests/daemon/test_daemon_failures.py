"""Workers that die, hang or cannot boot, and a supervisor that dies."""

from __future__ import annotations

import json
import os
import signal
import time

import psutil

from ferricflowd.flow.queue import Queue
from tests.daemons import metric, process_gone, run_cli
from tests.helpers import wait_for

H = "tests.daemon.handlers"


def owner_pid(record) -> int | None:
    # worker ids are host:pid:group
    return int(record.lease_owner.split(":")[-2]) if record.lease_owner else None


def test_kill9_worker_its_flows_are_claimed_again_within_a_second(start_daemon, tmp_path):
    markers = tmp_path / "markers"
    markers.mkdir()
    daemon = start_daemon(
        {"slow": {"type": "slow", "states": ["queued"], "handler": f"{H}.basic:sleepy",
                  "processes": 2, "concurrency": 8, "batch_size": 4}},
        env={"FF_TEST_MARKERS": str(markers)},
    )  # fmt: skip
    ids = [f"k{i}" for i in range(6)]
    Queue(daemon.client, "slow").enqueue_many([(i, b"60") for i in ids])  # first run: 60 s
    wait_for(lambda: daemon.client.stats("slow").running == 6, timeout=10, what="6 running")
    victim = owner_pid(daemon.client.get(ids[0]))
    held = [i for i in ids if owner_pid(daemon.client.get(i)) == victim]

    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    # Each held Flow is claimed again (second run: no sleep) and completes, well within 1 s,
    # not after its 30 s lease: by the other worker, which has free slots, or the new one.
    wait_for(lambda: all(daemon.client.get(i).state == "completed" for i in held),
             timeout=5, interval=0.01, what="the killed worker's flows completed")
    assert time.monotonic() - killed_at < 1.0, time.monotonic() - killed_at
    for flow_id in held:
        history = daemon.client.history(flow_id)
        released = [e for e in history if e.event == "lease_released"]
        assert released, history
        cause = str(released[0].details.get("cause"))
        assert "SIGKILL" in cause and f":{victim}:" in cause, cause
        assert sum(e.event == "claimed" for e in history) == 2
    # ... and the supervisor replaced the worker
    wait_for(lambda: daemon.group_ready("slow", 2), timeout=10, what="slow back at strength")
    assert victim not in daemon.workers("slow")
    assert metric(daemon.metrics(), "ferricflowd_worker_restarts_total", group="slow") == 1


def test_hung_worker_gets_sigabrt_then_sigkill_and_is_replaced(start_daemon):
    daemon = start_daemon(
        {"q": {"type": "q", "states": ["queued"], "handler": f"{H}.basic:echo"}},
        daemon={"heartbeat_timeout": "1s"},
    )
    (victim,) = daemon.workers("q")
    os.kill(victim, signal.SIGSTOP)  # frozen: no loop turns, no heartbeats
    wait_for(lambda: victim not in daemon.workers("q") and daemon.group_ready("q", 1),
             timeout=10, what="hung worker replaced")
    assert "hung: no heartbeat" in daemon.log()
    assert metric(daemon.metrics(), "ferricflowd_worker_restarts_total", reason="hang") == 1


def test_handler_import_failure_check_exits_1_and_run_does_not_loop(start_daemon, tmp_path):
    daemon = start_daemon(
        {"bad": {"type": "bad", "states": ["queued"], "handler": f"{H}.broken:handler"}},
        wait=False,
    )
    result = run_cli("check", "--config", str(daemon.config_path), cwd=tmp_path)
    assert result.returncode == 1, result
    assert f"{H}.broken" in result.stderr, result.stderr
    assert "ferricflowd_test_no_such_module" in result.stderr, result.stderr
    assert "'bad'" in result.stderr

    assert daemon.wait_exit(15) == 3  # exitcodes.BOOT_IMPORT
    log = daemon.log()
    assert log.count("spawned worker") == 1, log
    assert "failed at boot" in log and "ferricflowd_test_no_such_module" in log


def test_check_names_a_state_without_handler(start_daemon, tmp_path):
    daemon = start_daemon(
        {"ok": {"type": "q", "states": ["queued"], "handler": f"{H}.basic:echo"},
         "half": {"type": "order", "states": ["created", "charged"],
                  "handler": f"{H}.basic:half_order"}},
        wait=False,
    )  # fmt: skip
    result = run_cli("check", "--config", str(daemon.config_path), cwd=tmp_path)
    assert result.returncode == 1
    assert "'half'" in result.stderr and "'charged'" in result.stderr, result.stderr
    assert "ok: group 'ok'" in result.stdout


def test_crash_looping_group_does_not_stop_the_other(start_daemon):
    daemon = start_daemon(
        {"good": {"type": "good", "states": ["queued"], "handler": f"{H}.basic:echo"},
         "bad": {"type": "bad", "states": ["queued"], "handler": f"{H}.crash_on_import:handler"}},
        daemon={"max_restarts": 2},
        wait=False,
    )  # fmt: skip

    def crash_looping() -> bool:
        status, body = daemon.get("/readyz")
        return status == 503 and "group bad: crash-looping" in body

    wait_for(crash_looping, timeout=20, interval=0.05, what="bad marked crash-looping")
    assert json.loads(daemon.get("/readyz")[1])["groups"]["bad"]["crash_looping"] is True
    assert metric(daemon.metrics(), "ferricflowd_group_crash_looping", group="bad") == 1
    assert daemon.get("/healthz")[0] == 200  # the supervisor itself is fine
    Queue(daemon.client, "good").enqueue_many([f"g{i}" for i in range(100)])
    wait_for(lambda: daemon.client.stats("good").counts.get("completed") == 100,
             timeout=10, what="the good group keeps processing")
    assert daemon.proc.poll() is None


def test_workers_exit_within_2s_when_the_supervisor_is_killed(start_daemon):
    daemon = start_daemon(
        {"q": {"type": "q", "states": ["queued"], "handler": f"{H}.basic:echo",
               "processes": 2}}
    )  # fmt: skip
    workers = list(daemon.workers().values())
    assert len(workers) == 2
    daemon.signal(signal.SIGKILL)
    killed_at = time.monotonic()

    wait_for(lambda: all(process_gone(p) for p in workers), timeout=5, interval=0.02,
             what="workers exited")
    assert time.monotonic() - killed_at < 2.0


def test_as_pid_1_it_reaps_orphans_and_drains_on_sigterm(start_daemon):
    daemon = start_daemon(
        {"q": {"type": "q", "states": ["queued"], "handler": f"{H}.basic:orphan"}},
        prefix=("unshare", "--pid", "--fork", "--kill-child"),
    )
    supervisor = psutil.Process(daemon.pid)
    Queue(daemon.client, "q").enqueue_many([f"o{i}" for i in range(5)])
    wait_for(lambda: daemon.client.stats("q").counts.get("completed") == 5, timeout=10)

    def alive_orphan(child: psutil.Process) -> bool:
        try:
            return child.name() == "sleep" or child.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:  # reaped between children() and this read
            return False

    def orphans_reaped() -> bool:  # the sleeps were re-parented to us: no zombie, no sleep
        return not any(alive_orphan(c) for c in supervisor.children())

    wait_for(orphans_reaped, timeout=5, what="orphans reaped by PID 1")
    assert "reaped unknown" not in daemon.log()  # debug only: not a worker error
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(10) == 0


def test_one_group_failing_at_boot_is_not_restarted_until_hup(start_daemon):
    daemon = start_daemon(
        {"good": {"type": "good", "states": ["queued"], "handler": f"{H}.basic:echo"},
         "bad": {"type": "bad", "states": ["queued"], "handler": f"{H}.broken:handler"}},
        wait=False,
    )  # fmt: skip
    wait_for(lambda: "group bad: failed at boot" in daemon.get("/readyz")[1], timeout=15,
             what="bad reported as failed at boot")
    assert daemon.get("/readyz")[0] == 503 and daemon.proc.poll() is None
    assert daemon.log().count(":bad (generation") == 1  # spawned once, no loop
    daemon.config_path.write_text(
        daemon.config_path.read_text().replace(f"{H}.broken:handler", f"{H}.basic:echo")
    )
    daemon.signal(signal.SIGHUP)
    daemon.wait_ready()
    Queue(daemon.client, "bad").enqueue("fixed")
    wait_for(lambda: daemon.client.get("fixed").state == "completed", timeout=10)
