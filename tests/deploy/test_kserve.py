"""``deploy/components/kserve`` against KServe itself (release v0.20.0, tests/fixtures/kserve):
the rendered ServingRuntime and the InferenceService examples pass KServe's CRD schemas, KServe
would run each example on the runtime, and the pod it would make of them carries a command
line the gateway's own parser reads as serving the InferenceService's model from the
storage-initializer's folder, on the ports, probes and metrics path the manifest declares,
as KServe's own TF Serving runtime does. The pod passes Kubernetes' schemas and the policy
checks of the other manifests, and a gateway started with its command line answers its
probes over REST and gRPC."""
from __future__ import annotations

import copy
import signal
import sys

import grpc
import httpx
import pytest

from loadtests.support.processes import Server
from serving import cli
from serving.settings import ModelConfig
from tests.conftest import free_port
from tests.deploy import kserve, policy
from tests.deploy.kserve import (
    CONTAINER,
    DEPLOYMENT_MODE,
    ISVC_NAME,
    MODEL_DIR,
    MODEL_VOLUME,
    PROTOCOLS,
    examples,
    kserve_runtimes,
    predictor_deployment,
    priority_clashes,
    runs_on,
    runtime_container,
)
from tests.deploy.manifests import Obj, kustomize, pod_spec, schema_errors
from tests.deploy.test_containers import CONTAINERS, last
from tests.deploy.workloads import Workload, expanded_args, shutdown_fits_grace_period

_GRPC_PORT_NAMES = ("grpc", "h2c")
"""A port whose name holds one of these is gRPC to KServe (service_reconciler.go isGrpcPort)."""


@pytest.fixture(scope="module")
def component() -> list[Obj]:
    return kustomize(kserve.COMPONENT)


@pytest.fixture(scope="module")
def runtime(component) -> Obj:
    (found,) = component
    return found


def _by_protocol(protocol: str) -> Obj:
    (isvc,) = [i for i in examples() if i["spec"]["predictor"]["model"]["protocolVersion"] == protocol]
    return isvc


def _settings(runtime: Obj, isvc: Obj, tmp_path):
    deployment = predictor_deployment(runtime, isvc)
    (container,) = pod_spec(deployment)["containers"]
    return container, Workload([deployment], deployment, container, tmp_path).settings()


def test_component_is_one_serving_runtime_and_the_examples_name_it(component, runtime):
    assert [(o["kind"], o["metadata"]["name"]) for o in component] == [("ServingRuntime", "tf-gateway")]
    assert runtime_container(runtime) is not None, f"KServe runs the container named {CONTAINER}"
    assert runtime_container(runtime)["image"] == "us-docker.pkg.dev/my-project/tf-gateway/gateway:0.1.0"
    isvcs = examples()
    assert sorted(i["spec"]["predictor"]["model"]["protocolVersion"] for i in isvcs) == ["v1", "v2"]
    for isvc in isvcs:
        assert ISVC_NAME.match(isvc["metadata"]["name"]), isvc["metadata"]["name"]
        assert isvc["spec"]["predictor"]["model"]["storageUri"] == "gs://my-bucket/models/natality"
        assert runs_on(isvc, runtime) == []


def test_every_object_passes_kserves_crd_schemas(component):
    assert kserve.schema_errors(component + examples()) == []


def test_the_runtime_is_valid_as_a_cluster_serving_runtime_too(runtime):
    """README: the same spec offers it to every namespace."""
    cluster = {**copy.deepcopy(runtime), "kind": "ClusterServingRuntime"}
    assert kserve.schema_errors([cluster]) == []


def test_kserves_own_tensorflow_runtimes_pass_the_same_schemas():
    """The schema conversion refuses nothing KServe itself ships."""
    assert kserve.schema_errors(kserve_runtimes()) == []


def _break(objects: list[Obj], change) -> list[Obj]:
    broken = copy.deepcopy(objects)
    change(*broken)
    return broken


def _container(runtime: Obj) -> Obj:
    return runtime["spec"]["containers"][0]


