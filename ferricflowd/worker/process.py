"""One worker process of the daemon.

    python -m ferricflowd.worker --config F --group NAME --worker-id ID --control-fd N
                                 [--store-url URL] [--log-format text|json] [--log-level L]
    python -m ferricflowd.worker --check --config F --group NAME

The supervisor starts it by fork+exec. It loads the config, imports `daemon.imports` and the
group's handler ("pkg.mod:obj": a function is a queue-style handler for every state of the
group; a Workflow object lends its `@state` handlers, bound to the daemon's store), then runs
a Runner (ferricflowd/flow/runner/) until told to stop. Exit codes are the contract of
ferricflowd/exitcodes.py: a broken handler module is BOOT_IMPORT and a config/handler
mismatch is BOOT_CONFIG, so the supervisor does not restart it in a loop.

Signals (handlers only enqueue; the control thread acts):
    TERM        drain: no more claims, unstarted claims released, running handlers finish
                until drain_timeout, then exit 0
    INT, QUIT   stop: the same without a deadline (the supervisor kills at its own);
                a second one exits at once
    USR1        the parent-death signal (prctl PR_SET_PDEATHSIG): the supervisor is gone;
                drain for a second and exit PARENT_GONE
"""

from __future__ import annotations

import argparse
import ctypes
import faulthandler
import importlib
import logging
import os
import queue
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from setproctitle import setproctitle

from ferricflowd import exitcodes
from ferricflowd.config import Config, ConfigError, GroupConfig, load_config
from ferricflowd.flow.outcomes import COUNTED_AS
from ferricflowd.logs import flow_event, init_sentry, scrub_flow_data, setup_logging
from ferricflowd.metrics import (
    WorkerMetrics,
    observe_many,
    under_replicated_writes,
    worker_metrics,
)
from ferricflowd.procenv import SUPERVISOR_PID_ENV
from ferricflowd.runboard import RunBoard, board_path
from ferricflowd.worker.reporting import ControlChannel, InFlight

if TYPE_CHECKING:
    from ferricflowd.flow.runner import OutcomeEvent

__all__ = ["BootError", "LoadedHandlers", "load_handlers", "main"]

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
PARENT_DEATH_SIGNAL = signal.SIGUSR1
PARENT_GONE_GRACE_S = 1.0  # the supervisor is gone and reclaims nothing: hand back fast
DRAIN_MARGIN_S = 0.5  # exit this much before the supervisor's SIGKILL at drain_timeout
EXIT_BACKSTOP_S = 2.0  # if run() has not returned this long after its deadline, _exit
HEARTBEAT_INTERVAL_S = 0.5


class BootError(Exception):
    """The worker cannot start; `exit_code` tells the supervisor not to loop."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# ---------------------------------------------------------------------- handler loading


class LoadedHandlers:
    """The state -> callable map of a group, and how the object was declared."""

    def __init__(self, handlers: dict[str, Callable[..., Any]], workflow: Any = None) -> None:
        self.handlers = handlers
        self.workflow = workflow  # the (bound) Workflow object, or None for a function

    @property
    def queue_style(self) -> bool:
        return self.workflow is None


def import_object(spec: str, group: str, what: str = "handler module") -> Any:
    """Import "pkg.mod:attr"; a BootError(BOOT_IMPORT) names group, module and error."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except BaseException as exc:  # anything at import time, SystemExit included
        log.debug("import of %s failed", module_name, exc_info=True)
        raise BootError(
            exitcodes.BOOT_IMPORT,
            f"group {group!r}: cannot import {what} {module_name!r} "
            f"({spec}): {type(exc).__name__}: {exc}",
        ) from exc
    obj: Any = module
    for part in attr.split(".") if attr else ():
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise BootError(
                exitcodes.BOOT_IMPORT,
                f"group {group!r}: module {module_name!r} has no attribute {attr!r} ({spec})",
            ) from None
    return obj


def _is_workflow(obj: Any) -> bool:
    return isinstance(getattr(obj, "handlers", None), Mapping) and callable(
        getattr(obj, "bind", None)
    )


