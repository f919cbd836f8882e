"""Classify and regress outputs are checked once, in the core (serving/core/results.py):
unit rules, and REST and gRPC refusing the same bad model output with the same message."""
from __future__ import annotations

import grpc
import httpx
import numpy as np
import pytest
from tensorflow_serving.apis import classification_pb2, prediction_service_pb2_grpc, regression_pb2

from serving.core.results import classifications, regressions
from serving.errors import InvalidArgument
from serving.settings import ModelConfig
from tests.conftest import free_port

F32, F64 = np.float32, np.float64


def strings(*values: str, shape: tuple[int, ...]) -> np.ndarray:
    return np.array([v.encode() for v in values], dtype=object).reshape(shape)


def test_classifications_keep_labels_and_scores():
    result = classifications({"classes": strings("a", "b", shape=(1, 2)),
                              "scores": np.array([[0.25, 0.75]], dtype=F32)}, 1)
    assert result.shape == (1, 2)
    assert result.label_rows() == [["a", "b"]]
    assert classifications({"scores": np.array([[3.0]], dtype=F32)}, 1).label_rows() == [[""]]


@pytest.mark.parametrize("outputs, message", [
    ({}, 'at least one of "classes" or "scores"'),
    ({"scores": np.array([1.0], dtype=F32)},
     r"Expected Tensor shape: \[batch_size num_classes\] but got \[1\]"),
    ({"scores": np.array([[1.0]], dtype=F64)},
     "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE"),
    ({"classes": np.array([[1]], dtype=np.int32)},
     "Expected classes Tensor of DT_STRING. Got: DT_INT32"),
    ({"classes": strings("a", "b", shape=(1, 2)), "scores": np.array([[1.0]], dtype=F32)},
     r"classes and scores should have the same shape. Got \[1,2\] vs. \[1,1\]"),
    ({"scores": np.zeros((2, 1), dtype=F32)}, "Expected 1 classifications, one per example, but the model returned 2"),
])
def test_classification_errors(outputs: dict[str, np.ndarray], message: str):
    with pytest.raises(InvalidArgument, match=message):
        classifications(outputs, 1)


@pytest.mark.parametrize("outputs, message", [
    ({"scores": np.array([1.0], dtype=F32)}, "Could not find output tensor 'outputs'"),
    ({"outputs": np.zeros((1, 2), dtype=F32)},
     r"either \[batch_size\] or \[batch_size, 1\] but got \[1,2\]"),
    ({"outputs": np.array(1.0, dtype=F32)}, r"but got \[\]"),
    ({"outputs": np.array([1.0], dtype=F64)}, "Expected output Tensor of DT_FLOAT. Got: DT_DOUBLE"),
    ({"outputs": np.zeros((3,), dtype=F32)}, "Expected 1 regressions, one per example, but the model returned 3"),
])
def test_regression_errors(outputs: dict[str, np.ndarray], message: str):
    with pytest.raises(InvalidArgument, match=message):
        regressions(outputs, 1)


def test_regressions_are_flat_float32():
    values = regressions({"outputs": np.array([[3.5], [4.0]], dtype=F32)}, 2)
    assert values.tolist() == [3.5, 4.0] and values.dtype == F32


@pytest.fixture(scope="module")
def double_scores_model(tmp_path_factory) -> str:
    """A real TF1 SavedModel whose classify and regress signatures return DT_DOUBLE (TF
    Serving refuses both): y = 0.5 * x + 2 on feature x of the examples."""
    import tensorflow as tf

    base = tmp_path_factory.mktemp("double_scores")
    v1 = tf.compat.v1
    with tf.Graph().as_default():
        serialized = v1.placeholder(tf.string, [None], name="tf_example")
        x = v1.io.parse_example(serialized, {"x": v1.io.FixedLenFeature([1], tf.float32)})["x"]
        y = tf.cast(0.5 * x + 2.0, tf.float64, name="y")
        info = v1.saved_model.utils.build_tensor_info
        make = v1.saved_model.signature_def_utils.build_signature_def
        signatures = {
            "classify_x_to_y": make({"inputs": info(serialized)}, {"scores": info(y)},
                                    v1.saved_model.signature_constants.CLASSIFY_METHOD_NAME),
            "regress_x_to_y": make({"inputs": info(serialized)}, {"outputs": info(y)},
                                   v1.saved_model.signature_constants.REGRESS_METHOD_NAME),
        }
        with v1.Session() as session:
            builder = v1.saved_model.Builder(str(base / "1"))
            builder.add_meta_graph_and_variables(session, ["serve"], signature_def_map=signatures)
            builder.save()
    return str(base)


def _example(x: float):
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example()
    example.features.feature["x"].float_list.value.append(x)
    return example


@pytest.mark.parametrize("verb, signature, message", [
    ("classify", "classify_x_to_y", "Expected scores Tensor of DT_FLOAT. Got: DT_DOUBLE"),
    ("regress", "regress_x_to_y", "Expected output Tensor of DT_FLOAT. Got: DT_DOUBLE"),
])
def test_rest_and_grpc_refuse_the_same_outputs(gateway_factory, double_scores_model, verb, signature, message):
    gateway = gateway_factory(port=free_port(),
                              models=(ModelConfig(name="m", base_path=double_scores_model),))
    rest = httpx.post(f"{gateway.url}/v1/models/m:{verb}", timeout=30,
                      json={"signature_name": signature, "examples": [{"x": 2.0}]})
    assert rest.status_code == 400 and rest.json() == {"error": message}
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        if verb == "classify":
            request = classification_pb2.ClassificationRequest()
            call = stub.Classify
        else:
            request = regression_pb2.RegressionRequest()
            call = stub.Regress
        request.model_spec.name, request.model_spec.signature_name = "m", signature
        request.input.example_list.examples.append(_example(2.0))
        with pytest.raises(grpc.RpcError) as info:
            call(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == message
