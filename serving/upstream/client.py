"""One gRPC channel to the upstream PredictionService, with retries and a circuit breaker.

Retries: UNAVAILABLE only (nothing ran), with exponential backoff, within the request's
deadline. The breaker opens after consecutive UNAVAILABLE/DEADLINE_EXCEEDED failures, so
requests then fail fast with ``Unavailable`` (503) and readiness turns false; the
registry's periodic status query is the trial that closes it again when the upstream is
back, so recovery needs no client traffic.

Keep-alive pings detect dead connections; for a fleet behind a Kubernetes Service use a
headless Service and ``dns:///name:8500``: the channel then balances calls round-robin
across the pods and re-resolves as pods come and go.
"""
from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.errors import DeadlineExceeded, Unavailable, error_for_grpc_code
from serving.upstream.breaker import CircuitBreaker

_BREAKING = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED)


class UpstreamClient:
    """Blocking calls to one upstream, safe from many threads."""

    def __init__(self, target: str, *, max_message_bytes: int, retries: int = 2,
                 backoff_s: float = 0.05, breaker: CircuitBreaker | None = None) -> None:
        self.target = target
        options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.enable_retries", 0),  # retries are ours, bounded by the request deadline
        ]
        if target.startswith("dns:///"):
            options.append(("grpc.lb_policy_name", "round_robin"))
        self._channel = grpc.insecure_channel(target, options=options)
        self._predictions = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
        self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
        self._retries = retries
        self._backoff = backoff_s
        self.breaker = breaker or CircuitBreaker()

    def close(self) -> None:
        self._channel.close()

    def predict(self, request: predict_pb2.PredictRequest, deadline: float) -> predict_pb2.PredictResponse:
        return self._call(self._predictions.Predict, request, deadline)

    def status(self, name: str, timeout_s: float) -> get_model_status_pb2.GetModelStatusResponse:
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = name
        return self._call(self._models.GetModelStatus, request, time.monotonic() + timeout_s, probe=True)

    def metadata(self, name: str, version: int, timeout_s: float) -> get_model_metadata_pb2.GetModelMetadataResponse:
        request = get_model_metadata_pb2.GetModelMetadataRequest()
        request.model_spec.name = name
        request.model_spec.version.value = version
        request.metadata_field.append("signature_def")
        return self._call(self._predictions.GetModelMetadata, request, time.monotonic() + timeout_s, probe=True)

    def _call(self, method: Callable[..., Any], request: Any, deadline: float, probe: bool = False) -> Any:
        if not probe and not self.breaker.allow():
            raise Unavailable(f"The upstream {self.target} is unavailable (circuit open)")
        attempt = 0
        while True:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise DeadlineExceeded(f"Deadline exceeded before the upstream {self.target} answered")
            try:
                response = method(request, timeout=timeout)
            except grpc.RpcError as error:
                code = error.code()
                if code == grpc.StatusCode.UNAVAILABLE and attempt < self._retries:
                    pause = self._backoff * (2 ** attempt) * (0.5 + random.random())
                    if time.monotonic() + pause < deadline:
                        attempt += 1
                        time.sleep(pause)
                        continue
                if code in _BREAKING:
                    self.breaker.failure()
                if code == grpc.StatusCode.CANCELLED:  # we never cancel: the upstream went away
                    code = grpc.StatusCode.UNAVAILABLE
                raise error_for_grpc_code(code.name, f"upstream {self.target}: {error.details()}") from None
            self.breaker.success()
            return response