@pytest.mark.parametrize(("change", "message"), [
    (lambda r, *_: _container(r).update(readinesProbe={}), "('readinesProbe' was unexpected)"),
    (lambda r, v1, v2: v1["spec"]["predictor"]["model"].update(storageURI="gs://b/m"), "'storageURI' was unexpected"),
    (lambda r, *_: r["spec"]["supportedModelFormats"][0].update(priority=0), "less than the minimum of 1"),
    (lambda r, *_: r["spec"].update(protocolVersions="v2"), "'v2' is not of type 'array'"),
    (lambda r, *_: _container(r)["ports"].append({"name": "again", "containerPort": 8080}),
     "two items with {'containerPort': '8080', 'protocol': 'TCP'}"),
    (lambda r, *_: _container(r)["livenessProbe"]["httpGet"].update(port=8.5), "is not valid under any"),
    (lambda r, *_: _container(r)["resources"]["limits"].update(cpu="2 cores"), "does not match"),
    (lambda r, v1, v2: v2.update(apiVersion="serving.kserve.io/v1alpha1"), "KServe defines no"),
], ids=["unknown container field", "misspelled model field", "priority below 1", "protocols not a list",
        "a port twice", "port neither int nor string", "bad quantity", "unserved version"])
def test_the_schemas_refuse_what_the_api_server_refuses(component, change, message):
    errors = kserve.schema_errors(_break(component + examples(), change))
    assert len(errors) == 1 and message in errors[0], errors


def test_protocols_are_kserves_and_include_kserve_tensorflow_servings(runtime):
    (theirs,) = [r for r in kserve_runtimes() if r["metadata"]["name"] == "kserve-tensorflow-serving"]
    ours = runtime["spec"]["protocolVersions"]
    assert set(ours) == set(PROTOCOLS)  # the CRD does not restrict the strings: KServe's constants do
    formats = {(f["name"], f["version"]) for f in runtime["spec"]["supportedModelFormats"]}
    assert formats == {(f["name"], f["version"]) for f in theirs["spec"]["supportedModelFormats"]}


def test_autoselect_priority_tops_kserves_tensorflow_runtimes_without_a_tie(runtime):
    """KServe's admission webhook refuses a tie with a runtime sharing a protocol; the
    highest priority wins autoSelect (predictor_model.go sortSupportedRuntimeByPriority)."""
    theirs = kserve_runtimes()
    assert [p for r in theirs for p in priority_clashes(runtime, r)] == []
    ours = {f["priority"] for f in runtime["spec"]["supportedModelFormats"]}
    top = max(f.get("priority", 0) for r in theirs for f in r["spec"]["supportedModelFormats"]
              if f["name"] == "tensorflow" and f.get("autoSelect"))
    assert len(ours) == 1 and ours.pop() > top


def test_a_priority_tie_is_found(runtime):
    tensorflow_serving = kserve_runtimes()[0]
    tied = copy.deepcopy(runtime)
    for fmt in tied["spec"]["supportedModelFormats"]:
        fmt["priority"] = 2
    assert len(priority_clashes(tied, tensorflow_serving)) == 2
    tied["spec"]["supportedModelFormats"][0]["priority"] = 3
    assert "tensorflow has two priorities" in priority_clashes(tied, tensorflow_serving)[0]


def test_an_example_the_runtime_cannot_run_is_found(runtime):
    isvc = copy.deepcopy(_by_protocol("v2"))
    model = isvc["spec"]["predictor"]["model"]
    model.update(protocolVersion="v3", modelFormat={"name": "onnx"}, runtime="kserve-tritonserver")
    assert len(runs_on(isvc, runtime)) == 3


@pytest.mark.parametrize("protocol", ["v1", "v2"])
def test_the_command_line_serves_the_isvcs_model_from_kserves_model_folder(runtime, protocol, tmp_path):
    isvc = _by_protocol(protocol)
    container, settings = _settings(runtime, isvc, tmp_path)
    name = isvc["metadata"]["name"]
    assert settings.models == (ModelConfig(name=name, base_path=MODEL_DIR),)
    assert {"name": MODEL_VOLUME, "mountPath": MODEL_DIR, "readOnly": True} in container["volumeMounts"]
    assert settings.enable_batching
    # $(CPU_LIMIT) is limits.cpu in whole cores
    cores = int(container["resources"]["limits"]["cpu"])
    assert (settings.tensorflow_intra_op_parallelism, settings.tensorflow_inter_op_parallelism) == (cores, cores)


def test_the_ports_are_the_flags_rest_first_and_grpc_named_for_kserve(runtime, tmp_path):
    """The first port is the one the predictor Service's port 80 leads to (REST); a gRPC port
    needs a name KServe reads as gRPC (appProtocol kubernetes.io/h2c, the Gateway API route)."""
    container, settings = _settings(runtime, _by_protocol("v1"), tmp_path)
    rest, grpc_port = container["ports"]
    assert (rest["containerPort"], grpc_port["containerPort"]) == (settings.rest_api_port, settings.port)
    assert not any(n in rest["name"] for n in _GRPC_PORT_NAMES)
    assert any(n in grpc_port["name"] for n in _GRPC_PORT_NAMES)
    assert (rest["name"], grpc_port["name"]) == ("http1", "h2c")  # Knative's names, which KServe follows


