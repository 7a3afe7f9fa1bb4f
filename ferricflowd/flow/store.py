"""The only module that talks to Redis: connections, the function library, FCALL calls.

The engine is one Redis Functions library: the includes `lua/lib/*.lua` (INCLUDES, in that
order) then every `lua/<name>.lua` as the body of a function, named after a digest of the
whole text so that two versions of ferricflowd can share a store (not a namespace: see
README.md, Compatibility). FUNCTION LOAD goes to every primary of a cluster, and again
when a restarted or new store answers "Function not found". A batch of calls is one round
trip per node: on a single node they are packed with hiredis and streamed on one connection
(Store._stream), on a cluster they go through redis-py's cluster pipeline.

The library is server-global, so every client verifies at connect that the one loaded under
its name is exactly its own code (FUNCTION LIST WITHCODE): a tenant who could FUNCTION LOAD
would otherwise choose what every other namespace's daemon runs. A missing library is
loaded if this user may; `ferricflowd store-setup` (setup_library) is the admin's way, so
runtime users need no FUNCTION LOAD (docs/security.md). With min_replicas, each batch ends
with a WAIT on the connection (each cluster primary's) that took its writes; a WAIT that
times out is UnderReplicated (applied, not failed), never a StoreError.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import redis
import redis.exceptions as rexc
from hiredis import pack_command
from redis.backoff import NoBackoff
from redis.cluster import RedisCluster
from redis.retry import Retry

from .errors import (
    DurabilityError,
    InvalidArgument,
    LibraryMismatch,
    PartialBatch,
    StoreError,
    UnderReplicated,
)
from .urls import check_url, redact
from .wakewait import WakeWait

log = logging.getLogger(__name__)

SCRIPTS = ("create", "claim", "extend", "complete", "transition", "fail", "retry", "cancel",
           "signal", "spawn", "deliver", "reclaim", "release", "cleanup", "stats", "put_value",
           "browse", "rewind", "purge", "cancel_matching", "schedule_fire", "schedule_admin")
# The library's includes (lua/lib/), in load order: each may use what the ones before define.
INCLUDES = ("call", "keys", "record", "history", "lease", "children", "grant")

Arg = str | bytes | int | float


@dataclass(frozen=True)
class Call:
    """One script call: the script's name, the partition prefix (KEYS[1]) and its ARGV."""

    script: str
    prefix: str
    args: Sequence[Arg]


def library_head() -> str:
    """The includes of `lua/lib/` in INCLUDES order: the library before its functions."""
    lib = resources.files("ferricflowd.flow").joinpath("lua", "lib")
    return "".join(lib.joinpath(f"{name}.lua").read_text("utf-8") for name in INCLUDES)


def _build_library() -> tuple[str, str, dict[str, str]]:
    """The library's name, its source and the function name of every script."""
    lua = resources.files("ferricflowd.flow").joinpath("lua")
    head = library_head()
    bodies = {name: lua.joinpath(f"{name}.lua").read_text("utf-8") for name in SCRIPTS}
    digest = hashlib.sha1((head + "".join(bodies.values())).encode()).hexdigest()[:12]
    functions = {name: f"ff_{digest}_{name}" for name in SCRIPTS}
    library = f"ferricflow_{digest}"
    parts = [f"#!lua name={library}\n", head]
    for name, body in bodies.items():
        parts.append(f"\nredis.register_function('{functions[name]}', function(keys, args)\n"
                     f"begin(keys, args)\n{body}\nend)\n")
    return library, "".join(parts), functions


LIBRARY_NAME, LIBRARY, FUNCTIONS = _build_library()
LIBRARY_SHA256 = hashlib.sha256(LIBRARY.encode()).hexdigest()
SETUP_HINT = "an admin must run `ferricflowd store-setup --url URL` (docs/security.md)"


