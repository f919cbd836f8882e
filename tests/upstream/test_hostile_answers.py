"""A hostile or broken upstream: its PredictResponse tensors are checked like a client's
requests, so a tiny answer claiming a huge shape is a clear error (502 / INTERNAL with the
reason), not an allocation.

The upstream here is a real gRPC server that forwards status and metadata to a real
embedded gateway and answers Predict with whatever the test sets. Both gateways run in
this process, so memory is this process's VmRSS: the allocation guarded against is
gigabytes (2**31 strings), far beyond the noise of threads and caches allowed here.
"""
from __future__ import annotations

from concurrent import futures

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from loadtests.support.processes import rss_kb
from serving.settings import ModelConfig
from tests.conftest import free_port

RSS_SLACK_KB = 64 * 1024


class _Upstream:
    """Status and metadata from a real gateway; Predict answers ``self.answer``."""

    def __init__(self, real: grpc.Channel) -> None:
        self.answer = predict_pb2.PredictResponse()
        self._models = model_service_pb2_grpc.ModelServiceStub(real)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(real)
        self.server = grpc.server(futures.ThreadPoolExecutor(4))
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("tensorflow.serving.PredictionService", {
                "Predict": grpc.unary_unary_rpc_method_handler(
                    lambda request, context: self.answer,
                    request_deserializer=predict_pb2.PredictRequest.FromString,
                    response_serializer=predict_pb2.PredictResponse.SerializeToString),
                "GetModelMetadata": grpc.unary_unary_rpc_method_handler(
                    lambda request, context: self._predictions.GetModelMetadata(request, timeout=30),
                    request_deserializer=get_model_metadata_pb2.GetModelMetadataRequest.FromString,
                    response_serializer=get_model_metadata_pb2.GetModelMetadataResponse.SerializeToString),
            }),
            grpc.method_handlers_generic_handler("tensorflow.serving.ModelService", {
                "GetModelStatus": grpc.unary_unary_rpc_method_handler(
                    lambda request, context: self._models.GetModelStatus(request, timeout=30),
                    request_deserializer=get_model_status_pb2.GetModelStatusRequest.FromString,
                    response_serializer=get_model_status_pb2.GetModelStatusResponse.SerializeToString),
            }),
        ))
        self.port = free_port()
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")


@pytest.fixture
def front(gateway_factory, tfserving_dir):
    real = gateway_factory(port=free_port(), models=(
        ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),))
    with grpc.insecure_channel(real.grpc_target) as channel:
        upstream = _Upstream(channel)
        upstream.server.start()
        try:
            gateway = gateway_factory(upstream=f"127.0.0.1:{upstream.port}", port=free_port(),
                                      models=(ModelConfig(name="default", base_path="upstream"),))
            yield upstream, gateway
        finally:
            upstream.server.stop(None)


def _tensor(dtype: int, dims: list[int], **fields) -> tensor_pb2.TensorProto:
    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=shape, **fields)


HOSTILE = [
    ("2**31 strings from one value", _tensor(types_pb2.DT_STRING, [2**31], string_val=[b"x"]), "bytes decoded"),
    ("2**31 doubles, no values", _tensor(types_pb2.DT_DOUBLE, [2**31]), "bytes decoded"),
    ("short content", _tensor(types_pb2.DT_FLOAT, [3], tensor_content=b"\0" * 4), "tensor_content"),
    ("DT_VARIANT", _tensor(types_pb2.DT_VARIANT, [1]), "DT_VARIANT"),
]


@pytest.mark.parametrize("name,tensor,reason", HOSTILE, ids=[h[0] for h in HOSTILE])
@pytest.mark.slow
def test_a_hostile_upstream_answer_is_a_clear_error_not_an_allocation(front, name, tensor, reason):
    upstream, gateway = front
    upstream.answer = predict_pb2.PredictResponse()
    upstream.answer.outputs["y"].CopyFrom(tensor)
    before = rss_kb()
    response = httpx.post(gateway.url + "/v1/models/default:predict", json={"instances": [2.0]}, timeout=60)
    assert response.status_code == 502, response.text
    assert "answered a malformed tensor" in response.json()["error"] and reason in response.json()["error"]
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([2.0], np.float32)))
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
        assert raised.value.code() == grpc.StatusCode.INTERNAL
        assert "Output 'y'" in raised.value.details() and reason in raised.value.details()
        assert rss_kb() - before < RSS_SLACK_KB
        # The same upstream, answering well again: served.
        upstream.answer = predict_pb2.PredictResponse()
        upstream.answer.outputs["y"].CopyFrom(tf.make_tensor_proto(np.array([3.0], np.float32)))
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=60)
        np.testing.assert_allclose(tf.make_ndarray(answer.outputs["y"]), [3.0])
