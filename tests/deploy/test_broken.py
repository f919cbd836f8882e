"""Deliberately broken manifests fail, each with its own message: the checks can fail.

The first test feeds a broken overlay through the real pipeline (kubectl kustomize, then
kubernetes-validate --strict, then the checks); the others break one thing in the rendered
prod overlay and expect the check responsible to say so.
"""
from __future__ import annotations

import copy
import os
import textwrap
from collections.abc import Callable

import pytest

from tests.deploy.checks import problems
from tests.deploy.custom_resources import keda_hpas
from tests.deploy.manifests import DEPLOY, WITH_LOCUST, Obj, kustomize, named, of_kind, pod_spec, schema_errors


def test_broken_overlay_is_caught(tmp_path):
    """A misspelled field fails the schema; a Service whose selector matches nothing fails a check."""
    prod = os.path.relpath(DEPLOY / "overlays" / "prod", tmp_path)  # kustomize wants it relative
    (tmp_path / "kustomization.yaml").write_text(textwrap.dedent(f"""\
        apiVersion: kustomize.config.k8s.io/v1beta1
        kind: Kustomization
        resources: [{prod}]
        patches:
          - target: {{kind: Deployment, name: gateway}}
            patch: |-
              - op: add
                path: /spec/template/spec/terminationGracePeriodSecond
                value: 50
          - target: {{kind: Service, name: gateway}}
            patch: |-
              - op: replace
                path: /spec/selector
                value: {{app.kubernetes.io/name: gatewy}}
        """))
    objects = kustomize(tmp_path)
    errors = schema_errors(objects)
    assert len(errors) == 1 and "deployment/gateway" in errors[0]
    assert "'terminationGracePeriodSecond' was unexpected" in errors[0]
    assert "Service gateway selects no workload's pods" in problems(objects)


