"""The only module that talks to Redis: connections, the function library, FCALL calls.

The engine is one Redis Functions library: `lua/_lib.lua` then every `lua/<name>.lua` as the
body of a function, named after a digest of the whole text so that two versions of
ferricflowd can share a store (not a namespace: see README.md, Compatibility). FUNCTION
LOAD goes to every primary of a cluster, and again when a restarted or new store answers
"Function not found". A batch of calls is one round trip per node: on a single node they
are packed with hiredis and streamed on one connection (Store._stream), on a cluster they
go through redis-py's cluster pipeline.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
import redis.exceptions as rexc
from hiredis import pack_command
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from .errors import DurabilityError, InvalidArgument, StoreError
from .urls import check_url, redact

log = logging.getLogger(__name__)

SCRIPTS = ("create", "claim", "extend", "complete", "transition", "fail", "retry", "cancel",
           "signal", "spawn", "deliver", "reclaim", "release", "cleanup", "stats",
           "put_value", "browse", "rewind", "purge", "cancel_matching", "schedule_fire",
           "schedule_admin")

Arg = str | bytes | int | float


@dataclass(frozen=True)
class Call:
    """One script call: the script's name, the partition prefix (KEYS[1]) and its ARGV."""

    script: str
    prefix: str
    args: Sequence[Arg]


def _build_library() -> tuple[str, str, dict[str, str]]:
    """The library's name, its source and the function name of every script."""
    lua = resources.files("ferricflowd.flow").joinpath("lua")
    bodies = {name: lua.joinpath(f"{name}.lua").read_text("utf-8") for name in SCRIPTS}
    text = lua.joinpath("_lib.lua").read_text("utf-8") + "".join(bodies.values())
    digest = hashlib.sha1(text.encode()).hexdigest()[:12]
    functions = {name: f"ff_{digest}_{name}" for name in SCRIPTS}
    library = f"ferricflow_{digest}"
    parts = [f"#!lua name={library}\n", lua.joinpath("_lib.lua").read_text("utf-8")]
    for name, body in bodies.items():
        parts.append(f"\nredis.register_function('{functions[name]}', function(keys, args)\n"
                     f"begin(keys, args)\n{body}\nend)\n")
    return library, "".join(parts), functions


LIBRARY_NAME, LIBRARY, FUNCTIONS = _build_library()


