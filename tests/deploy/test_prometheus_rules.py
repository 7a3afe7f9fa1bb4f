"""The alert rules: promtool accepts them, their unit tests pass (and can fail), and every
alert says what is wrong, where, and what to do (a runbook section that exists)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.kit import RULES, RULES_TEST, RUNBOOK, alert_rules, tool

INSTALL = "Debian package prometheus; .ci/run extracts promtool from it"


def promtool(*args: str, cwd: Path = RULES.parent) -> subprocess.CompletedProcess[str]:
    binary = tool("promtool", INSTALL)
    return subprocess.run([binary, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_promtool_check_rules_accepts_the_rules_file() -> None:
    done = promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", RULES_TEST.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_unit_tests_catch_a_sum_over_replicas_of_a_store_wide_gauge(tmp_path: Path) -> None:
    """The fixtures have two replicas exporting the same backlog: summing them doubles it."""
    text = RULES.read_text()
    wrong = text.replace("max by (job, namespace, type, state) (ferricflowd_backlog) > 100",
                         "sum by (job, namespace, type, state) (ferricflowd_backlog) > 100")
    assert wrong != text
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    (tmp_path / RULES.name).write_text(wrong)
    done = promtool("test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert done.returncode != 0
    assert "FerricflowdBacklogGrowing" in done.stdout + done.stderr


def test_every_alert_is_unit_tested_firing_and_not_firing() -> None:
    fires: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(RULES_TEST.read_text())["tests"]:
        for check in case.get("alert_rule_test", []):
            (fires if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - fires == set(), "alerts without a firing case"
    assert names - silent == set(), "alerts without a case where they stay silent"


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
def test_alert_says_what_where_and_what_to_do(rule: dict) -> None:
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url"}
    assert rule["labels"]["severity"] in {"warning", "critical"}
    # Names the group, the Flow type or the instance (whichever the alert is about).
    named = re.findall(r"\$labels\.(\w+)", annotations["description"])
    assert {"group", "type", "instance"} & set(named) or "job=" in annotations["description"]
    for label in named:  # every label the text uses survives the expression's aggregation
        by = re.findall(r"by \(([^)]*)\)", rule["expr"])
        kept = set(re.split(r"\s*,\s*", by[0])) if by else {"instance", "namespace", "job"}
        assert label in kept, f"{label} is aggregated away in {rule['expr']}"
    page, _, anchor = annotations["runbook_url"].partition("#")
    assert page == "docs/runbook.md"
    assert anchor == rule["alert"].lower()
    assert anchor in _anchors(RUNBOOK.read_text()), f"docs/runbook.md has no section {anchor}"
