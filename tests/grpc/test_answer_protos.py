"""Predict answers as TF Serving's own clients read them: every output's values in its typed
field (``outputs[k].float_val``, ``int64_val``, ``string_val``...), as TF Serving writes
them (``AsProtoField``), embedded and through ``--upstream``; with
``--enable_serialization_as_tensor_content`` in ``tensor_content`` instead."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.settings import BatchingConfig, ModelConfig
from tests.conftest import free_port

ROWS = (1, 3, 512)


def expected(x: np.ndarray) -> dict[str, list]:
    rounded = np.round(x).astype(np.int64)
    return {"half": (x * np.float32(0.5) + np.float32(2)).tolist(), "rounded": rounded.tolist(),
            "label": [str(v).encode() for v in rounded.tolist()], "positive": (x > 0).tolist(),
            "wide": (x.astype(np.float64) * 3).tolist()}


FIELDS = {"half": "float_val", "rounded": "int64_val", "label": "string_val", "positive": "bool_val",
          "wide": "double_val"}


@pytest.fixture(scope="module")
def typed_model(tmp_path_factory):
    """x float [None] -> one output per typed field a client reads."""

    class Typed(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            rounded = tf.cast(tf.round(x), tf.int64)
            return {"half": x * 0.5 + 2.0, "rounded": rounded, "label": tf.strings.as_string(rounded),
                    "positive": x > 0, "wide": tf.cast(x, tf.float64) * 3.0}

    module = Typed()
    base = tmp_path_factory.mktemp("typed")
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
    return base


def ask(target: str, x: np.ndarray) -> predict_pb2.PredictResponse:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "typed"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(x))  # as TF Serving's clients build it
    with grpc.insecure_channel(target) as channel:
        return prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)


@pytest.fixture(scope="module")
def gateways(typed_model):
    """An embedded gateway, and a front whose upstream it is (answers rebuilt from merged
    batches there); one with the tensor_content switch, and a front in front of that one
    (an upstream TF Serving run with the switch: strings come as TensorFlow's encoded list)."""
    from serving.settings import Settings
    from tests.conftest import Gateway

    model = (ModelConfig(name="typed", base_path=str(typed_model)),)
    embedded = Gateway(Settings(port=free_port(), rest_api_port=free_port(), models=model)).__enter__()
    content = Gateway(Settings(port=free_port(), rest_api_port=free_port(), models=model,
                               enable_serialization_as_tensor_content=True)).__enter__()

    def front_of(upstream: Gateway) -> Gateway:
        return Gateway(Settings(
            port=free_port(), rest_api_port=free_port(), upstream=upstream.grpc_target, enable_batching=True,
            models=(ModelConfig(name="typed", base_path="served-by-the-upstream"),),
            batching=BatchingConfig(max_batch_size=1024, batch_timeout_micros=1000))).__enter__()

    started = {"embedded": embedded, "content": content, "upstream": front_of(embedded),
               "upstream answering in tensor_content": front_of(content)}
    yield started
    for gateway in reversed(started.values()):
        gateway.__exit__(None, None, None)


@pytest.mark.parametrize("rows", ROWS)
@pytest.mark.parametrize("path", ["embedded", "upstream", "upstream answering in tensor_content"])
def test_a_client_reading_typed_fields_gets_every_value(gateways, path, rows):
    x = np.linspace(-3, 3, rows, dtype=np.float32)
    response = ask(gateways[path].grpc_target, x)
    want = expected(x)
    assert set(response.outputs) == set(FIELDS)
    for name, field in FIELDS.items():
        tensor = response.outputs[name]
        assert tensor.tensor_content == b"", name
        assert list(getattr(tensor, field)) == want[name], name
        assert [d.size for d in tensor.tensor_shape.dim] == [rows]
        assert tf.make_ndarray(tensor).tolist() == want[name]  # and TensorFlow reads it back


@pytest.mark.parametrize("rows", ROWS)
def test_the_tensor_content_switch_answers_in_tensor_content(gateways, rows):
    x = np.linspace(-3, 3, rows, dtype=np.float32)
    response = ask(gateways["content"].grpc_target, x)
    want = expected(x)
    for name, field in FIELDS.items():
        tensor = response.outputs[name]
        assert not getattr(tensor, field) and tensor.tensor_content, name
        if name != "label":  # TensorFlow's Python reads no encoded string list (TF Serving's answer too)
            assert tf.make_ndarray(tensor).tolist() == want[name], name
