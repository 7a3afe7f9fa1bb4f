"""The Grafana dashboard, checked as a structure: importable JSON generated from
make_dashboard.py, a data source variable and type/group variables used by every query, the
panels the kit promises, valid PromQL (promtool parses each query), and only series the code
defines. The live check against a running daemon's /metrics is
tests/daemon/test_deploy_kit_metrics.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from ferricflowd.metrics import supervisor_metrics, worker_metrics
from tests.deploy.kit import DASHBOARD, ROOT, dashboard_queries, kit_series, scaler_queries, tool

# What Grafana substitutes, for promtool's parser.
GRAFANA_VARS = {"$__rate_interval": "1m", "${datasource}": "prometheus", "$job": "ferricflowd",
                "$namespace": ".*", "$type": ".*", "$group": ".*"}
STORE_WIDE = ("ferricflowd_backlog", "ferricflowd_oldest_due_age_seconds",
              "ferricflowd_flows_running")


def board() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())


def panels(kind: str | None = None) -> list[dict[str, Any]]:
    return [p for p in board()["panels"] if kind is None or p["type"] == kind]


def exported_series() -> dict[str, tuple[str, ...]]:
    """Sample name -> label names of every metric ferricflowd/metrics.py defines, as a scrape
    shows them (counters as _total, histograms as _bucket/_sum/_count)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"),
                "gauge": ("",)}
    names = {}
    for group in (worker_metrics(), supervisor_metrics()):
        for metric in vars(group).values():
            for suffix in suffixes[metric._type]:
                names[metric._name + suffix] = tuple(metric._labelnames)
    return names


def test_dashboard_is_generated_from_its_script() -> None:
    script = ROOT / "deploy" / "grafana" / "make_dashboard.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_dashboard_has_a_datasource_variable_and_type_and_group_variables() -> None:
    variables = {v["name"]: v for v in board()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("type", "group", "namespace"):
        assert variables[name]["type"] == "query" and variables[name]["multi"], name
        assert variables[name]["allValue"] == ".*"  # matches series without the label too
    assert board()["uid"] == "ferricflowd" and board()["schemaVersion"] >= 36


def test_every_panel_queries_the_chosen_datasource_with_the_variables() -> None:
    labels = exported_series()
    for panel in panels():
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)) and refs, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"
            for name, selector in re.findall(r"(ferricflowd_\w+)\{([^}]*)\}", target["expr"]):
                assert 'job=~"$job"' in selector and 'namespace=~"$namespace"' in selector
                for label in {"type", "group"} & set(labels[name]):
                    assert f'{label}=~"${label}"' in selector, f"{panel['title']}: {label}"


def test_layout_fits_the_grid_without_overlaps() -> None:
    taken: set[tuple[int, int]] = set()
    ids = [p["id"] for p in panels()]
    assert len(ids) == len(set(ids))
    for panel in panels():
        pos = panel["gridPos"]
        assert 0 <= pos["x"] and pos["x"] + pos["w"] <= 24
        cells = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                 for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells


def test_the_promised_panels_are_there() -> None:
    exprs = {p["title"]: " ".join(t["expr"] for t in p["targets"]) for p in panels("timeseries")}
    every = " ".join(exprs.values())
    for outcome in ("completed", "transitioned", "retried", "failed"):
        assert f"ferricflowd_flows_{outcome}_total" in exprs["Handler outcomes / s"]
    assert "ferricflowd_backlog" in exprs["Flows due now (backlog)"]
    assert "ferricflowd_oldest_due_age_seconds" in exprs["Oldest due age"]
    assert "histogram_quantile(0.99" in exprs["Handler duration quantiles"]
    assert "ferricflowd_handler_duration_seconds_bucket" in exprs["Handler duration quantiles"]
    assert "ferricflowd_flows_in_flight" in every
    assert "by (group, reason)" in exprs["Worker restarts by reason"]
    assert "ferricflowd_group_crash_looping" in exprs["Crash-looping groups"]
    assert "ferricflowd_leases_reclaimed_total" in exprs["Reclaimed leases by cause"]
    assert "ferricflowd_drain_duration_seconds_bucket" in exprs["Drain duration (1h window)"]


def test_store_wide_gauges_are_never_summed_over_replicas() -> None:
    seen = set()
    for expr in dashboard_queries() + scaler_queries():
        for name in STORE_WIDE:
            for match in re.finditer(rf"(\w+)(?: by \([^)]*\))? \({name}\{{", expr):
                assert match.group(1) == "max", expr
                seen.add(name)
    assert seen == set(STORE_WIDE)


def test_every_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each query as a recording rule (Grafana's variables filled in)."""
    rules = []
    for i, expr in enumerate(dashboard_queries() + scaler_queries()):
        if expr.startswith("label_values("):
            expr = re.sub(r"label_values\((.*), \w+\)$", r"\1", expr)  # Grafana's own function
        for var, value in GRAFANA_VARS.items():
            expr = expr.replace(var, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run([tool("promtool", "Debian package prometheus"), "check", "rules",
                           str(path)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_series_the_kit_names_is_defined_in_the_code() -> None:
    used = kit_series()
    assert {"ferricflowd_backlog", "ferricflowd_handler_duration_seconds_bucket"} <= set(used)
    unknown = {name: sorted(where) for name, where in used.items()
               if name not in exported_series()}
    assert unknown == {}
