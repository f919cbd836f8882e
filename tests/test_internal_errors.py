"""An unexpected exception inside the server: REST answers 500 with ``{"error"}``, gRPC
INTERNAL, neither leaks the exception's text, and the server logs it once with its
traceback. The fault is injected into a real gateway's core service."""
from __future__ import annotations

import logging

import grpc
import httpx
import numpy as np
import pytest
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.errors import INTERNAL_ERROR
from serving.runtime.tensors import to_proto
from serving.settings import ModelConfig
from tests.conftest import free_port

SECRET = "secret detail of the failure"


@pytest.fixture
def failing_gateway(gateway_factory, models_dir, monkeypatch):
    gateway = gateway_factory(port=free_port(),
                              models=(ModelConfig(name="natality", base_path=str(models_dir / "natality")),))

    async def broken_predict(*args, **kwargs):
        raise RuntimeError(SECRET)

    monkeypatch.setattr(gateway.service, "predict", broken_predict)
    return gateway


def _logged_failures(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.exc_info and r.exc_info[0] is RuntimeError]


def test_rest_answers_500_json_and_logs_once(failing_gateway, caplog):
    body = {"instances": [{"is_male": "True", "mother_age": 25.0, "plurality": "Single(1)",
                           "gestation_weeks": 39.0}]}
    with caplog.at_level(logging.ERROR):
        response = httpx.post(failing_gateway.url + "/v1/models/natality:predict", json=body, timeout=30)
    assert response.status_code == 500
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": INTERNAL_ERROR}
    assert len(_logged_failures(caplog)) == 1
    assert failing_gateway.metric("tfgw_requests_total", model="natality", method="predict",
                                  code="INTERNAL", api="tfserving") == 1


def test_grpc_answers_internal_and_logs_once(failing_gateway, caplog):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "natality"
    for name, value in (("is_male", np.array([b"True"], dtype=object)),
                        ("mother_age", np.array([25.0], dtype=np.float32)),
                        ("plurality", np.array([b"Single(1)"], dtype=object)),
                        ("gestation_weeks", np.array([39.0], dtype=np.float32))):
        request.inputs[name].CopyFrom(to_proto(value))
    with caplog.at_level(logging.ERROR), grpc.insecure_channel(failing_gateway.grpc_target) as channel:
        with pytest.raises(grpc.RpcError) as info:
            prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INTERNAL
    assert info.value.details() == INTERNAL_ERROR
    assert len(_logged_failures(caplog)) == 1
