"""Write the Grafana dashboard ferricflowd.json (the panels are defined here, once).

    python deploy/grafana/make_dashboard.py           # rewrite ferricflowd.json
    python deploy/grafana/make_dashboard.py --check   # exit 1 if it is out of date

Import ferricflowd.json in Grafana (Dashboards > New > Import) and pick a Prometheus data
source. Every query filters on the dashboard's variables: job, namespace, type (Flow type)
and group (worker group). Store-wide gauges (backlog, oldest due age, running) are exported
by every replica with the same value, so they are aggregated with max(), never sum();
per-process series (counters, in-flight, live workers) are summed over replicas.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

TARGET = Path(__file__).resolve().parent / "ferricflowd.json"
DS = {"type": "prometheus", "uid": "${datasource}"}
BASE = 'job=~"$job", namespace=~"$namespace"'
BY_TYPE = BASE + ', type=~"$type"'
BY_GROUP = BASE + ', group=~"$group"'
RATE = "[$__rate_interval]"
WIDTH, HEIGHT = 24, 8


def target(expr: str, legend: str, ref: str) -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref,
            "range": True}


def panel(title: str, queries: list[tuple[str, str]], unit: str = "short",
          description: str = "", kind: str = "timeseries", **options: Any) -> dict[str, Any]:
    """A panel of `queries` (expression, legend); placed by layout()."""
    refs = "ABCDEFGH"
    field: dict[str, Any] = {"unit": unit, "min": 0}
    if kind == "timeseries":
        field["custom"] = {"drawStyle": options.pop("draw", "line"), "fillOpacity": 10,
                           "lineWidth": 1, "showPoints": "never", "spanNulls": True}
    return {
        "type": kind, "title": title, "description": description, "datasource": DS,
        "targets": [target(e, legend, refs[i]) for i, (e, legend) in enumerate(queries)],
        "fieldConfig": {"defaults": field, "overrides": []},
        "options": options or {"legend": {"displayMode": "table", "placement": "right",
                                          "calcs": ["lastNotNull", "max"]},
                               "tooltip": {"mode": "multi", "sort": "desc"}},
    }


def stat(title: str, expr: str, unit: str = "short", description: str = "",
         thresholds: list[tuple[float | None, str]] | None = None) -> dict[str, Any]:
    p = panel(title, [(expr, "")], unit, description, kind="stat",
              reduceOptions={"calcs": ["lastNotNull"], "fields": "", "values": False},
              colorMode="background", graphMode="none", textMode="value")
    steps = [{"value": v, "color": c} for v, c in (thresholds or [(None, "green")])]
    p["fieldConfig"]["defaults"]["thresholds"] = {"mode": "absolute", "steps": steps}
    return p


def row(title: str) -> dict[str, Any]:
    return {"type": "row", "title": title, "collapsed": False, "panels": []}


def quantiles(metric: str, by: str, selector: str, window: str) -> list[tuple[str, str]]:
    return [
        (f"histogram_quantile({q}, sum by (le, {by}) "
         f"(rate({metric}_bucket{{{selector}}}{window})))", f"p{int(q * 100)} {{{{{by}}}}}")
        for q in (0.5, 0.95, 0.99)
    ]


def panels() -> list[dict[str, Any]]:
    outcomes = ["completed", "transitioned", "retried", "failed", "released"]
    return [
        row("Overview"),
        stat("Store reachable", f"min(ferricflowd_store_up{{{BASE}}})",
             description="0 when any replica's last store ping failed.",
             thresholds=[(None, "red"), (1, "green")]),
        stat("Replicas scraped", f'sum(up{{{BASE}}})',
             description="Daemons Prometheus scrapes successfully (job, namespace)."),
        stat("Flows due now", "sum(max by (type, state) "
             f"(ferricflowd_backlog{{{BY_TYPE}}}))",
             description="The store's backlog: max over replicas, summed over types/states.",
             thresholds=[(None, "green"), (1000, "orange")]),
        stat("Groups crash-looping", "count(max by (group) "
             f"(ferricflowd_group_crash_looping{{{BY_GROUP}}}) > 0) or vector(0)",
             thresholds=[(None, "green"), (1, "red")]),
        row("Throughput"),
        panel("Handler outcomes / s", [
            (f"sum(rate(ferricflowd_flows_{o}_total{{{BY_TYPE}}}{RATE}))", o)
            for o in outcomes], "ops",
            "Outcomes of handler runs, summed over replicas; released = claimed and handed "
            "back unstarted by a draining worker."),
        panel("Claimed / s by type", [
            (f"sum by (type, state) (rate(ferricflowd_flows_claimed_total{{{BY_TYPE}}}{RATE}))",
             "{{type}}/{{state}}"),
            (f"sum by (type, state) (rate(ferricflowd_handler_errors_total{{{BY_TYPE}}}{RATE}))",
             "errors {{type}}/{{state}}")], "ops",
            "Flows claimed by workers, and handler runs that raised."),
        row("Backlog"),
        panel("Flows due now (backlog)", [
            (f"max by (type, state) (ferricflowd_backlog{{{BY_TYPE}}})", "{{type}}/{{state}}")],
            description="Due and not leased; a store-wide gauge (max over replicas)."),
        panel("Oldest due age", [
            (f"max by (type, state) (ferricflowd_oldest_due_age_seconds{{{BY_TYPE}}})",
             "{{type}}/{{state}}")], "s",
            "How long the oldest due Flow has waited past its due time."),
        row("Handlers"),
        panel("Handler duration quantiles", quantiles(
            "ferricflowd_handler_duration_seconds", "type", BY_TYPE, RATE), "s",
            "From the handler duration histogram (buckets 5 ms .. 120 s)."),
        panel("Leased (running) and in flight", [
            (f"max by (type) (ferricflowd_flows_running{{{BY_TYPE}}})", "leased {{type}}"),
            (f"sum by (type) (ferricflowd_flows_in_flight{{{BY_TYPE}}})", "in flight {{type}}")],
            description="Leased: Flows held by any worker (store-wide). In flight: handlers "
            "running now (summed over replicas)."),
        row("Workers"),
        panel("Live workers by group", [
            (f"sum by (group) (ferricflowd_group_workers{{{BY_GROUP}}})", "{{group}}")],
            description="Worker processes alive, summed over replicas."),
        panel("Crash-looping groups", [
            (f"sum by (group) (ferricflowd_group_crash_looping{{{BY_GROUP}}})", "{{group}}")],
            description="Replicas in which the group is crash-looping (not ready).",
            draw="line"),
        panel("Worker restarts by reason", [
            (f"sum by (group, reason) (increase(ferricflowd_worker_restarts_total"
             f"{{{BY_GROUP}}}{RATE}))", "{{group}} {{reason}}")],
            description="Unexpected worker deaths (exit, signal, hang, boot, ...).",
            draw="bars"),
        panel("Recycles by trigger", [
            (f"sum by (group, trigger) (increase(ferricflowd_recycles_total"
             f"{{{BY_GROUP}}}{RATE}))", "{{group}} {{trigger}}")],
            description="Workers replaced gracefully (max_memory, max_jobs).", draw="bars"),
        panel("Reclaimed leases by cause", [
            (f"sum by (cause) (increase(ferricflowd_leases_reclaimed_total{{{BASE}}}{RATE}))",
             "{{cause}}")],
            description="Leases taken back from workers that died, hung, drained or "
            "expired; their Flows run again.", draw="bars"),
        panel("Drain duration (1h window)", quantiles(
            "ferricflowd_drain_duration_seconds", "group", BY_GROUP, "[1h]") + [
            (f"sum by (group) (increase(ferricflowd_drain_duration_seconds_sum{{{BY_GROUP}}}"
             f"[1h])) / sum by (group) (increase(ferricflowd_drain_duration_seconds_count"
             f"{{{BY_GROUP}}}[1h]))", "mean {{group}}")], "s",
            "SIGTERM to exit of draining workers (reload, recycle, scale-in, shutdown); "
            "above drain_timeout means handlers were abandoned."),
    ]


def layout(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows span the width; stats share a line four abreast; other panels two abreast."""
    y, x, line_height = 0, 0, 0
    for ident, item in enumerate(items, start=1):
        item["id"] = ident
        width, height = {"row": (WIDTH, 1), "stat": (6, 4)}.get(item["type"], (12, HEIGHT))
        if item["type"] == "row" or x + width > WIDTH:
            y, x, line_height = y + line_height, 0, 0
        item["gridPos"] = {"h": height, "w": width, "x": x, "y": y}
        x, line_height = x + width, max(line_height, height)
    return items