def load_handlers(group: GroupConfig, client: Any = None) -> LoadedHandlers:
    """Import the group's handler and check it covers every configured state.

    With `client`, a Workflow is bound to it (`.bind(client)`), so a module written against
    its own WorkflowClient runs against the daemon's configured store.
    """
    obj = import_object(group.handler, group.name)
    if _is_workflow(obj):
        if getattr(obj, "type", group.type) != group.type:
            raise BootError(
                exitcodes.BOOT_CONFIG,
                f"group {group.name!r}: handler {group.handler} is a workflow of type "
                f"{obj.type!r}, but the group's type is {group.type!r}",
            )
        if client is not None:
            obj = obj.bind(client)
        handlers = dict(obj.handlers)
        missing = [s for s in group.states if s not in handlers]
        if missing:
            raise BootError(
                exitcodes.BOOT_CONFIG,
                f"group {group.name!r}: state(s) {', '.join(map(repr, missing))} of type "
                f"{group.type!r} have no handler in {group.handler} "
                f"(it handles: {', '.join(sorted(handlers)) or 'nothing'})",
            )
        return LoadedHandlers({s: handlers[s] for s in group.states}, obj)
    if callable(obj):
        return LoadedHandlers({s: obj for s in group.states})
    raise BootError(
        exitcodes.BOOT_CONFIG,
        f"group {group.name!r}: handler {group.handler} is a {type(obj).__name__}, "
        "not a function or a Workflow",
    )


# ---------------------------------------------------------------------- the process


