"""The gRPC server: TF Serving's two services, gRPC health checking and the Open Inference
Protocol's ``inference.GRPCInferenceService`` (``serving.grpc.v2_servicer``), one core; TLS
(mutual with ``client_verify``) when ``--ssl_config_file`` is given, as in TF Serving.

Served by the server ``--grpc_server`` names, both on the event loop that runs the core:
``loop`` (``serving.grpc.core_server.LoopServer``: grpc's C core polled by one thread of
ours, on grpc's private cygrpc layer) or ``aio`` (``serving.grpc.aio_server.AioServer``:
grpc.aio's public API). Same servicers, same interceptors, same answers; they differ in
CPU per call. Measured with ``python -m loadtests.benchmarks.bench_grpc`` (1-row natality Predicts, 64
in flight, server pinned to one busy core; both in the same half hour): ``LoopServer`` 0.48-0.53
ms of server CPU per request (1.4-1.5x REST's) with 30-32 rows per model call; grpc.server
with each call handed to the loop 0.87-0.99 ms (2.0-3.0x); grpc.aio 3.4-4.6x REST's (it
accepted one call per round trip through its poller thread). ``make bench-grpc`` measures
``loop`` and ``aio`` in one run.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

from serving.auth import BearerTokens
from serving.core.service import InferenceService
from serving.errors import NotFound
from serving.grpc.aio_server import AioServer
from serving.grpc.auth import BearerInterceptor
from serving.grpc.contract import CallContext, GrpcServer
from serving.grpc.interceptors import Interceptor
from serving.grpc.servicers import ModelServicer, PredictionServicer, Undecodable, add_to_server, status_details
from serving.grpc.v2_servicer import InferenceServicer
from serving.settings import Settings, TLSConfig
from serving.v2 import protos

WATCH_PERIOD_S = 0.5
"""How often a health Watch looks at the status it watches (the core has no change events)."""

_COMPRESSION = {"none": grpc.Compression.NoCompression, "deflate": grpc.Compression.Deflate,
                "gzip": grpc.Compression.Gzip}

Status = health_pb2.HealthCheckResponse.ServingStatus


class HealthServicer(health_pb2_grpc.HealthServicer):
    """grpc.health.v1 for Kubernetes' gRPC probes and clients' health checking: "" is the
    server's readiness, a model name that model's (some version AVAILABLE)."""

    def __init__(self, service: InferenceService) -> None:
        self._service = service

    async def Check(self, request: health_pb2.HealthCheckRequest, context: CallContext
                    ) -> health_pb2.HealthCheckResponse:
        await _check_decoded(request, context)
        try:
            return health_pb2.HealthCheckResponse(status=self._status(request.service))
        except NotFound:
            await context.abort(grpc.StatusCode.NOT_FOUND, status_details(f"unknown service {request.service}"))

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: CallContext
                    ) -> AsyncIterator[health_pb2.HealthCheckResponse]:
        """The status now, then each change, until the client cancels. A model not configured
        is SERVICE_UNKNOWN, not an error (as the protocol says). Once the server drains or has
        failed, the stream says NOT_SERVING and ends, so a stopping server waits on no watch."""
        await _check_decoded(request, context)
        sent = None
        while True:
            last = self._service.draining or self._service.failure is not None  # before the status it implies
            try:
                status = self._status(request.service)
            except NotFound:
                status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
            if status != sent:
                yield health_pb2.HealthCheckResponse(status=status)
                sent = status
            if last:
                return
            await asyncio.sleep(WATCH_PERIOD_S)

    def _status(self, name: str) -> Status:
        """SERVING or NOT_SERVING; NotFound for a model not configured."""
        ready = self._service.model_ready(name) if name else self._service.ready()
        return health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING


async def _check_decoded(request: health_pb2.HealthCheckRequest | Undecodable, context: CallContext) -> None:
    if isinstance(request, Undecodable):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, status_details(request.message))


def new_server(kind: str, options: Sequence[tuple[str, Any]] = ()) -> GrpcServer:
    """An empty server of ``kind`` (``loop`` or ``aio``), on the running event loop. Only the
    loop server imports ``serving.grpc.core_server``, which reads grpc's private cygrpc names at
    import: ``--grpc_server=aio`` runs on grpc's public API alone, even when they have changed."""
    if kind == "loop":
        from serving.grpc.core_server import LoopServer

        return LoopServer(asyncio.get_running_loop(), options)
    if kind == "aio":
        return AioServer(options)
    raise ValueError(f"no gRPC server {kind!r}: loop or aio")


def create_grpc_server(settings: Settings, service: InferenceService,
                       interceptors: Sequence[Interceptor] = ()) -> GrpcServer:
    """The server ``settings.grpc_server`` names, not started, every method behind the
    gateway's own interceptors (``--auth_token_file``), then ``interceptors``. Call it on the
    event loop that runs ``service``: every method runs there."""
    if settings.auth_tokens:
        interceptors = (BearerInterceptor(BearerTokens.from_settings(settings)), *interceptors)
    limit = settings.max_request_bytes
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Clients reconnect every few minutes, so behind a Kubernetes Service (one TCP
        # connection per client) load spreads over new gateway pods as they come.
        ("grpc.max_connection_age_ms", 300_000),
        ("grpc.max_connection_age_grace_ms", 30_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.default_compression_algorithm", _COMPRESSION[settings.grpc_compression].value),
    ]
    server = new_server(settings.grpc_server, options)
    # Not the generated add_*_to_server: undecodable requests get INVALID_ARGUMENT, not UNKNOWN.
    for servicer, descriptor in (
        (PredictionServicer(service), prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"]),
        (ModelServicer(service), model_service_pb2.DESCRIPTOR.services_by_name["ModelService"]),
        (HealthServicer(service), health_pb2.DESCRIPTOR.services_by_name["Health"]),
        (InferenceServicer(service), protos.SERVICE),
    ):
        add_to_server(server, servicer, descriptor, interceptors)
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
