"""The supervisor: one class, one loop, in the manner of gunicorn's arbiter.

Signal handlers only `put_nowait` the signal number on a SimpleQueue (reentrant by design);
the loop does everything else, in this order on every turn:

    handle signals -> reap -> read control pipes -> murder (hung, overdue) -> recycle
    -> maintain strength (spawn) -> publish health

Workers are fork+exec'd (`python -m ferricflowd.worker`; this process keeps an HTTP thread
and a store thread), each with a pipe on which it reports readiness, heartbeats and status.
The supervisor never imports handler code nor talks to the store from this thread: dead
workers' leases are reclaimed by the maintenance thread (maintenance.py), which it feeds.
"""

from __future__ import annotations

import logging
import os
import queue
import signal
import socket
import time
from collections.abc import Mapping
from typing import Any

from setproctitle import setproctitle

from ferricflowd import exitcodes
from ferricflowd.config import Config, ConfigError, load_config
from ferricflowd.logs import init_sentry, redact_url
from ferricflowd.metrics import SupervisorMetrics, supervisor_metrics
from ferricflowd.procenv import SUPERVISOR_PID_ENV, worker_env
from ferricflowd.supervisor import preflight, systemd
from ferricflowd.supervisor.console import ConsoleProcess, local_url, status_doc
from ferricflowd.supervisor.datadir import DataDirInUse, DataDirLock
from ferricflowd.supervisor.embedded import EmbeddedStore, EmbeddedStoreError
from ferricflowd.supervisor.groups import GroupState, reconcile_groups, served_by, types_of
from ferricflowd.supervisor.http import Health, HealthServer
from ferricflowd.supervisor.maintenance import Maintenance
from ferricflowd.supervisor.promdir import PromDir
from ferricflowd.supervisor.scheduler import Scheduler
from ferricflowd.supervisor.workers import Worker

__all__ = ["HaltServer", "Supervisor"]

log = logging.getLogger(__name__)

LOOP_INTERVAL_S = 0.25  # longest sleep between turns; signals wake the loop at once
BOOT_DEFER_S = 2.0  # finish_boot waits at most this long for the first workers to be ready
ABORT_GRACE_S = 1.0  # SIGABRT -> SIGKILL for a hung worker
KILL_GRACE_S = 2.0  # a retired worker's own drain deadline -> our SIGKILL
FAST_STOP_GRACE_S = 1.0  # QUIT: workers stop claiming and exit, or are killed after this
REPLACE_WAIT_S = 30.0  # recycle: longest wait for the replacement before the old one drains
RSS_CHECK_INTERVAL_S = 1.0
SIGNALS = ("HUP", "QUIT", "INT", "TERM", "TTIN", "TTOU", "CHLD", "USR1")
SIG_NAMES = {getattr(signal, f"SIG{name}"): name.lower() for name in SIGNALS}


class HaltServer(Exception):
    """Stop the supervisor with `exit_code`; `reason` is logged."""

    def __init__(self, reason: str, exit_code: int = exitcodes.FAILURE) -> None:
        super().__init__(reason)
        self.reason = reason
        self.exit_code = exit_code


