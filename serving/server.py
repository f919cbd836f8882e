"""Process entry: build the core, the REST app and the gRPC server from settings, serve both
(over TLS as ``--ssl_config_file`` and ``--rest_api_ssl`` say), drain on SIGTERM.

On the first SIGTERM (or SIGINT) readiness turns false and new requests are refused with
503 / UNAVAILABLE, while requests already accepted (queued or running) finish; once none is
in flight, or ``drain_timeout_seconds`` has passed, the gRPC server gets ``GRPC_GRACE_S`` to
end its calls (those still running are cancelled: UNAVAILABLE), the listeners close and the
process exits 0. No wait is unbounded: a gRPC server that does not report stopped is left
after its grace and ``GRPC_STOP_MARGIN_S``. A second SIGINT exits at once.

If the gRPC server fails (its ``on_failure``: the loop server's polling thread), the process
can no longer answer gRPC: readiness and gRPC health turn NOT_SERVING at once, the same drain
runs, and the process exits 1, so Kubernetes restarts it. A SIGTERM during that drain (the pod
being deleted) is a first signal: the drain goes on and the process still exits 1.
"""
from __future__ import annotations

import asyncio
import logging
import signal
import socket
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from serving.core.service import InferenceService
from serving.grpc.contract import GrpcServer
from serving.grpc.server import create_grpc_server
from serving.metrics import Metrics
from serving.rest.app import create_app
from serving.runtime.parallelism import apply_to_eager
from serving.settings import Settings
from serving.tls import server_ssl_context

log = logging.getLogger("serving")

GRPC_GRACE_S = 1.0
"""After the drain, how long gRPC calls still running get before they are cancelled."""
GRPC_STOP_MARGIN_S = 2.0
"""How much longer than its grace a gRPC server may take to report it has stopped."""


