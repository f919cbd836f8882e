"""`python -m serving` with TF Serving's own two-model config file, spoken to over gRPC."""
from __future__ import annotations

import signal
import sys

import grpc
import numpy as np
import pytest
import tensorflow as tf
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import (
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from loadtests.support.processes import Server
from tests.conftest import free_port, wait_until


@pytest.mark.slow
def test_tf_servings_good_model_config_serves_both_models(tfserving_dir, tfserving_files, tmp_path):
    config = (tfserving_files / "good_model_config.txt").read_text()
    config = config.replace("${TEST_HALF_PLUS_TWO_DIR}", str(tfserving_dir / "saved_model_half_plus_two_cpu"))
    config = config.replace("${TEST_HALF_PLUS_THREE_DIR}", str(tfserving_dir / "saved_model_half_plus_three"))
    (tmp_path / "models.config").write_text(config)
    port, rest_port = free_port(), free_port()
    server = Server(
        "gateway",
        [sys.executable, "-m", "serving", f"--port={port}", f"--rest_api_port={rest_port}",
         f"--model_config_file={tmp_path / 'models.config'}"],
        tmp_path / "gateway.log", rest_port, ready_timeout=120)
    try:
        server.wait_ready()
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)

            def serving() -> bool:
                server.check_alive("before gRPC health said SERVING")
                try:
                    answer = health.Check(health_pb2.HealthCheckRequest(), timeout=2)
                except grpc.RpcError:
                    return False
                return answer.status == health_pb2.HealthCheckResponse.SERVING

            wait_until(serving, timeout=120, what="gRPC health SERVING")
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            for name, expected in (("half_plus_two", [3.0, 3.5, 4.0]), ("half_plus_three", [4.0, 4.5, 5.0])):
                request = predict_pb2.PredictRequest()
                request.model_spec.name = name
                request.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([2.0, 3.0, 4.0], np.float32)))
                np.testing.assert_allclose(tf.make_ndarray(stub.Predict(request, timeout=30).outputs["y"]), expected)
                status_request = get_model_status_pb2.GetModelStatusRequest()
                status_request.model_spec.name = name
                status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(status_request, timeout=30)
                assert [(s.version, s.status.error_code) for s in status.model_version_status] == [(123, 0)]
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=60) == 0
    finally:
        server.stop()
