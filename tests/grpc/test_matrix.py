"""The gRPC matrix of issue 22, on each server (``grpc_server``): gzip both ways, metadata in
and out through an interceptor (``serving.grpc.interceptors``), an answer over the send limit,
health Check and Watch, a client deadline and none. Real gateways on loopback, TF Serving's
half_plus_two and the held model; bytes on the wire counted by a TCP relay."""
from __future__ import annotations

import signal
import socket
import threading
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from serving.errors import Unauthenticated
from serving.settings import BatchingConfig, ModelConfig, Settings
from tests.conftest import Gateway, free_port, wait_until

HALF_PLUS_TWO = "saved_model_half_plus_two_cpu"
PREDICT = "/tensorflow.serving.PredictionService/Predict"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SERVICE_UNKNOWN = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN


class TokenInterceptor:
    """A test interceptor: refuses a wrong ``authorization`` (none is let through), echoes
    ``x-request-id`` in the initial metadata, names the server in the trailing metadata, and
    notes what it saw."""

    def __init__(self, server: str) -> None:
        self.server = server
        self.seen: list[tuple[str, dict]] = []

    async def intercept(self, method: str, context) -> None:
        metadata = dict(context.invocation_metadata() or ())
        self.seen.append((method, metadata))
        if metadata.get("authorization", "Bearer good") != "Bearer good":
            raise Unauthenticated("the bearer token is not valid")
        if "x-request-id" in metadata:
            await context.send_initial_metadata((("x-request-id", metadata["x-request-id"]),))
        context.set_trailing_metadata((("x-grpc-server", self.server),))


class Relay:
    """A TCP relay to ``port`` counting the bytes each way (``up``: to the server)."""

    def __init__(self, port: int) -> None:
        self.up = self.down = 0
        self._target = port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._open: list[socket.socket] = [self._listener]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            server = socket.create_connection(("127.0.0.1", self._target))
            self._open += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, "down"), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, direction: str) -> None:
        try:
            while data := source.recv(65536):
                setattr(self, direction, getattr(self, direction) + len(data))  # counted before it goes on
                sink.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        for sock in self._open:
            sock.close()


@pytest.fixture(scope="module")
def interceptor(grpc_server) -> TokenInterceptor:
    return TokenInterceptor(grpc_server)


@pytest.fixture(scope="module")
def gateway(tfserving_dir, grpc_server, interceptor) -> Iterator[Gateway]:
    """half_plus_two, answers gzip-compressed, every method behind the test interceptor."""
    models = (ModelConfig(name="default", base_path=str(tfserving_dir / HALF_PLUS_TWO)),)
    settings = Settings(port=free_port(), rest_api_port=free_port(), models=models, grpc_server=grpc_server,
                        grpc_compression="gzip")
    with Gateway(settings, grpc_interceptors=(interceptor,)) as running:
        yield running


@pytest.fixture(scope="module")
def limited(tfserving_dir, held_model, grpc_server) -> Iterator[Gateway]:
    """Messages of at most 512 bytes, a default deadline of 300 ms, the held model."""
    models = (ModelConfig(name="default", base_path=str(tfserving_dir / HALF_PLUS_TWO)),
              ModelConfig(name="held", base_path=str(held_model[0])))
    settings = Settings(port=free_port(), rest_api_port=free_port(), models=models, grpc_server=grpc_server,
                        max_request_bytes=512, rest_api_timeout_in_ms=300, enable_batching=True,
                        batching=BatchingConfig(max_batch_size=16, batch_timeout_micros=1000, num_batch_threads=1))
    with Gateway(settings) as running:
        yield running


def zeros_request(n: int, model: str = "default") -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.inputs["x"].dtype = 1  # DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add().size = n
    request.inputs["x"].tensor_content = np.zeros(n, np.float32).tobytes()
    return request


def held_request(hold: bool = False) -> predict_pb2.PredictRequest:
    request = zeros_request(1, "held")
    request.inputs["hold"].dtype = 9  # DT_INT64
    request.inputs["hold"].tensor_shape.dim.add().size = 1
    request.inputs["hold"].int64_val.append(int(hold))
    return request


def y_values(response: predict_pb2.PredictResponse) -> np.ndarray:
    y = response.outputs["y"]
    return np.frombuffer(y.tensor_content, np.float32) if y.tensor_content else np.array(y.float_val)


