"""KServe's side of ``deploy/components/kserve``, offline: its CRDs' schemas, its runtime
selection rules and the predictor pod it builds, each from KServe's release v0.20.0
(``tests/fixtures/kserve``; the Go sources named below are at the same tag).

A CRD holds an OpenAPI v3 *structural* schema per served version. ``schema_errors`` checks
objects against it as the API server does on ``kubectl apply`` (whose default field
validation, Strict, refuses what the server would prune):

- an object schema with ``properties`` admits no other field, unless it says
  ``x-kubernetes-preserve-unknown-fields``;
- ``x-kubernetes-int-or-string``: an integer or a string; ``nullable``: null too;
- ``x-kubernetes-list-type: set``: no item twice; ``map``: no two items with the same
  ``x-kubernetes-list-map-keys`` (a key left out counts as its default, as after defaulting).

Formats (``int32``, quantities) are not checked here: ``predictor_deployment`` rebuilds the
pod KServe makes of an InferenceService, and kubernetes-validate checks that against
Kubernetes' own schemas.
"""
from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import yaml
from jsonschema import ValidationError

from tests.conftest import REPO
from tests.deploy.manifests import DEPLOY, Obj

FIXTURES = REPO / "tests" / "fixtures" / "kserve"
COMPONENT = DEPLOY / "components" / "kserve"
EXAMPLES = COMPONENT / "examples"
CRDS = ("serving.kserve.io_servingruntimes.yaml", "serving.kserve.io_clusterservingruntimes.yaml",
        "serving.kserve.io_inferenceservices.yaml")
KSERVE_RUNTIMES = ("kserve-tensorflow-serving.yaml", "kserve-tritonserver.yaml", "kserve-openvino.yaml")
"""KServe's own runtimes that serve ``tensorflow`` models."""

# KServe's constants (pkg/constants/constants.go)
MODEL_DIR = "/mnt/models"
"""DefaultModelLocalMountPath: where the storage-initializer puts a single storageUri."""
MODEL_VOLUME = "kserve-provision-location"  # StorageInitializerVolumeName
CONTAINER = "kserve-container"
"""InferenceServiceContainerName: the runtime container KServe runs (it fails without one)."""
PROTOCOLS = ("v1", "v2", "grpc-v1", "grpc-v2")
"""InferenceServiceProtocol values; the CRD types protocolVersions as plain strings."""
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
ISVC_NAME = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
"""IsvcNameFmt (pkg/apis/serving/v1beta1/inference_service_validation.go)."""
_PLACEHOLDER = re.compile(r"\{\{\s*\.(Name|Namespace)\s*\}\}")
_MODEL_FIELDS = {"modelFormat", "runtime", "runtimeVersion", "protocolVersion", "storageUri", "storage"}
"""The fields of an InferenceService's predictor.model that are not container fields."""


