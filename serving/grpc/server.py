"""The grpc.aio server: TF Serving's two services and gRPC health checking, one core."""
from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

from serving.core.service import InferenceService
from serving.errors import NotFound
from serving.grpc.servicers import ModelServicer, PredictionServicer
from serving.settings import Settings


class HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 for Kubernetes' gRPC probes: "" is the server's readiness, a model
    name that model's (some version AVAILABLE)."""

    def __init__(self, service: InferenceService) -> None:
        self._service = service

    async def Check(self, request: health_pb2.HealthCheckRequest, context) -> health_pb2.HealthCheckResponse:
        try:
            ready = self._service.model_ready(request.service) if request.service else self._service.ready()
        except NotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service {request.service}")
        status = health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING
        return health_pb2.HealthCheckResponse(status=status)


def create_grpc_server(settings: Settings, service: InferenceService) -> grpc.aio.Server:
    limit = settings.max_request_bytes
    server = grpc.aio.server(options=[
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Clients reconnect every few minutes, so behind a Kubernetes Service (one TCP
        # connection per client) load spreads over new gateway pods as they come.
        ("grpc.max_connection_age_ms", 300_000),
        ("grpc.max_connection_age_grace_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(PredictionServicer(service), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(service), server)
    health_pb2_grpc.add_HealthServicer_to_server(HealthServicer(service), server)
    server.add_insecure_port(f"{settings.host}:{settings.port}")
    return server