class DrainingServer(uvicorn.Server):
    """uvicorn's server (REST) with the gRPC server beside it (its calls answered on the same
    event loop), and a drain step between the signal and the shutdown of both. ``exit_code``
    is what the process should end with: 1 once the gRPC server has failed."""

    def __init__(self, config: uvicorn.Config, service: InferenceService, drain_timeout: float,
                 grpc_factory: Callable[[], GrpcServer] | None = None, grpc_where: str = "",
                 metrics_path: str | None = None) -> None:
        """``grpc_where``: the gRPC address, for its start-up line; ``metrics_path``: the
        Prometheus path on the REST port (None: none), for its line."""
        super().__init__(config)
        self._grpc_where = grpc_where
        self._metrics_path = metrics_path
        self._service = service
        self._drain_timeout = drain_timeout
        self._grpc_factory = grpc_factory
        self._grpc: GrpcServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._drain_task: asyncio.Task | None = None
        self._signalled = False  # a signal has started (or joined) the drain
        self.exit_code = 0

    async def serve(self, sockets=None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        if self._grpc_factory is not None:
            self._grpc = self._grpc_factory()  # created on this loop, which answers its calls
            self._grpc.on_failure(self._grpc_failed)
            await self._grpc.start()
            log.info("gRPC API listening on %s (--port)", self._grpc_where)
        try:
            await super().serve(sockets)
        finally:
            await self._stop_grpc(grace=None)

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit:  # uvicorn's exit status 3: the app's start-up failed (logged above)
            raise StartupError("the server could not start (the lines above say why)") from None
        urls = [f"{'https' if self.config.ssl else 'http'}://{_address(sock)}" for sock in sockets or ()]
        for url in urls:
            log.info("REST API listening on %s (--rest_api_port)", url)
        if self._metrics_path and urls:
            log.info("Prometheus metrics at %s%s (--monitoring_config_file)", urls[0], self._metrics_path)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is None or self._signalled:
            super().handle_exit(sig, frame)  # second signal: uvicorn's own (forced) exit
            return
        self._signalled = True  # a drain started by a gRPC failure is not a first signal
        self._loop.call_soon_threadsafe(self._signal_drain, sig)

    def _signal_drain(self, sig: int) -> None:
        if self._drain_task is not None:
            log.info("%s: the drain under way goes on", signal.Signals(sig).name)
        self._start_drain()

    def _start_drain(self) -> None:
        if self._drain_task is None:
            self._drain_task = asyncio.ensure_future(self._drain())

    async def _drain(self) -> None:
        log.info("draining: %d requests in flight, up to %.0f s",
                 self._service.in_flight, self._drain_timeout)
        self._service.begin_drain()
        if await self._service.wait_idle(self._drain_timeout):
            log.info("drained; shutting down")
        else:
            log.warning("drain timeout with %d requests in flight", self._service.in_flight)
        await self._stop_grpc(GRPC_GRACE_S)
        self.should_exit = True

    def _grpc_failed(self, reason: str) -> None:
        log.critical("the gRPC server failed (%s): not ready from now on; draining, then exiting "
                     "with status 1", reason)
        self.exit_code = 1
        self._service.fail("the gRPC server failed")  # the details stay in the log
        self._start_drain()

    async def _stop_grpc(self, grace: float | None) -> None:
        """Stop the gRPC server (once), waiting at most its grace and ``GRPC_STOP_MARGIN_S``."""
        server, self._grpc = self._grpc, None
        if server is None:
            return
        bound = (grace or 0.0) + GRPC_STOP_MARGIN_S
        try:
            await asyncio.wait_for(server.stop(grace), bound)
        except TimeoutError:
            log.error("the gRPC server did not report stopped within %.0f s; going on without it", bound)


def http_protocol(settings: Settings) -> type | str:
    """uvicorn's ``http``: ``OneWriteHttp``, a subclass of uvicorn's internal httptools
    protocol imported only here (``--rest_one_write``), or uvicorn's own."""
    if not settings.rest_one_write:
        return "httptools"
    from serving.rest.one_write import OneWriteHttp

    return OneWriteHttp


def rest_tls_options(settings: Settings) -> dict[str, Any]:
    """uvicorn options for REST over TLS (``--rest_api_ssl``); none otherwise, since TF
    Serving applies ``--ssl_config_file`` to gRPC only and so, by default, does the gateway."""
    if settings.ssl_config is None:
        return {}
    if not settings.rest_api_ssl:
        if settings.port:
            log.info("TLS on the gRPC port; REST is plaintext, as in TF Serving (--rest_api_ssl "
                     "serves it over TLS too)")
        else:
            log.warning("--ssl_config_file has no effect: no gRPC port (--port=0) and REST is "
                        "plaintext without --rest_api_ssl")
        return {}
    context = server_ssl_context(settings.ssl_config)
    return {"ssl_context_factory": lambda _config, _default: context}


class StartupError(Exception):
    """The server cannot start: a port it cannot listen on, an app that failed to start. One
    line (``main`` prints it), exit status 1."""


def bind(host: str, port: int, flag: str) -> list[socket.socket]:
    """Bound, not yet listening, sockets for ``host:port`` (as asyncio's ``create_server``
    binds them: every address ``host`` resolves to, IPv6 ones IPv6-only), so a port in use
    is found before any model loads, and named with its flag."""
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except OSError as error:
        raise StartupError(f"cannot listen on {host}:{port} ({flag}={port}): {error}") from None
    sockets = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
    except OSError as error:
        for sock in sockets:
            sock.close()
        reason = error.strerror or str(error)
        raise StartupError(f"cannot listen on {_host_port(host, port)} ({flag}={port}): {reason}") from None
    return sockets


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _address(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return _host_port(host, port)


def run(settings: Settings) -> None:
    """Serve until signalled. Blocks. Ports are taken first (``StartupError`` if one is
    in use); then models load in the background and each listener logs one line."""
    rest_sockets = bind(settings.host, settings.rest_api_port, "--rest_api_port")
    if settings.port:  # gRPC binds its own socket: only checked here, then released for it
        for sock in bind(settings.host, settings.port, "--port"):
            sock.close()
    apply_to_eager(*settings.op_parallelism)  # before any TensorFlow op: no model loaded yet
    service = InferenceService(settings, Metrics())
    app = create_app(settings, service)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.rest_api_port,
        loop="uvloop",
        http=http_protocol(settings),
        lifespan="on",
        access_log=False,
        log_level="warning",  # its start-up lines say what ours say (one per listener)
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout_seconds)),
        **rest_tls_options(settings),
    )
    grpc_where = _host_port(settings.host, settings.port) + (" over TLS" if settings.ssl_config else "")

    def grpc_factory() -> GrpcServer:
        try:
            return create_grpc_server(settings, service)
        except RuntimeError as error:  # grpcio's "Failed to bind to address ..." (taken since the check)
            raise StartupError(f"cannot listen on {grpc_where} (--port={settings.port}): {error}") from None

    server = DrainingServer(config, service, settings.drain_timeout_seconds,
                            grpc_factory if settings.port else None, grpc_where, settings.metrics_path)
    server.run(sockets=rest_sockets)
    if server.exit_code:
        sys.exit(server.exit_code)