def load(path: Path) -> list[Obj]:
    """The documents of a YAML file (libyaml's parser when there: the CRDs are megabytes)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    with path.open() as stream:
        return [doc for doc in yaml.load_all(stream, Loader=loader) if doc]


def examples() -> list[Obj]:
    """The InferenceService examples, one per file, in file order."""
    return [doc for path in sorted(EXAMPLES.glob("*.yaml")) for doc in load(path)]


def kserve_runtimes() -> list[Obj]:
    return [doc for name in KSERVE_RUNTIMES for doc in load(FIXTURES / name)]


# --- the CRDs' schemas ---------------------------------------------------------------------

def _structural(schema: Obj) -> Obj:
    """One node of a CRD schema (and all below it) as JSON Schema with the API server's rules."""
    out = {k: v for k, v in schema.items()
           if k not in ("properties", "items", "additionalProperties", "anyOf", "allOf", "oneOf", "not")}
    if "properties" in schema:
        out["properties"] = {name: _structural(s) for name, s in schema["properties"].items()}
        if "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    extra = schema.get("additionalProperties")
    if extra is not None:
        out["additionalProperties"] = _structural(extra) if isinstance(extra, dict) else extra
    if "items" in schema:
        out["items"] = _structural(schema["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            out[key] = [_structural(s) for s in schema[key]]
    if "not" in schema:
        out["not"] = _structural(schema["not"])
    if schema.get("x-kubernetes-int-or-string") and "anyOf" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    return {"anyOf": [out, {"type": "null"}]} if schema.get("nullable") else out


def _unique_by_keys(validator: Any, keys: list[str], instance: Any, schema: Obj) -> Iterator[ValidationError]:
    if not isinstance(instance, list):
        return
    item = schema.get("items", {}).get("properties", {})
    defaults = {key: item.get(key, {}).get("default") for key in keys}
    seen = set()
    for entry in instance:
        if isinstance(entry, dict):
            key = tuple(str(entry.get(k, defaults[k])) for k in keys)
            if key in seen:
                yield ValidationError(f"two items with {dict(zip(keys, key))} "
                                                 "(x-kubernetes-list-type: map)")
            seen.add(key)


def _unique_set(validator: Any, list_type: str, instance: Any, schema: Obj) -> Iterator[ValidationError]:
    if list_type == "set" and isinstance(instance, list):
        repeated = [item for i, item in enumerate(instance) if item in instance[:i]]
        if repeated:
            yield ValidationError(f"{repeated[0]!r} twice (x-kubernetes-list-type: set)")


_Validator = jsonschema.validators.extend(jsonschema.Draft7Validator, {
    "x-kubernetes-list-map-keys": _unique_by_keys, "x-kubernetes-list-type": _unique_set})


@functools.cache
def validators() -> dict[tuple[str, str], Any]:
    """(apiVersion, kind) -> a validator of that served version's schema, for each CRD."""
    found = {}
    for name in CRDS:
        (crd,) = load(FIXTURES / name)
        spec = crd["spec"]
        for version in spec["versions"]:
            if version.get("served"):
                schema = _structural(version["schema"]["openAPIV3Schema"])
                found[f"{spec['group']}/{version['name']}", spec["names"]["kind"]] = _Validator(schema)
    return found


def schema_errors(objects: list[Obj]) -> list[str]:
    """What KServe's CRDs refuse in ``objects`` (a kind they do not define is an error too)."""
    errors = []
    for obj in objects:
        label = f"{obj.get('kind')} {obj.get('metadata', {}).get('name')}"
        validator = validators().get((obj.get("apiVersion"), obj.get("kind")))
        if validator is None:
            errors.append(f"{label}: KServe defines no {obj.get('apiVersion')} {obj.get('kind')}")
            continue
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.absolute_path)):
            path = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
            errors.append(f"{label}: {path.lstrip('.') or '(root)'}: {error.message}")
    return errors


# --- choosing a runtime --------------------------------------------------------------------

def format_labels(runtime: Obj, explicit: bool) -> set[str]:
    """The model-format labels a runtime offers (getServingRuntimeSupportedModelFormatLabelSet):
    every format when the InferenceService names the runtime, else only autoSelect ones."""
    labels = set()
    for fmt in runtime["spec"].get("supportedModelFormats", []):
        if explicit or fmt.get("autoSelect"):
            labels.add(f"mt:{fmt['name']}")
            if "version" in fmt:
                labels.add(f"mt:{fmt['name']}:{fmt['version']}")
    return labels


def model_label(isvc: Obj) -> str:
    fmt = isvc["spec"]["predictor"]["model"]["modelFormat"]
    return f"mt:{fmt['name']}:{fmt['version']}" if "version" in fmt else f"mt:{fmt['name']}"


def runs_on(isvc: Obj, runtime: Obj) -> list[str]:
    """Why KServe would refuse to run ``isvc`` on ``runtime`` (components/predictor.go): the
    runtime it names, the protocol and the model format."""
    model, spec, name = isvc["spec"]["predictor"]["model"], runtime["spec"], isvc["metadata"]["name"]
    problems = []
    if model.get("runtime") != runtime["metadata"]["name"]:
        problems.append(f"InferenceService {name}: names runtime {model.get('runtime')!r}")
    protocols = spec.get("protocolVersions") or []
    if protocols and model.get("protocolVersion", "v1") not in protocols:
        problems.append(f"InferenceService {name}: protocol {model.get('protocolVersion')} not in {protocols}")
    if model_label(isvc) not in format_labels(runtime, explicit=True):
        problems.append(f"InferenceService {name}: format {model_label(isvc)} not supported")
    return problems