class Supervisor:
    """Runs the worker processes of every group of a Config until told to stop."""

    def __init__(self, config: Config, overrides: Mapping[str, Any] | None = None) -> None:
        self.config = config
        self.overrides = dict(overrides or {})  # CLI overrides, re-applied on reload
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.workers: dict[int, Worker] = {}
        self.groups: dict[str, GroupState] = {}
        self.stopping: str | None = None  # None, "drain" or "fast"
        self.stop_deadline = 0.0
        self.stop_started = 0.0
        self.hostname = socket.gethostname()
        self.datadir = DataDirLock(config.daemon.data_dir)
        self.metrics_dir = PromDir(config.daemon.data_dir)
        self.metrics: SupervisorMetrics | None = None
        self.embedded: EmbeddedStore | None = None
        self.store_url = config.store.url or ""
        self.maintenance: Maintenance | None = None
        self.boot_started = 0.0  # monotonic time of start(); finish_boot() follows
        self.http: HealthServer | None = None
        self.console: ConsoleProcess | None = None
        self._health = Health(loop_tick=time.monotonic())
        self._systemd = systemd.Notifier()
        self._next_rss_check = 0.0
        self._sentry: Any = None

    # ------------------------------------------------------------------ lifecycle

    def run(self) -> int:
        """Start, loop until stopped, clean up; returns the process exit code."""
        exit_code = exitcodes.OK
        try:
            self.start()
            while self.turn():
                pass
            log.info("stopped after %.1fs; exiting", time.monotonic() - self.stop_started)
        except HaltServer as halt:
            log.error("stopping: %s", halt.reason)
            exit_code = halt.exit_code
        finally:
            self.shutdown()
        return exit_code

    def start(self) -> None:
        """Everything before the first turn; raises HaltServer if the daemon cannot run.

        Workers are spawned first; what only this process needs (prometheus_client, Sentry,
        the maintenance thread's redis-py: ~0.2 s of CPU) waits for finish_boot(), as a cold
        start is CPU-bound (three interpreters importing on two cores)."""
        daemon = self.config.daemon
        setproctitle(f"ferricflowd: supervisor {self.config.path.name}")
        try:  # first: a second daemon on this data_dir must touch nothing of the first's
            self.datadir.acquire()
        except (DataDirInUse, OSError) as exc:
            raise HaltServer(str(exc), exitcodes.CONFIG) from None
        self.metrics_dir.prepare()
        for name in SIGNALS:
            signal.signal(getattr(signal, f"SIG{name}"), self.signal)
        if self.config.store.embedded:
            self.embedded = EmbeddedStore(daemon.embedded_socket)
            try:
                self.embedded.start()
            except EmbeddedStoreError as exc:
                raise HaltServer(str(exc), exitcodes.CONFIG) from None
            self.store_url = self.embedded.url
        self.http = HealthServer(daemon.listen, lambda: self._health, self.metrics_dir,
                                 max(5.0, 20 * LOOP_INTERVAL_S))
        try:
            self.http.start()
        except OSError as exc:
            raise HaltServer(f"cannot listen on {daemon.listen}: {exc}", exitcodes.CONFIG) from None
        embedded_url = self.store_url if self.embedded is not None else None
        self.console = ConsoleProcess(self.config, embedded_url, local_url(self.http.address))
        for group in self.config.groups:
            self.groups[group.name] = GroupState.of(self.config, group)
        store, url = self.config.store, self.store_url
        # Made now, after the groups it sweeps (a reclaim can queue at once); run in finish_boot
        self.maintenance = Maintenance(
            lambda: store.client(url), types_of(self.groups), daemon.maintenance_interval_s,
            served=served_by(self.groups),
            check_replicas=store.min_replicas > 0,
            scheduler=Scheduler(self.config.schedules),
        )
        preflight.warn_unsafe(self.config.path)  # before a worker imports from those places
        self.boot_started = time.monotonic()
        self.manage_workers(self.boot_started)
        log.info(
            "ferricflowd supervisor pid %d: config %s, store %s, groups %s",
            os.getpid(), self.config.path, redact_url(self.store_url),
            ", ".join(f"{g.name}[{','.join(g.states)}]x{g.processes}" for g in self.config.groups),
        )  # fmt: skip

    @property
    def booting(self) -> bool:
        return self.metrics is None  # finish_boot() creates the metrics

    def finish_boot(self) -> None:
        """The rest of start(), once every worker is ready (or BOOT_DEFER_S passed, or a
        worker exited: its restart is counted and its leases reclaimed by then)."""
        if not self.booting:
            return
        self.metrics_dir.activate()
        self.metrics = supervisor_metrics()
        self.metrics.preinit(list(self.groups))
        # Process-level events (a worker killed by a signal) go to Sentry from here.
        self._sentry = init_sentry(self.config.daemon.sentry_dsn,
                                   self.config.daemon.sentry_environment)
        assert self.maintenance is not None
        self.maintenance.start(self.metrics)

    def turn(self) -> bool:
        """One pass of the loop; False once a stop has finished."""
        for sig in self.wait_for_signals(self._loop_timeout()):
            self.dispatch(sig)
        now = time.monotonic()
        self.reap_workers()
        for worker in list(self.workers.values()):
            for message in worker.read_control(now):
                if message.get("t") == "ready":
                    log.info("worker %s (pid %d) ready", worker.worker_id, worker.pid)
                elif message.get("t") == "recycle" and worker.kill_at is None:
                    log.info("worker %s is recycling itself: %s", worker.worker_id,
                             message.get("why"))
                    worker.kill_at = now + self._retire_grace()  # its drain is bounded too
        self.murder_workers(now)
        if self.booting and (now - self.boot_started > BOOT_DEFER_S
                             or all(c.ready for c in self.workers.values())):
            self.finish_boot()
        if self.stopping:
            if not self.workers:
                return False
        else:
            self.recycle_workers(now)
            self.manage_workers(now)
            self.check_helpers()
            if self.console is not None and not self.booting:
                self.console.maintain(now)
        self.publish_health(now)
        return True

    def shutdown(self) -> None:
        """After the loop (or a halt): no worker left behind, leases handed back, helpers off."""
        if not self.datadir.held:
            return  # stopped before it started anything (data_dir in use)
        if self.workers:
            self._stop_remaining()
        if self.maintenance is not None and self.maintenance.is_alive():
            if not self.maintenance.flush(timeout_s=10.0):
                log.warning("some leases of dead workers were not reclaimed; they expire instead")
            self.maintenance.stop()
        if self.console is not None:
            self.console.stop()
        if self.http is not None:
            self.http.stop()
        if self.embedded is not None:
            self.embedded.stop()
        self.metrics_dir.remove()
        if self._sentry is not None:
            self._sentry.flush(timeout=2.0)
        systemd.status("stopped")
        self.datadir.release()

    # ------------------------------------------------------------------ signals

    def signal(self, sig: int, frame: Any) -> None:
        """The only code that runs in signal context: enqueue and return."""
        self.signals.put_nowait(sig)

    def wait_for_signals(self, timeout: float) -> list[int]:
        """Block until a signal is queued (or `timeout`); return all queued ones."""
        try:
            sigs = [self.signals.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                sigs.append(self.signals.get_nowait())
            except queue.Empty:
                return sigs

    def dispatch(self, sig: int) -> None:
        """Call `handle_<signame>` for a queued signal."""
        name = SIG_NAMES.get(sig)
        if name is None:
            return
        if name != "chld":
            log.info("got SIG%s", name.upper())
        getattr(self, f"handle_{name}")()

    def handle_chld(self) -> None:
        """A worker exited; the reap that follows every dispatch collects it."""

    def handle_term(self) -> None:
        """Graceful drain; a second TERM while draining is a fast stop."""
        self.stop(graceful=self.stopping is None)

    handle_int = handle_term  # Ctrl-C in a terminal

    def handle_quit(self) -> None:
        """Fast stop."""
        self.stop(graceful=False)

    def handle_hup(self) -> None:
        """Reload the config and replace the groups whose config changed."""
        self.reload()

    def handle_ttin(self) -> None:
        """One more worker process per group."""
        self.scale(+1)

    def handle_ttou(self) -> None:
        """One worker process less per group (never below one)."""
        self.scale(-1)

    def handle_usr1(self) -> None:
        """Log the process table."""
        for worker in sorted(self.workers.values(), key=lambda w: (w.group, w.spawned_at)):
            log.info("worker %s", worker.describe())

    # ------------------------------------------------------------------ operations

    def stop(self, graceful: bool) -> None:
        """Begin a drain (SIGTERM to every worker, SIGKILL at drain_timeout) or a fast stop."""
        now = time.monotonic()
        if graceful:
            drain_s = self.config.daemon.drain_timeout_s
            self.stopping, self.stop_started, self.stop_deadline = "drain", now, now + drain_s
            systemd.stopping()
            log.info("draining %d worker(s), deadline %gs", len(self.workers), drain_s)
            for worker in self.workers.values():
                worker.retire("drain", drain_s, now)
                worker.kill_at = min(worker.kill_at or self.stop_deadline, self.stop_deadline)
            return
        if self.stopping is None:
            self.stop_started = now
            systemd.stopping()
        self.stopping = "fast"
        self.stop_deadline = min(self.stop_deadline or now + 3600, now + FAST_STOP_GRACE_S)
        log.info("fast stop of %d worker(s)", len(self.workers))
        for worker in self.workers.values():
            worker.quit(self.stop_deadline, now)

    def reload(self) -> None:
        """Re-read the config; an invalid or unreloadable one keeps the running config."""
        if self.stopping:
            return
        systemd.reloading()
        try:
            new = load_config(self.config.path, os.environ, self.overrides)
            key = self.config.needs_restart(new)
            if key is not None:
                raise ConfigError(str(new.path), key, "changed; this needs a restart, not HUP")
        except ConfigError as exc:
            log.error("reload failed, keeping the running config: %s", exc)
            systemd.ready()
            return
        now = time.monotonic()
        for name in reconcile_groups(self.groups, new):
            for worker in self.workers_of(name):
                worker.retire("group removed", self._retire_grace(), now)
        if self.metrics is not None:
            self.metrics.preinit(list(self.groups))
        self.config = new
        if self.console is not None:
            self.console.reload(new)
        if self.maintenance is not None:
            self.maintenance.set_types(types_of(self.groups), served_by(self.groups))
            self.maintenance.set_schedules(new.schedules)
        systemd.ready()
        log.info("reloaded %s", new.path)

    def scale(self, delta: int) -> None:
        """Change every group's target strength; the next turn spawns or retires."""
        for group in self.groups.values():
            group.target = max(1, group.target + delta)
            log.info("group %s: %d process(es) now", group.name, group.target)

    # ------------------------------------------------------------------ the process table

    def spawn_worker(self, group: GroupState, now: float) -> Worker | None:
        """fork+exec one worker of `group`; None if the exec failed (counted as a crash)."""
        env = worker_env({**self.metrics_dir.worker_env(), SUPERVISOR_PID_ENV: str(os.getpid())})
        url = self.store_url if self.embedded is not None else None  # a socket path, no secret
        try:
            worker = Worker.spawn(self.config, group, self.hostname, url, env, now)
        except OSError as exc:
            log.error("cannot start a worker of group %s: %s", group.name, exc)
            group.record_crash(now, self.config.daemon.max_restarts, self._window())
            return None
        self.workers[worker.pid] = worker
        log.info("spawned worker %s (generation %d)", worker.worker_id, worker.generation)
        return worker

    def reap_workers(self) -> None:
        """Collect every exited worker; unknown ones too (orphans re-parented to PID 1)."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.embedded is not None and pid == self.embedded.pid:
                self._embedded_died(status)
                continue
            if self.console is not None and pid == self.console.pid:
                self.console.exited(status, time.monotonic(), bool(self.stopping))
                continue
            worker = self.workers.pop(pid, None)
            if worker is None:
                # Not ours (as PID 1, every orphan of the container): reaping is all it needs.
                log.debug("reaped unknown process %d: %s", pid, exitcodes.describe(status))
                continue
            self.metrics_dir.mark_process_dead(pid)
            worker.read_control(time.monotonic())  # its last words (handled counts)
            worker.closed(status)
            self.worker_exited(worker, status)

    def worker_exited(self, worker: Worker, status: int) -> None:
        """Reclaim a dead worker's leases, then decide whether and when to replace it."""
        now = time.monotonic()
        how = exitcodes.describe(status)
        label = worker.exit_label(status)
        cause = f"worker {worker.worker_id} {how}"
        if worker.abort_sent_at is not None:
            cause += f" after hanging (no heartbeat for {self._hang_limit(worker):g}s)"
        elif worker.retiring:
            cause += f" ({worker.retire_reason})"
        self.finish_boot()
        ran = worker.in_handler(status, self.config.daemon.data_dir, self._hang_limit(worker))
        if self.maintenance is not None:
            self.maintenance.reclaim_worker(worker.worker_id, cause, label, ran)
        group = self.groups.get(worker.group)
        if group is not None and group.recycling == worker.pid:
            group.recycling = None
        if worker.retiring and worker.term_sent_at is not None and worker.abort_sent_at is None:
            log.info("worker %s exited: %s (%s)", worker.worker_id, how, worker.retire_reason)
            if self.metrics is not None:
                self.metrics.drain_duration.labels(worker.group).observe(now - worker.term_sent_at)
            return
        if group is None or self.stopping:
            log.info("worker %s exited: %s", worker.worker_id, how)
            return
        self._unexpected_exit(group, worker, status, how, label)

    def murder_workers(self, now: float) -> None:
        """SIGKILL overdue retirees; SIGABRT, then SIGKILL, workers whose heartbeat stopped."""
        for worker in list(self.workers.values()):
            if worker.kill_sent:
                continue
            if worker.kill_at is not None and now >= worker.kill_at:
                log.warning("worker %s did not exit in time (%s); killing it",
                            worker.worker_id, worker.retire_reason)
                worker.send(signal.SIGKILL)
            elif worker.abort_sent_at is not None:
                if now - worker.abort_sent_at >= ABORT_GRACE_S:
                    worker.send(signal.SIGKILL)
            elif worker.term_sent_at is None and now - worker.last_tick > self._hang_limit(worker):
                log.error("worker %s hung: no heartbeat for %.1fs; sending SIGABRT",
                          worker.worker_id, now - worker.last_tick)
                worker.abort_sent_at = now
                worker.send(signal.SIGABRT)

    def recycle_workers(self, now: float) -> None:
        """Replace workers over max_memory or max_jobs, one per group at a time; the
        replacement is started first and the old worker drains once it is ready."""
        check_rss = now >= self._next_rss_check
        if check_rss:
            self._next_rss_check = now + RSS_CHECK_INTERVAL_S
        for group in self.groups.values():
            if group.recycling is not None:
                self._finish_recycle(group, now)
                continue
            picked = group.recycle_candidate(self.workers_of(group.name), check_rss)
            if picked is None:
                continue
            worker, trigger = picked
            log.info("recycling worker %s (%s); starting its replacement first",
                     worker.worker_id, trigger)
            group.recycling = worker.pid
            worker.retire_reason = f"recycle: {trigger.split()[0]}"
            worker.marked_at = now
            if self.metrics is not None:
                self.metrics.recycles.labels(group.name, trigger.split()[0]).inc()

    def manage_workers(self, now: float) -> None:
        """Keep each group at strength: spawn the missing (after backoff), retire the rest."""
        for group in self.groups.values():
            if group.boot_failure is not None:
                continue
            active = [c for c in self.workers_of(group.name) if not c.retiring]
            current = [c for c in active if c.generation == group.generation]
            missing = group.target - len(current)
            if missing > 0 and now >= group.next_spawn_at:
                for _ in range(missing):
                    self.spawn_worker(group, now)
            # After a reload the old generation keeps working until the new one is ready
            # (or does not get there in REPLACE_WAIT_S), so a reload never dips capacity.
            new_ready = sum(c.ready for c in current) >= group.target
            if new_ready or now - group.generation_started > REPLACE_WAIT_S:
                for worker in active:
                    if worker.generation != group.generation:
                        worker.retire("reload", self._retire_grace(), now)
            surplus = sorted(current, key=lambda c: c.spawned_at)[: max(0, -missing)]
            for worker in surplus:
                worker.retire("scaled down", self._retire_grace(), now)
            oldest = min((c.ready_at for c in current if c.ready_at is not None), default=None)
            if group.note_stable(now, oldest):
                log.info("group %s is no longer crash-looping", group.name)
            if self.metrics is not None:
                self.metrics.group_workers.labels(group.name).set(len(current))
                self.metrics.group_crash_looping.labels(group.name).set(int(group.crash_looping))

    def workers_of(self, group: str) -> list[Worker]:
        """Live (not yet reaped) workers of a group, retiring ones included."""
        return [c for c in self.workers.values() if c.group == group]

    # ------------------------------------------------------------------ health

    def check_helpers(self) -> None:
        """Errors propagate: a dead helper thread stops the daemon instead of hiding."""
        helper = self.maintenance
        if not self.booting and helper is not None and not helper.is_alive():
            raise HaltServer("the maintenance thread died; see the log above")

    def publish_health(self, now: float) -> None:
        """Publish the snapshot /healthz and /readyz read, and tell systemd."""
        reasons: list[str] = ["draining"] if self.stopping else []
        within = max(5.0, 3 * self.config.daemon.maintenance_interval_s)
        if self.booting:
            reasons.append("starting")
        elif self.maintenance is None or not self.maintenance.store_ok(within):
            reasons.append("store unreachable")
        elif self.maintenance.replicas_short:
            reasons.append(self.maintenance.replicas_short)
        groups: dict[str, Any] = {}
        for group in self.groups.values():
            groups[group.name], reason = group.readiness(self.workers_of(group.name))
            if reason:
                reasons.append(f"group {group.name}: {reason}")
        status = status_doc(self.workers.values(), self.groups.values(), now, self.console)
        self._health = Health(now, not reasons, tuple(reasons), groups, status)
        if self._systemd.update(now, reasons, len(self.workers)):
            log.info("all groups at strength")

    # ------------------------------------------------------------------ helpers

    def _unexpected_exit(
        self, group: GroupState, worker: Worker, status: int, how: str, label: str
    ) -> None:
        now = time.monotonic()
        code = os.waitstatus_to_exitcode(status)
        if code in exitcodes.BOOT_FAILURES:
            group.boot_failure, group.boot_exit_code = how, code
            log.error(
                "group %s: worker failed at boot (%s); not restarting it until the config "
                "changes (HUP). See the worker's error above.", group.name, how,
            )  # fmt: skip
            self._count_restart(group, "boot")
            if all(g.boot_failure is not None for g in self.groups.values()):
                codes = {g.boot_exit_code for g in self.groups.values()}
                raise HaltServer("every group failed at boot", min(codes))
            return
        was_looping = group.crash_looping
        delay = group.record_crash(
            now, self.config.daemon.max_restarts, self._window(), was_ready=worker.ready,
            made_progress=worker.made_progress, store_down=label == "store",
        )
        say = log.warning if label == "store" else log.error  # an error is one Sentry event
        say("worker %s died: %s; restarting in %.2fs", worker.worker_id, how, delay)
        self._count_restart(group, label)
        if group.crash_looping and not was_looping:
            log.error(
                "group %s is crash-looping: %d restarts within %gs; retrying every ~%.0fs",
                group.name, len(group.crashes), self._window(), delay,
            )  # fmt: skip

    def _embedded_died(self, status: int) -> None:
        assert self.embedded is not None
        self.embedded.exited(status)
        if self.stopping:
            return
        log.error("embedded redis-server %s; restarting it", exitcodes.describe(status))
        try:
            self.embedded.start()
        except EmbeddedStoreError as exc:
            raise HaltServer(f"embedded store: {exc}") from None

    def _finish_recycle(self, group: GroupState, now: float) -> None:
        old = self.workers.get(group.recycling or -1)
        if old is None:
            group.recycling = None
            return
        if old.term_sent_at is not None:
            return  # draining; cleared when it is reaped
        replaced = any(
            c.ready and not c.retiring and c.spawned_at > old.spawned_at
            for c in self.workers_of(group.name)
        )
        if replaced or now - (old.marked_at or now) > REPLACE_WAIT_S:
            old.retire(old.retire_reason or "recycle", self._retire_grace(), now)

    def _hang_limit(self, worker: Worker) -> float:
        group = self.groups.get(worker.group)
        return worker.hang_limit(self.config.daemon.heartbeat_timeout_s,
                                 group.config.block_ms if group is not None else 0)

    def _count_restart(self, group: GroupState, reason: str) -> None:
        if self.metrics is not None:  # None while booting
            self.metrics.worker_restarts.labels(group.name, reason).inc()

    def _stop_remaining(self) -> None:
        """A halt left workers running: fast-stop them and reap until they are gone."""
        self.stop(graceful=False)
        deadline = time.monotonic() + FAST_STOP_GRACE_S + 5.0
        while self.workers and time.monotonic() < deadline:
            self.wait_for_signals(0.05)
            self.reap_workers()
            self.murder_workers(time.monotonic())

    def _loop_timeout(self) -> float:
        """Sleep until the next signal, but wake for a spawn whose backoff ends sooner."""
        now = time.monotonic()
        due = [g.next_spawn_at - now for g in self.groups.values() if g.next_spawn_at > now]
        return max(0.01, min([LOOP_INTERVAL_S, *due]))

    def _retire_grace(self) -> float:
        return self.config.daemon.drain_timeout_s + KILL_GRACE_S

    def _window(self) -> float:
        return self.config.daemon.restart_window_s