def test_misspelled_field_in_a_scaled_objects_hpa_behavior_is_caught(rendered):
    objects = copy.deepcopy(rendered["prod"])
    behavior = _scaled(objects)["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    behavior["scaleDown"]["stabilizationWindowSecond"] = behavior["scaleDown"].pop("stabilizationWindowSeconds")
    (error,) = schema_errors(keda_hpas(objects))
    assert "'stabilizationWindowSecond' was unexpected" in error


# --- one breakage per check ---------------------------------------------------------------

def _deployment(objects: list[Obj], name: str) -> Obj:
    return named(objects, "Deployment", name)


def _container(objects: list[Obj], name: str) -> Obj:
    return pod_spec(_deployment(objects, name))["containers"][0]


def _set_flag(objects: list[Obj], name: str, flag: str, value: str, kind: str = "Deployment") -> None:
    """Set --flag=value on the named workload's container, instead of any value it had."""
    args = pod_spec(named(objects, kind, name))["containers"][0]["args"]
    args[:] = [a for a in args if a.split("=")[0] != f"--{flag}"] + [f"--{flag}={value}"]


def _config_map(objects: list[Obj], key: str) -> Obj:
    return next(o for o in of_kind(objects, "ConfigMap") if key in o.get("data", {}))


def _config(objects: list[Obj], key: str) -> dict[str, str]:
    return _config_map(objects, key)["data"]


def _scaled(objects: list[Obj]) -> Obj:
    return named(objects, "ScaledObject", "gateway")["spec"]


def _monitor(objects: list[Obj], name: str) -> Obj:
    return named(objects, "ServiceMonitor", name)["spec"]["endpoints"][0]


def _probe(objects: list[Obj], name: str, probe: str) -> Obj:
    return _container(objects, name)[probe]


def _tf_serving_batches_up_to_64(objects: list[Obj]) -> None:
    _config(objects, "monitoring.config")["batching.config"] = "max_batch_size { value: 64 }"
    _set_flag(objects, "tf-serving", "enable_batching", "true")
    _set_flag(objects, "tf-serving", "batching_parameters_file", "/etc/tf-serving/config/batching.config")


def _gateway_reads_other_models(objects: list[Obj]) -> None:
    original = _config_map(objects, "models.config")
    other = copy.deepcopy(original)
    other["metadata"]["name"] = "gateway-models"
    other["data"]["models.config"] = original["data"]["models.config"].replace('"natality"', '"natal"')
    objects.append(other)
    volumes = pod_spec(_deployment(objects, "gateway"))["volumes"]
    next(v for v in volumes if v["name"] == "models-config")["configMap"]["name"] = "gateway-models"


def _gateway_scaled_twice(objects: list[Obj]) -> None:
    hpa = copy.deepcopy(named(objects, "HorizontalPodAutoscaler", "tf-serving"))
    hpa["spec"]["scaleTargetRef"]["name"] = "gateway"
    objects.append(hpa)


def _other_pods_admitted(objects: list[Obj]) -> None:
    rule = named(objects, "NetworkPolicy", "tf-serving")["spec"]["ingress"][0]
    rule["from"][0]["podSelector"]["matchLabels"] = {"app.kubernetes.io/name": "client"}


BREAKAGES: list[tuple[str, Callable[[list[Obj]], object], str]] = [
    ("no limits", lambda o: _container(o, "gateway")["resources"].pop("limits"),
     "Deployment gateway, container gateway: no limits.cpu"),
    ("no readiness", lambda o: _container(o, "tf-serving").pop("readinessProbe"),
     "container tf-serving: no readinessProbe"),
    ("probe port", lambda o: _probe(o, "gateway", "readinessProbe")["httpGet"].update(port="metrics"),
     "readinessProbe port 'metrics' is not a port of the container"),
    ("root", lambda o: pod_spec(_deployment(o, "gateway"))["securityContext"].pop("runAsNonRoot"),
     "container gateway: not runAsNonRoot"),
    ("writable root", lambda o: _container(o, "tf-serving")["securityContext"].update(readOnlyRootFilesystem=False),
     "container tf-serving: not readOnlyRootFilesystem"),
    ("latest", lambda o: _container(o, "tf-serving").update(image="tensorflow/serving:latest"),
     "image tensorflow/serving:latest is not pinned"),
    ("env ref", lambda o: _set_flag(o, "tf-serving", "tensorflow_intra_op_parallelism", "$(CPUS)"),
     "$(CPUS) is not an env var of the container"),
    ("deployment selector", lambda o: _deployment(o, "gateway")["spec"]["selector"].update(
        matchLabels={"app": "gateway"}),
     "Deployment gateway: its selector does not match its pod template"),
    ("pdb selector", lambda o: named(o, "PodDisruptionBudget", "tf-serving")["spec"]["selector"].update(
        matchLabels={"app.kubernetes.io/name": "tf-server"}),
     "PodDisruptionBudget tf-serving selects no workload's pods"),
    ("spread selector", lambda o: pod_spec(_deployment(o, "gateway"))["topologySpreadConstraints"][0].update(
        labelSelector={"matchLabels": {"app": "gateway"}}),
     "Deployment gateway: a topology spread constraint selects other pods"),
    ("target port", lambda o: named(o, "Service", "gateway")["spec"]["ports"][0].update(targetPort="rest"),
     "Service gateway port http: targetPort 'rest' is not a port of Deployment gateway"),
    ("hpa target", lambda o: named(o, "HorizontalPodAutoscaler", "tf-serving")["spec"]["scaleTargetRef"].update(
        name="tfserving"),
     "HorizontalPodAutoscaler tf-serving: scales tfserving, which is not rendered here"),
    ("two autoscalers", _gateway_scaled_twice, "gateway is already scaled by"),
    ("replicas", lambda o: _deployment(o, "gateway")["spec"].update(replicas=3),
     "Deployment gateway: sets replicas although ScaledObject gateway scales it"),
    ("grace", lambda o: pod_spec(_deployment(o, "gateway")).update(terminationGracePeriodSeconds=30),
     "terminationGracePeriodSeconds 30 <= preStop 10 s + drain 30 s"),
    ("gateway flag", lambda o: _container(o, "gateway")["args"].append("--enable_batchng"),
     "unrecognized arguments: --enable_batchng"),
    ("gateway port", lambda o: _set_flag(o, "gateway", "rest_api_port", "9000"),
     "its flags serve on [8500, 9000] but it declares ports [8500, 8501]"),
    ("unmounted file", lambda o: _set_flag(o, "gateway", "batching_parameters_file", "/etc/batching.config"),
     "--batching_parameters_file=/etc/batching.config is not a mounted file"),
    ("gateway flag on TF Serving", lambda o: _set_flag(o, "tf-serving", "drain_timeout_seconds", "30"),
     "--drain_timeout_seconds is the gateway's flag, not TF Serving's"),
    ("bad model config", lambda o: _config(o, "models.config").update({"models.config": "model_config_list {"}),
     "not a valid tensorflow.serving.ModelServerConfig text proto"),
    ("bad monitoring config", lambda o: _config(o, "monitoring.config").update(
        {"monitoring.config": "prometheus_config { enable: true path: 'metrics' }"}),
     "prometheus_config.path 'metrics' must start with '/'"),
    ("label", lambda o: _config(o, "models.config").update({"models.config": _config(
        o, "models.config")["models.config"].replace('value: 1 }', 'value: 3 }', 1)}),
     "model natality labels 'stable' version 3, which its policy does not serve"),
    ("exec probe port", lambda o: _probe(o, "tf-serving", "readinessProbe")["exec"]["command"].__setitem__(3, "8500"),
     "readinessProbe calls port 8500, not --rest_api_port"),
    ("probe script", lambda o: _probe(o, "tf-serving", "readinessProbe")["exec"]["command"].__setitem__(
        1, "/etc/tf-serving/ready.sh"),
     "readinessProbe reads /etc/tf-serving/ready.sh, which is not a mounted file"),
    ("models differ", _gateway_reads_other_models,
     "the gateway and TF Serving configure different models"),
    ("upstream", lambda o: _set_flag(o, "gateway", "upstream", "dns:///tf-serving:8501"),
     "--upstream=dns:///tf-serving:8501 does not lead to TF Serving's gRPC port"),
    ("not headless", lambda o: named(o, "Service", "tf-serving")["spec"].pop("clusterIP"),
     "Service tf-serving, which is not headless"),
    ("no network policy", lambda o: o.remove(named(o, "NetworkPolicy", "tf-serving")),
     "container tf-serving: no NetworkPolicy selects it: every pod can reach it"),
    ("gateway kept out", _other_pods_admitted,
     "container tf-serving: NetworkPolicy keeps the gateway out of its gRPC port"),
    ("unknown pods admitted", _other_pods_admitted,
     "NetworkPolicy tf-serving admits pods that no workload runs"),
    ("open network policy", lambda o: named(o, "NetworkPolicy", "tf-serving")["spec"]["ingress"][1].update(
        ports=[{"port": "grpc", "protocol": "TCP"}]),
     "NetworkPolicy opens its gRPC port to pods other than the gateway's"),
    ("tf serving batches", lambda o: _set_flag(o, "tf-serving", "enable_batching", "true"),
     "container tf-serving: batches with built-in limits: give --batching_parameters_file"),
    ("tf serving batches less", _tf_serving_batches_up_to_64,
     "max_batch_size 64 < the gateway's 128: TF Serving would refuse full batches"),
    ("monitor port", lambda o: _monitor(o, "gateway").update(port="metrics"),
     "ServiceMonitor gateway: Service gateway has no port named 'metrics'"),
    ("monitor selector", lambda o: named(o, "ServiceMonitor", "gateway")["spec"]["selector"].update(
        matchLabels={"app": "gateway"}),
     "ServiceMonitor gateway: selects no Service or has no endpoints"),
    ("monitor path", lambda o: _monitor(o, "tf-serving").update(path="/metrics"),
     "ServiceMonitor tf-serving: scrapes /metrics, but container tf-serving serves metrics at "
     "/monitoring/prometheus/metrics"),
    ("monitor field", lambda o: _monitor(o, "gateway").update(intervall="15s"),
     "ServiceMonitor gateway: unknown field endpoint.intervall"),
    ("scaled field", lambda o: _scaled(o).update(maxReplicas=30),
     "ScaledObject gateway: unknown field spec.maxReplicas"),
    ("replica bounds", lambda o: _scaled(o).update(minReplicaCount=40),
     "ScaledObject gateway: minReplicaCount > maxReplicaCount"),
    ("fallback with cpu", lambda o: _scaled(o)["triggers"].append(
        {"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}),
     "fallback needs metricType AverageValue and no cpu/memory trigger, got a cpu trigger"),
    ("query namespace", lambda o: _scaled(o)["triggers"][0]["metadata"].update(
        query='sum(tfgw_in_flight_requests{namespace="default", service="gateway"})'),
     "the query reads namespace 'default', but it is rendered into 'tf-gateway'"),
    ("query service", lambda o: _scaled(o)["triggers"][0]["metadata"].update(
        query='sum(tfgw_in_flight_requests{namespace="tf-gateway", service="tf-serving"})'),
     "the query's service 'tf-serving' is not a scraped Service in front of the scaled Deployment"),
    ("query metric", lambda o: _scaled(o)["triggers"][0]["metadata"].update(
        query='sum(tfgw_inflight_requests{namespace="tf-gateway", service="gateway"})'),
     "the gateway exports no series ['tfgw_inflight_requests']"),
]


def _workers_kept_out(objects: list[Obj]) -> None:
    rule = named(objects, "NetworkPolicy", "locust-master")["spec"]["ingress"][0]
    rule["ports"] = [{"port": 8089, "protocol": "TCP"}]


LOCUST_BREAKAGES: list[tuple[str, Callable[[list[Obj]], object], str]] = [
    ("worker count", lambda o: _deployment(o, "locust-worker")["spec"].update(replicas=3),
     "Job locust-master, container master: expects 4 workers, but 3 worker pods are pointed at it"),
    ("master host", lambda o: _set_flag(o, "locust-worker", "master-host", "locust"),
     "--master-host=locust --master-port=5557 does not lead to a master's port"),
    ("master port", lambda o: _set_flag(o, "locust-master", "master-port", "5558", kind="Job"),
     "--master-port=5558 is not a port of the container"),
    ("gateway host", lambda o: _set_flag(o, "locust-master", "host", "http://gateway:8080", kind="Job"),
     "--host=http://gateway:8080 is not a port of a Service here"),
    ("worker grace", lambda o: pod_spec(_deployment(o, "locust-worker")).update(terminationGracePeriodSeconds=5),
     "terminationGracePeriodSeconds 5 <= the requests' timeout 10 s"),
    ("workers kept out", _workers_kept_out,
     "Deployment locust-worker, container worker: NetworkPolicy locust-master keeps it out"),
    ("worker flag", lambda o: _container(o, "locust-worker")["args"].append("--master-hots=x"),
     "unrecognized arguments: --master-hots=x"),
]


@pytest.mark.parametrize("overlay, breakage, expected", [
    *(pytest.param("prod", b, e, id=i) for i, b, e in BREAKAGES),
    *(pytest.param(WITH_LOCUST, b, e, id=i) for i, b, e in LOCUST_BREAKAGES)])
def test_each_breakage_is_caught_by_its_check(rendered, overlay, breakage, expected):
    objects = copy.deepcopy(rendered[overlay])
    breakage(objects)
    found = problems(objects)
    assert any(expected in problem for problem in found), found