def test_probes_and_metrics_are_on_the_rest_port(runtime, tmp_path):
    container, settings = _settings(runtime, _by_protocol("v1"), tmp_path)
    (rest,) = [p for p in container["ports"] if p["containerPort"] == settings.rest_api_port]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in (rest["name"], rest["containerPort"]), probe
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"  # AVAILABLE, not LOADING
    annotations = runtime["spec"]["annotations"]
    assert int(annotations["prometheus.kserve.io/port"]) == settings.rest_api_port
    assert annotations["prometheus.kserve.io/path"] == settings.metrics_path


def test_the_runtime_serves_where_kserve_tensorflow_serving_does(runtime, tmp_path):
    """KServe's own TF Serving runtime, its command line read by the same parser (it knows
    TF Serving's flags): the same model, folder, ports and request deadline."""
    (theirs,) = [r for r in kserve_runtimes() if r["metadata"]["name"] == "kserve-tensorflow-serving"]
    isvc = _by_protocol("v1")
    _, ours = _settings(runtime, isvc, tmp_path / "ours")
    (container,) = pod_spec(predictor_deployment(theirs, isvc))["containers"]
    tf_serving = cli.build_settings(container["args"], environ={})
    for field in ("models", "port", "rest_api_port", "rest_api_timeout_in_ms"):
        assert getattr(ours, field) == getattr(tf_serving, field), field
    assert tf_serving.models[0].base_path == MODEL_DIR


def test_the_predictor_pod_passes_kubernetes_and_the_policies(runtime):
    """Kubernetes 1.30's schemas (strict), the policies of the other manifests (restricted
    profile, sizes, probes, pinned image), and a shutdown inside the grace period KServe
    leaves at Kubernetes' default."""
    for isvc in examples():
        deployment = predictor_deployment(runtime, isvc)
        assert "terminationGracePeriodSeconds" not in isvc["spec"]["predictor"]
        assert schema_errors([deployment]) == []
        assert [p for check in policy.CHECKS for p in check([deployment])] == []
        assert shutdown_fits_grace_period([deployment]) == []


def test_the_runtime_runs_as_the_images_user(runtime):
    uid = int(last(CONTAINERS / "gateway.Dockerfile", "USER").split(":")[0])
    assert runtime_container(runtime)["securityContext"]["runAsUser"] == uid != 0


def test_the_examples_ask_for_standard_mode(runtime):
    """Two ports: Knative routes a single one, KServe's Standard mode a Service with both."""
    assert len(runtime_container(runtime)["ports"]) == 2
    assert {i["metadata"]["annotations"][DEPLOYMENT_MODE] for i in examples()} == {"Standard"}


@pytest.mark.slow
def test_a_gateway_run_with_the_pods_command_line_answers_its_probes(runtime, models_dir, tmp_path):
    """The container's command and arguments (CPU limit filled in) run for real, with the
    ports, host and model folder moved as an InferenceService's appended args would move them:
    every probe path and the metrics path answer 200, the model is AVAILABLE over REST and
    gRPC, and SIGTERM ends it cleanly."""
    # TF Serving's protos import TensorFlow (seconds): only this test pays for it.
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    isvc = _by_protocol("v1")
    (container,) = pod_spec(predictor_deployment(runtime, isvc))["containers"]
    rest, grpc_port = free_port(), free_port()
    moved = [f"--rest_api_port={rest}", f"--port={grpc_port}", "--host=127.0.0.1",
             f"--model_base_path={models_dir / 'natality'}"]
    argv = [sys.executable, *container["command"][1:], *expanded_args(container), *moved]
    name = isvc["metadata"]["name"]
    ready = container["readinessProbe"]["httpGet"]["path"]
    with Server(CONTAINER, argv, tmp_path / "gateway.log", rest, ready_path=ready, ready_timeout=180) as server, \
            grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
        paths = [container[p]["httpGet"]["path"] for p in ("startupProbe", "livenessProbe", "readinessProbe")]
        paths.append(runtime["spec"]["annotations"]["prometheus.kserve.io/path"])
        assert {p: httpx.get(server.url + p, timeout=10).status_code for p in paths} == dict.fromkeys(paths, 200)
        status = httpx.get(f"{server.url}/v1/models/{name}", timeout=10).json()
        assert [v["state"] for v in status["model_version_status"]] == ["AVAILABLE"]
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        answer = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
        assert [v.state for v in answer.model_version_status] == [get_model_status_pb2.ModelVersionStatus.AVAILABLE]
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=60)
    assert code == 0, server.log_tail()
