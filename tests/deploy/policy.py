"""Kubernetes policy checks over rendered objects: each returns the problems it finds.

They hold for any workload here (Deployments, and the load test's Job): sizes on every
container and probes on every server, the restricted Pod Security profile, pinned images,
and every selector and reference resolving to what it means to select. The schema cannot
see any of this; a cluster would accept most of it silently.
"""
from __future__ import annotations

import re

from tests.deploy.manifests import (
    Obj,
    all_containers,
    container_port,
    containers,
    named,
    of_kind,
    pod_labels,
    pod_spec,
    selected_workloads,
    selects,
    where,
    workloads,
)

_PROBES = ("startupProbe", "livenessProbe", "readinessProbe")
_ENV_REF = re.compile(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def resources_set(objects: list[Obj]) -> list[str]:
    """Requests and limits of CPU and memory on every container (the HPA divides by requests)."""
    return [f"{where(d, c)}: no {kind}.{resource}"
            for d, c in all_containers(objects)
            for kind in ("requests", "limits") for resource in ("cpu", "memory")
            if resource not in c.get("resources", {}).get(kind, {})]


def probes_set(objects: list[Obj]) -> list[str]:
    """Readiness and liveness on every serving container (a Deployment's that declares a
    port: a load generator serves nothing, a Job's master must not be restarted mid-run);
    probe ports are its own ports."""
    problems = []
    for deployment in of_kind(objects, "Deployment"):
        for container in containers(deployment, init=False):
            problems += [f"{where(deployment, container)}: no {probe}"
                         for probe in ("readinessProbe", "livenessProbe")
                         if container.get("ports") and probe not in container]
            for probe in _PROBES:
                port = next((action["port"] for kind, action in container.get(probe, {}).items()
                             if kind in ("httpGet", "tcpSocket", "grpc")), None)
                if port is not None and container_port(container, port) is None:
                    problems.append(f"{where(deployment, container)}: {probe} port {port!r} "
                                    "is not a port of the container")
    return problems


def restricted(objects: list[Obj]) -> list[str]:
    """The `restricted` Pod Security Standard, plus a read-only root filesystem."""
    problems = []
    for deployment, container in all_containers(objects):
        pod, own = pod_spec(deployment).get("securityContext", {}), container.get("securityContext", {})
        either = {**pod, **own}
        wanted = {
            "runAsNonRoot": either.get("runAsNonRoot") is True,
            "allowPrivilegeEscalation: false": own.get("allowPrivilegeEscalation") is False,
            "readOnlyRootFilesystem": own.get("readOnlyRootFilesystem") is True,
            "capabilities.drop [ALL]": "ALL" in own.get("capabilities", {}).get("drop", []),
            "seccompProfile RuntimeDefault": either.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        }
        problems += [f"{where(deployment, container)}: not {rule}" for rule, ok in wanted.items() if not ok]
    return problems


def images_pinned(objects: list[Obj]) -> list[str]:
    """Every image has a tag or digest, and not `latest` (a rollout must be reproducible)."""
    problems = []
    for deployment, container in all_containers(objects):
        image = container["image"]
        tag = image.rsplit("/", 1)[-1].partition(":")[2]
        if "@sha256:" not in image and tag in ("", "latest"):
            problems.append(f"{where(deployment, container)}: image {image} is not pinned")
    return problems


def env_references_defined(objects: list[Obj]) -> list[str]:
    """$(VAR) in command/args names an env var of the container (else it stays literal text)."""
    problems = []
    for deployment, container in all_containers(objects):
        defined = {e["name"] for e in container.get("env", [])}
        for word in container.get("command", []) + container.get("args", []):
            problems += [f"{where(deployment, container)}: $({var}) is not an env var of the container"
                         for var in _ENV_REF.findall(word) if var not in defined]
    return problems


def selectors_match(objects: list[Obj]) -> list[str]:
    """Services, PDBs, NetworkPolicies and spread constraints select the pods they are for
    (a Job's selector is generated: it always matches)."""
    problems = []
    for workload in workloads(objects):
        if "selector" in workload["spec"] and not selects(workload["spec"]["selector"], pod_labels(workload)):
            problems.append(f"{where(workload)}: its selector does not match its pod template")
        for constraint in pod_spec(workload).get("topologySpreadConstraints", []):
            if not selects(constraint["labelSelector"], pod_labels(workload)):
                problems.append(f"{where(workload)}: a topology spread constraint selects other pods")
    for kind, field in (("Service", "selector"), ("PodDisruptionBudget", "selector"),
                        ("NetworkPolicy", "podSelector")):
        problems += [f"{kind} {obj['metadata']['name']} selects no workload's pods"
                     for obj in of_kind(objects, kind)
                     if not selected_workloads(objects, obj["spec"].get(field))]
    for policy in of_kind(objects, "NetworkPolicy"):
        for rule in policy["spec"].get("ingress", []):
            for peer in rule.get("from", []):
                if "podSelector" in peer and "namespaceSelector" not in peer and \
                        not selected_workloads(objects, peer["podSelector"]):
                    problems.append(f"NetworkPolicy {policy['metadata']['name']} admits pods "
                                    "that no workload runs")
    return problems


def service_ports_resolve(objects: list[Obj]) -> list[str]:
    """Each Service port's targetPort is a port of every pod the Service selects."""
    problems = []
    for service in of_kind(objects, "Service"):
        for workload in selected_workloads(objects, service["spec"].get("selector")):
            for port in service["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                if not any(container_port(c, target) for c in containers(workload, init=False)):
                    problems.append(f"Service {service['metadata']['name']} port {port.get('name')}: "
                                    f"targetPort {target!r} is not a port of {where(workload)}")
    return problems


def autoscaling_consistent(objects: list[Obj]) -> list[str]:
    """Autoscalers target a Deployment here, one each, and own its replica count."""
    problems, owners = [], {}
    for scaler in of_kind(objects, "HorizontalPodAutoscaler") + of_kind(objects, "ScaledObject"):
        label = f"{scaler['kind']} {scaler['metadata']['name']}"
        target = scaler["spec"]["scaleTargetRef"]
        deployment = named(objects, target.get("kind", "Deployment"), target["name"])
        if deployment is None:
            problems.append(f"{label}: scales {target['name']}, which is not rendered here")
            continue
        if target["name"] in owners:
            problems.append(f"{label}: {target['name']} is already scaled by {owners[target['name']]}")
        owners[target["name"]] = label
        if "replicas" in deployment["spec"]:
            problems.append(f"{where(deployment)}: sets replicas although {label} scales it "
                            "(every apply would reset the count)")
    return problems


CHECKS = (resources_set, probes_set, restricted, images_pinned, env_references_defined,
          selectors_match, service_ports_resolve, autoscaling_consistent)