class Store:
    """A connection to one store (single node or cluster), created lazily."""

    def __init__(self, url: str, *, socket_timeout_s: float = 5.0, min_replicas: int = 0,
                 wait_timeout_s: float = 1.0, durability: str = "strict") -> None:
        if durability not in ("strict", "relaxed"):
            raise InvalidArgument("durability", "must be 'strict' or 'relaxed'")
        if min_replicas and not 0 < wait_timeout_s < socket_timeout_s:
            # A WAIT as long as the socket timeout would end as a socket error after the
            # write was applied: the generic failure that invites a duplicate retry.
            raise InvalidArgument("wait_timeout_s", f"must be > 0 and shorter than "
                                  f"socket_timeout_s ({socket_timeout_s:g}), got "
                                  f"{wait_timeout_s!r}")
        check_url(url)
        self.url = url
        self.safe_url = redact(url)
        self.socket_timeout_s = socket_timeout_s
        self.min_replicas = min_replicas
        self.wait_timeout_s = wait_timeout_s
        self.durability = durability
        # None: an under-replicated write raises UnderReplicated. A consumer (the daemon's
        # processes, a Runner) sets a callback that counts and logs it instead, and goes on
        # with the replies: the write is applied, and raising would strand its leases.
        self.on_under_replicated: Callable[[UnderReplicated], None] | None = None
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

    def wake_wait(self, timeout_s: float) -> WakeWait:
        """A BLPOP waiter on connections of its own, for blocks of up to `timeout_s`."""
        return WakeWait(self, self.blocking_client(timeout_s))

    def blocking_client(self, timeout_s: float) -> Any:
        """A separate client for BLPOP, whose socket timeout outlasts the block."""
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

    def replica_shortfall(self) -> str | None:
        """What falls short of min_replicas (a primary with fewer online replicas), or None:
        the daemon is not ready while a write could not be acknowledged in time."""
        if not self.min_replicas:
            return None
        for node in self._nodes():
            try:
                info = self._on(node, "INFO", "replication")
            except rexc.RedisError as exc:
                raise StoreError(f"{self._name(node)}: INFO replication: {exc}") from exc
            online = sum(1 for k, v in info.items() if k.startswith("slave")
                         and isinstance(v, dict) and v.get("state") == "online")
            if online < self.min_replicas:
                return (f"{self._name(node)} has {online} online replica(s), "
                        f"store.min_replicas = {self.min_replicas}")
        return None

    # -- the engine library --------------------------------------------------------------------

    def ensure_library(self) -> None:
        """Verify that every node (each primary of a cluster) runs exactly this library, and
        load it where it is missing if this user may (dev setups need no setup step).
        LibraryMismatch when another code is loaded under its name, or when it is missing and
        this user may not load it (FUNCTION LOAD denied: run store-setup)."""
        for node, found in self._library_code():
            if found is None:
                self._load_missing(node)
            elif found != LIBRARY:
                raise self._mismatch(node, found)

    def setup_library(self) -> int:
        """The admin step (`ferricflowd store-setup`): FUNCTION LOAD REPLACE this library on
        every primary, then verify it; the number of nodes set up."""
        nodes = self._nodes()
        for node in nodes:
            try:
                self._on(node, "FUNCTION", "LOAD", "REPLACE", LIBRARY)
            except rexc.RedisError as exc:
                raise StoreError(f"{self._name(node)}: cannot load the engine library "
                                 f"{LIBRARY_NAME}: {exc}") from exc
        self.ensure_library()
        return len(nodes)

    def _nodes(self) -> list[Any]:
        client = self.client  # connect first: decides cluster or not
        return list(client.get_primaries()) if self.cluster else [None]

    def _name(self, node: Any) -> str:
        return self.safe_url if node is None else f"{self.safe_url} (primary {node.name})"

    def _on(self, node: Any, *command: Arg) -> Any:
        """One command on one node (None: the single node)."""
        if node is None:
            return self.client.execute_command(*command)
        return self.client.execute_command(*command, target_nodes=node)

    def _library_code(self) -> list[tuple[Any, str | None]]:
        """Per node, the code of the library loaded under LIBRARY_NAME (None: not loaded)."""
        out = []
        for node in self._nodes():
            try:
                reply = self._on(node, "FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME,
                                 "WITHCODE")
            except rexc.RedisError as exc:
                raise StoreError(f"{self._name(node)}: cannot read the engine library "
                                 f"(FUNCTION LIST): {exc}") from exc
            out.append((node, _library_code(reply)))
        return out

    def _load_missing(self, node: Any) -> None:
        """FUNCTION LOAD without REPLACE (never over someone else's), then verify."""
        try:
            self._on(node, "FUNCTION", "LOAD", LIBRARY)
            return
        except rexc.NoPermissionError as exc:
            raise LibraryMismatch(
                f"{self._name(node)}: the engine library {LIBRARY_NAME} (sha256 "
                f"{LIBRARY_SHA256[:16]}) is not loaded and this user may not load it "
                f"({exc}); {SETUP_HINT}", library=LIBRARY_NAME, expected=LIBRARY_SHA256,
                found=None) from exc
        except rexc.ResponseError as exc:
            if "already exists" not in str(exc):
                raise StoreError(f"{self._name(node)}: cannot load the engine library "
                                 f"{LIBRARY_NAME}: {exc}") from exc
            problem = str(exc)  # loaded by a concurrent client, or our names are taken
        except rexc.RedisError as exc:
            raise StoreError(f"{self._name(node)}: cannot load the engine library: "
                             f"{exc}") from exc
        found = dict(self._library_code()).get(node)
        if found is None:
            raise LibraryMismatch(
                f"{self._name(node)}: cannot load the engine library {LIBRARY_NAME}: "
                f"{problem}: another library holds its function names; an admin must "
                f"FUNCTION DELETE that library, then run `ferricflowd store-setup`",
                library=LIBRARY_NAME, expected=LIBRARY_SHA256,
                found="its function names held by another library")
        if found != LIBRARY:
            raise self._mismatch(node, found)

    def _mismatch(self, node: Any, found: str) -> LibraryMismatch:
        digest = hashlib.sha256(found.encode("utf-8", "surrogateescape")).hexdigest()
        return LibraryMismatch(
            f"{self._name(node)}: the engine library {LIBRARY_NAME} loaded there is not this "
            f"version's code: expected sha256 {LIBRARY_SHA256[:16]}, found {digest[:16]}; "
            f"refusing to run it; {SETUP_HINT} to load this version's",
            library=LIBRARY_NAME, expected=LIBRARY_SHA256, found=digest)

    # -- script calls ------------------------------------------------------------------------

    def call(self, call: Call) -> Any:
        """Run one script; error replies are returned (not raised) as ResponseError."""
        return self.call_many((call,))[0]

    def call_many(self, calls: Iterable[Call], *, mutating: bool = True) -> list[Any]:
        """Run scripts in one round trip; a reply is the script's value or a ResponseError.

        On a single node the calls are streamed: each is packed and written as soon as the
        iterable yields it, so the store runs the first while the caller builds the next
        (a generator of calls overlaps client and store work; see FlowClient._batched).
        Store failures: StoreError when no call went through, PartialBatch (a reply or
        StoreError per call) when some did; then UnderReplicated if min_replicas were not
        reached (unless on_under_replicated takes it)."""
        if self.cluster:
            calls = list(calls)
        elif not isinstance(calls, (list, tuple)):
            calls = _Replayable(calls)  # a generator: kept for a second pass
        replies, acked = self._run(calls, mutating)
        missing = [i for i, r in enumerate(replies) if _not_loaded(r)]
        if missing:  # a restarted or new store: load and run only those calls again
            done = list(calls)
            self.ensure_library()
            again, acked_again = self._run([done[i] for i in missing], mutating)
            for i, reply in zip(missing, again, strict=True):
                replies[i] = reply
            acked = _fewest(acked, acked_again)
        self._raise_failures(replies)
        if acked is not None and acked < self.min_replicas:
            self._under_replicated(acked, replies)
        return replies

    def _raise_failures(self, replies: list[Any]) -> None:
        failed = [i for i, r in enumerate(replies)
                  if isinstance(r, rexc.RedisError) and not _is_error_reply(r)]
        if not failed:
            return
        first = replies[failed[0]]
        if len(failed) == len(replies):  # nothing went through
            raise StoreError(f"{self.safe_url}: {first}") from first
        refused = set(failed)
        results = [StoreError(f"{self.safe_url}: {r}") if i in refused else r
                   for i, r in enumerate(replies)]
        raise PartialBatch(f"{self.safe_url}: {len(failed)} of {len(replies)} script calls "
                           f"failed (the others were applied): {first}", results=results,
                           failed=failed) from first

    def _under_replicated(self, acked: int, replies: list[Any]) -> None:
        exc = UnderReplicated(
            f"{self.safe_url}: the write IS applied, but only {acked} of min_replicas="
            f"{self.min_replicas} replica(s) acknowledged it within store.wait_timeout "
            f"({self.wait_timeout_s:g}s); do not retry it as a failed write",
            acked=acked, wanted=self.min_replicas, results=replies)
        if self.on_under_replicated is None:
            raise exc
        self.on_under_replicated(exc)

    def _run(self, calls: Iterable[Call], mutating: bool) -> tuple[list[Any], int | None]:
        """The replies, and the replicas that acknowledged them (None: no WAIT sent)."""
        wait = mutating and self.min_replicas > 0
        try:
            if self.cluster:
                return self._cluster_pipeline(list(calls), wait)
            replies = self._stream(calls, wait)
        except rexc.RedisError as exc:
            raise StoreError(f"{self.safe_url}: {exc}") from exc
        if not wait:
            return replies, None
        acked = replies.pop()
        return replies, acked if isinstance(acked, int) else 0  # an error reply: none

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
            command = ("WAIT", self.min_replicas, max(1, round(self.wait_timeout_s * 1000)))
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

    def _cluster_pipeline(self, calls: list[Call], wait: bool) -> tuple[list[Any], int | None]:
        """The replies and, with `wait`, the fewest replicas any primary acknowledged.

        A WAIT counts the acknowledgements of its own connection's writes, so one goes to
        each primary that took a call, in the same pipeline: redis-py sends a node's
        commands on one connection, in order, so it follows that node's FCALLs."""
        if len(calls) == 1 and not wait:
            c = calls[0]
            try:
                return [self.client.execute_command("FCALL", FUNCTIONS[c.script], 1, c.prefix,
                                                    *c.args)], None
            except rexc.ResponseError as exc:  # an error reply is a value, as in a pipeline
                return [exc], None
        pipe = self.client.pipeline(transaction=False)
        for c in calls:
            pipe.execute_command("FCALL", FUNCTIONS[c.script], 1, c.prefix, *c.args)
        route = self._route(calls) if wait else {}
        for node in {n.name: n for n in route.values()}.values():
            pipe.execute_command("WAIT", self.min_replicas,
                                 max(1, round(self.wait_timeout_s * 1000)), target_nodes=node)
        replies = list(pipe.execute(raise_on_error=False))
        if not wait:
            return replies, None
        acks = replies[len(calls):]
        acked = min((a if isinstance(a, int) else 0 for a in acks), default=0)
        if {p: n.name for p, n in self._route(calls).items()} != {
                p: n.name for p, n in route.items()}:
            acked = 0  # a call was redirected (failover, resharding): its WAIT went elsewhere
        return replies[:len(calls)], acked

    def _route(self, calls: list[Call]) -> dict[str, Any]:
        """The primary of each call's partition prefix, as this client knows them now."""
        return {p: self.client.get_node_from_key(p) for p in {c.prefix for c in calls}}

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

    def execute(self, fn: Any) -> Any:
        """Run `fn(client)` on the redis-py client, mapping store failures to StoreError:
        batch() is built on it; tests and tools use it for raw access."""
        try:
            return fn(self.client)
        except rexc.RedisError as exc:
            raise StoreError(f"{self.safe_url}: {exc}") from exc


