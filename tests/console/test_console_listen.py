"""The console's default address is loopback only: from another interface of the same host
it cannot be reached at all (the kernel refuses the connection), while a console told to
listen on every address can be (so the check can fail).

Run in a network namespace of its own (`unshare --net`, root), holding only `lo` and a veth
pair with documentation addresses (192.0.2.1 and .2, TEST-NET-1): nothing leaves the
namespace, and the probe connects to 192.0.2.1 as a client on the LAN would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = r'''
import json, os, socket, subprocess, sys, time
from pathlib import Path

def config(path, console):
    path.write_text('[store]\nurl = "redis://127.0.0.1:1/0"\n[daemon]\n'
                    f'data_dir = "{path.parent}"\n{console}'
                    '[groups.q]\ntype = "t"\nstates = ["s"]\nhandler = "m:f"\n')
    return path

def reach(host, port):
    try:
        socket.create_connection((host, port), timeout=2).close()
        return "connected"
    except ConnectionRefusedError:
        return "refused"
    except OSError as exc:
        return f"error: {exc}"

def serve(cfg):
    return subprocess.Popen([sys.executable, "-m", "ferricflowd.console", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def wait(port):
    deadline = time.monotonic() + 20
    while reach("127.0.0.1", port) != "connected":
        assert time.monotonic() < deadline, "console did not start"
        time.sleep(0.05)

tmp = Path(sys.argv[1])
out = {}
default = serve(config(tmp / "default.toml", ""))  # no [console]: the default address
wild = serve(config(tmp / "wild.toml", '[console]\nlisten = "0.0.0.0:9466"\n'))
try:
    wait(9465)
    wait(9466)
    out = {"default_loopback": reach("127.0.0.1", 9465),
           "default_lan": reach("192.0.2.1", 9465),
           "wildcard_lan": reach("192.0.2.1", 9466)}
finally:
    for p in (default, wild):
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:  # not what this test checks: say so, clean up
            print(f"console pid {p.pid} ignored SIGTERM for 10 s; killed", file=sys.stderr)
            p.kill()
            p.wait()
print(json.dumps(out))
'''

SETUP = ("ip link set lo up && ip link add ff0 type veth peer name ff1 && "
         "ip addr add 192.0.2.1/24 dev ff0 && ip addr add 192.0.2.2/24 dev ff1 && "
         "ip link set ff0 up && ip link set ff1 up && exec \"$@\"")


def test_default_console_address_is_not_reachable_from_outside_loopback(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        pytest.skip("needs root, unshare and ip (iproute2) for a private network namespace")
    repo = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": repo}
    env = {k: v for k, v in env.items() if not k.startswith("FERRICFLOWD_")}
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", SETUP, "sh", sys.executable, "-c", PROBE,
         str(tmp_path)],
        capture_output=True, text=True, timeout=120, env=env, cwd=repo)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"default_loopback": "connected", "default_lan": "refused",
                      "wildcard_lan": "connected"}
