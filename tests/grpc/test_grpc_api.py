"""TF Serving's gRPC API, called with TF Serving's own client code, on its test models, on
each gRPC server (``grpc_server``)."""
from __future__ import annotations

import json

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.settings import BatchingConfig, ModelConfig, Settings, VersionPolicy
from tests.conftest import Gateway, free_port, wait_until


@pytest.fixture(scope="module")
def gateway(tfserving_dir, held_model, grpc_server) -> Gateway:
    models = (
        ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),
        ModelConfig(name="half_plus_three", base_path=str(tfserving_dir / "saved_model_half_plus_three")),
        ModelConfig(name="two_versions", base_path=str(tfserving_dir / "saved_model_half_plus_two_2_versions"),
                    version_policy=VersionPolicy(kind="all"), version_labels={"stable": 123, "canary": 124}),
        ModelConfig(name="held", base_path=str(held_model[0])),
    )
    settings = Settings(port=free_port(), rest_api_port=free_port(), models=models, grpc_server=grpc_server,
                        enable_batching=True,
                        batching=BatchingConfig(max_batch_size=16, batch_timeout_micros=1000,
                                                num_batch_threads=1))
    with Gateway(settings) as running:
        yield running


@pytest.fixture(scope="module")
def channel(gateway):
    with grpc.insecure_channel(gateway.grpc_target) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel):
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict_request(model="default", x=(2.0, 3.0, 4.0), **spec) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array(x, np.float32)))
    return request


def example(x: float) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(
        feature={"x": tf.train.Feature(float_list=tf.train.FloatList(value=[x]))}))


def test_predict(stub):
    response = stub.Predict(predict_request(), timeout=30)
    np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [3.0, 3.5, 4.0])
    assert response.model_spec.name == "default"
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == "serving_default"


def test_predict_output_filter(stub):
    request = predict_request()
    request.output_filter.append("y")
    assert list(stub.Predict(request, timeout=30).outputs) == ["y"]


def test_predict_unknown_output_filter_is_invalid(stub):
    request = predict_request()
    request.output_filter.append("nope")
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_predict_by_version_and_label(stub):
    for spec in ({"version": 123}, {"version_label": "stable"}, {"version_label": "canary"}):
        response = stub.Predict(predict_request("two_versions", (2.0,), **spec), timeout=30)
        np.testing.assert_allclose(tf.make_ndarray(response.outputs["y"]), [3.0])
    canary = stub.Predict(predict_request("two_versions", (2.0,), version_label="canary"), timeout=30)
    assert canary.model_spec.version.value == 124


def test_classify(stub):
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "classify_x_to_y"
    request.input.example_list.examples.add().CopyFrom(example(2.0))
    response = stub.Classify(request, timeout=30)
    assert len(response.result.classifications) == 1
    assert response.result.classifications[0].classes[0].score == pytest.approx(3.0)


def test_regress_with_context(stub):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = "default"
    request.model_spec.signature_name = "regress_x_to_y"
    listed = request.input.example_list_with_context
    listed.context.CopyFrom(example(4.0))
    listed.examples.add()
    request2 = regression_pb2.RegressionRequest()
    request2.model_spec.name = "default"
    request2.model_spec.signature_name = "regress_x_to_y"
    request2.input.example_list.examples.add().CopyFrom(example(2.0))
    assert [r.value for r in stub.Regress(request, timeout=30).result.regressions] == [4.0]
    assert [r.value for r in stub.Regress(request2, timeout=30).result.regressions] == [3.0]


def test_multi_inference(stub):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                              ("regress_x_to_y", "tensorflow/serving/regress")):
        task = request.tasks.add()
        task.model_spec.name = "default"
        task.model_spec.signature_name = signature
        task.method_name = method
    request.input.example_list.examples.add().CopyFrom(example(2.0))
    results = stub.MultiInference(request, timeout=30).results
    assert results[0].classification_result.classifications[0].classes[0].score == pytest.approx(3.0)
    assert results[1].regression_result.regressions[0].value == pytest.approx(3.0)


def test_get_model_metadata_is_tf_servings_answer(stub, tfserving_files):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    response = stub.GetModelMetadata(request, timeout=30)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata["signature_def"].Unpack(signatures)
    doc = json.loads((tfserving_files / "half_plus_two_model_metadata.json").read_text())
    expected = json_format.ParseDict(doc["metadata"]["signature_def"], get_model_metadata_pb2.SignatureDefMap())
    assert response.model_spec.name == "default" and response.model_spec.version.value == 123
    assert signatures == expected


def test_get_model_status(channel):
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "default"
    response = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
    assert [(s.version, s.status.error_code) for s in response.model_version_status] == [(123, 0)]
    assert response.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE


@pytest.mark.parametrize("request_, code, details", [
    (predict_request("nope"), grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)"),
    (predict_request(version=999), grpc.StatusCode.NOT_FOUND,
     "Servable not found for request: Specific(default, 999)"),
    (predict_request(version_label="nope"), grpc.StatusCode.INVALID_ARGUMENT,
     "Unrecognized servable version label: nope"),
    (predict_request(signature_name="nope"), grpc.StatusCode.INVALID_ARGUMENT,
     'Serving signature name: "nope" not found in signature def'),
])
def test_errors_carry_tf_servings_codes_and_messages(stub, request_, code, details):
    """TF Serving's own status details (its ServerCore and predict_util), word for word."""
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request_, timeout=30)
    assert (info.value.code(), info.value.details()) == (code, details)


def test_wrong_dtype_is_invalid_argument(stub):
    request = predict_request()
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([1, 2], np.int64)))
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_grpc_deadline_is_the_request_deadline(stub, gateway, gate):
    running = stub.Predict.future(held_request(1, hold=True), timeout=120)
    wait_until(lambda: gate.waiting == 1, what="the held request to reach the gate")
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(held_request(1), timeout=0.3)  # waits behind it for the one slot
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    gate.open()
    np.testing.assert_allclose(tf.make_ndarray(running.result().outputs["y"]), [2.0])


def test_health_checking(channel):
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == health_pb2.HealthCheckResponse.SERVING
    model = health.Check(health_pb2.HealthCheckRequest(service="default"), timeout=10)
    assert model.status == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as info:
        health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def held_request(rows: int, hold: bool = False) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "held"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.ones(rows, np.float32)))
    request.inputs["hold"].CopyFrom(tf.make_tensor_proto(np.full(rows, int(hold), np.int64)))
    return request


def test_full_queue_is_resource_exhausted(stub, gateway, gate):
    running = stub.Predict.future(held_request(1, hold=True), timeout=120)
    wait_until(lambda: gate.waiting == 1, what="the held request to reach the gate")
    backlog = stub.Predict.future(held_request(16 * 64), timeout=120)  # fills the queue
    wait_until(lambda: gateway.metric("tfgw_queue_depth_rows", model="held") == 1024, what="a full queue")
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(held_request(1), timeout=30)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    gate.open()
    assert running.result().outputs["y"] and backlog.result().outputs["y"]


def test_inputs_outside_the_signature_are_refused_before_they_are_decoded(stub):
    request = predict_request()
    junk = request.inputs["junk"]
    junk.dtype = tf.string.as_datatype_enum
    junk.tensor_shape.dim.add().size = 1 << 20
    junk.tensor_content = b"\x00" * (1 << 20)  # a million empty strings, never cut up
    with pytest.raises(grpc.RpcError) as info:
        stub.Predict(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "Unknown input(s) ['junk'] for signature 'serving_default'; expected ['x']"
