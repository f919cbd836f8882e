"""Structural checks of the custom resources, which kubernetes-validate has no schema for.

Field names are checked against the fields these checks know (from the prometheus-operator
ServiceMonitor and KEDA ScaledObject references): a misspelled field would be dropped by the
API server's pruning without a word. References must resolve to rendered objects. The HPA that
KEDA creates from a ScaledObject is rebuilt here so the schema validator checks its behavior.
"""
from __future__ import annotations

import re
from typing import Any

from serving.metrics import Metrics
from tests.deploy.manifests import (
    Obj,
    container_port,
    containers,
    named,
    of_kind,
    selected_workloads,
    selects,
)
from tests.deploy.workloads import metrics_path

_KNOWN = {
    ("ServiceMonitor", "spec"): {"selector", "endpoints", "namespaceSelector", "jobLabel",
                                 "targetLabels", "podTargetLabels", "sampleLimit", "targetLimit"},
    ("ServiceMonitor", "endpoint"): {"port", "targetPort", "path", "scheme", "params", "interval",
                                     "scrapeTimeout", "honorLabels", "honorTimestamps",
                                     "relabelings", "metricRelabelings", "tlsConfig",
                                     "authorization", "followRedirects", "enableHttp2"},
    ("ScaledObject", "spec"): {"scaleTargetRef", "pollingInterval", "cooldownPeriod",
                               "initialCooldownPeriod", "idleReplicaCount", "minReplicaCount",
                               "maxReplicaCount", "fallback", "advanced", "triggers"},
    ("ScaledObject", "scaleTargetRef"): {"apiVersion", "kind", "name", "envSourceContainerName"},
    ("ScaledObject", "fallback"): {"failureThreshold", "replicas", "behavior"},
    ("ScaledObject", "advanced"): {"restoreToOriginalReplicaCount", "horizontalPodAutoscalerConfig",
                                   "scalingModifiers"},
    ("ScaledObject", "horizontalPodAutoscalerConfig"): {"name", "behavior"},
    ("ScaledObject", "trigger"): {"type", "name", "metadata", "metricType", "useCachedMetrics",
                                  "authenticationRef"},
    ("ScaledObject", "prometheus"): {"serverAddress", "query", "threshold", "activationThreshold",
                                     "namespace", "customHeaders", "ignoreNullValues",
                                     "queryParameters", "unsafeSsl"},
}
_LABEL = re.compile(r'(\w+)\s*=\s*"([^"]*)"')
_METRIC = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")


def _unknown(kind: str, part: str, fields: dict[str, Any], name: str) -> list[str]:
    return [f"{kind} {name}: unknown field {part}.{field}"
            for field in sorted(set(fields) - _KNOWN[kind, part])]


def service_monitors_resolve(objects: list[Obj]) -> list[str]:
    """Each ServiceMonitor selects a Service, by port names it has, on the path its pods serve."""
    problems = []
    for monitor in of_kind(objects, "ServiceMonitor"):
        name, spec = monitor["metadata"]["name"], monitor["spec"]
        problems += _unknown("ServiceMonitor", "spec", spec, name)
        services = [s for s in of_kind(objects, "Service")
                    if selects(spec.get("selector"), s["metadata"].get("labels", {}))]
        if not services or not spec.get("endpoints"):
            problems.append(f"ServiceMonitor {name}: selects no Service or has no endpoints")
        for endpoint in spec.get("endpoints", []):
            problems += _unknown("ServiceMonitor", "endpoint", endpoint, name)
            for service in services:
                port = next((p for p in service["spec"]["ports"] if p.get("name") == endpoint.get("port")), None)
                if port is None:
                    problems.append(f"ServiceMonitor {name}: Service {service['metadata']['name']} "
                                    f"has no port named {endpoint.get('port')!r}")
                    continue
                problems += _scraped_path(objects, name, service, port, endpoint.get("path", "/metrics"))
    return problems


def _scraped_path(objects: list[Obj], name: str, service: Obj, port: Obj, path: str) -> list[str]:
    problems = []
    for deployment in selected_workloads(objects, service["spec"].get("selector")):
        for container in containers(deployment, init=False):
            if container_port(container, port["targetPort"]) is not None:
                served = metrics_path(objects, deployment, container)
                if served != path:
                    problems.append(f"ServiceMonitor {name}: scrapes {path}, but container "
                                    f"{container['name']} serves metrics at {served}")
    return problems


