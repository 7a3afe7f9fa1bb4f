"""Real redis-server processes for tests and benchmarks.

Used by tests/conftest.py and importable from bench scripts::

    from tests.servers import RedisServer, RedisClusterServers

    with RedisServer(tmp_dir).start() as server:
        print(server.url)

Every server binds loopback only, keeps its files (log, AOF, nodes.conf) in its own
directory, and is killed when the Python process that started it exits or dies.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis
import redis.cluster
from redis.backoff import NoBackoff
from redis.retry import Retry

# What the daemon's "strict" durability demands of its store (architecture.md, section 2).
DURABLE_ARGS: tuple[str, ...] = ("--appendonly", "yes", "--appendfsync", "always", "--save", "")
CLUSTER_BUS_OFFSET = 10_000  # Redis Cluster's bus listens on port + 10000
_UNIX_PATH_MAX = 100  # sun_path is 108 bytes; keep a margin

# Every server started in this interpreter, so a crashed test run does not leave any behind.
_LIVE: weakref.WeakSet[RedisServer] = weakref.WeakSet()


class ServerError(RuntimeError):
    """A server could not be started, or did not become ready in time."""


def find_binary(name: str) -> str:
    """Absolute path of a Redis binary; fail loudly (never skip) when it is missing."""
    path = shutil.which(name)
    if path is None:
        raise ServerError(
            f"{name!r} not found on PATH; install it (Debian: apt-get install -y "
            "redis-server redis-tools) - the tests need real Redis servers"
        )
    return path


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1", *, cluster_bus: bool = False) -> int:
    """A port that is free now (the kernel picks it); with cluster_bus, port+10000 too.

    There is a window between this check and the server's bind; RedisServer.start retries
    with a fresh port when it loses that race.
    """
    for _ in range(500):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        if not cluster_bus:
            return port
        bus = port + CLUSTER_BUS_OFFSET
        if bus <= 65535 and _port_is_free(host, bus):
            return port
    raise ServerError("could not find a free loopback port")


def _pdeathsig_prefix() -> list[str]:
    # setpriv sets PR_SET_PDEATHSIG and execs redis-server in the same pid, so the server
    # dies with the Python process even when that one is SIGKILLed (atexit never runs then).
    # No preexec_fn: it is unsafe in a threaded parent.
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL"] if setpriv else []


def make_tls_files(directory: Path, host: str = "127.0.0.1") -> dict[str, Path]:
    """A throwaway CA and a server certificate for `host`, made with the openssl CLI."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise ServerError("openssl not found on PATH; it is needed to make test certificates")
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "server.key", directory / "server.csr", directory / "server.crt"
    ext = directory / "san.ext"
    ext.write_text(f"subjectAltName=IP:{host},DNS:localhost\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]  # fast keygen
    steps = [
        [
            openssl,
            "req",
            "-x509",
            *ec,
            "-keyout",
            ca_key,
            "-out",
            ca_crt,
            "-days",
            "2",
            "-subj",
            "/CN=ferricflowd-test-ca",
        ],
        [openssl, "req", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={host}"],
        [
            openssl,
            "x509",
            "-req",
            "-in",
            csr,
            "-CA",
            ca_crt,
            "-CAkey",
            ca_key,
            "-CAcreateserial",
            "-out",
            crt,
            "-days",
            "2",
            "-extfile",
            ext,
        ],
    ]
    for cmd in steps:
        done = subprocess.run([str(c) for c in cmd], capture_output=True, text=True)
        if done.returncode != 0:
            raise ServerError(f"openssl failed: {' '.join(map(str, cmd))}\n{done.stderr}")
    return {"ca": ca_crt, "cert": crt, "key": key}


class RedisServer:
    """One redis-server child process on a loopback TCP port, in its own directory.

    Attributes: url, host, port, dir, pid, process, password, tls, unix_socket, args.
    Control: start(), kill() (SIGKILL), restart(), stop_process()/cont_process()
    (SIGSTOP/SIGCONT), terminate(), ensure_running().
    """

    def __init__(
        self,
        dir: Path | str,
        port: int | None = None,
        *,
        args: Sequence[str] = (),
        durable: bool = True,
        password: str | None = None,
        tls: bool = False,
        host: str = "127.0.0.1",
        cluster: bool = False,
        die_with_parent: bool = True,
        startup_timeout_s: float = 10.0,
    ) -> None:
        self.dir = Path(dir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host = host
        self._fixed_port = port is not None
        self._cluster = cluster
        self.port: int = port if port is not None else free_port(host, cluster_bus=cluster)
        self.extra_args: tuple[str, ...] = tuple(args)
        self.durable = durable
        self.password = password if password is not None else _arg_value(args, "--requirepass")
        self.tls = tls
        self.tls_files: dict[str, Path] = make_tls_files(self.dir / "tls", host) if tls else {}
        self.die_with_parent = die_with_parent
        self.startup_timeout_s = startup_timeout_s
        sock = self.dir / "redis.sock"
        self.unix_socket: Path | None = sock if len(str(sock)) < _UNIX_PATH_MAX else None
        self.log_path = self.dir / "redis.log"
        self.stdout_path = self.dir / "stdout.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.stopped = False  # SIGSTOPped by stop_process()
        self.redis_server = find_binary("redis-server")

    # -- addresses ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"{scheme}://{auth}{self.host}:{self.port}/0"

    @property
    def unix_url(self) -> str | None:
        if self.unix_socket is None:
            return None
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"unix://{auth}{self.unix_socket}?db=0"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def args(self) -> list[str]:
        """The full redis-server command line (without the pdeathsig wrapper)."""
        cmd = [
            self.redis_server,
            "--bind",
            self.host,
            "--dir",
            str(self.dir),
            "--logfile",
            str(self.log_path),
            "--daemonize",
            "no",
            # DEBUG SLEEP / DEBUG RELOAD are handy in failure tests; loopback only.
            "--enable-debug-command",
            "local",
        ]
        if self.tls:
            cmd += [
                "--port",
                "0",
                "--tls-port",
                str(self.port),
                "--tls-cert-file",
                str(self.tls_files["cert"]),
                "--tls-key-file",
                str(self.tls_files["key"]),
                "--tls-ca-cert-file",
                str(self.tls_files["ca"]),
                "--tls-auth-clients",
                "no",
            ]
        else:
            cmd += ["--port", str(self.port)]
        if self.unix_socket is not None:
            cmd += ["--unixsocket", str(self.unix_socket), "--unixsocketperm", "700"]
        if self._cluster:
            cmd += [
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(self.dir / "nodes.conf"),
            ]
        if self.durable:
            cmd += list(DURABLE_ARGS)
        if self.password and "--requirepass" not in self.extra_args:
            cmd += ["--requirepass", self.password]
        # Last: redis applies later directives over earlier ones, so callers can override.
        return cmd + list(self.extra_args)

    def client_kwargs(self) -> dict[str, Any]:
        """Extra keyword arguments a redis-py client needs beyond the URL (TLS CA)."""
        return {"ssl_ca_certs": str(self.tls_files["ca"])} if self.tls else {}

    def client(self, **kwargs: Any) -> redis.Redis:
        """A redis-py client for this server; the caller closes it."""
        return redis.Redis.from_url(self.url, **{**self.client_kwargs(), **kwargs})

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> RedisServer:
        """Start the server and wait until it answers PING; returns self."""
        if not self.running:
            self._spawn()
        return self._await_start()

    def _await_start(self) -> RedisServer:
        for attempt in range(5):
            try:
                self.wait_ready(self.startup_timeout_s)
                return self
            except ServerError:
                lost_port_race = "Address already in use" in self.log_tail(10)
                if self._fixed_port or not lost_port_race or attempt == 4:
                    raise
                # Another process took the port between free_port() and our bind.
                self.port = free_port(self.host, cluster_bus=self._cluster)
                self._spawn()
        raise AssertionError("unreachable")

    def _spawn(self) -> None:
        prefix = _pdeathsig_prefix() if self.die_with_parent else []
        with open(self.stdout_path, "ab") as out:
            self.process = subprocess.Popen(
                prefix + self.args,
                cwd=self.dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a terminal's Ctrl-C reaches pytest, not the server
            )
        self.stopped = False
        _LIVE.add(self)

    def ping(self) -> bool:
        """True when the server answers PING now (never raises)."""
        try:
            with self.client(
                socket_connect_timeout=0.5, socket_timeout=1.0, retry=_no_retry()
            ) as conn:
                return bool(conn.ping())
        except (redis.RedisError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """Wait until PING answers (it answers LOADING while the AOF is replayed)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.running:
                code = self.process.returncode if self.process else None
                raise ServerError(
                    f"redis-server on port {self.port} exited ({code})\n{self.log_tail()}"
                )
            if self.ping():
                return
            time.sleep(0.02)
        raise ServerError(
            f"redis-server on port {self.port} not ready after {timeout_s}s\n{self.log_tail()}"
        )

    def wait_aof_written(self, timeout_s: float = 10.0) -> None:
        """Wait until no AOF rewrite is running or scheduled: a replica writes its initial
        AOF after a full sync, and refuses to shut down on SIGTERM until it is done."""
        deadline = time.monotonic() + timeout_s
        while True:
            info = self.raw_command("INFO", "persistence")
            if "aof_rewrite_in_progress:0" in info and "aof_rewrite_scheduled:0" in info:
                return
            if time.monotonic() > deadline:
                raise ServerError(f"AOF rewrite of {self.port} still running\n{info}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL, like a crash or the OOM killer, and reap it."""
        self._signal_and_reap(signal.SIGKILL, timeout_s=10.0)

    def restart(self, timeout_s: float | None = None) -> None:
        """Start again on the same port and directory (AOF replayed); SIGKILLs it first
        if it is still running."""
        if self.running:
            self.kill()
        self._spawn()
        self.wait_ready(timeout_s or self.startup_timeout_s)

    def stop_process(self) -> None:
        """SIGSTOP: the server hangs (connections stay open, nothing answers)."""
        if self.running and self.process is not None:
            os.kill(self.process.pid, signal.SIGSTOP)
            self.stopped = True

    def cont_process(self) -> None:
        """SIGCONT after stop_process()."""
        if self.running and self.process is not None:
            os.kill(self.process.pid, signal.SIGCONT)
        self.stopped = False

    def terminate(self, timeout_s: float = 5.0) -> None:
        """Graceful shutdown (SIGTERM), SIGKILL if it does not exit in time."""
        if not self.running:
            return
        if self.stopped:
            self.cont_process()  # a stopped process cannot act on SIGTERM
        try:
            self._signal_and_reap(signal.SIGTERM, timeout_s=timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()

    def ensure_running(self) -> None:
        """Undo what a test may have left behind: a SIGSTOPped or dead server."""
        if self.process is None:
            return
        if self.stopped:
            self.cont_process()
        if not self.running:
            self.restart()

    def _signal_and_reap(self, sig: int, timeout_s: float) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.process.pid, sig)
        self.process.wait(timeout=timeout_s)
        self.stopped = False

    # -- inspection --------------------------------------------------------------------

    def log_tail(self, lines: int = 30) -> str:
        text = ""
        for path in (self.stdout_path, self.log_path):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def raw_command(self, *args: str, timeout_s: float = 2.0) -> str:
        """One command on a fresh connection, reply as text, bypassing redis-py's reply
        parsing (which changes between versions for CLUSTER INFO/NODES)."""
        cls = redis.SSLConnection if self.tls else redis.Connection
        conn = cls(
            host=self.host,
            port=self.port,
            password=self.password,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=_no_retry(),
            **self.client_kwargs(),
        )
        try:
            conn.send_command(*args)
            return _text(conn.read_response())
        finally:
            conn.disconnect()

    def info(self, section: str | None = None) -> dict[str, Any]:
        with self.client() as conn:
            return conn.info(section) if section else conn.info()

    def config_get(self, name: str) -> str:
        with self.client() as conn:
            return str(conn.config_get(name)[name])

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.terminate()

    def __repr__(self) -> str:
        state = "stopped" if self.stopped else ("running" if self.running else "down")
        return f"<RedisServer {self.url} pid={self.pid} {state} dir={self.dir}>"


class RedisClusterServers:
    """A real Redis Cluster of `masters` masters on loopback ports (replicas: add_replica).

    Attributes: url (first node, db 0), ports, nodes (RedisServer each), startup_nodes.
    """

    def __init__(
        self,
        dir: Path | str,
        masters: int = 3,
        *,
        args: Sequence[str] = (),
        node_timeout_ms: int = 5_000,
        startup_timeout_s: float = 15.0,
    ) -> None:
        if masters < 3:
            raise ValueError("redis-cli --cluster create needs at least 3 masters")
        self.dir = Path(dir).resolve()
        self.startup_timeout_s = startup_timeout_s
        node_args = ["--cluster-node-timeout", str(node_timeout_ms), *args]
        self.nodes: list[RedisServer] = [
            RedisServer(
                self.dir / f"node{i}",
                args=node_args,
                cluster=True,
                startup_timeout_s=startup_timeout_s,
            )
            for i in range(masters)
        ]
        self.node_args = node_args
        self.replicas: list[RedisServer] = []  # added by add_replica(), after start()

    @property
    def ports(self) -> list[int]:
        return [node.port for node in self.nodes]

    @property
    def url(self) -> str:
        return self.nodes[0].url  # RedisCluster discovers the others; db 0 only

    @property
    def startup_nodes(self) -> list[redis.cluster.ClusterNode]:
        return [redis.cluster.ClusterNode(n.host, n.port) for n in self.nodes]

    def client(self, **kwargs: Any) -> redis.cluster.RedisCluster:
        """A redis-py RedisCluster client; the caller closes it."""
        return redis.cluster.RedisCluster(startup_nodes=self.startup_nodes, **kwargs)

    def start(self) -> RedisClusterServers:
        for node in self.nodes:
            node._spawn()  # start all at once, then wait: faster than one by one
        for node in self.nodes:
            node._await_start()  # respawns on a lost port race
        cli = find_binary("redis-cli")
        create = [
            cli,
            "--cluster",
            "create",
            *(f"{n.host}:{n.port}" for n in self.nodes),
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ]
        done = subprocess.run(
            create,
            capture_output=True,
            text=True,
            timeout=self.startup_timeout_s,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise ServerError(
                f"redis-cli --cluster create failed ({done.returncode}):\n"
                f"{done.stdout}\n{done.stderr}"
            )
        self.wait_ok(self.startup_timeout_s)
        return self

    def add_replica(self, master: int) -> RedisServer:
        """Start one more node as a replica of nodes[master] and wait until that primary
        has it online (ready to acknowledge WAIT)."""
        node = RedisServer(
            self.dir / f"replica{len(self.replicas)}",
            args=self.node_args,
            cluster=True,
            startup_timeout_s=self.startup_timeout_s,
        ).start()
        self.replicas.append(node)
        primary = self.nodes[master]
        # Diskless sync waits 5 s by default for more replicas to share the transfer.
        primary.raw_command("CONFIG", "SET", "repl-diskless-sync-delay", "0")
        node.raw_command("CLUSTER", "MEET", primary.host, str(primary.port))
        primary_id = primary.raw_command("CLUSTER", "MYID").strip()
        deadline = time.monotonic() + self.startup_timeout_s
        while True:  # REPLICATE fails until the node has learnt of the primary by gossip
            try:
                node.raw_command("CLUSTER", "REPLICATE", primary_id)
                break
            except redis.ResponseError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        while "state=online" not in primary.raw_command("INFO", "replication"):
            if time.monotonic() > deadline:
                raise ServerError(f"replica of {primary.port} not online\n{node.log_tail()}")
            time.sleep(0.05)
        node.wait_aof_written()
        return node

    def cluster_info(self, node: RedisServer) -> dict[str, str]:
        """CLUSTER INFO of one node as a dict of strings."""
        text = node.raw_command("CLUSTER", "INFO")
        pairs = (line.split(":", 1) for line in text.splitlines() if ":" in line)
        return {key.strip(): value.strip() for key, value in pairs}

    def cluster_nodes(self, node: RedisServer | None = None) -> list[dict[str, Any]]:
        """CLUSTER NODES as seen by one node: id, addr (host:port), flags, slots."""
        text = (node or self.nodes[0]).raw_command("CLUSTER", "NODES")
        rows = []
        for line in text.splitlines():
            fields = line.split()
            if len(fields) < 8:
                continue
            rows.append(
                {
                    "id": fields[0],
                    "addr": fields[1].split("@")[0],
                    "flags": set(fields[2].split(",")),
                    "slots": fields[8:],
                }
            )
        return rows

    def is_ok(self) -> bool:
        """Every node sees cluster_state:ok, all slots, and all masters."""
        want, known = str(len(self.nodes)), str(len(self.nodes) + len(self.replicas))
        try:
            infos = [self.cluster_info(node) for node in self.nodes]
        except (redis.RedisError, OSError):
            return False
        return all(
            i.get("cluster_state") == "ok"
            and i.get("cluster_slots_assigned") == "16384"
            and i.get("cluster_known_nodes") == known
            and i.get("cluster_size") == want
            for i in infos
        )

    def wait_ok(self, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.is_ok():
                return
            time.sleep(0.05)
        details = {n.port: self.cluster_info(n) if n.running else "down" for n in self.nodes}
        raise ServerError(f"cluster not ok after {timeout_s}s: {details}")

    def ensure_running(self) -> None:
        """Resume or restart nodes a test left stopped or dead, then wait for the cluster."""
        touched = any(n.stopped or not n.running for n in self.nodes)
        for node in self.nodes:
            node.ensure_running()
        if touched:
            self.wait_ok(self.startup_timeout_s)

    def terminate(self) -> None:
        terminate_all(self.nodes + self.replicas)

    def __enter__(self) -> RedisClusterServers:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.terminate()


def terminate_all(servers: Iterable[RedisServer]) -> None:
    """Stop every running server: SIGTERM to all first, then reap (parallel shutdown)."""
    servers = [s for s in servers if s.running]
    for server in servers:
        if server.stopped:
            server.cont_process()
        with contextlib.suppress(ProcessLookupError):
            if server.process is not None:
                os.kill(server.process.pid, signal.SIGTERM)
    for server in servers:
        server.terminate()


def _no_retry() -> Retry:
    # redis-py retries failed connects with backoff by default (seconds per failed PING);
    # readiness polls must fail fast and poll again themselves.
    return Retry(NoBackoff(), 0)


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _arg_value(args: Sequence[str], flag: str) -> str | None:
    items = list(args)
    for i, item in enumerate(items[:-1]):
        if item == flag:
            return items[i + 1]
    return None


def temp_server(**kwargs: Any) -> RedisServer:
    """A started server in a fresh temporary directory (for bench scripts)."""
    return RedisServer(tempfile.mkdtemp(prefix="ferricflowd-redis-"), **kwargs).start()


atexit.register(lambda: terminate_all(list(_LIVE)))
