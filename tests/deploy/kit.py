"""Where the deploy kit's files are, the ferricflowd series its queries name, and the external
tools its tests run (which CI installs: a missing tool fails there instead of skipping)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
RULES = DEPLOY / "prometheus" / "ferricflowd.rules.yml"
RULES_TEST = DEPLOY / "prometheus" / "ferricflowd.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "ferricflowd.json"
SCALEDOBJECT = K8S / "components" / "keda" / "scaledobject.yaml"
PROMETHEUSRULE = K8S / "components" / "prometheus-operator" / "prometheusrule.yaml"
DOCKERFILE = ROOT / "Dockerfile"
RUNBOOK = ROOT / "docs" / "runbook.md"

_SERIES = re.compile(r"\bferricflowd_[a-z0-9_]+")


def tool(name: str, install: str) -> str:
    """The path of a command-line tool the kit's tests run: PATH, then the venv's bin (where
    pip and .ci/run put hadolint and promtool). Missing: a failure in CI, a skip elsewhere."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found:
        return found
    message = f"{name} is not installed ({install}); .ci/run installs it"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard_queries() -> list[str]:
    """Every PromQL text of the dashboard: panel targets and template variables."""
    board = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in board["panels"] for t in p.get("targets", [])]
    for var in board["templating"]["list"]:
        if var["type"] == "query":
            exprs.append(var["query"]["query"])
    return exprs


def scaler_queries() -> list[str]:
    scaled = yaml.safe_load(SCALEDOBJECT.read_text())
    return [t["metadata"]["query"] for t in scaled["spec"]["triggers"]]


def series_in(texts: list[str]) -> set[str]:
    return {name for text in texts for name in _SERIES.findall(text)}


def kit_series() -> dict[str, set[str]]:
    """Each ferricflowd_* series name the kit's queries use, and which files use it."""
    sources = {
        "alert rules": [r["expr"] for r in alert_rules()],
        "dashboard": dashboard_queries(),
        "ScaledObject": scaler_queries(),
    }
    used: dict[str, set[str]] = {}
    for where, texts in sources.items():
        for name in series_in(texts):
            used.setdefault(name, set()).add(where)
    return used


@dataclass(frozen=True)
class Instruction:
    stage: str  # the FROM ... AS name it belongs to
    keyword: str
    args: str

    def exec_form(self) -> list[str]:
        """The JSON ["a", "b"] form of CMD/ENTRYPOINT/HEALTHCHECK CMD as a list."""
        text = self.args.split("CMD", 1)[1] if self.keyword == "HEALTHCHECK" else self.args
        value = json.loads(text.strip())
        assert isinstance(value, list), self
        return value


def dockerfile(path: Path = DOCKERFILE) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    lines: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):  # Docker drops comments in continuations too
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1].strip() + " "
            continue
        lines.append(pending + stripped)
        pending = ""
    result: list[Instruction] = []
    stage = ""
    for line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            stage = args.split(" AS ")[-1].strip() if " AS " in args else args
        result.append(Instruction(stage, keyword, args.strip()))
    return result


def env_of(instructions: list[Instruction], stage: str) -> dict[str, str]:
    """ENV key=value pairs of one stage (the form this Dockerfile uses)."""
    env: dict[str, str] = {}
    for ins in instructions:
        if ins.stage == stage and ins.keyword == "ENV":
            for pair in ins.args.split():
                key, _, value = pair.partition("=")
                env[key] = value
    return env
