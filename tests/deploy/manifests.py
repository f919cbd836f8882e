"""Render kustomizations and validate them as a cluster would, offline; read rendered objects.

``kubectl kustomize`` renders (``kubectl apply --dry-run=client`` would need a cluster) and
``kubernetes-validate --strict`` checks every built-in kind against the API schemas of
Kubernetes 1.30, rejecting unknown fields. Both run as subprocesses, exactly as in CI.
"""
from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import REPO, require_tool

DEPLOY = REPO / "deploy"
OVERLAYS = ("dev", "prod", "prod-canary")
LOCUST = DEPLOY / "components" / "locust-workers"
WITH_LOCUST = "prod + locust-workers"
"""The prod overlay with the load-test component (``kubectl apply -k`` it alone, or add it to
an overlay): rendered and checked like the overlays."""
RENDERED = (*OVERLAYS, WITH_LOCUST)
KUBERNETES_VERSION = "1.30"
WORKLOADS = ("Deployment", "Job")

Obj = dict[str, Any]


def kustomize(directory: Path) -> list[Obj]:
    kubectl = require_tool("kubectl", install="kubectl >= 1.27 from Kubernetes' package repository "
                                              "(Debian's kubernetes-client is too old for kustomize components)")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def with_component(directory: Path, overlay: str, component: Path) -> Path:
    """A kustomization in ``directory`` that adds ``component`` to ``overlay``, as an operator
    would (kustomize wants relative paths)."""
    resources = os.path.relpath(DEPLOY / "overlays" / overlay, directory)
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{resources}]\ncomponents: [{os.path.relpath(component, directory)}]\n")
    return directory


def schema_errors(objects: list[Obj]) -> list[str]:
    """kubernetes-validate's errors; custom resources have no schema there (see custom_resources)."""
    validator = Path(sys.executable).with_name("kubernetes-validate")
    assert validator.is_file(), "kubernetes-validate (a [test] dependency) is missing: pip install -e '.[test]'"
    result = subprocess.run(
        [str(validator), "--strict", "-k", KUBERNETES_VERSION, "--quiet", "--no-warn", "-"],
        input=yaml.safe_dump_all(objects), capture_output=True, text=True, timeout=120)
    errors = [line for line in result.stdout.splitlines() if line.startswith("ERROR")]
    assert (result.returncode != 0) == bool(errors), result.stdout + result.stderr
    return errors


# --- reading rendered objects -------------------------------------------------------------

def of_kind(objects: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[Obj], kind: str, name: str) -> Obj | None:
    return next((o for o in of_kind(objects, kind) if o["metadata"]["name"] == name), None)


def pod_spec(deployment: Obj) -> Obj:
    return deployment["spec"]["template"]["spec"]


def pod_labels(deployment: Obj) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"].get("labels", {})


def containers(workload: Obj, init: bool = True) -> Iterator[Obj]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", []) if init else ()
    yield from spec["containers"]


def workloads(objects: list[Obj]) -> list[Obj]:
    """What runs pods: Deployments, and Jobs (the load test's master)."""
    return [o for o in objects if o["kind"] in WORKLOADS]


def all_containers(objects: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, container) for every container, init containers included."""
    for workload in workloads(objects):
        for container in containers(workload):
            yield workload, container


def where(workload: Obj, container: Obj | None = None) -> str:
    name = f"{workload['kind']} {workload['metadata']['name']}"
    return f"{name}, container {container['name']}" if container else name


def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A LabelSelector ({} selects all) or a Service's plain map matches these labels."""
    if selector is None:
        return False
    if "matchLabels" not in selector and "matchExpressions" not in selector:
        selector = {"matchLabels": selector}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        if {"In": present and labels[key] in values,
            "NotIn": not present or labels[key] not in values,
            "Exists": present, "DoesNotExist": not present}[op] is False:
            return False
    return True


def selected_workloads(objects: list[Obj], selector: Obj | None) -> list[Obj]:
    return [w for w in workloads(objects) if selects(selector, pod_labels(w))]


def container_port(container: Obj, port: int | str) -> int | None:
    """The number of a container port given by name or number, or None if it has no such port."""
    for declared in container.get("ports", []):
        if port in (declared.get("name"), declared["containerPort"]):
            return declared["containerPort"]
    return None