class Store:
    """A connection to one store (single node or cluster), created lazily."""

    def __init__(self, url: str, *, socket_timeout_s: float = 5.0, min_replicas: int = 0,
                 durability: str = "strict") -> None:
        if durability not in ("strict", "relaxed"):
            raise InvalidArgument("durability", "must be 'strict' or 'relaxed'")
        check_url(url)
        self.url = url
        self.safe_url = redact(url)
        self.socket_timeout_s = socket_timeout_s
        self.min_replicas = min_replicas
        self.durability = durability
        self._client: Any = None
        self._lock = threading.Lock()
        self._idle: list[Any] = []  # connections for _stream, of process _idle_pid
        self._idle_pid = os.getpid()
        self.cluster = False

    # -- connection -------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = self._connect()
        return self._client

    def _connect(self) -> Any:
        opts: dict[str, Any] = {"socket_timeout": self.socket_timeout_s,
                                "socket_connect_timeout": self.socket_timeout_s}
        try:
            single = redis.Redis.from_url(self.url, retry=_bounded_retry(), **opts)
            enabled = single.info("cluster").get("cluster_enabled", 0)
            if enabled:
                single.close()
                self.cluster = True
                client: Any = _keys_from_args(RedisCluster.from_url(self.url, **opts))
            else:
                client = single
            self._check_durability(client)
        except rexc.RedisError as exc:
            raise StoreError(f"cannot connect to {self.safe_url}: {exc}") from exc
        return client

    def _check_durability(self, client: Any) -> None:
        try:
            if self.cluster:  # ask every primary (by default CONFIG GET goes to one node)
                conf = client.config_get("append*", target_nodes=RedisCluster.PRIMARIES)
            else:
                conf = client.config_get("append*")
        except rexc.ResponseError:
            conf = {}
        answers = (list(conf.values()) if conf and all(isinstance(v, dict)
                                                       for v in conf.values()) else [conf])
        for conf in answers:  # every node must be durable; report the first that is not
            aof = conf.get("appendonly") or conf.get(b"appendonly")
            fsync = conf.get("appendfsync") or conf.get(b"appendfsync")
            aof = aof.decode() if isinstance(aof, bytes) else aof
            fsync = fsync.decode() if isinstance(fsync, bytes) else fsync
            if aof != "yes" or fsync != "always":
                break
        else:
            return
        if aof is None:
            problem = "the store does not let us read appendonly/appendfsync (CONFIG GET)"
        else:
            problem = f"the store runs with appendonly={aof} appendfsync={fsync}"
        advice = ("acknowledged Flow commands could be lost on a crash; set `appendonly yes` "
                  "and `appendfsync always` in redis.conf (or CONFIG SET), or set store "
                  "durability = \"relaxed\" to accept the risk")
        if self.durability == "strict":
            raise DurabilityError(f"{self.safe_url}: {problem}; {advice}")
        log.warning("%s: %s; %s", self.safe_url, problem, advice)

    def blocking_client(self, timeout_s: float) -> Any:
        """A separate connection for BLPOP, whose socket timeout outlasts the block."""
        opts = {"socket_timeout": timeout_s + self.socket_timeout_s,
                "socket_connect_timeout": self.socket_timeout_s}
        _ = self.client  # connect first: decides cluster or not
        if self.cluster:
            return _keys_from_args(RedisCluster.from_url(self.url, **opts))
        return redis.Redis.from_url(self.url, retry=_bounded_retry(), **opts)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        idle, self._idle = self._idle, []
        if self._idle_pid == os.getpid():
            for conn in idle:
                conn.disconnect()

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except Exception:  # readiness probes must never raise
            return False

    # -- script calls ------------------------------------------------------------------------

    def ensure_library(self) -> None:
        """Load the library unless this node has it (a cluster's primaries: always load)."""
        if not self.cluster:
            try:
                if self.client.function_list(library=LIBRARY_NAME):
                    return
            except rexc.RedisError:
                pass  # e.g. no FUNCTION command: load_scripts says so
        self.load_scripts()

    def load_scripts(self) -> None:
        """FUNCTION LOAD the library (REPLACE: loading the same text twice is no error)."""
        try:
            self.client.function_load(LIBRARY, replace=True)
        except rexc.RedisError as exc:
            raise StoreError(f"{self.safe_url}: cannot load the engine library: {exc}") from exc

    def call(self, call: Call) -> Any:
        """Run one script; error replies are returned (not raised) as ResponseError."""
        return self.call_many((call,))[0]

    def call_many(self, calls: Iterable[Call], *, mutating: bool = True) -> list[Any]:
        """Run scripts in one round trip; a reply is the script's value or a ResponseError.

        On a single node the calls are streamed: each is packed and written as soon as the
        iterable yields it, so the store runs the first while the caller builds the next
        (a generator of calls overlaps client and store work; see FlowClient._batched)."""
        if self.cluster:
            calls = list(calls)
        elif not isinstance(calls, (list, tuple)):
            calls = _Replayable(calls)  # a generator: kept for a second pass
        replies = self._run(calls, mutating)
        missing = [i for i, r in enumerate(replies) if _not_loaded(r)]
        if missing:  # a restarted or new store: load and run only those calls again
            done = list(calls)
            self.load_scripts()
            again = self._run([done[i] for i in missing], mutating)
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
        for reply in replies:
            if isinstance(reply, rexc.RedisError) and not _is_error_reply(reply):
                raise StoreError(f"{self.safe_url}: {reply}") from reply
        return replies

    def _run(self, calls: Iterable[Call], mutating: bool) -> list[Any]:
        wait = mutating and self.min_replicas > 0 and not self.cluster
        try:
            if self.cluster:
                replies = self._cluster_pipeline(list(calls))
            else:
                replies = self._stream(calls, wait)
        except rexc.RedisError as exc:
            raise StoreError(f"{self.safe_url}: {exc}") from exc
        if wait:
            acked = replies.pop()
            if isinstance(acked, int) and acked < self.min_replicas:
                raise StoreError(f"{self.safe_url}: only {acked} of {self.min_replicas} "
                                 "replicas acknowledged the write")
        return replies

    def _stream(self, calls: Iterable[Call], wait: bool) -> list[Any]:
        """Write every call (and a WAIT) on one idle connection, then read the replies.

        Packed with hiredis directly: redis-py's command path (argument conversion, retry
        wrapper, pool and observability bookkeeping per command) cost more client CPU than
        the rest of a claim or an enqueue. A connection error retries once on a fresh
        connection, as the redis-py client does with _bounded_retry (a pooled connection
        that a store restart closed)."""
        conn = self._acquire()
        try:
            try:
                return self._exchange(conn, calls, wait)
            except rexc.ConnectionError:
                conn.disconnect()  # e.g. closed by a store restart: once more, reconnected
                return self._exchange(conn, calls, wait)
        except BaseException:
            conn.disconnect()  # replies may be left unread: never reuse it as it is
            raise
        finally:
            self._idle.append(conn)

    def _exchange(self, conn: Any, calls: Iterable[Call], wait: bool) -> list[Any]:
        n = 0
        for c in calls:
            command = ("FCALL", FUNCTIONS[c.script], 1, c.prefix, *c.args)
            conn.send_packed_command([pack_command(command)], False)
            n += 1
        if wait:
            command = ("WAIT", self.min_replicas, int(self.socket_timeout_s * 1000))
            conn.send_packed_command([pack_command(command)], False)
            n += 1
        return [_read(conn) for _ in range(n)]

    def _acquire(self) -> Any:
        """A connection for _stream: an idle one of this process (list.pop and append are
        atomic, so threads share the list without a lock), or a new one. redis-py's pool
        also takes a lock, polls the socket and records metrics on every get and release
        (~20 us of client CPU per call here); a stale connection shows as a
        ConnectionError on use instead, which _stream retries once on a new connection."""
        if self._idle_pid != os.getpid():  # forked: the parent's sockets are not ours
            self._idle, self._idle_pid = [], os.getpid()
        try:
            return self._idle.pop()
        except IndexError:
            return self.client.connection_pool.make_connection()

    def _cluster_pipeline(self, calls: list[Call]) -> list[Any]:
        if len(calls) == 1:
            c = calls[0]
            try:
                return [self.client.execute_command("FCALL", FUNCTIONS[c.script], 1, c.prefix,
                                                    *c.args)]
            except rexc.ResponseError as exc:  # an error reply is a value, as in a pipeline
                return [exc]
        pipe = self.client.pipeline(transaction=False)
        for c in calls:
            pipe.execute_command("FCALL", FUNCTIONS[c.script], 1, c.prefix, *c.args)
        return list(pipe.execute(raise_on_error=False))

    def batch(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Plain commands (the reads, and setup's and upkeep's few direct writes) in one round
        trip per node, replies in order (redis-py's reply parsing: HGETALL a dict, SMEMBERS a
        set, ...). Any failure, an error reply included, is a StoreError."""
        if not commands:
            return []

        def run(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            return list(pipe.execute())

        return self.execute(run)

    def wait_for_wake(self, conn: Any, lists: Sequence[str], timeout_s: float) -> bool:
        """BLPOP on wake lists, on a connection from blocking_client(); True if woken."""
        try:
            return conn.blpop(list(lists), timeout=timeout_s) is not None
        except rexc.RedisError as exc:
            raise StoreError(f"{self.safe_url}: {exc}") from exc

    def execute(self, fn: Any) -> Any:
        """Run `fn(client)` on the redis-py client, mapping store failures to StoreError:
        batch() is built on it; tests and tools use it for raw access."""
        try:
            return fn(self.client)
        except rexc.RedisError as exc:
            raise StoreError(f"{self.safe_url}: {exc}") from exc


class _Replayable:
    """An iterable of calls that can be iterated again (a retry, a reload) after a first
    pass that consumed a generator."""

    def __init__(self, calls: Iterable[Call]) -> None:
        self._source = iter(calls)
        self._seen: list[Call] = []

    def __iter__(self) -> Iterator[Call]:
        yield from self._seen
        for c in self._source:
            self._seen.append(c)
            yield c


def _read(conn: Any) -> Any:
    """One reply; an error reply is returned as its ResponseError (a value, as in a pipeline)."""
    try:
        return conn.read_response()
    except rexc.ResponseError as exc:
        return exc


def _keys_from_args(cluster: Any) -> Any:
    """Route FCALL by the keys in its own arguments.

    redis-py's cluster client asks a node (`COMMAND GETKEYS`, one extra synchronous round
    trip per command, pipelined or not) for the keys of a command it does not parse itself;
    for FCALL they are plain: `FCALL name numkeys key...`. Measured on a 3-node cluster
    (with EVALSHA, which its pipeline treats the same way): one GETKEYS per pipelined script
    call before this, none after."""
    parser = cluster.commands_parser
    generic = parser.get_keys

    def get_keys(conn: Any, *args: Any) -> Any:
        if args and str(args[0]).upper() == "FCALL" and len(args) > 2:
            return list(args[3:3 + int(args[2])])
        return generic(conn, *args)

    parser.get_keys = get_keys
    return cluster


def _bounded_retry() -> Retry:
    """One immediate retry, on connection errors only.

    redis-py's default (3 retries with exponential backoff, timeouts included) turns one
    command against a dead store into ~3.5 s and against a stalled one into 4 socket
    timeouts plus backoff, long enough for the supervisor to take a worker for hung. Every
    caller here retries with its own backoff (claim loop, outcome flusher, maintenance), so
    a command fails within about one socket timeout; the single retry still reconnects a
    pooled connection that a store restart closed."""
    return Retry(NoBackoff(), 1, supported_errors=(rexc.ConnectionError,))


def _not_loaded(reply: Any) -> bool:
    """The store does not have this version's library (restarted without AOF, new, or
    FUNCTION FLUSHed)."""
    return isinstance(reply, rexc.ResponseError) and "Function not found" in str(reply)


def _is_error_reply(exc: rexc.RedisError) -> bool:
    """True for a script's own error reply (ERR flow ...), false for store failures."""
    return isinstance(exc, rexc.ResponseError) and str(exc).startswith(("ERR flow", "ERR stale",
                                                                         "flow ", "stale "))
