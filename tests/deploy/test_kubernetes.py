"""The Kubernetes manifests: both overlays render with kustomize, core kinds pass
kubernetes-validate (strict), the custom resources (KEDA, Prometheus Operator) pass the
schemas of crd_schemas.py, and the numbers agree with each other and with the daemon's
config (drain_timeout < grace period < autoscaler cool-down; secret store URL)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from ferricflowd.config import load_config
from tests.deploy.crd_schemas import SCHEMAS
from tests.deploy.kit import K8S, PROMETHEUSRULE, ROOT, RULES, tool
from tests.helpers import seconds

OVERLAYS = ("dev", "external-store")
BASE_TOML = K8S / "base" / "flows.toml"
HTTP_PORT = 9464
# Oldest release still supported by the major clouds' managed Kubernetes, and the newest.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = tool("kubectl", "kubectl >= 1.27 has kustomize built in")
    done = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def one(overlay: str, kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in render(overlay) if doc["kind"] == kind]
    return found


def pod_spec(overlay: str) -> dict[str, Any]:
    return one(overlay, "Deployment")["spec"]["template"]["spec"]


def container(overlay: str) -> dict[str, Any]:
    (found,) = pod_spec(overlay)["containers"]
    return found


def env_values(overlay: str) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container(overlay)["env"] if "value" in e}


def flows_toml(overlay: str) -> dict[str, Any]:
    return tomllib.loads(one(overlay, "ConfigMap")["data"]["flows.toml"])


def drain_timeout_s(overlay: str) -> float:
    return seconds(flows_toml(overlay)["daemon"]["drain_timeout"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_renders_and_core_kinds_pass_kubernetes_validate(overlay: str) -> None:
    docs = render(overlay)
    kinds = sorted(doc["kind"] for doc in docs)
    expected = ["ConfigMap", "Deployment", "PodDisruptionBudget"]
    if overlay == "external-store":
        expected += ["PodMonitor", "PrometheusRule", "ScaledObject"]
    assert kinds == sorted(expected)
    namespace = {doc["metadata"].get("namespace") for doc in docs}
    assert namespace == {"ferricflowd" if overlay == "external-store" else "ferricflowd-dev"}
    for doc in docs:
        if doc["kind"] in SCHEMAS:
            continue
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)  # raises on an error


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_custom_resources_match_their_crd_schema(kind: str) -> None:
    doc = one("external-store", kind)
    jsonschema.validate(doc, SCHEMAS[kind])
    # The schema does catch a misspelt field (the API server would reject it too).
    broken = yaml.safe_load(yaml.safe_dump(doc))
    broken["spec"]["misspelt"] = 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, SCHEMAS[kind])


def test_store_url_comes_from_a_secret_never_from_the_configmap() -> None:
    env = {e["name"]: e for e in container("external-store")["env"]}
    url = env["FERRICFLOWD_STORE_URL"]
    assert "value" not in url
    assert url["valueFrom"]["secretKeyRef"] == {"name": "ferricflowd-store", "key": "url"}
    assert "envFrom" not in container("external-store")
    for overlay in OVERLAYS:
        assert "url" not in flows_toml(overlay)["store"], overlay
        for doc in render(overlay):
            assert doc["kind"] != "Secret", "the Secret is created by hand, not committed"


def test_dev_overlay_is_one_pod_with_the_embedded_store() -> None:
    deployment = one("dev", "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert not any(e["name"] == "FERRICFLOWD_STORE_URL" for e in container("dev")["env"])
    data_dir = flows_toml("dev")["daemon"]["data_dir"]
    mounts = {m["mountPath"]: m["name"] for m in container("dev")["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec("dev")["volumes"]}
    assert "emptyDir" in volumes[mounts[data_dir]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_grace_period_covers_the_drain(overlay: str) -> None:
    grace = pod_spec(overlay)["terminationGracePeriodSeconds"]
    stop_grace = seconds(env_values(overlay)["FERRICFLOWD_DAEMON_STOP_GRACE"])
    assert drain_timeout_s(overlay) < stop_grace <= grace


def test_autoscaler_scales_the_deployment_on_the_backlog_with_max_over_replicas() -> None:
    scaled = one("external-store", "ScaledObject")["spec"]
    deployment = one("external-store", "Deployment")
    assert scaled["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    assert 1 <= scaled["minReplicaCount"] < scaled["maxReplicaCount"]
    (trigger,) = scaled["triggers"]
    assert trigger["type"] == "prometheus"
    query = trigger["metadata"]["query"]
    # Every replica exports the store-wide gauge: max() over replicas, never sum() of them.
    assert query.replace(" ", "").startswith("sum(maxby(type,state)(ferricflowd_backlog{")
    namespace = deployment["metadata"]["namespace"]
    assert f'namespace="{namespace}"' in query
    assert float(trigger["metadata"]["threshold"]) > 0


def test_autoscaler_cooldown_outlasts_the_drain() -> None:
    scaled = one("external-store", "ScaledObject")["spec"]
    drain = drain_timeout_s("external-store")
    grace = pod_spec("external-store")["terminationGracePeriodSeconds"]
    assert scaled["cooldownPeriod"] > drain
    scale_down = scaled["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] > drain
    # At most one pod removed per period, and a period outlasts a pod's whole stop.
    for policy in scale_down["policies"]:
        assert policy["type"] == "Pods" and policy["value"] == 1
        assert policy["periodSeconds"] > grace


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_disruption_budget_selects_the_pods_and_allows_one_down(overlay: str) -> None:
    pdb = one(overlay, "PodDisruptionBudget")["spec"]
    labels = one(overlay, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert pdb["selector"]["matchLabels"].items() <= labels.items()
    assert pdb["maxUnavailable"] == 1 and "minAvailable" not in pdb


def test_pod_monitor_scrapes_the_metrics_port_as_job_ferricflowd() -> None:
    monitor = one("external-store", "PodMonitor")["spec"]
    labels = one("external-store", "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert monitor["selector"]["matchLabels"].items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container("external-store")["ports"]}
    (endpoint,) = monitor["podMetricsEndpoints"]
    assert ports[endpoint["port"]] == HTTP_PORT and endpoint["path"] == "/metrics"
    # The alert rules select job="ferricflowd": the job name is the pods' label value.
    assert labels[monitor["jobLabel"]] == "ferricflowd"
    assert 'up{job="ferricflowd"}' in RULES.read_text()


def test_prometheus_rule_is_the_rules_file() -> None:
    script = ROOT / "deploy" / "prometheus" / "make_prometheusrule.py"
    done = subprocess.run([sys.executable, str(script), "--check"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    rule = one("external-store", "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    assert yaml.safe_load(PROMETHEUSRULE.read_text())["spec"] == rule["spec"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_and_metrics_listen_where_kubelet_can_reach(overlay: str) -> None:
    c = container(overlay)
    assert env_values(overlay)["FERRICFLOWD_DAEMON_LISTEN"] == f"0.0.0.0:{HTTP_PORT}"
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": HTTP_PORT}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": HTTP_PORT}
    assert {p["containerPort"] for p in c["ports"]} == {HTTP_PORT}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pod_is_locked_down_and_has_writable_data_dir(overlay: str) -> None:
    pod, c = pod_spec(overlay), container(overlay)
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001  # the image's USER
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "limits" in c["resources"] and "requests" in c["resources"]
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    data_dir = flows_toml(overlay)["daemon"]["data_dir"]
    assert env_values(overlay).get("FERRICFLOWD_DAEMON_DATA_DIR", data_dir) == data_dir
    assert "emptyDir" in volumes[mounts[data_dir]]
    # --config names a file of the mounted (generated) ConfigMap.
    config_arg = Path(c["command"][c["command"].index("--config") + 1])
    volume = volumes[mounts[str(config_arg.parent)]]
    configmap = one(overlay, "ConfigMap")
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    assert config_arg.name in configmap["data"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_configmap_loads_with_the_daemons_config_loader(overlay: str, tmp_path: Path) -> None:
    path = tmp_path / "flows.toml"
    path.write_text(one(overlay, "ConfigMap")["data"]["flows.toml"])
    env = {**env_values(overlay), "FERRICFLOWD_DAEMON_DATA_DIR": str(tmp_path / "data")}
    if overlay == "external-store":
        env["FERRICFLOWD_STORE_URL"] = "redis://:secret@redis:6379/0"
    config = load_config(path, env=env)
    assert config.daemon.listen == f"0.0.0.0:{HTTP_PORT}"
    assert config.store.embedded is (overlay == "dev")
    grace = pod_spec(overlay)["terminationGracePeriodSeconds"]
    assert config.daemon.drain_timeout_s < config.daemon.stop_grace_s <= grace
    assert {g.name for g in config.groups} == {"email", "orders"}


def test_the_example_handlers_of_the_configmap_load() -> None:
    """`ferricflowd check` imports the handlers the pods would run (the repo's examples,
    which the README's application image copies to /app)."""
    done = subprocess.run(
        [sys.executable, "-m", "ferricflowd", "check", "--config", str(BASE_TOML)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "all 2 group(s) ok" in done.stdout
