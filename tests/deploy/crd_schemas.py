"""JSON schemas for the custom resources of the kit, which kubernetes-validate does not know.

Written for these tests from the CRDs' openAPIV3Schema (KEDA 2.x keda.sh_scaledobjects,
Prometheus Operator 0.8x monitoring.coreos.com_prometheusrules and _podmonitors): the fields
the kit uses, their types and required keys, and additionalProperties false where the CRD is
a closed struct, so a misspelt field (cooldownPeriods, podMetricEndpoints) fails here as the
API server would reject it.
"""

from __future__ import annotations

from typing import Any

DURATION = (r"^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
            r"(([0-9]+)ms)?)$")
STRINGS = {"type": "object", "additionalProperties": {"type": "string"}}
INT = {"type": "integer"}


def _closed(properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required),
            "additionalProperties": False}


def _resource(api_version: str, kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    metadata = {"type": "object", "required": ["name"],
                "properties": {"name": {"type": "string"}, "labels": STRINGS,
                               "annotations": STRINGS, "namespace": {"type": "string"}}}
    return _closed({"apiVersion": {"const": api_version}, "kind": {"const": kind},
                    "metadata": metadata, "spec": spec}, ("apiVersion", "kind", "metadata", "spec"))


_HPA_RULES = _closed({
    "stabilizationWindowSeconds": {"type": "integer", "minimum": 0, "maximum": 3600},
    "selectPolicy": {"enum": ["Max", "Min", "Disabled"]},
    "policies": {"type": "array", "minItems": 1, "items": _closed({
        "type": {"enum": ["Pods", "Percent"]},
        "value": {"type": "integer", "minimum": 1},
        "periodSeconds": {"type": "integer", "minimum": 1, "maximum": 1800},
    }, ("type", "value", "periodSeconds"))},
})

SCALED_OBJECT = _resource("keda.sh/v1alpha1", "ScaledObject", _closed({
    "scaleTargetRef": _closed({"apiVersion": {"type": "string"}, "kind": {"type": "string"},
                               "name": {"type": "string"},
                               "envSourceContainerName": {"type": "string"}}, ("name",)),
    "pollingInterval": INT, "cooldownPeriod": INT, "initialCooldownPeriod": INT,
    "idleReplicaCount": INT, "minReplicaCount": INT, "maxReplicaCount": INT,
    "fallback": _closed({"failureThreshold": INT, "replicas": INT},
                        ("failureThreshold", "replicas")),
    "advanced": _closed({
        "restoreToOriginalReplicaCount": {"type": "boolean"},
        "horizontalPodAutoscalerConfig": _closed({
            "name": {"type": "string"},
            "behavior": _closed({"scaleUp": _HPA_RULES, "scaleDown": _HPA_RULES}),
        }),
    }),
    "triggers": {"type": "array", "minItems": 1, "items": _closed({
        "type": {"type": "string"}, "name": {"type": "string"},
        "metadata": STRINGS,  # every scaler parameter is a string, numbers included
        "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
        "useCachedMetrics": {"type": "boolean"},
        "authenticationRef": _closed({"name": {"type": "string"}, "kind": {"type": "string"}},
                                     ("name",)),
    }, ("type", "metadata"))},
}, ("scaleTargetRef", "triggers")))

_RULE = _closed({
    "alert": {"type": "string"}, "record": {"type": "string"},
    "expr": {"type": ["string", "integer"]},
    "for": {"type": "string", "pattern": DURATION},
    "keep_firing_for": {"type": "string", "pattern": DURATION},
    "labels": STRINGS, "annotations": STRINGS,
}, ("expr",))

PROMETHEUS_RULE = _resource("monitoring.coreos.com/v1", "PrometheusRule", _closed({
    "groups": {"type": "array", "items": _closed({
        "name": {"type": "string", "minLength": 1},
        "interval": {"type": "string", "pattern": DURATION},
        "limit": INT, "labels": STRINGS,
        "rules": {"type": "array", "items": _RULE},
    }, ("name",))},
}))

_ENDPOINT = {  # open: endpoints have many optional fields (relabelings, TLS, auth, ...)
    "type": "object",
    "properties": {"port": {"type": "string"}, "path": {"type": "string"},
                   "interval": {"type": "string", "pattern": DURATION},
                   "scrapeTimeout": {"type": "string", "pattern": DURATION},
                   "scheme": {"enum": ["http", "https", "HTTP", "HTTPS"]}},
}
POD_MONITOR = _resource("monitoring.coreos.com/v1", "PodMonitor", _closed({
    "jobLabel": {"type": "string"},
    "podTargetLabels": {"type": "array", "items": {"type": "string"}},
    "selector": _closed({"matchLabels": STRINGS, "matchExpressions": {"type": "array"}}),
    "namespaceSelector": _closed({"any": {"type": "boolean"},
                                  "matchNames": {"type": "array", "items": {"type": "string"}}}),
    "podMetricsEndpoints": {"type": "array", "items": _ENDPOINT},
    "sampleLimit": INT, "targetLimit": INT, "labelLimit": INT, "labelNameLengthLimit": INT,
    "labelValueLengthLimit": INT, "keepDroppedTargets": INT,
    "attachMetadata": {"type": "object"}, "scrapeClass": {"type": "string"},
    "scrapeProtocols": {"type": "array", "items": {"type": "string"}},
}, ("selector",)))

SCHEMAS = {"ScaledObject": SCALED_OBJECT, "PrometheusRule": PROMETHEUS_RULE,
           "PodMonitor": POD_MONITOR}
