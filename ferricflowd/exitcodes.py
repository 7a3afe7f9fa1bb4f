"""Exit codes: the written contract between worker processes, the supervisor and systemd.

A worker exits with one of these; the supervisor decides from it whether and how to
restart; the daemon itself exits with OK/FAILURE/CONFIG so that systemd's
Restart=on-failure and shell scripts can tell a bad config from a crash.
"""

from __future__ import annotations

import os
import signal

OK = 0  # clean exit (also a worker that finished its drain)
FAILURE = 1  # unexpected error; the supervisor restarts the worker with backoff
CONFIG = 2  # usage or config error, like click's usage errors: fix the config, do not retry
USAGE = CONFIG  # the same code; click exits 2 on a usage error
BOOT_IMPORT = 3  # worker could not import its handler module: do not restart it in a loop
BOOT_CONFIG = 4  # worker got an invalid config: do not restart it in a loop
STORE_UNREACHABLE = 5  # store not reachable at boot: restart with backoff
PARENT_GONE = 6  # worker exited because its supervisor died
INTERRUPTED = 130  # an operator command stopped by Ctrl-C (128 + SIGINT, as shells report it)

# A worker that exits with one of these would fail the same way again: restarting it
# only burns CPU and floods logs, so the supervisor marks its group as failed instead.
BOOT_FAILURES: frozenset[int] = frozenset({BOOT_IMPORT, BOOT_CONFIG})

MEANINGS: dict[int, str] = {
    OK: "ok",
    FAILURE: "failure",
    CONFIG: "usage or config error",
    BOOT_IMPORT: "boot: handler import failed",
    BOOT_CONFIG: "boot: invalid worker config",
    STORE_UNREACHABLE: "boot: store unreachable",
    PARENT_GONE: "supervisor gone",
    INTERRUPTED: "interrupted",
}

# Why a process may have got this signal, for the operator reading the log line.
_SIGNAL_HINTS: dict[int, str] = {
    signal.SIGKILL: "possibly OOM",
    signal.SIGSEGV: "crash in native code",
    signal.SIGBUS: "crash in native code",
    signal.SIGABRT: "aborted",
}


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def describe_exit_code(code: int) -> str:
    """'exit 3 (boot: handler import failed)'; unknown codes are just 'exit N'."""
    meaning = MEANINGS.get(code)
    return f"exit {code} ({meaning})" if meaning else f"exit {code}"


def describe_signal(signum: int, core_dumped: bool = False) -> str:
    """'killed by SIGKILL (possibly OOM)', 'killed by SIGSEGV (crash in native code, core
    dumped)'."""
    hints = [h for h in (_SIGNAL_HINTS.get(signum), "core dumped" if core_dumped else "") if h]
    suffix = f" ({', '.join(hints)})" if hints else ""
    return f"killed by {_signal_name(signum)}{suffix}"


def describe(status: int) -> str:
    """Decode a raw os.waitpid() status into words for logs and metrics labels."""
    if os.WIFEXITED(status):
        return describe_exit_code(os.WEXITSTATUS(status))
    if os.WIFSIGNALED(status):
        return describe_signal(os.WTERMSIG(status), os.WCOREDUMP(status))
    if os.WIFSTOPPED(status):
        return f"stopped by {_signal_name(os.WSTOPSIG(status))}"
    if os.WIFCONTINUED(status):
        return "continued"
    return f"unknown wait status {status:#x}"


def describe_returncode(returncode: int) -> str:
    """The same for subprocess.Popen.returncode, where -N means killed by signal N."""
    if returncode < 0:
        return describe_signal(-returncode)
    return describe_exit_code(returncode)
