"""The gateway's gRPC interceptor point: code that runs before every gRPC method, whichever
server answers (``--grpc_server=loop|aio``), such as authentication or tracing.

An ``Interceptor`` sees the method's full name (``/package.Service/Method``) and the call's
context (``serving.grpc.contract.CallContext``): it reads the caller's metadata with
``context.invocation_metadata()``, may send metadata back (``await
context.send_initial_metadata(...)``, ``context.set_trailing_metadata(...)``), and refuses the
call by raising a ``ServingError``, whose ``grpc_code`` becomes the call's status (an
``Unauthenticated`` is UNAUTHENTICATED) and its message the details. Interceptors run in
order, on the event loop, after the request has been parsed (within the size limit) and
before the method; ``serving.grpc.servicers.add_to_server`` wraps every method it registers,
so both servers honour them alike. Any other exception escapes as a method's would (UNKNOWN,
logged). With no interceptor, methods are registered as they are.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import grpc

from serving.errors import ServingError
from serving.grpc.contract import CallContext, Method


class Interceptor(Protocol):
    async def intercept(self, method: str, context: CallContext) -> None:
        """Let the call of ``method`` through (return) or refuse it (raise ``ServingError``)."""


def intercepted(method: Method, path: str, interceptors: Sequence[Interceptor], streaming: bool) -> Method:
    """``method`` (a coroutine, or with ``streaming`` an async generator) behind ``interceptors``."""
    if not interceptors:
        return method
    chain = tuple(interceptors)

    async def admit(context: CallContext) -> None:
        for interceptor in chain:
            try:
                await interceptor.intercept(path, context)
            except ServingError as error:
                await context.abort(grpc.StatusCode[error.grpc_code], error.message)

    if streaming:
        async def stream(request: Any, context: CallContext) -> AsyncIterator[Any]:
            await admit(context)
            async with contextlib.aclosing(method(request, context)) as answers:
                async for answer in answers:
                    yield answer

        return stream

    async def unary(request: Any, context: CallContext) -> Any:
        await admit(context)
        return await method(request, context)

    return unary