def priority_clashes(new: Obj, existing: Obj) -> list[str]:
    """What KServe's runtime admission webhook refuses (webhook/admission/servingruntime):
    one format with two autoSelect priorities in a runtime, or the priority of an existing
    runtime that shares a protocol and an autoSelect format (name and version)."""
    problems, priorities = [], {}
    formats = [f for f in new["spec"].get("supportedModelFormats", []) if f.get("autoSelect")]
    for fmt in formats:
        first = priorities.setdefault(fmt["name"], fmt.get("priority"))
        if None not in (first, fmt.get("priority")) and first != fmt["priority"]:
            problems.append(f"{new['metadata']['name']}: {fmt['name']} has two priorities")
    spec, theirs = new["spec"], existing["spec"]
    shared = set(spec.get("protocolVersions", [])) & set(theirs.get("protocolVersions", []))
    if (shared and new["metadata"]["name"] != existing["metadata"]["name"] and not theirs.get("disabled")
            and bool(spec.get("multiModel")) == bool(theirs.get("multiModel"))):
        for fmt in formats:
            for other in theirs.get("supportedModelFormats", []):
                if (other.get("autoSelect") and other["name"].lower() == fmt["name"].lower()
                        and other.get("version") == fmt.get("version")
                        and None not in (fmt.get("priority"), other.get("priority"))
                        and other["priority"] == fmt["priority"]):
                    problems.append(f"{new['metadata']['name']}: {fmt['name']} {fmt.get('version')} has "
                                    f"priority {fmt['priority']}, as in {existing['metadata']['name']}")
    return problems


# --- the predictor pod ---------------------------------------------------------------------

def runtime_container(runtime: Obj) -> Obj | None:
    return next((c for c in runtime["spec"]["containers"] if c["name"] == CONTAINER), None)


def predictor_deployment(runtime: Obj, isvc: Obj) -> Obj:
    """The Deployment KServe's Standard mode makes of ``isvc`` on ``runtime``, as far as the
    checks here need it: the runtime's kserve-container with the InferenceService's args
    appended (MergeRuntimeContainers), ``{{.Name}}`` and ``{{.Namespace}}`` filled in
    (ReplacePlaceholders), the runtime's volumes and pod annotations, and the
    storage-initializer's read-only model folder (its init container is KServe's, left out).
    Other container fields of the InferenceService would be merged by KServe; the examples set
    none, and this refuses them rather than guess."""
    model, meta = isvc["spec"]["predictor"]["model"], isvc["metadata"]
    merged = set(model) - _MODEL_FIELDS - {"args"}
    if merged:
        raise ValueError(f"merging {sorted(merged)} into the runtime's container is not modelled")
    container = copy.deepcopy(runtime_container(runtime))
    container["args"] = container.get("args", []) + model.get("args", [])
    values = {"Name": meta["name"], "Namespace": meta.get("namespace", "default")}
    text = _PLACEHOLDER.sub(lambda m: values[m[1]], json.dumps(container))
    if "{{" in text:
        raise ValueError(f"a placeholder other than {{{{.Name}}}} or {{{{.Namespace}}}}: {text}")
    container = json.loads(text)
    container.setdefault("volumeMounts", []).append(
        {"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True})
    spec = runtime["spec"]
    labels = {"app": f"isvc.{meta['name']}-predictor"}
    pod = {"containers": [container],
           "volumes": spec.get("volumes", []) + [{"name": MODEL_VOLUME, "emptyDir": {}}]}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"{meta['name']}-predictor"},
            "spec": {"selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels, "annotations": spec.get("annotations", {})},
                                  "spec": pod}}}
