"""``--auth_token_file`` on gRPC refuses a call without an accepted token before its message is
read, on each server (``grpc_server``): a caller without a token cannot make the gateway read
and parse up to ``--max_request_bytes``, as REST checks the header before the body. Parses are
counted by wrapping the parser ``serving.grpc.servicers.add_to_server`` gives each method."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.grpc import servicers
from serving.settings import ModelConfig, Settings
from tests.conftest import Gateway, free_port

TOKEN = "s3cret-token-1"


def predict_request(n: int) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "default"
    request.inputs["x"].dtype = 1  # DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add().size = n
    request.inputs["x"].tensor_content = np.full(n, 2.0, np.float32).tobytes()
    return request


def test_a_call_without_a_token_is_refused_unauthenticated_and_never_parsed(
        tfserving_dir, grpc_server, monkeypatch):
    parsed: list[tuple[str, int]] = []
    tolerant = servicers._tolerant

    def counting(message_class: Any) -> Callable[[bytes], Any]:
        parse = tolerant(message_class)

        def count(data: bytes) -> Any:
            parsed.append((message_class.DESCRIPTOR.name, len(data)))
            return parse(data)

        return count

    monkeypatch.setattr(servicers, "_tolerant", counting)
    models = (ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),)
    settings = Settings(port=free_port(), rest_api_port=free_port(), host="127.0.0.1", models=models,
                        grpc_server=grpc_server, auth_tokens=(TOKEN,))
    large = predict_request(2 << 20)  # 8 MiB, within --max_request_bytes (64 MiB)
    assert large.ByteSize() > 8 << 20
    with Gateway(settings) as gateway, grpc.insecure_channel(gateway.grpc_target) as channel:
        predict = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict
        for metadata in ((), (("authorization", "Bearer not-a-token"),)):
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as error:
                    predict(large, metadata=metadata, timeout=60)
                assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED, error.value.details()
                assert "bearer" in error.value.details().lower()
        assert parsed == []
        small = predict_request(3)
        answer = predict(small, metadata=(("authorization", f"Bearer {TOKEN}"),), timeout=60)
        assert np.frombuffer(answer.outputs["y"].tensor_content, np.float32).tolist() == [3.0] * 3 \
            or list(answer.outputs["y"].float_val) == [3.0] * 3
        assert parsed == [("PredictRequest", small.ByteSize())]  # the counter sees what is let in
