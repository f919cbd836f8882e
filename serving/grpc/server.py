"""The gRPC server: TF Serving's two services and gRPC health checking, one core; TLS
(mutual with ``client_verify``) when ``--ssl_config_file`` is given, as in TF Serving.

Served by ``LoopServer`` (``serving.grpc.core_server``: grpc's C core polled by one thread,
every method run on the event loop that runs the core), not by grpc.aio or grpc's
thread-pool server, whose own per-call cost was most of a gRPC request's. Measured with
``python -m loadtests.bench_grpc`` (1-row natality Predicts, 64 in flight, server pinned to
one busy core; both servers in the same half hour): grpc.server with each call handed to
the loop cost 0.87-0.99 ms of server CPU per request (2.0-3.0x REST's) with 17-18 rows per
model call; ``LoopServer`` 0.48-0.53 ms (1.4-1.5x) with 30-32 rows, as REST's. grpc.aio
had cost 3.4-4.6x REST's: it accepted one call per round trip through its poller thread.
"""
from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

from serving.core.service import InferenceService
from serving.errors import NotFound
from serving.grpc.core_server import LoopServer
from serving.grpc.servicers import ModelServicer, PredictionServicer, add_to_server
from serving.settings import Settings, TLSConfig


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


def create_grpc_server(settings: Settings, service: InferenceService) -> LoopServer:
    """The server, not started. Call it on the event loop that runs ``service``: every
    method runs there."""
    limit = settings.max_request_bytes
    server = LoopServer(asyncio.get_running_loop(), options=[
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Clients reconnect every few minutes, so behind a Kubernetes Service (one TCP
        # connection per client) load spreads over new gateway pods as they come.
        ("grpc.max_connection_age_ms", 300_000),
        ("grpc.max_connection_age_grace_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    ])
    # Not the generated add_*_to_server: undecodable requests get INVALID_ARGUMENT, not UNKNOWN.
    add_to_server(server, PredictionServicer(service),
                  prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"])
    add_to_server(server, ModelServicer(service), model_service_pb2.DESCRIPTOR.services_by_name["ModelService"])
    add_to_server(server, HealthServicer(service), health_pb2.DESCRIPTOR.services_by_name["Health"])
    address = f"{settings.host}:{settings.port}"
    if settings.ssl_config is None:
        server.add_insecure_port(address)
    else:
        server.add_secure_port(address, server_credentials(settings.ssl_config))
    return server


def server_credentials(config: TLSConfig) -> grpc.ServerCredentials:
    """TF Serving's SSLConfig as TF Serving applies it: with ``client_verify`` a client must
    present a certificate signed by ``custom_ca``; without, none is asked for."""
    return grpc.ssl_server_credentials(
        [(config.server_key.get_secret_value().encode(), config.server_cert.encode())],
        root_certificates=config.custom_ca.encode() or None,
        require_client_auth=config.client_verify,
    )