def variable(name: str, label: str, query: str, many: bool = True) -> dict[str, Any]:
    """A label_values() variable; `many`: multi-select with All (a regex matching any value,
    the empty one included, so series without that label still show)."""
    var = {
        "name": name, "label": label, "type": "query", "datasource": DS,
        "query": {"query": query, "refId": f"{name}-var"}, "definition": query,
        "refresh": 2, "includeAll": many, "multi": many, "sort": 1,
    }
    if many:
        var["allValue"] = ".*"
        var["current"] = {"selected": True, "text": ["All"], "value": ["$__all"]}
    return var


def dashboard() -> dict[str, Any]:
    return {
        "uid": "ferricflowd",
        "title": "ferricflowd",
        "description": "Durable FerricFlow workers: throughput, backlog, latency, workers.",
        "tags": ["ferricflowd"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "schemaVersion": 39,
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "browser",
        "templating": {"list": [
            {"name": "datasource", "label": "Data source", "type": "datasource",
             "query": "prometheus", "current": {}, "hide": 0},
            # One job: "All" would make up{job=~".*"} count every target of Prometheus.
            variable("job", "Job", "label_values(ferricflowd_store_up, job)", many=False),
            variable("namespace", "Namespace",
                     'label_values(ferricflowd_store_up{job=~"$job"}, namespace)'),
            variable("type", "Flow type",
                     f"label_values(ferricflowd_backlog{{{BASE}}}, type)"),
            variable("group", "Worker group",
                     f"label_values(ferricflowd_group_workers{{{BASE}}}, group)"),
        ]},
        "annotations": {"list": []},
        "links": [],
        "panels": layout(panels()),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