def set_parent_death_signal(sig: int) -> bool:
    """Linux prctl(PR_SET_PDEATHSIG): the kernel sends `sig` when our parent dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, ctypes.c_ulong(sig), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


class WorkerProcess:
    """Boot, run a Runner, report to the supervisor, exit with a contract code."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.group_name: str = args.group
        self.worker_id = (args.worker_id or f"{socket.gethostname()}:{{pid}}:{args.group}").replace(
            "{pid}", str(os.getpid())
        )
        self.parent_pid = int(os.environ.get(SUPERVISOR_PID_ENV) or os.getppid())
        self.control = ControlChannel(args.control_fd)
        self.signals: queue.SimpleQueue[int] = queue.SimpleQueue()
        self.exit_code = exitcodes.OK
        self.config: Config | None = None
        self.group: GroupConfig | None = None
        self.runner: Any = None
        self.metrics: WorkerMetrics | None = None
        self.in_flight: InFlight | None = None
        self.sentry: Any = None
        self.last_tick = time.monotonic()
        self.stopping = False
        self.progressed = False  # finished work at least once (told the supervisor)

    # ---- boot

    def load(self) -> GroupConfig:
        overrides: dict[str, Any] = {}
        for key in ("log_format", "log_level"):
            if getattr(self.args, key):
                overrides[f"daemon.{key}"] = getattr(self.args, key)
        try:
            self.config = load_config(self.args.config, os.environ, overrides)
            self.group = self.config.group(self.group_name)
        except ConfigError as exc:
            raise BootError(exitcodes.BOOT_CONFIG, str(exc)) from None
        setup_logging(self.config.daemon.log_format, self.config.daemon.log_level)
        # Handlers resolve from the working directory (first on sys.path, as for any
        # `python -m`), PYTHONPATH, then the config file's own directory: a config kept
        # beside its app works from any directory, in `run` and `check` alike.
        if str(self.config.path.parent) not in sys.path:
            sys.path.append(str(self.config.path.parent))
        for module in self.config.daemon.imports:
            import_object(module, self.group_name, "daemon.imports module")
        return self.group

    def connect(self) -> Any:
        from ferricflowd.flow.errors import DurabilityError, LibraryMismatch, StoreError
        from ferricflowd.flow.store import ReplicationWarnings

        assert self.config is not None
        # The supervisor passes --store-url for its embedded store; Config.store_url finds
        # the same socket under data_dir when a worker is started by hand.
        client = self.config.store.client(self.args.store_url or self.config.store_url)
        client.store.on_under_replicated = ReplicationWarnings(under_replicated_writes().inc)
        try:
            client.connect()
        except DurabilityError as exc:  # restarting will not make the store durable
            raise BootError(exitcodes.BOOT_CONFIG, f"store: {exc}") from None
        except LibraryMismatch as exc:  # retried with backoff: an admin's store-setup fixes it
            raise BootError(exitcodes.STORE_UNREACHABLE, f"store: {exc}") from None
        except StoreError as exc:
            raise BootError(exitcodes.STORE_UNREACHABLE, f"store unreachable: {exc}") from None
        return client

    def build_runner(self, client: Any, loaded: LoadedHandlers) -> Any:
        from ferricflowd.flow.errors import StoreError
        from ferricflowd.flow.runner import Runner, RunnerHooks

        group = self.group
        assert group is not None
        self.metrics = worker_metrics()
        self.metrics.preinit(group.type, group.states)
        workflow = loaded.workflow
        timeouts = _timeouts(group, workflow)
        hooks = RunnerHooks(
            board=self._board(group, timeouts),
            on_claimed=self.on_claimed,
            on_outcomes=self.on_outcomes,
            on_released=self.on_released,
            on_tick=self.on_tick,
            on_handler_error=self.on_handler_error,
            on_hung=self.on_hung,
        )
        # Store the workflow's retry policy, as its own .worker() would, so the engine applies
        # the same one for this daemon's Flows as for the producers'; then the TOML's, which
        # wins for this group's states.
        try:
            if workflow is not None:
                workflow.register()
            if (policy := group.retry_policy()) is not None:
                client.register_policy(group.type, None, {s: policy for s in group.states})
        except StoreError as exc:
            raise BootError(exitcodes.STORE_UNREACHABLE, f"store unreachable: {exc}") from None
        return Runner(
            client, type=group.type, states=list(group.states),
            handlers={s: self._instrument(s, fn) for s, fn in loaded.handlers.items()},
            concurrency=group.concurrency, batch_size=group.batch_size,
            lease_ms=group.lease_ms, block_ms=group.block_ms,
            claim_values=group.claim_values, value_max_bytes=group.value_max_bytes,
            exception_policy=getattr(workflow, "exception_policies", None),
            declared_states=_declared_states(workflow),
            worker_id=self.worker_id, hooks=hooks, timeouts=timeouts,
        )  # fmt: skip

    def _board(self, group: GroupConfig, timeouts: Mapping[str, float | None]) -> Any:
        """The run board the supervisor reads after this process is gone (runboard.py):
        one slot per handler thread and per async task."""
        assert self.config is not None
        path = board_path(self.config.daemon.data_dir, os.getpid())
        try:
            return RunBoard(path, 2 * group.concurrency, {s: t or 0.0 for s, t in
                                                          timeouts.items()})
        except OSError as exc:  # the supervisor then blames every Flow held, as before
            log.warning("no run board at %s (%s): a death blames every Flow held", path, exc)
            return None

    # ---- run

    def run(self) -> int:
        self._install_signals()
        threading.Thread(target=self._control_loop, name="ff-control", daemon=True).start()
        try:
            group = self.load()
            assert self.config is not None
            # Before the handler import, so that a broken module is reported too. No
            # breadcrumbs: they would carry log lines of other Flows into a Flow's event.
            self.sentry = init_sentry(self.config.daemon.sentry_dsn,
                                      self.config.daemon.sentry_environment, max_breadcrumbs=0)
            self._title("booting")
            client = self.connect()
            loaded = load_handlers(group, client)
            self.runner = self.build_runner(client, loaded)
        except BootError as exc:
            # The import's traceback points at the failing line of the user's module.
            log.error("%s", exc, exc_info=exc.__cause__)
            return exc.exit_code
        threading.Thread(target=self._report_loop, name="ff-report", daemon=True).start()
        self.control.send(t="ready")
        log.info(
            "worker %s ready: %s[%s] with %s, concurrency %d",
            self.worker_id, group.type, ",".join(group.states), group.handler, group.concurrency,
        )  # fmt: skip
        if self.stopping:  # a signal arrived while booting
            return self.exit_code
        self.runner.run()
        self._report()
        log.info("worker %s exiting (%s)", self.worker_id, exitcodes.describe_exit_code(
            self.exit_code))
        return self.exit_code

    # ---- hooks (called on the Runner's threads; cheap, never blocking)

    def on_tick(self) -> None:
        self.last_tick = time.monotonic()

    def on_claimed(self, flow_type: str, state: str, n: int) -> None:
        if self.metrics is not None:
            self.metrics.claimed.labels(flow_type, state).inc(n)

    def on_released(self, flow_type: str, state: str, n: int) -> None:
        log.info("released %d unstarted %s Flow(s) (drain)", n, flow_type)
        if self.metrics is not None:
            self.metrics.released.labels(flow_type, state).inc(n)

    def on_outcomes(self, events: list[OutcomeEvent]) -> None:
        """Once per flushed batch: each counter once per (type, state, kind) and one log line
        per outcome only where its level is enabled (per-job metric updates are mmap writes
        under prometheus_client's one lock, a noticeable share of a short job's cost)."""
        if not self.progressed:  # at once, not at the next heartbeat: see supervisor/groups.py
            self.progressed = True
            self.control.send(t="progress")
        m = self.metrics
        if m is not None:
            self._count_outcomes(m, events)
        info = log.isEnabledFor(logging.INFO)
        for job, kind, duration_s, error in events:
            warn = kind in _WARNING_KINDS
            if warn or info:
                self._log_outcome(job, kind, duration_s, error, warn)

    @staticmethod
    def _count_outcomes(m: WorkerMetrics, events: list[OutcomeEvent]) -> None:
        durations: dict[tuple[str, str], list[float]] = {}
        counts: dict[tuple[str, str, str], int] = {}
        for job, kind, duration_s, _ in events:
            key = (job.type, job.state)
            durations.setdefault(key, []).append(duration_s)
            counter = COUNTED_AS.get(kind)
            if counter is not None:
                ckey = (counter, job.type, job.state)
                counts[ckey] = counts.get(ckey, 0) + 1
        for (flow_type, state), values in durations.items():
            observe_many(m.handler_duration.labels(flow_type, state), values)
        for (counter, flow_type, state), n in counts.items():
            getattr(m, counter).labels(flow_type, state).inc(n)

    @staticmethod
    def _log_outcome(job: Any, kind: str, duration_s: float, error: str | None,
                     warn: bool) -> None:
        detail = f"in {duration_s:.3f}s" + (f": {error}" if error else "")
        level = logging.WARNING if warn else logging.INFO
        flow_event(log, level, _OUTCOME_WORDS.get(kind, kind), job, detail, duration_s=duration_s)

    def on_hung(self, job: Any, limit_s: float) -> None:
        """A handler thread passed its timeout: it cannot be killed, so this process stops
        claiming, lets its other handlers finish and exits to be replaced (a planned
        recycle for the supervisor, not a crash; only the hung Flow was blamed)."""
        if self.stopping:
            return
        why = f"handler of flow {job.id} passed its timeout of {limit_s:g}s"
        log.warning("worker %s recycling: %s", self.worker_id, why)
        self.control.send(t="recycle", why=why)
        self.signals.put_nowait(signal.SIGTERM)

    def on_handler_error(self, job: Any, exc: BaseException) -> None:
        if self.metrics is not None:
            self.metrics.handler_errors.labels(job.type, job.state).inc()
        if self.sentry is None or self.config is None:
            return
        if job.attempt > 1 and not self.config.daemon.sentry_every_attempt:
            return  # a retried failure is one issue: its first attempt reported it
        secrets = [job.payload or b"", *getattr(job, "values", {}).values()]
        with self.sentry.new_scope() as scope:
            scope.set_tag("flow.type", job.type)
            scope.set_tag("flow.state", job.state)
            scope.set_tag("flow.id", job.id)
            scope.set_tag("flow.attempt", job.attempt)
            scope.set_tag("worker_id", self.worker_id)
            scope.add_event_processor(lambda event, hint: scrub_flow_data(event, secrets))
            self.sentry.capture_exception(exc)

    def _instrument(self, state: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a handler to count it in the in-flight gauge (by type and logical state)."""
        assert self.metrics is not None and self.group is not None
        if self.in_flight is None:
            self.in_flight = InFlight(self.metrics.in_flight, self.group.type)
        return self.in_flight.wrap(state, fn)

    # ---- signals, supervisor link, exit

    def _install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, PARENT_DEATH_SIGNAL):
            signal.signal(sig, lambda signum, frame: self.signals.put_nowait(signum))
        if self.args.control_fd is not None and not set_parent_death_signal(PARENT_DEATH_SIGNAL):
            log.debug("prctl(PR_SET_PDEATHSIG) unavailable; relying on the ppid check")
        if os.getppid() != self.parent_pid:  # died before prctl took effect
            self.signals.put_nowait(PARENT_DEATH_SIGNAL)

    def _control_loop(self) -> None:
        while True:
            sig = self.signals.get()
            if self.stopping and sig in (signal.SIGINT, signal.SIGQUIT):
                log.warning("second stop signal: exiting now")
                self._exit(exitcodes.FAILURE)
            if sig == signal.SIGTERM:
                budget = self._drain_budget()
                log.info("SIGTERM: draining (deadline %.1fs)", budget)
                self._stop(budget)
            elif sig == PARENT_DEATH_SIGNAL:
                log.warning("supervisor (pid %d) is gone; stopping", self.parent_pid)
                self.exit_code = exitcodes.PARENT_GONE
                self._stop(PARENT_GONE_GRACE_S)
            else:
                log.info("%s: stopping", signal.Signals(sig).name)
                self._stop(None)

    def _stop(self, deadline_s: float | None) -> None:
        self.stopping = True
        self.control.send(t="draining")
        self._title("draining")
        if self.runner is None:  # still booting: nothing claimed yet
            self._exit(self.exit_code)
        self.runner.drain(deadline_s)
        if deadline_s is not None:
            backstop = threading.Timer(deadline_s + EXIT_BACKSTOP_S, self._exit, (self.exit_code,))
            backstop.daemon = True
            backstop.start()

    def _drain_budget(self) -> float:
        drain = self.config.daemon.drain_timeout_s if self.config is not None else 30.0
        return max(0.0, drain - min(DRAIN_MARGIN_S, drain / 4))

    def _report_loop(self) -> None:
        assert self.config is not None
        # Twice a second: cheap on a pipe, and max_jobs recycling reacts to `handled` soon.
        interval = min(HEARTBEAT_INTERVAL_S, self.config.daemon.heartbeat_timeout_s / 4)
        while True:
            time.sleep(interval)
            if os.getppid() != self.parent_pid or self.control.broken:
                self.signals.put_nowait(PARENT_DEATH_SIGNAL)
                return
            self._report()

    def _report(self) -> None:
        if self.in_flight is not None:
            self.in_flight.publish()
        stats = self.runner.statistics()
        self.control.send(
            t="hb", busy=stats.in_flight, conc=stats.concurrency, handled=stats.handled,
            live=stats.live_slots,
            rss=_rss(), tick_age=round(time.monotonic() - self.last_tick, 3),
        )  # fmt: skip
        self._title(f"{'draining' if self.stopping else 'busy'} {stats.in_flight}/"
                    f"{stats.concurrency}")

    def _title(self, status: str) -> None:
        group = self.group
        states = ",".join(group.states) if group is not None else "?"
        setproctitle(f"ferricflowd: worker {self.group_name}[{states}] {status}")

    def _exit(self, code: int) -> None:
        finish(self.sentry, code)


_WARNING_KINDS = frozenset({"fail", "exhausted", "stale", "error"})
_OUTCOME_WORDS = {
    "complete": "completed",
    "transition": "transitioned",
    "retry": "retry scheduled",
    "fail": "failed",
    "exhausted": "failed (retries exhausted)",
    "stale": "outcome rejected (lease lost)",
    "error": "outcome rejected",
}


def _timeouts(group: GroupConfig, workflow: Any) -> dict[str, float | None]:
    """Per state time limits: the group's `timeout`, unless the workflow state has its own."""
    limits: dict[str, float | None] = dict.fromkeys(group.states, group.timeout_s)
    own = getattr(workflow, "timeouts", {})
    limits.update({s: t for s, t in own.items() if s in limits})
    return limits


def _declared_states(workflow: Any) -> frozenset[str] | None:
    declared = getattr(workflow, "declared", None)
    return declared() if callable(declared) else None


def _rss() -> int:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def finish(sentry: Any, code: int) -> None:
    """Flush what must not be lost and leave now (abandoned handler threads included)."""
    if sentry is not None:
        sentry.flush(timeout=2.0)
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def check(args: argparse.Namespace) -> int:
    """--check: import the group's handler and verify its states; no store, no run."""
    proc = WorkerProcess(args)
    try:
        group = proc.load()
        loaded = load_handlers(group)
    except BootError as exc:
        print(str(exc), file=sys.stderr)
        return exc.exit_code
    kind = "function (queue style)" if loaded.queue_style else "workflow"
    print(f"ok: group {group.name!r}: {group.handler} is a {kind} handling "
          f"{group.type}[{','.join(group.states)}]")
    return exitcodes.OK


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m ferricflowd.worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="the daemon's TOML config")
    parser.add_argument("--group", required=True, help="[groups.NAME] this process runs")
    parser.add_argument("--worker-id", help="lease owner id; {pid} is replaced by the pid")
    parser.add_argument("--control-fd", type=int, help="pipe to the supervisor (JSON lines)")
    parser.add_argument("--store-url", help="overrides store.url (the embedded store)")
    parser.add_argument("--log-format", choices=("text", "json"))
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--check", action="store_true",
                        help="only import the handler and check its states, then exit 0/3/4")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    setup_logging(args.log_format or "text", args.log_level or "info")
    if args.check:
        sys.exit(check(args))
    faulthandler.enable()  # a SIGABRT from the supervisor (hang) dumps every thread's stack
    proc = WorkerProcess(args)
    try:
        code = proc.run()
    except Exception:
        log.exception("worker %s crashed", proc.worker_id)
        code = exitcodes.FAILURE
    finish(proc.sentry, code)
