"""README.md is true (issue 17, item 14): its library quickstart is ruff-clean and prints what
the README says against a fresh durable store, the examples then run against that same store
(no IdempotencyConflict on shared ids), and `scripts/demo` runs twice in a row."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import REPO_ROOT, daemon_env

README = (REPO_ROOT / "README.md").read_text("utf-8")
VENV_BIN = Path(sys.executable).parent


def _quickstart() -> str:
    section = README.split("## Quickstart (a library", 1)[1].split("\n## ", 1)[0]
    (code,) = re.findall(r"```python\n(.*?)```", section, re.S)
    return code


def test_the_quickstart_is_ruff_clean() -> None:
    ruff = VENV_BIN / "ruff"
    if not ruff.exists():
        pytest.fail("ruff is not installed (pip install -e '.[dev]')")
    done = subprocess.run([str(ruff), "check", "--stdin-filename", "quickstart.py", "-"],
                          input=_quickstart(), text=True, capture_output=True, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_quickstart_prints_what_the_readme_says_and_the_examples_run_after_it(
        make_redis_server: Any, tmp_path: Path) -> None:
    server = make_redis_server()
    code = _quickstart().replace("redis://127.0.0.1:6390/0", server.url)
    assert server.url in code
    (tmp_path / "quickstart.py").write_text(code)
    env = daemon_env({"FERRICFLOWD_URL": server.url})
    run = subprocess.run([sys.executable, "quickstart.py"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    printed = re.search(r"It prints `(.*?)`", README)
    assert printed and run.stdout.splitlines()[-1] == printed.group(1), run.stdout
    for example in ("examples.emails", "examples.orders"):
        done = subprocess.run([sys.executable, "-m", example], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (example, done.stdout, done.stderr)


@pytest.mark.slow
def test_the_demo_runs_again_and_again() -> None:
    if not (REPO_ROOT / ".venv" / "bin" / "ferricflowd").exists():
        pytest.fail("the demo needs the checkout's .venv (python3 -m venv .venv)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FERRICFLOWD_")}
    for _ in range(2):
        done = subprocess.run(["bash", "scripts/demo", "20"], cwd=REPO_ROOT, env=env,
                              capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert "==> done: 20 emails and 20 orders completed" in done.stdout, done.stdout
