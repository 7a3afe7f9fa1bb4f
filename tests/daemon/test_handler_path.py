"""Handler modules resolve from the config file's directory as well as the working directory
(issue 17, item 12): a config kept beside its app works from anywhere, and `check` agrees
with `run`. `ferricflowd store-url` prints where the config's store is."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.daemons import run_cli
from tests.helpers import wait_for

APP = '''
def handle(job):
    return b"handled beside its config"
'''


def test_a_handler_beside_the_config_imports_from_any_directory(start_daemon: Any,
                                                                tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "beside_config.py").write_text(APP)
    daemon = start_daemon(
        {"q": {"type": "beside", "states": ["queued"], "handler": "beside_config:handle"}},
        config_name="app/flows.toml",
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    checked = run_cli("check", "--config", str(daemon.config_path), cwd=elsewhere)
    assert checked.returncode == 0 and "all 1 group(s) ok" in checked.stdout, checked
    daemon.client.create("b1", "beside", "queued", b"")
    wait_for(lambda: (r := daemon.client.get("b1")) is not None and r.state == "completed",
             timeout=10, what=f"b1 completed; log:\n{daemon.log_tail()}")
    url = run_cli("store-url", "--config", str(daemon.config_path), cwd=elsewhere)
    assert url.returncode == 0 and url.stdout.strip() == daemon.client.store.safe_url, url


def test_store_url_names_the_embedded_socket_and_hides_a_password(tmp_path: Path) -> None:
    config = tmp_path / "flows.toml"
    config.write_text('[daemon]\ndata_dir = "d"\n[groups.q]\ntype = "t"\nstates = ["s"]\n'
                      'handler = "m:f"\n')
    shown = run_cli("store-url", "--config", str(config), cwd=tmp_path)
    assert shown.stdout.strip() == f"unix://{tmp_path / 'd' / 'redis' / 'redis.sock'}", shown
    config.write_text('[store]\nurl = "redis://:s3cret@db.example:6379/0"\n'
                      + config.read_text())
    hidden = run_cli("store-url", "--config", str(config), cwd=tmp_path)
    assert "s3cret" not in hidden.stdout and "db.example:6379" in hidden.stdout, hidden
    shown = run_cli("store-url", "--config", str(config), "--with-password", cwd=tmp_path)
    assert shown.stdout.strip() == "redis://:s3cret@db.example:6379/0", shown
