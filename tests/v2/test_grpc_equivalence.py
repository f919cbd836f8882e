"""v2 over gRPC answers what TF Serving's gRPC Predict answers: for every example and shape
model the suite serves, the same inputs sent as a TF Serving PredictRequest, through
tritonclient (raw contents) and as typed v2 contents give equal outputs (dtype, shape and
every value, bit for bit: batching off, so each call runs the same model
alone)."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
import tritonclient.grpc as triton
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.examples import image, natality, shapes
from serving.settings import ModelConfig, Settings
from serving.v2 import datatypes, protos
from tests.conftest import MODELS, TFSERVING_MODELS, Gateway, free_port

ROWS = 5
X = np.array([[2.0], [3.0], [-1.5], [0.0], [1e6]], np.float32)


def _bytes(column: np.ndarray) -> np.ndarray:
    """A string column as the wire carries it: an object array of bytes."""
    out = np.empty(len(column), dtype=object)
    out[:] = [v.encode() if isinstance(v, str) else v for v in column]
    return out


def _cases() -> dict[str, tuple[str, dict[str, np.ndarray]]]:
    """Model name -> (base path, inputs)."""
    cases = {
        "natality": (MODELS / "natality", {k: _bytes(v) if v.dtype == object else v
                                           for k, v in natality.sample_rows(ROWS, seed=5).items()}),
        "image_classifier": (MODELS / "image_classifier", image.sample_inputs(2, seed=5)),
        "half_plus_two": (TFSERVING_MODELS / "saved_model_half_plus_two_cpu", {"x": X}),
        "half_plus_three": (TFSERVING_MODELS / "saved_model_half_plus_three", {"x": X}),
        "half_plus_two_2_versions": (TFSERVING_MODELS / "saved_model_half_plus_two_2_versions", {"x": X}),
    }
    for name in shapes.MODELS:
        cases[f"shapes_{name}"] = (MODELS / shapes.FOLDER / name, shapes.sample_inputs(name, ROWS, seed=5))
    return cases


CASES = _cases()


SLOW = {"image_classifier"}
"""Models whose loading takes the test over 10 s: checked in a slow test of their own."""


def serving(models: list[str]) -> Gateway:
    configs = tuple(ModelConfig(name=name, base_path=str(CASES[name][0])) for name in models)
    return Gateway(Settings(port=free_port(), rest_api_port=free_port(), models=configs))


def tf_serving(channel: grpc.Channel, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    for name, array in inputs.items():
        request.inputs[name].CopyFrom(tf.make_tensor_proto(array))
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
    return {name: tf.make_ndarray(proto) for name, proto in response.outputs.items()}


def through_tritonclient(client: triton.InferenceServerClient, model: str,
                         inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    tensors = []
    for name, array in inputs.items():
        tensor = triton.InferInput(name, list(array.shape), datatypes.for_dtype(array.dtype).name)
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    response = client.infer(model, tensors, client_timeout=60)
    return {output.name: response.as_numpy(output.name) for output in response.get_response().outputs}


def typed(channel: grpc.Channel, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Inputs in typed ``contents`` (our protos); the typed answer read back into arrays."""
    request = protos.ModelInferRequest(model_name=model)
    for name, array in inputs.items():
        datatype = datatypes.for_dtype(array.dtype)
        tensor = request.inputs.add(name=name, datatype=datatype.name, shape=array.shape)
        getattr(tensor.contents, datatype.field).extend(array.ravel().tolist())
    stub = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer",
                               request_serializer=protos.ModelInferRequest.SerializeToString,
                               response_deserializer=protos.ModelInferResponse.FromString)
    response = stub(request, timeout=60)
    assert not response.raw_output_contents
    answers = {}
    for output in response.outputs:
        datatype = datatypes.BY_NAME[output.datatype]
        values = list(getattr(output.contents, datatype.field))
        array = np.empty(len(values), dtype=object) if datatype is datatypes.BYTES else None
        if array is not None:
            array[:] = values
        else:
            array = np.array(values, dtype=datatype.dtype)
        answers[output.name] = array.reshape(tuple(output.shape))
    return answers


def assert_same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], what: str) -> None:
    assert sorted(got) == sorted(want), what
    for name, array in want.items():
        assert (got[name].dtype, got[name].shape) == (array.dtype, array.shape), f"{what}: {name}"
        if array.dtype == object:
            assert got[name].tolist() == array.tolist(), f"{what}: {name}"
        else:
            np.testing.assert_array_equal(got[name], array, err_msg=f"{what}: {name}")


def check_equivalence(models: list[str]) -> None:
    with serving(models) as gateway, grpc.insecure_channel(gateway.grpc_target) as channel, \
            triton.InferenceServerClient(gateway.grpc_target) as client:
        for model in models:
            inputs = CASES[model][1]
            want = tf_serving(channel, model, inputs)
            assert_same(through_tritonclient(client, model, inputs), want, f"{model} through tritonclient")
            assert_same(typed(channel, model, inputs), want, f"{model} in typed contents")


def test_v2_grpc_answers_equal_tf_serving_grpc_predict(models_dir, tfserving_dir):
    models = [name for name in CASES if name not in SLOW]
    assert len(models) == 9
    check_equivalence(models)


@pytest.mark.slow
def test_v2_grpc_answers_equal_tf_serving_grpc_predict_for_images(models_dir):
    check_equivalence(sorted(SLOW))