def scaled_objects_valid(objects: list[Obj]) -> list[str]:
    """KEDA's required fields and fallback rule; the query reads a scraped series of the target."""
    problems = []
    for scaled in of_kind(objects, "ScaledObject"):
        name, spec = scaled["metadata"]["name"], scaled["spec"]
        problems += _unknown("ScaledObject", "spec", spec, name)
        for part in ("scaleTargetRef", "fallback", "advanced"):
            problems += _unknown("ScaledObject", part, spec.get(part, {}), name)
        problems += _unknown("ScaledObject", "horizontalPodAutoscalerConfig",
                             spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}), name)
        if not spec.get("scaleTargetRef", {}).get("name") or not spec.get("triggers"):
            problems.append(f"ScaledObject {name}: scaleTargetRef.name and triggers are required")
        if spec.get("minReplicaCount", 0) > spec.get("maxReplicaCount", 100):
            problems.append(f"ScaledObject {name}: minReplicaCount > maxReplicaCount")
        for trigger in spec.get("triggers", []):
            problems += _unknown("ScaledObject", "trigger", trigger, name)
            # KEDA refuses a fallback unless every trigger is an AverageValue metric.
            if "fallback" in spec and (trigger["type"] in ("cpu", "memory")
                                       or trigger.get("metricType") != "AverageValue"):
                problems.append(f"ScaledObject {name}: fallback needs metricType AverageValue and "
                                f"no cpu/memory trigger, got a {trigger['type']} trigger")
            if trigger["type"] == "prometheus":
                problems += _prometheus_trigger(objects, scaled, trigger["metadata"])
    return problems


def _prometheus_trigger(objects: list[Obj], scaled: Obj, metadata: dict[str, str]) -> list[str]:
    name = f"ScaledObject {scaled['metadata']['name']}"
    problems = _unknown("ScaledObject", "prometheus", metadata, scaled["metadata"]["name"])
    if not {"serverAddress", "query", "threshold"} <= set(metadata):
        return problems + [f"{name}: a prometheus trigger needs serverAddress, query and threshold"]
    labels = dict(_LABEL.findall(metadata["query"]))
    if labels.get("namespace") != scaled["metadata"].get("namespace"):
        problems.append(f"{name}: the query reads namespace {labels.get('namespace')!r}, "
                        f"but it is rendered into {scaled['metadata'].get('namespace')!r}")
    service = named(objects, "Service", labels.get("service", ""))
    target = named(objects, "Deployment", scaled["spec"]["scaleTargetRef"]["name"])
    monitored = service and any(selects(m["spec"].get("selector"), service["metadata"].get("labels", {}))
                                for m in of_kind(objects, "ServiceMonitor"))
    if not monitored or target not in selected_workloads(objects, service["spec"].get("selector")):
        problems.append(f"{name}: the query's service {labels.get('service')!r} is not a scraped "
                        "Service in front of the scaled Deployment")
    unknown = set(_METRIC.findall(metadata["query"])) - gateway_series()
    if unknown:
        problems.append(f"{name}: the gateway exports no series {sorted(unknown)}")
    return problems


def gateway_series() -> set[str]:
    """Every series name the gateway's /metrics can show."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    return {family.name + suffix for family in Metrics().registry.collect()
            for suffix in suffixes.get(family.type, ("",))}


def keda_hpas(objects: list[Obj]) -> list[Obj]:
    """The autoscaling/v2 HPA KEDA would create for each ScaledObject (for schema validation)."""
    hpas = []
    for scaled in of_kind(objects, "ScaledObject"):
        spec, name = scaled["spec"], scaled["metadata"]["name"]
        metrics = [
            {"type": "Resource", "resource": {"name": t["type"], "target": {
                "type": "Utilization", "averageUtilization": int(t["metadata"]["value"])}}}
            if t["type"] in ("cpu", "memory") else
            {"type": "External", "external": {"metric": {"name": f"s{i}-{t['type']}"}, "target": {
                "type": "AverageValue", "averageValue": t["metadata"].get("threshold", "1")}}}
            for i, t in enumerate(spec.get("triggers", []))]
        hpa_spec = {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment",
                                       **spec.get("scaleTargetRef", {})},
                    "minReplicas": max(1, spec.get("minReplicaCount", 0)),
                    "maxReplicas": spec.get("maxReplicaCount", 100), "metrics": metrics}
        behavior = spec.get("advanced", {}).get("horizontalPodAutoscalerConfig", {}).get("behavior")
        if behavior is not None:
            hpa_spec["behavior"] = behavior
        hpa_spec["scaleTargetRef"].pop("envSourceContainerName", None)
        hpas.append({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                     "metadata": {"name": f"keda-hpa-{name}",
                                  "namespace": scaled["metadata"].get("namespace", "default")},
                     "spec": hpa_spec})
    return hpas


CHECKS = (service_monitors_resolve, scaled_objects_valid)