class ReplicationWarnings:
    """An on_under_replicated callback for consumers: `count()` for every under-replicated
    write (a metric), and at most one warning per `every_s` saying how many there were."""

    def __init__(self, count: Callable[[], None] | None = None, every_s: float = 10.0) -> None:
        self.count, self.every_s = count, every_s
        self._lock = threading.Lock()
        self._unlogged = 0
        self._logged_at = -every_s

    def __call__(self, exc: UnderReplicated) -> None:
        if self.count is not None:
            self.count()
        with self._lock:
            self._unlogged += 1
            now = time.monotonic()
            if now - self._logged_at < self.every_s:
                return
            n, self._unlogged, self._logged_at = self._unlogged, 0, now
        log.warning("%d write(s) applied but under-replicated (going on: they are not failures"
                    " to retry); latest: %s", n, exc)


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


def _fewest(a: int | None, b: int | None) -> int | None:
    return b if a is None else a if b is None else min(a, b)


def _library_code(reply: Any) -> str | None:
    """The library_code of a FUNCTION LIST ... WITHCODE reply for one library name (RESP2
    gives each library as a flat [key, value, ...] list; None when it lists none)."""
    for lib in reply or []:
        fields = lib if isinstance(lib, dict) else dict(zip(lib[::2], lib[1::2], strict=True))
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
        if _text(fields.get("library_name")) == LIBRARY_NAME:
            return _text(fields.get("library_code"))
    return None


def _text(value: Any) -> str | None:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def _not_loaded(reply: Any) -> bool:
    """The store does not have this version's library (restarted without AOF, new, or
    FUNCTION FLUSHed)."""
    return isinstance(reply, rexc.ResponseError) and "Function not found" in str(reply)


def _is_error_reply(exc: rexc.RedisError) -> bool:
    """True for a script's own error reply (ERR flow ...), false for store failures."""
    return isinstance(exc, rexc.ResponseError) and str(exc).startswith(("ERR flow", "ERR stale",
                                                                         "flow ", "stale "))
