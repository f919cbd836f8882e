"""``--grpc_server=aio``: grpc.aio's server behind the gateway's ``GrpcServer`` contract
(``serving.grpc.contract``), on grpc's public API only: the fallback to ``LoopServer`` and
its twin in every test of ``tests/grpc``.

It runs the same methods on the same event loop as REST (under uvloop in the process), but
grpc.aio's per-call Python work costs more CPU: ``make bench-grpc`` measures both. Requests
arrive as bytes and are parsed here, those over ``LARGE_REQUEST_BYTES`` on a parser thread,
so a large request does not hold the event loop (where grpc.aio would parse it). A method's
admission step runs in a ``grpc.aio.ServerInterceptor``, before grpc.aio reads the message: a
refused call gets a handler that reads none and aborts. A method that ends cancelled while its
call was not ends the call CANCELLED, as on the loop server (grpc.aio would send no status). If
grpc.aio's server ends on its own (its serving task crashed), ``on_failure``'s handler runs.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc

from serving.grpc.contract import (
    CANCELLED_BY_THE_SERVER,
    LARGE_REQUEST_BYTES,
    Admit,
    CallContext,
    Method,
    Parse,
    Refusal,
    Serialize,
)

log = logging.getLogger(__name__)

_PARSER_THREADS = 2


class AioServer:
    """The server; create it on the event loop its methods are to run on."""

    def __init__(self, options: Sequence[tuple[str, Any]] = ()) -> None:
        self._admits: dict[str, Admit] = {}
        self._server = grpc.aio.server(options=tuple(options), interceptors=(_Admission(self._admits),))
        self._services: dict[str, dict[str, grpc.RpcMethodHandler]] = {}
        self._parsers = ThreadPoolExecutor(_PARSER_THREADS, thread_name_prefix="grpc_parse")
        self._stopping = False
        self._on_failure: Callable[[str], None] | None = None
        self._watch: asyncio.Task | None = None

    def add_method(self, path: str, method: Method, parse: Parse, serialize: Serialize,
                   streaming: bool = False, admit: Admit | None = None) -> None:
        _, service, name = path.split("/")
        if admit is not None:
            self._admits[path] = admit
        behaviour = self._streaming(method, parse) if streaming else self._unary(method, parse)
        make = grpc.unary_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
        self._services.setdefault(service, {})[name] = make(behaviour, response_serializer=serialize)

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        return self._server.add_secure_port(address, credentials)

    def on_failure(self, handler: Callable[[str], None]) -> None:
        self._on_failure = handler

    async def start(self) -> None:
        for service, handlers in self._services.items():
            self._server.add_registered_method_handlers(service, handlers)
        await self._server.start()
        self._watch = asyncio.create_task(self._watch_termination())

    async def stop(self, grace: float | None) -> None:
        self._stopping = True
        await self._server.stop(grace)
        self._parsers.shutdown(wait=False)

    async def _watch_termination(self) -> None:
        await self._server.wait_for_termination()
        if not self._stopping:
            reason = "grpc.aio's server stopped on its own"
            log.critical("gRPC server: %s", reason)
            if self._on_failure is not None:
                self._on_failure(reason)

    async def _parse(self, parse: Parse, data: bytes, context: CallContext) -> Any:
        try:
            if len(data) > LARGE_REQUEST_BYTES:
                return await asyncio.get_running_loop().run_in_executor(self._parsers, parse, data)
            return parse(data)
        except Exception:  # noqa: BLE001 - a status, as grpc's server gives
            log.exception("could not parse a request")
            await context.abort(grpc.StatusCode.INTERNAL, "Exception deserializing request!")

    def _unary(self, method: Method, parse: Parse) -> Callable[[bytes, CallContext], Any]:
        async def unary(data: bytes, context: CallContext) -> Any:
            async with _cancelled_on_its_own(context):
                return await method(await self._parse(parse, data, context), context)

        return unary

    def _streaming(self, method: Method, parse: Parse) -> Callable[[bytes, CallContext], AsyncIterator[Any]]:
        async def stream(data: bytes, context: CallContext) -> AsyncIterator[Any]:
            async with _cancelled_on_its_own(context), \
                    contextlib.aclosing(method(await self._parse(parse, data, context), context)) as answers:
                async for answer in answers:
                    yield answer

        return stream


@contextlib.asynccontextmanager
async def _cancelled_on_its_own(context: CallContext) -> AsyncIterator[None]:
    """End the call CANCELLED if the method ends cancelled while grpc.aio did not cancel it (it
    awaited something another task cancelled): grpc.aio would send no status for it, and the
    client would wait until its deadline. A cancel by grpc.aio (client cancel, deadline, stop)
    is a cancel request on the call's task, which ``cancelling()`` counts."""
    try:
        yield
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning("a gRPC method ended cancelled while its call was not; the call ends CANCELLED")
        await context.abort(grpc.StatusCode.CANCELLED, CANCELLED_BY_THE_SERVER)


class _Admission(grpc.aio.ServerInterceptor):
    """Runs each method's admission step as its call arrives: grpc.aio asks its interceptors
    for the call's handler before it reads the message."""

    def __init__(self, admits: dict[str, Admit]) -> None:
        self._admits = admits

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
            details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        admit = self._admits.get(details.method)
        if admit is not None:
            refusal = admit(details.invocation_metadata)
            if refusal is not None:
                return _refusing(refusal)
        return await continuation(details)


def _refusing(refusal: Refusal) -> grpc.RpcMethodHandler:
    """A handler that ends the call with ``refusal``: a request-streaming one, which reads
    messages only when asked, and is never asked."""
    code, details = refusal

    async def refuse(_requests: AsyncIterator[bytes], context: CallContext) -> None:
        await context.abort(code, details)

    return grpc.stream_unary_rpc_method_handler(refuse)
