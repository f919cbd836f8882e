"""The gRPC server: TF Serving's two services and gRPC health checking, one core; TLS
(mutual with ``client_verify``) when ``--ssl_config_file`` is given, as in TF Serving.

grpc's synchronous server on a thread pool, each call handed to the event loop that runs
the core (``_on_loop``), rather than grpc.aio. grpc.aio accepts one call per round trip
through its poller thread and the loop, so under load calls reached the batcher a few at a
time: measured with ``python -m loadtests.bench_grpc`` (1-row natality Predicts, 64 in
flight, server on one busy core), its batches held about 2.5 rows where REST's held 30, and
a gRPC request cost 3.4-4.6x the server CPU of a REST one; this way, 18 rows and 1.65-1.76x.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from functools import partial
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import model_service_pb2, prediction_service_pb2

from serving.core.service import InferenceService
from serving.errors import NotFound
from serving.grpc.servicers import Method, ModelServicer, PredictionServicer, add_to_server
from serving.settings import Settings, TLSConfig

HANDLER_THREADS = 256
"""Calls handled at once. Each holds a pool thread while the loop answers it, so this bounds
what the batcher can merge; threads start only as calls need them, and calls beyond this
wait in the pool's queue (their deadlines still apply once answered)."""


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


def create_grpc_server(settings: Settings, service: InferenceService) -> grpc.Server:
    """The server, not started. Call it on the event loop that runs ``service``: every
    method runs there."""
    limit = settings.max_request_bytes
    bridge = partial(_on_loop, loop=asyncio.get_running_loop())
    pool = concurrent.futures.ThreadPoolExecutor(HANDLER_THREADS, thread_name_prefix="grpc")
    server = grpc.server(pool, options=[
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
    add_to_server(server, PredictionServicer(service), prediction_service_pb2.DESCRIPTOR.services_by_name[
        "PredictionService"], bridge)
    add_to_server(server, ModelServicer(service), model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
                  bridge)
    add_to_server(server, HealthServicer(service), health_pb2.DESCRIPTOR.services_by_name["Health"], bridge)
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


class _Abort(Exception):
    """A method's ``abort``, carried from the loop back to the call's thread."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _LoopContext:
    """The ``CallContext`` a method gets on the loop, for a call of the synchronous server."""

    def __init__(self, context: grpc.ServicerContext) -> None:
        self._context = context

    def time_remaining(self) -> float | None:
        return self._context.time_remaining()

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise _Abort(code, details)


def _on_loop(method: Method, loop: asyncio.AbstractEventLoop) -> Callable[[Any, grpc.ServicerContext], Any]:
    """A pool-thread handler that runs the coroutine ``method`` on ``loop`` and waits for its
    answer; a call that ends first (client cancelled, deadline passed) cancels it there."""

    def call(request: Any, context: grpc.ServicerContext) -> Any:
        answer = asyncio.run_coroutine_threadsafe(method(request, _LoopContext(context)), loop)
        context.add_callback(answer.cancel)
        try:
            return answer.result()
        except _Abort as abort:
            context.abort(abort.code, abort.details)
        except concurrent.futures.CancelledError:
            context.abort(grpc.StatusCode.CANCELLED, "The call was cancelled")

    return call