def test_gzip_requests_are_read_and_answers_sent_gzip(gateway):
    relay = Relay(int(gateway.grpc_target.rsplit(":", 1)[1]))
    n = 50_000  # 200 KB of zeros each way, a few hundred bytes once compressed
    try:
        with grpc.insecure_channel(f"127.0.0.1:{relay.port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            response = stub.Predict(zeros_request(n), timeout=30, compression=grpc.Compression.Gzip)
    finally:
        relay.close()
    np.testing.assert_array_equal(y_values(response), np.full(n, 2.0, np.float32))
    assert relay.up < 20_000 and relay.down < 20_000, (relay.up, relay.down)


def test_an_interceptor_reads_metadata_and_sends_it_back(gateway, interceptor, grpc_server):
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        response, call = stub.Predict.with_call(
            zeros_request(3), timeout=30, metadata=(("authorization", "Bearer good"), ("x-request-id", "r-1")))
    np.testing.assert_array_equal(y_values(response), [2.0, 2.0, 2.0])
    assert ("x-request-id", "r-1") in call.initial_metadata()
    assert ("x-grpc-server", grpc_server) in call.trailing_metadata()
    assert (PREDICT, {"authorization": "Bearer good", "x-request-id": "r-1"}) in [
        (method, {k: v for k, v in seen.items() if k in ("authorization", "x-request-id")})
        for method, seen in interceptor.seen]


def test_an_interceptor_refuses_a_call_as_unauthenticated_before_the_method(gateway, grpc_server):
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(zeros_request(1, model="nope"), timeout=30, metadata=(("authorization", "Bearer bad"),))
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED  # not NOT_FOUND: the method never ran
        assert error.value.details() == "the bearer token is not valid"
        watch = health_pb2_grpc.HealthStub(channel).Watch(
            health_pb2.HealthCheckRequest(), timeout=30, metadata=(("authorization", "Bearer bad"),))
        with pytest.raises(grpc.RpcError) as streamed:
            next(watch)
        assert streamed.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_an_answer_over_the_send_limit_is_resource_exhausted(limited):
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "default"
    request.metadata_field.append("signature_def")
    with grpc.insecure_channel(limited.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            stub.GetModelMetadata(request, timeout=30)  # a 700-byte answer to a 20-byte request
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.value.details()
        np.testing.assert_array_equal(y_values(stub.Predict(zeros_request(2), timeout=30)), [2.0, 2.0])


def test_health_check_answers_for_the_server_and_each_model(gateway):
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == SERVING
        assert health.Check(health_pb2.HealthCheckRequest(service="default"), timeout=10).status == SERVING
        with pytest.raises(grpc.RpcError) as error:
            health.Check(health_pb2.HealthCheckRequest(service="nope"), timeout=10)
        assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_health_watch_sends_the_status_and_stays_open_until_cancelled(gateway):
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service, status in (("", SERVING), ("default", SERVING), ("nope", SERVICE_UNKNOWN)):
            watch = health.Watch(health_pb2.HealthCheckRequest(service=service), timeout=60,
                                 metadata=(("x-request-id", "w-1"),))
            assert next(watch).status == status
            assert ("x-request-id", "w-1") in watch.initial_metadata()
            assert watch.is_active()
            watch.cancel()
            with pytest.raises(grpc.RpcError) as error:
                next(watch)
            assert error.value.code() == grpc.StatusCode.CANCELLED


def test_health_watch_says_not_serving_and_ends_when_the_server_drains(tfserving_dir, grpc_server):
    models = (ModelConfig(name="default", base_path=str(tfserving_dir / HALF_PLUS_TWO)),)
    settings = Settings(port=free_port(), rest_api_port=free_port(), models=models, grpc_server=grpc_server)
    with Gateway(settings) as gateway, grpc.insecure_channel(gateway.grpc_target) as channel:
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=60)
        assert next(watch).status == SERVING
        gateway.server.handle_exit(signal.SIGTERM, None)  # what the signal does
        assert [answer.status for answer in watch] == [NOT_SERVING]  # then the stream ends
        assert watch.code() == grpc.StatusCode.OK


def test_a_client_deadline_is_the_calls_and_without_one_the_servers_default(limited, gate):
    """One call held in the model holds the only batch slot; behind it a call with a 60 s
    client deadline outwaits one without (the server's 300 ms), then is answered."""
    with grpc.insecure_channel(limited.grpc_target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        held = stub.Predict.future(held_request(hold=True), timeout=60)
        wait_until(lambda: gate.waiting == 1, what="the held call at the gate")
        patient = stub.Predict.future(held_request(), timeout=60)
        wait_until(lambda: limited.metric("tfgw_queue_depth_rows", model="held") == 1, what="the queued call")
        with pytest.raises(grpc.RpcError) as error:
            stub.Predict(held_request())  # no deadline: the server's default
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert not patient.done()
        gate.open()
        np.testing.assert_array_equal(y_values(held.result(timeout=30)), [1.0])
        np.testing.assert_array_equal(y_values(patient.result(timeout=30)), [1.0])
