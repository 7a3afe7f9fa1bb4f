"""The supervisor's bookkeeping for each group of the config.

A `GroupState` is one `[groups.NAME]` as the supervisor runs it: the target strength, the
config generation (a HUP that changes the group starts a new one), the crash history that
drives restart backoff and crash-loop detection, and whether a boot failure or a recycle is in
progress.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ferricflowd.config import Config, GroupConfig
from ferricflowd.supervisor.workers import Worker

__all__ = ["GroupState", "reconcile_groups"]

log = logging.getLogger(__name__)

BACKOFF_BASE_S = 0.1
BACKOFF_MAX_S = 30.0
CRASH_LOOP_RETRY_S = 30.0  # a crash-looping group is retried this slowly
STORE_BACKOFF_MAX_S = 10.0  # a worker that found the store unreachable: retried this often
STABLE_AFTER_S = 10.0  # a worker alive this long resets the backoff and the crash-loop mark


@dataclass(eq=False)
class GroupState:
    """The supervisor's bookkeeping for one group of the config."""

    config: GroupConfig
    fingerprint: str
    target: int
    generation: int = 1
    crashes: deque[float] = field(default_factory=deque)  # monotonic times in the window
    consecutive_crashes: int = 0
    next_spawn_at: float = 0.0
    crash_looping: bool = False
    boot_failure: str | None = None  # set: do not respawn until the config changes
    boot_exit_code: int = 0
    recycling: int | None = None  # pid of the worker being recycled (one at a time)
    last_crash_at: float = 0.0
    store_failures: int = 0  # workers in a row that found the store unreachable at boot
    generation_started: float = 0.0  # monotonic time of the last reset (reload)

    @classmethod
    def of(cls, config: Config, group: GroupConfig) -> GroupState:
        return cls(group, config.fingerprint(group.name), target=group.processes)

    @property
    def name(self) -> str:
        return self.config.name

    def record_crash(
        self, now: float, max_restarts: int, window_s: float, *, was_ready: bool = False,
        made_progress: bool = False, store_down: bool = False,
    ) -> float:
        """Note an unexpected death; returns the delay before the next spawn.

        Backoff doubles from BACKOFF_BASE_S up to BACKOFF_MAX_S, with +-25% jitter so the
        workers of many daemons do not restart in lockstep. A worker that had booted and
        reported ready (`was_ready`: killed from outside, OOM, a crash in a handler) is
        replaced after BACKOFF_BASE_S without doubling: its group would otherwise lose its
        capacity for up to BACKOFF_MAX_S after a few such deaths. More than `max_restarts`
        counted crashes within `window_s` mark the group crash-looping; it is then retried
        every CRASH_LOOP_RETRY_S until a worker stays up for STABLE_AFTER_S.

        A worker that `made_progress` (ready, and it finished work) is not counted: its code
        boots and works, so its death (an OOM kill, an operator's kill, a kill storm) is no
        sign of a crash loop, and marking the group would leave it with no worker for
        CRASH_LOOP_RETRY_S. Boot failures and deaths without progress still count.

        A worker that exited because the store was unreachable at boot (`store_down`) is not
        a crash either: the group backs off (doubling up to STORE_BACKOFF_MAX_S) and resumes
        by itself when the store is back, however long the outage.
        """
        if store_down:
            self.store_failures += 1
            delay = min(BACKOFF_BASE_S * 2 ** min(self.store_failures, 10), STORE_BACKOFF_MAX_S)
            self.next_spawn_at = now + delay * random.uniform(0.75, 1.25)
            return self.next_spawn_at - now
        if made_progress:
            self.last_crash_at = now
            delay = BACKOFF_BASE_S if not self.crash_looping else CRASH_LOOP_RETRY_S
            delay *= random.uniform(0.75, 1.25)
            self.next_spawn_at = now + delay
            return delay
        self.crashes.append(now)
        while self.crashes and self.crashes[0] < now - window_s:
            self.crashes.popleft()
        self.consecutive_crashes += 1
        self.last_crash_at = now
        if len(self.crashes) > max_restarts:
            self.crash_looping = True
        exponent = 0 if was_ready else self.consecutive_crashes - 1
        delay = min(BACKOFF_BASE_S * 2**exponent, BACKOFF_MAX_S)
        if self.crash_looping:
            delay = max(delay, CRASH_LOOP_RETRY_S)
        delay *= random.uniform(0.75, 1.25)
        self.next_spawn_at = now + delay
        return delay

    def note_stable(self, now: float, oldest_alive_since: float | None) -> bool:
        """Reset backoff once a worker has lived STABLE_AFTER_S; True if a crash loop ended."""
        if oldest_alive_since is not None and now - oldest_alive_since >= STABLE_AFTER_S:
            self.store_failures = 0
        if oldest_alive_since is None or self.consecutive_crashes == 0:
            return False
        if now - max(oldest_alive_since, self.last_crash_at) < STABLE_AFTER_S:
            return False
        was_looping = self.crash_looping
        self.consecutive_crashes = 0
        self.crash_looping = False
        return was_looping

    def readiness(self, workers: list[Worker]) -> tuple[dict[str, Any], str | None]:
        """(status for /readyz, why the group is not ready or None)."""
        ready = sum(  # a worker whose every handler slot hung serves nothing: not ready
            1 for c in workers if c.ready and c.live != 0 and not c.retiring
            and c.generation == self.generation
        )
        doc: dict[str, Any] = {"target": self.target, "ready": ready}
        if self.boot_failure is not None:
            doc["boot_failure"] = self.boot_failure
            return doc, f"failed at boot ({self.boot_failure})"
        if self.crash_looping:
            doc["crash_looping"] = True
            return doc, "crash-looping"
        if ready < self.target:
            return doc, f"{ready}/{self.target} workers ready"
        return doc, None

    def recycle_candidate(
        self, workers: list[Worker], check_rss: bool
    ) -> tuple[Worker, str] | None:
        """The first ready, not retiring worker over max_jobs or max_memory, and why."""
        for worker in workers:
            if worker.retiring or not worker.ready:
                continue
            trigger = worker.recycle_trigger(self.config, check_rss)
            if trigger is not None:
                return worker, trigger
        return None

    def reset(self, config: GroupConfig, fingerprint: str) -> None:
        """A changed config (HUP): a new generation, fresh crash history, no boot failure."""
        self.config = config
        self.fingerprint = fingerprint
        self.target = config.processes
        self.generation += 1
        self.generation_started = time.monotonic()
        self.crashes.clear()
        self.consecutive_crashes = 0
        self.next_spawn_at = 0.0
        self.crash_looping = False
        self.boot_failure = None
        self.boot_exit_code = 0


