"""Which runner serves each version, where an operator looks: the gateway's ``/runners``
route, the ``runner`` metadata field (gRPC GetModelMetadata, only when asked for),
``tfgw_model_runner_info`` and the load log line; TF Serving's status and metadata answers
keep their shape. Real gateways on loopback ports, real models."""
from __future__ import annotations

import logging
import shutil
import weakref

import grpc
import httpx
import numpy as np
import pytest
from google.protobuf import json_format, struct_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, prediction_service_pb2_grpc

from serving.examples import natality
from serving.settings import ModelConfig
from tests.conftest import free_port, wait_until

INFO = "tfgw_model_runner_info"


@pytest.fixture(scope="module")
def natality_without_warmup(models_dir, tmp_path_factory):
    """natality as users often ship it: no recorded warm-up file."""
    base = tmp_path_factory.mktemp("natality_plain")
    shutil.copytree(models_dir / "natality" / "1", base / "1", ignore=shutil.ignore_patterns("assets.extra"))
    return base


def runners(gateway) -> dict[tuple[str, int], tuple[str, str, str]]:
    doc = httpx.get(gateway.url + "/runners", timeout=10).json()
    return {(v["model"], v["version"]): (v["runner"], v["evidence"], v["state"]) for v in doc["versions"]}


def metadata(channel, model: str, *fields: str) -> get_model_metadata_pb2.GetModelMetadataResponse:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = model
    request.metadata_field.extend(fields)
    return prediction_service_pb2_grpc.PredictionServiceStub(channel).GetModelMetadata(request, timeout=30)


def runner_field(response) -> dict:
    value = struct_pb2.Struct()
    assert response.metadata["runner"].Unpack(value)
    return json_format.MessageToDict(value)


@pytest.mark.slow
def test_each_version_shows_its_runner_and_moves_on_its_live_calls(
        gateway_factory, models_dir, tfserving_dir, natality_without_warmup, caplog):
    caplog.set_level(logging.INFO, logger="serving.core.sources")
    gateway = gateway_factory(port=free_port(), tf2_session_live_calls=3, models=(
        ModelConfig(name="natality", base_path=str(models_dir / "natality")),
        ModelConfig(name="plain", base_path=str(natality_without_warmup)),
        ModelConfig(name="half", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),
    ))
    assert runners(gateway) == {
        ("half", 123): ("session", "tf1_model", "settled"),
        ("natality", 1): ("session", "warmup_file", "settled"),
        ("plain", 1): ("functions", "live_requests", "comparing"),
    }
    assert gateway.metric(INFO, model="plain", version="1", runner="functions", evidence="live_requests",
                          state="comparing") == 1
    assert gateway.metric(INFO, model="natality", version="1", runner="session", evidence="warmup_file",
                          state="settled") == 1
    logged = [r.getMessage() for r in caplog.records if r.name == "serving.core.sources"]
    assert any(m.startswith("natality version 1: 4 warm-up requests; runner: session (evidence: warmup_file): "
                            "its 4 recorded warm-up requests were answered alike") for m in logged), logged
    assert any(m.startswith("plain version 1: ") and "warm-up requests; runner: for now, functions "
               "(evidence: live_requests)" in m for m in logged), logged

    with grpc.insecure_channel(gateway.grpc_target) as channel:
        plain = metadata(channel, "plain", "signature_def")
        assert list(plain.metadata) == ["signature_def"]  # TF Serving's answer, as before
        both = metadata(channel, "plain", "signature_def", "runner")
        assert sorted(both.metadata) == ["runner", "signature_def"]
        assert runner_field(both) == {"runner": "functions", "evidence": "live_requests", "state": "comparing",
                                      "reason": runner_field(both)["reason"]}
        assert list(metadata(channel, "half", "runner").metadata) == ["runner"]
        with pytest.raises(grpc.RpcError) as refused:
            metadata(channel, "plain", "runner", "nope")
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = httpx.get(gateway.url + "/v1/models/plain", timeout=10).json()
    assert status == {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                                "status": {"error_code": "OK", "error_message": ""}}]}

    served = gateway.service.registry.resolve("plain").model
    variables = [weakref.ref(t) for t in served._keepalive.signatures["serving_default"].captured_inputs]
    columns = natality.sample_rows(3, seed=4)
    instances = [{k: v.tolist()[i] for k, v in columns.items()} for i in range(3)]
    answers = []
    for instance in instances:
        response = httpx.post(gateway.url + "/v1/models/plain:predict", json={"instances": [instance]}, timeout=30)
        assert response.status_code == 200, response.text
        answers.append(response.json()["predictions"][0])
    wait_until(lambda: runners(gateway)[("plain", 1)] == ("session", "live_requests", "settled"), timeout=120,
               what="the version to move to its Session after 3 live calls")
    assert gateway.metric(INFO, model="plain", version="1", runner="session", evidence="live_requests",
                          state="settled") == 1
    assert gateway.metric(INFO, model="plain", version="1", runner="functions", evidence="live_requests",
                          state="comparing") == 0
    assert any(m.startswith("plain version 1 runner: session (evidence: live_requests): its first 3 live calls "
                            "were answered alike") for m in (r.getMessage() for r in caplog.records))
    # Frozen by the gateway's gc.freeze since the load, they go only once it refreezes.
    wait_until(lambda: all(v() is None for v in variables), timeout=60, what="the functions' variables to go")
    again = httpx.post(gateway.url + "/v1/models/plain:predict", json={"instances": instances}, timeout=30).json()
    np.testing.assert_allclose(again["predictions"], answers, rtol=1e-5)  # one output: plain values


def test_disabled_and_upstream_versions_say_so(gateway_factory, models_dir):
    model = (ModelConfig(name="vec16", base_path=str(models_dir / "shapes" / "vec16")),)
    functions_only = gateway_factory(port=free_port(), tf2_session=False, models=model)
    assert runners(functions_only) == {("vec16", 1): ("functions", "disabled", "settled")}
    front = gateway_factory(upstream=functions_only.grpc_target,
                            models=(ModelConfig(name="vec16", base_path="served-by-the-upstream"),))
    assert runners(front) == {("vec16", 1): ("upstream", "upstream", "settled")}
    assert front.metric(INFO, model="vec16", version="1", runner="upstream", evidence="upstream",
                        state="settled") == 1
