"""What every workload and adapter shares: the store, clocks, counters, statistics.

The store is one private redis-server per profile (never the one on 6379):

- ``fast``: no persistence at all (no AOF, no RDB snapshots);
- ``durable``: ``appendonly yes`` + ``appendfsync always`` (every write is fsynced).

Handlers in every system report to the same server through a few plain keys (``bench:*``),
so the bench measures every system the same way: it polls ``bench:done``.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `tests.servers` lives beside `bench`
    sys.path.insert(0, str(REPO))

from bench.keys import DONE, EVENTS, LAT, PAYLOAD, STARTED  # noqa: E402, F401 (re-exported)
from tests.servers import RedisServer, free_port  # noqa: E402

PROFILES = ("fast", "durable")

# Default sizes, exactly as in issue 5; every one can be overridden.
DEFAULT_SIZES: dict[str, int] = {
    "W1": 20_000,
    "W2": 20_000,
    "W3": 500,
    "W4": 5_000,
    "R1": 100,
    "D1": 200,
    "M1": 100_000,
    "S1_small": 10_000,
    "S1_big": 1_000_000,
}


def precompile() -> None:
    """Write the bytecode of this checkout's packages (ferricflowd, bench, tests) before
    anything is timed. An editable install is not byte-compiled by pip, and with
    PYTHONDONTWRITEBYTECODE set (as on this project's machines) every daemon and worker
    process would compile ferricflowd from source at start (~40 ms each), a cost the peers'
    site-packages installs and a production install of ferricflowd do not pay."""
    import compileall

    for pkg in ("ferricflowd", "bench", "tests"):
        compileall.compile_dir(REPO / pkg, quiet=1)


class Unavailable(Exception):
    """A system (or one of its workloads) cannot run here; the text says why."""


def log(msg: str) -> None:
    """A progress line on stderr (stdout is reserved for the JSON and the table)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the store


class BenchStore:
    """One private redis-server for one profile; `reset()` empties it between cells."""

    def __init__(self, profile: str, base_dir: Path | None = None) -> None:
        if profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, not {profile!r}")
        self.profile = profile
        root = Path(base_dir or tempfile.mkdtemp(prefix="ffbench-"))
        if profile == "durable":
            self.server = RedisServer(root / profile, durable=True)
        else:
            self.server = RedisServer(
                root / profile, durable=False, args=("--appendonly", "no", "--save", "")
            )
        self._client: redis.Redis | None = None

    @property
    def durable(self) -> bool:
        return self.profile == "durable"

    @property
    def url(self) -> str:
        return self.server.url

    def start(self) -> BenchStore:
        self.server.start()
        return self

    def stop(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        self.server.terminate()

    def __enter__(self) -> BenchStore:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def r(self) -> redis.Redis:
        """The bench's own client (polling counters, INFO, resets)."""
        if self._client is None:
            self._client = self.server.client(socket_timeout=120)
        return self._client

    def reset(self) -> None:
        """Empty the store; with AOF, rewrite it so the log does not grow across cells."""
        r = self.r
        r.flushall()
        if self.durable:
            with contextlib.suppress(redis.ResponseError):  # a rewrite may already run
                r.bgrewriteaof()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                info = r.info("persistence")
                if not info.get("aof_rewrite_in_progress") and not info.get(
                    "aof_rewrite_scheduled"
                ):
                    break
                time.sleep(0.02)

    def used_memory(self) -> int:
        return int(self.r.info("memory")["used_memory"])

    def done(self) -> int:
        return int(self.r.get(DONE) or 0)

    def started(self) -> int:
        return int(self.r.get(STARTED) or 0)

    def version(self) -> str:
        return str(self.r.info("server")["redis_version"])


# --------------------------------------------------------------------------- waiting


@dataclass
class Progress:
    """Samples (seconds since `t0`, counter value) taken while waiting for a counter."""

    t0: float
    samples: list[tuple[float, int]] = field(default_factory=list)

    def first_at(self, value: int) -> float | None:
        """Seconds from t0 until the counter first reached `value`."""
        for t, v in self.samples:
            if v >= value:
                return t
        return None

    def steady_rate(self, total: int, lo: float = 0.1, hi: float = 0.9) -> float | None:
        """Rate between `lo` and `hi` of `total` done: the speed once everything runs."""
        a, b = self.first_at(max(1, int(total * lo))), self.first_at(max(1, int(total * hi)))
        if a is None or b is None or b <= a:
            return None
        return (int(total * hi) - int(total * lo)) / (b - a)


def wait_counter(
    read: Callable[[], int],
    target: int,
    *,
    timeout_s: float,
    t0: float | None = None,
    interval_s: float = 0.005,
    what: str = "counter",
    alive: Callable[[], str | None] | None = None,
) -> Progress:
    """Poll `read()` until it reaches `target`; TimeoutError after `timeout_s`.

    `alive()` may return a reason the wait is hopeless (a worker exited), raised at once.
    """
    prog = Progress(t0 if t0 is not None else time.perf_counter())
    deadline = time.monotonic() + timeout_s
    last_check = 0.0
    while True:
        value = read()
        prog.samples.append((time.perf_counter() - prog.t0, value))
        if value >= target:
            return prog
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: {value} of {target} after {timeout_s:.0f}s")
        if alive is not None and time.monotonic() - last_check > 0.5:
            last_check = time.monotonic()
            reason = alive()
            if reason:
                raise RuntimeError(f"{what}: {value} of {target}; {reason}")
        time.sleep(interval_s)


# --------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100) with linear interpolation between closest ranks."""
    if not values:
        raise ValueError("percentile of no values")
    data = sorted(values)
    if len(data) == 1:
        return float(data[0])
    k = (len(data) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(data) - 1)
    return float(data[lo] + (data[hi] - data[lo]) * (k - lo))


def summarize(reps: Iterable[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per numeric metric over the repetitions: median, min, max, n."""
    by_metric: dict[str, list[float]] = {}
    for rep in reps:
        for key, value in rep.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                by_metric.setdefault(key, []).append(float(value))
    return {
        k: {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}
        for k, v in by_metric.items()
    }


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


# --------------------------------------------------------------------------- processes


def python_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for child processes: the repo importable, our venv's Python first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), env.get("PYTHONPATH", "")) if p
    )
    env["PYTHONUNBUFFERED"] = "1"
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
    if extra:
        env.update(extra)
    return env


def free_port_for_bench() -> int:
    return free_port()


def bin_path(name: str) -> str | None:
    """A console script of this interpreter's environment (celery, rq, dramatiq, ...)."""
    path = Path(sys.executable).parent / name
    return str(path) if path.exists() else None


def fsync_probe(directory: Path, n: int = 200) -> dict[str, float]:
    """Latency of write+fsync of 100 bytes in `directory` (what `appendfsync always` pays
    per event-loop turn): median and p99 ms. Durable results move with it."""
    path = Path(directory) / "fsync-probe"
    times = []
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            os.write(fd, b"x" * 100)
            os.fsync(fd)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        os.close(fd)
        path.unlink(missing_ok=True)
    return {"fsync_p50_ms": percentile(times, 50), "fsync_p99_ms": percentile(times, 99)}


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    date = subprocess.run(["date", "-u"], capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "ferricflowd"],
                           capture_output=True, text=True).stdout.splitlines()
    engine = hashlib.sha1()
    for path in sorted((REPO / "ferricflowd" / "flow").rglob("*")):
        if path.suffix in (".py", ".lua"):
            engine.update(path.read_bytes())
    return {
        "git_head": head,
        "engine_digest": engine.hexdigest()[:12],
        "engine_files_modified": len(dirty),
        "date": date,
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }
