"""observe_many records exactly what one observe() per amount would."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

from ferricflowd.metrics import DURATION_BUCKETS, observe_many


def _samples(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    return {(s.name, s.labels.get("le", "")): s.value for m in registry.collect()
            for s in m.samples if not s.name.endswith("_created")}


def test_observe_many_equals_one_observe_per_amount() -> None:
    amounts = [0.0, 0.001, 0.005, 0.0051, 0.3, 0.3, 29.9, 500.0]
    one, many = CollectorRegistry(), CollectorRegistry()
    h1 = Histogram("d_seconds", "d", ("type",), buckets=DURATION_BUCKETS, registry=one)
    h2 = Histogram("d_seconds", "d", ("type",), buckets=DURATION_BUCKETS, registry=many)
    for amount in amounts:
        h1.labels("t").observe(amount)
    observe_many(h2.labels("t"), amounts)
    assert _samples(many) == _samples(one)
    assert _samples(many)[("d_seconds_count", "")] == len(amounts)


def test_the_metrics_reference_lists_every_series() -> None:
    import dataclasses
    from pathlib import Path

    from ferricflowd.metrics import scheduler_metrics, supervisor_metrics, worker_metrics

    doc = (Path(__file__).resolve().parents[2] / "docs" / "metrics.md").read_text("utf-8")
    names = []
    for group in (worker_metrics(), supervisor_metrics(), scheduler_metrics()):
        for field in dataclasses.fields(group):
            series = getattr(group, field.name)
            suffix = "_total" if series._type == "counter" else ""
            names.append(f"`{series._name}{suffix}`")
    assert len(names) == 24
    assert [n for n in names if n not in doc] == []