def reconcile_groups(groups: dict[str, GroupState], new: Config) -> list[str]:
    """Apply a reloaded config to `groups` in place: add new groups, start a new generation
    of changed ones, drop removed ones; returns the names dropped (their workers retire)."""
    for group in new.groups:
        state = groups.get(group.name)
        fingerprint = new.fingerprint(group.name)
        if state is None:
            log.info("reload: new group %s", group.name)
            groups[group.name] = GroupState.of(new, group)
        elif state.fingerprint != fingerprint or state.boot_failure is not None:
            # A group that failed at boot is retried too: its code may have been fixed.
            log.info("reload: group %s changed; replacing its workers", group.name)
            state.reset(group, fingerprint)
        else:
            state.config = group
    removed = sorted(set(groups) - {g.name for g in new.groups})
    for name in removed:
        log.info("reload: group %s removed; retiring its workers", name)
        del groups[name]
    return removed


def types_of(groups: Mapping[str, GroupState]) -> list[str]:
    """The Flow types the groups work on (the maintenance thread sweeps them)."""
    return [g.config.type for g in groups.values()]


def served_by(groups: Mapping[str, GroupState]) -> list[tuple[str, str]]:
    """Every (type, state) some group claims."""
    return [(g.config.type, s) for g in groups.values() for s in g.config.states]
