"""The supervisor: one class, one loop, in the manner of gunicorn's arbiter.

Signal handlers only `put_nowait` the signal number on a SimpleQueue (reentrant by design);
the loop does everything else, in this order on every turn:

    handle signals -> reap -> read control pipes -> murder (hung, overdue) -> recycle
    -> maintain strength (spawn) -> publish health

Workers are started by fork+exec of `python -m ferricflowd.worker` (never a bare fork: this
process keeps an HTTP thread and a store thread), each with a pipe on which it reports
readiness, heartbeats and status. The supervisor never imports user handler code and never
talks to the store from this thread; dead workers' leases are reclaimed by the maintenance
thread (ferricflowd/supervisor/maintenance.py), which the loop feeds.
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
from ferricflowd.supervisor import systemd
from ferricflowd.supervisor.children import (
    SUPERVISOR_PID_ENV,
    Child,
    GroupState,
    spawn_worker,
    worker_env,
)
from ferricflowd.supervisor.console import ConsoleProcess, local_url, status_doc
from ferricflowd.supervisor.embedded import EmbeddedStore, EmbeddedStoreError
from ferricflowd.supervisor.http import Health, HealthServer
from ferricflowd.supervisor.maintenance import Maintenance
from ferricflowd.supervisor.metrics import MultiprocessMetrics
from ferricflowd.supervisor.scheduler import Scheduler

__all__ = ["HaltServer", "Supervisor"]

log = logging.getLogger(__name__)

LOOP_INTERVAL_S = 0.25  # longest sleep between turns; signals wake the loop at once
BOOT_TIMEOUT_S = 60.0  # a worker must report ready within this (slow imports are common)
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
        self.children: dict[int, Child] = {}
        self.groups: dict[str, GroupState] = {}
        self.stopping: str | None = None  # None, "drain" or "fast"
        self.stop_deadline = 0.0
        self.stop_started = 0.0
        self.hostname = socket.gethostname()
        self.metrics_dir = MultiprocessMetrics(config.daemon.data_dir)
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
        daemon.data_dir.mkdir(parents=True, exist_ok=True)
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
        self.http = HealthServer(
            daemon.listen, lambda: self._health, self.metrics_dir, max(5.0, 20 * LOOP_INTERVAL_S)
        )
        try:
            self.http.start()
        except OSError as exc:
            raise HaltServer(f"cannot listen on {daemon.listen}: {exc}", exitcodes.CONFIG) from None
        embedded_url = self.store_url if self.embedded is not None else None
        self.console = ConsoleProcess(self.config, embedded_url, local_url(self.http.address))
        for group in self.config.groups:
            self.groups[group.name] = GroupState.of(self.config, group)
        store, url = self.config.store, self.store_url
        # Created now (a dead worker's reclaim can be queued at once), started in finish_boot;
        # after the groups, whose types it sweeps.
        self.maintenance = Maintenance(
            lambda: store.client(url), self._types(), daemon.maintenance_interval_s,
            scheduler=Scheduler(self.config.schedules),
        )
        self.boot_started = time.monotonic()
        self.manage_children(self.boot_started)
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
        # Process-level events (a worker killed by a signal) go to Sentry from here.
        self._sentry = init_sentry(self.config.daemon.sentry_dsn)
        assert self.maintenance is not None
        self.maintenance.start(self.metrics)

    def turn(self) -> bool:
        """One pass of the loop; False once a stop has finished."""
        for sig in self.wait_for_signals(self._loop_timeout()):
            self.dispatch(sig)
        now = time.monotonic()
        self.reap_children()
        for child in list(self.children.values()):
            for message in child.read_control(now):
                if message.get("t") == "ready":
                    log.info("worker %s (pid %d) ready", child.worker_id, child.pid)
        self.murder_children(now)
        if self.booting and (now - self.boot_started > BOOT_DEFER_S
                             or all(c.ready for c in self.children.values())):
            self.finish_boot()
        if self.stopping:
            if not self.children:
                return False
        else:
            self.recycle_children(now)
            self.manage_children(now)
            self.check_helpers()
            if self.console is not None and not self.booting:
                self.console.maintain(now)
        self.publish_health(now)
        return True

    def shutdown(self) -> None:
        """After the loop (or a halt): no worker left behind, leases handed back, helpers off."""
        if self.children:
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
        """A child exited; the reap that follows every dispatch collects it."""

    def handle_term(self) -> None:
        """Graceful drain; a second TERM while draining is a fast stop."""
        self.stop(graceful=self.stopping is None)

    def handle_int(self) -> None:
        """Same as TERM (Ctrl-C in a terminal)."""
        self.stop(graceful=self.stopping is None)

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
        for child in sorted(self.children.values(), key=lambda c: (c.group, c.spawned_at)):
            log.info(
                "child pid=%d id=%s gen=%d ready=%s busy=%d/%d handled=%d rss=%d retiring=%s",
                child.pid, child.worker_id, child.generation, child.ready, child.busy,
                child.concurrency, child.handled, child.rss, child.retire_reason,
            )  # fmt: skip

    # ------------------------------------------------------------------ operations

    def stop(self, graceful: bool) -> None:
        """Begin a drain (SIGTERM to every worker, SIGKILL at drain_timeout) or a fast stop."""
        now = time.monotonic()
        if graceful:
            drain_s = self.config.daemon.drain_timeout_s
            self.stopping, self.stop_started, self.stop_deadline = "drain", now, now + drain_s
            systemd.stopping()
            log.info("draining %d worker(s), deadline %gs", len(self.children), drain_s)
            for child in self.children.values():
                child.retire("drain", drain_s, now)
                child.kill_at = min(child.kill_at or self.stop_deadline, self.stop_deadline)
            return
        if self.stopping is None:
            self.stop_started = now
            systemd.stopping()
        self.stopping = "fast"
        self.stop_deadline = min(self.stop_deadline or now + 3600, now + FAST_STOP_GRACE_S)
        log.info("fast stop of %d worker(s)", len(self.children))
        for child in self.children.values():
            child.retire_reason = child.retire_reason or "stop"
            child.term_sent_at = child.term_sent_at or now
            child.kill_at = min(child.kill_at or self.stop_deadline, self.stop_deadline)
            child.send(signal.SIGQUIT)

    def reload(self) -> None:
        """Re-read the config; an invalid or unreloadable one keeps the running config."""
        if self.stopping:
            return
        systemd.reloading()
        try:
            new = load_config(self.config.path, os.environ, self.overrides)
            self._check_reloadable(new)
        except ConfigError as exc:
            log.error("reload failed, keeping the running config: %s", exc)
            systemd.ready()
            return
        now = time.monotonic()
        for group in new.groups:
            state = self.groups.get(group.name)
            fingerprint = new.fingerprint(group.name)
            if state is None:
                log.info("reload: new group %s", group.name)
                self.groups[group.name] = GroupState.of(new, group)
            elif state.fingerprint != fingerprint or state.boot_failure is not None:
                # A group that failed at boot is retried too: its code may have been fixed.
                log.info("reload: group %s changed; replacing its workers", group.name)
                state.reset(group, fingerprint)
            else:
                state.config = group
        for name in set(self.groups) - {g.name for g in new.groups}:
            log.info("reload: group %s removed; retiring its workers", name)
            del self.groups[name]
            for child in self.children_of(name):
                child.retire("group removed", self._retire_grace(), now)
        self.config = new
        if self.console is not None:
            self.console.reload(new)
        if self.maintenance is not None:
            self.maintenance.set_types(self._types())
            self.maintenance.set_schedules(new.schedules)
        systemd.ready()
        log.info("reloaded %s", new.path)

    def scale(self, delta: int) -> None:
        """Change every group's target strength; the next turn spawns or retires."""
        for group in self.groups.values():
            group.target = max(1, group.target + delta)
            log.info("group %s: %d process(es) now", group.name, group.target)

    # ------------------------------------------------------------------ the process table

    def spawn_child(self, group: GroupState, now: float) -> Child | None:
        """fork+exec one worker of `group`; None if the exec failed (counted as a crash)."""
        env = worker_env({**self.metrics_dir.child_env(), SUPERVISOR_PID_ENV: str(os.getpid())})
        url = self.store_url if self.embedded is not None else None  # a socket path, no secret
        try:
            child = spawn_worker(self.config, group, self.hostname, url, env, now)
        except OSError as exc:
            log.error("cannot start a worker of group %s: %s", group.name, exc)
            group.record_crash(now, self.config.daemon.max_restarts, self._window())
            return None
        self.children[child.pid] = child
        log.info("spawned worker %s (generation %d)", child.worker_id, child.generation)
        return child

    def reap_children(self) -> None:
        """Collect every exited child; unknown ones too (orphans re-parented to PID 1)."""
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
            child = self.children.pop(pid, None)
            if child is None:
                # Not ours (when we are PID 1, every orphan in the container ends up here);
                # reaping it is all it needs, and it is not a worker error.
                log.debug("reaped unknown process %d: %s", pid, exitcodes.describe(status))
                continue
            self.metrics_dir.mark_process_dead(pid)
            child.read_control(time.monotonic())  # its last words (handled counts)
            child.closed(status)
            self.child_exited(child, status)

    def child_exited(self, child: Child, status: int) -> None:
        """Reclaim a dead worker's leases, then decide whether and when to replace it."""
        now = time.monotonic()
        how = exitcodes.describe(status)
        label = child.exit_label(status)
        cause = f"worker {child.worker_id} {how}"
        if child.abort_sent_at is not None:
            cause += f" after hanging (no heartbeat for {self._hang_limit(child):g}s)"
        elif child.retiring:
            cause += f" ({child.retire_reason})"
        self.finish_boot()
        if self.maintenance is not None:
            self.maintenance.reclaim_worker(child.worker_id, cause, label)
        group = self.groups.get(child.group)
        if group is not None and group.recycling == child.pid:
            group.recycling = None
        if child.retiring and child.term_sent_at is not None and child.abort_sent_at is None:
            log.info("worker %s exited: %s (%s)", child.worker_id, how, child.retire_reason)
            if self.metrics is not None:
                self.metrics.drain_duration.labels(child.group).observe(now - child.term_sent_at)
            return
        if group is None or self.stopping:
            log.info("worker %s exited: %s", child.worker_id, how)
            return
        self._unexpected_exit(group, child, status, how, label)

    def murder_children(self, now: float) -> None:
        """SIGKILL overdue retirees; SIGABRT, then SIGKILL, workers whose heartbeat stopped."""
        for child in list(self.children.values()):
            if child.kill_sent:
                continue
            if child.kill_at is not None and now >= child.kill_at:
                log.warning("worker %s did not exit in time (%s); killing it",
                            child.worker_id, child.retire_reason)
                child.send(signal.SIGKILL)
            elif child.abort_sent_at is not None:
                if now - child.abort_sent_at >= ABORT_GRACE_S:
                    child.send(signal.SIGKILL)
            elif child.term_sent_at is None and now - child.last_tick > self._hang_limit(child):
                log.error("worker %s hung: no heartbeat for %.1fs; sending SIGABRT",
                          child.worker_id, now - child.last_tick)
                child.abort_sent_at = now
                child.send(signal.SIGABRT)

    def recycle_children(self, now: float) -> None:
        """Replace workers over max_memory or max_jobs, one per group at a time; the
        replacement is started first and the old worker drains once it is ready."""
        check_rss = now >= self._next_rss_check
        if check_rss:
            self._next_rss_check = now + RSS_CHECK_INTERVAL_S
        for group in self.groups.values():
            if group.recycling is not None:
                self._finish_recycle(group, now)
                continue
            for child in self.children_of(group.name):
                if child.retiring or not child.ready:
                    continue
                trigger = child.recycle_trigger(group.config, check_rss)
                if trigger is not None:
                    log.info("recycling worker %s (%s); starting its replacement first",
                             child.worker_id, trigger)
                    group.recycling = child.pid
                    child.retire_reason = f"recycle: {trigger.split()[0]}"
                    child.marked_at = now
                    if self.metrics is not None:
                        self.metrics.recycles.labels(group.name, trigger.split()[0]).inc()
                    break

    def manage_children(self, now: float) -> None:
        """Keep each group at strength: spawn the missing (after backoff), retire the rest."""
        for group in self.groups.values():
            if group.boot_failure is not None:
                continue
            active = [c for c in self.children_of(group.name) if not c.retiring]
            current = [c for c in active if c.generation == group.generation]
            missing = group.target - len(current)
            if missing > 0 and now >= group.next_spawn_at:
                for _ in range(missing):
                    self.spawn_child(group, now)
            # After a reload the old generation keeps working until the new one is ready
            # (or does not get there in REPLACE_WAIT_S), so a reload never dips capacity.
            new_ready = sum(c.ready for c in current) >= group.target
            if new_ready or now - group.generation_started > REPLACE_WAIT_S:
                for child in active:
                    if child.generation != group.generation:
                        child.retire("reload", self._retire_grace(), now)
            surplus = sorted(current, key=lambda c: c.spawned_at)[: max(0, -missing)]
            for child in surplus:
                child.retire("scaled down", self._retire_grace(), now)
            oldest = min((c.ready_at for c in current if c.ready_at is not None), default=None)
            if group.note_stable(now, oldest):
                log.info("group %s is no longer crash-looping", group.name)
            if self.metrics is not None:
                self.metrics.group_workers.labels(group.name).set(len(current))
                self.metrics.group_crash_looping.labels(group.name).set(int(group.crash_looping))

    def children_of(self, group: str) -> list[Child]:
        """Live (not yet reaped) children of a group, retiring ones included."""
        return [c for c in self.children.values() if c.group == group]

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
        groups: dict[str, Any] = {}
        for group in self.groups.values():
            groups[group.name], reason = group.readiness(self.children_of(group.name))
            if reason:
                reasons.append(f"group {group.name}: {reason}")
        status = status_doc(self.children.values(), self.groups.values(), now, self.console)
        self._health = Health(now, not reasons, tuple(reasons), groups, status)
        if self._systemd.update(now, reasons, len(self.children)):
            log.info("all groups at strength")

    # ------------------------------------------------------------------ helpers

    def _unexpected_exit(
        self, group: GroupState, child: Child, status: int, how: str, label: str
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
            now, self.config.daemon.max_restarts, self._window(), was_ready=child.ready
        )
        log.error("worker %s died: %s; restarting in %.2fs", child.worker_id, how, delay)
        self._count_restart(group, label)
        if group.crash_looping and not was_looping:
            log.error(
                "group %s is crash-looping: %d restarts within %gs; retrying every ~%.0fs",
                group.name, len(group.crashes), self._window(), delay,
            )  # fmt: skip
        if code < 0 and self._sentry is not None:
            self._sentry.capture_message(f"ferricflowd worker {child.worker_id} {how}")

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
        old = self.children.get(group.recycling or -1)
        if old is None:
            group.recycling = None
            return
        if old.term_sent_at is not None:
            return  # draining; cleared when it is reaped
        replaced = any(
            c.ready and not c.retiring and c.spawned_at > old.spawned_at
            for c in self.children_of(group.name)
        )
        if replaced or now - (old.marked_at or now) > REPLACE_WAIT_S:
            old.retire(old.retire_reason or "recycle", self._retire_grace(), now)

    def _hang_limit(self, child: Child) -> float:
        if not child.ready:
            return max(self.config.daemon.heartbeat_timeout_s, BOOT_TIMEOUT_S)
        group = self.groups.get(child.group)
        block_s = group.config.block_ms / 1000.0 if group is not None else 0.0
        return self.config.daemon.heartbeat_timeout_s + block_s

    def _count_restart(self, group: GroupState, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.worker_restarts.labels(group.name, reason).inc()

    def _stop_remaining(self) -> None:
        """A halt left workers running: fast-stop them and reap until they are gone."""
        self.stop(graceful=False)
        deadline = time.monotonic() + FAST_STOP_GRACE_S + 5.0
        while self.children and time.monotonic() < deadline:
            self.wait_for_signals(0.05)
            self.reap_children()
            self.murder_children(time.monotonic())

    def _loop_timeout(self) -> float:
        """Sleep until the next signal, but wake for a spawn whose backoff ends sooner."""
        now = time.monotonic()
        due = [g.next_spawn_at - now for g in self.groups.values() if g.next_spawn_at > now]
        return max(0.01, min([LOOP_INTERVAL_S, *due]))

    def _retire_grace(self) -> float:
        return self.config.daemon.drain_timeout_s + KILL_GRACE_S

    def _window(self) -> float:
        return self.config.daemon.restart_window_s

    def _types(self) -> list[str]:
        return [g.config.type for g in self.groups.values()]

    def _check_reloadable(self, new: Config) -> None:
        """Settings this process holds open cannot change without a restart."""
        old = self.config
        for key, before, after in (
            ("store", old.store, new.store),
            ("daemon.data_dir", old.daemon.data_dir, new.daemon.data_dir),
            ("daemon.listen", old.daemon.listen, new.daemon.listen),
        ):
            if before != after:
                raise ConfigError(str(new.path), key, "changed; this needs a restart, not HUP")
