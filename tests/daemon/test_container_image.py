"""The image, run without a container engine: what the Dockerfile builds, started the way the
image starts it.

The build stage's COPY lines are copied into a fresh build context and installed with its
`pip install /src` (a regular install, so the package data must really ship); the README's
two-line application Dockerfile adds the examples under an /app stand-in; the daemon runs
with the image's ENV, WORKDIR, ENTRYPOINT and CMD (only the config path and the data and
listen addresses point into a temp dir) as PID 1 of a new PID namespace, on the embedded
store, with the K8s ConfigMap's flows.toml. Then: the HEALTHCHECK command passes, Flows run,
a killed embedded redis-server is reaped and restarted, SIGTERM drains a running handler and
stops the store cleanly, and the HEALTHCHECK fails once the daemon is gone."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from ferricflowd.flow.client import FlowClient
from ferricflowd.flow.queue import Queue
from tests.daemons import Daemon, free_port
from tests.deploy.kit import K8S, ROOT, dockerfile, env_of
from tests.helpers import wait_for

pytestmark = pytest.mark.slow
IMAGE_CONFIG = "/etc/ferricflowd/flows.toml"
SLOW_APP = '''
import os, time
from pathlib import Path

def work(job):
    Path(os.environ["FF_TEST_MARKERS"], job.id).touch()
    time.sleep(float(job.payload))
'''


def install_like_the_build_stage(context: Path, target: Path) -> None:
    """COPY what the build stage copies into `context` (its WORKDIR /src), then its
    `pip install /src`; --target stands in for the image's venv (the dependencies are this
    test's own)."""
    build = [ins for ins in dockerfile() if ins.stage == "build"]
    context.mkdir()
    for ins in build:
        if ins.keyword == "COPY":  # Docker's rules for a directory destination
            *sources, dest = ins.args.split()
            assert dest.endswith("/"), ins
            for source in sources:
                src, into = ROOT / source, context / dest
                if src.is_dir():  # a directory's contents go into the destination
                    shutil.copytree(src, into, dirs_exist_ok=True,
                                    ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    into.mkdir(parents=True, exist_ok=True)
                    shutil.copy(src, into / src.name)
    (run,) = [ins.args for ins in build if ins.keyword == "RUN"]
    assert "pip install /src" in run
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target",
         str(target), str(context)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def add_application(app: Path) -> None:
    """The README's two-line Dockerfile (FROM the image, COPY examples/ /app/examples/)."""
    readme = (ROOT / "README.md").read_text()
    (copy,) = re.findall(r"^COPY (\S+) /app/(\S+)$", readme, flags=re.MULTILINE)
    shutil.copytree(ROOT / copy[0], app / copy[1], ignore=shutil.ignore_patterns("__pycache__"))
    (app / "slowapp.py").write_text(SLOW_APP)


@pytest.fixture
def image_daemon(tmp_path: Path) -> Iterator[Daemon]:
    short = Path(tempfile.mkdtemp(prefix="ffimg-"))  # the store's unix socket path is short
    site, app, data = tmp_path / "site", tmp_path / "app", short / "data"
    install_like_the_build_stage(tmp_path / "src", site)
    app.mkdir()
    add_application(app)
    config = tmp_path / "flows.toml"
    config.write_text((K8S / "base" / "flows.toml").read_text() + (
        '\n[groups.slow]\ntype = "slow"\nstates = ["queued"]\nhandler = "slowapp:work"\n'))
    port = free_port()
    image_env = env_of(dockerfile(), "runtime")
    env = {
        **image_env,
        "PATH": f"{site / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": f"{app}{os.pathsep}{site}",  # /app, and the venv's site-packages
        "FERRICFLOWD_DAEMON_LISTEN": f"127.0.0.1:{port}",
        "FERRICFLOWD_DAEMON_DATA_DIR": str(data),
        "FF_TEST_MARKERS": str(short),
    }
    assert set(env) - {"FF_TEST_MARKERS"} == set(image_env), "map every ENV of the image"
    runtime = {ins.keyword: ins for ins in dockerfile() if ins.stage == "runtime"}
    command = runtime["ENTRYPOINT"].exec_form() + runtime["CMD"].exec_form()
    assert IMAGE_CONFIG in command
    command[command.index(IMAGE_CONFIG)] = str(config)
    where = subprocess.run(
        [sys.executable, "-c", "import ferricflowd; print(ferricflowd.__file__)"],
        cwd=app, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert where.stdout.startswith(str(site)), "the installed copy, not the checkout"
    log_path = tmp_path / "daemon.log"
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", *command], cwd=app, env=env,
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    client = FlowClient.from_url(f"unix://{data / 'redis' / 'redis.sock'}", namespace="ff")
    daemon = Daemon(proc, config, log_path, port, client, wrapped=True)
    daemon.env = env  # type: ignore[attr-defined]  # for the health check command
    try:
        yield daemon
    finally:
        daemon.kill_all()
        client.close()
        print(f"---- daemon log (tail) ----\n{daemon.log_tail(60)}")
        shutil.rmtree(short, ignore_errors=True)


def healthcheck(daemon: Daemon) -> int:
    """The image's HEALTHCHECK command, run with the image's environment."""
    runtime = {ins.keyword: ins for ins in dockerfile() if ins.stage == "runtime"}
    argv = runtime["HEALTHCHECK"].exec_form()
    if argv[0] == "python":  # the image's python; here, this interpreter
        argv[0] = sys.executable
    return subprocess.run(argv, env=daemon.env, capture_output=True,  # type: ignore[attr-defined]
                          timeout=30).returncode


def store_process(daemon: Daemon) -> psutil.Process | None:
    for child in psutil.Process(daemon.pid).children():
        try:
            if child.name() == "redis-server" and child.status() != psutil.STATUS_ZOMBIE:
                return child
        except psutil.NoSuchProcess:
            continue
    return None


def no_zombies(daemon: Daemon) -> bool:
    return not [c for c in psutil.Process(daemon.pid).children()
                if c.status() == psutil.STATUS_ZOMBIE]


def test_the_image_as_pid_1_reaps_its_store_and_drains_on_sigterm(image_daemon: Daemon):
    daemon = image_daemon
    daemon.wait_ready(timeout=90)
    status = Path(f"/proc/{daemon.pid}/status").read_text()
    (nspid,) = [line.split()[1:] for line in status.splitlines() if line.startswith("NSpid:")]
    assert nspid[-1] == "1", "the supervisor is PID 1 of its namespace"
    assert healthcheck(daemon) == 0

    emails = Queue(daemon.client, "email")
    emails.enqueue_many([f"e{i}" for i in range(3)])
    wait_for(lambda: daemon.client.stats("email").counts.get("completed") == 3, timeout=20)

    # The embedded store dies: PID 1 reaps it (no zombie) and starts it again.
    store = store_process(daemon)
    assert store is not None
    store.kill()
    wait_for(lambda: (s := store_process(daemon)) is not None and s.pid != store.pid,
             timeout=20, what="the embedded store restarted")
    wait_for(lambda: no_zombies(daemon), timeout=5, what="no zombie under PID 1")
    # The new process exists before its socket accepts connections: await it answering.
    wait_for(daemon.client.store.ping, timeout=20, what="the restarted store answers")
    emails.enqueue("after-restart")
    wait_for(lambda: getattr(daemon.client.get("after-restart"), "state", None) == "completed",
             timeout=30, what="work resumes on the restarted store")

    # SIGTERM while a handler runs: it finishes, then the store stops and PID 1 exits 0.
    Queue(daemon.client, "slow").enqueue("s1", b"1.5")
    markers = Path(daemon.env["FF_TEST_MARKERS"])  # type: ignore[attr-defined]
    wait_for(lambda: (markers / "s1").exists(), timeout=20, what="the slow handler started")
    store = store_process(daemon)
    assert store is not None
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(30) == 0
    assert re.search(r'"event": "completed".*"id": "s1"|"id": "s1".*"event": "completed"',
                     daemon.log()), "the running handler finished during the drain"
    redis_log = Path(daemon.env["FERRICFLOWD_DAEMON_DATA_DIR"]) / "redis" / "redis.log"
    assert "ready to exit" in redis_log.read_text(), "the store was shut down, not killed"
    assert not store.is_running()
    assert healthcheck(daemon) != 0
