"""The gateway's gRPC interceptor point: code that runs before every gRPC method, whichever
server answers (``--grpc_server=loop|aio``), such as authentication or tracing.

An interceptor has one step or both, in two stages of a call:

- ``admit(method, metadata)``, as soon as the call arrives, before its message is read: it sees
  the method's full name (``/package.Service/Method``) and the caller's invocation metadata,
  and refuses the call by raising a ``ServingError``. So a caller it refuses cannot make the
  server read or parse a message (up to ``--max_request_bytes``). It must be synchronous,
  cheap and thread-safe: the loop server runs it on its polling thread. Authentication
  (``serving.grpc.auth``) is one.
- ``intercept(method, context)``, on the event loop, after the request has been parsed (within
  the size limit) and before the method: it sees the call's context
  (``serving.grpc.contract.CallContext``), may send metadata back (``await
  context.send_initial_metadata(...)``, ``context.set_trailing_metadata(...)``), and refuses
  the call by raising a ``ServingError``.

A refusal's ``grpc_code`` becomes the call's status (an ``Unauthenticated`` is UNAUTHENTICATED)
and its message the details. Interceptors run in order, every ``admit`` before any
``intercept``; ``serving.grpc.servicers.add_to_server`` puts every method it registers behind
them, so both servers honour them alike. Any other exception ends the call as a method's
would (UNKNOWN, logged). With no interceptor, methods are registered as they are.
"""
from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

import grpc

from serving.errors import ServingError
from serving.grpc.contract import Admit, CallContext, Metadata, Method, Refusal

log = logging.getLogger(__name__)


class Admission(Protocol):
    def admit(self, method: str, metadata: Metadata) -> None:
        """Let the call of ``method`` in (return) or refuse it (raise ``ServingError``)."""


class Interception(Protocol):
    async def intercept(self, method: str, context: CallContext) -> None:
        """Let the call of ``method`` through (return) or refuse it (raise ``ServingError``)."""


Interceptor = Admission | Interception
"""An interceptor: a class with ``admit``, ``intercept``, or both."""


def admission(path: str, interceptors: Sequence[Interceptor]) -> Admit | None:
    """The admission step of ``path``'s calls (``serving.grpc.contract.Admit``): each
    interceptor's ``admit`` in order; None if none has one."""
    steps = tuple(interceptor.admit for interceptor in interceptors if hasattr(interceptor, "admit"))
    if not steps:
        return None

    def admit(metadata: Metadata) -> Refusal | None:
        try:
            for step in steps:
                step(path, metadata)
        except ServingError as error:
            return grpc.StatusCode[error.grpc_code], error.message
        except Exception as error:  # noqa: BLE001 - a status, as a method's exception gives
            log.exception("an interceptor's admit step raised for %s", path)
            return grpc.StatusCode.UNKNOWN, f"Exception calling application: {error}"
        return None

    return admit


def intercepted(method: Method, path: str, interceptors: Sequence[Interceptor], streaming: bool) -> Method:
    """``method`` (a coroutine, or with ``streaming`` an async generator) behind the
    ``intercept`` steps of ``interceptors``."""
    chain = tuple(interceptor for interceptor in interceptors if hasattr(interceptor, "intercept"))
    if not chain:
        return method

    async def through(context: CallContext) -> None:
        for interceptor in chain:
            try:
                await interceptor.intercept(path, context)
            except ServingError as error:
                await context.abort(grpc.StatusCode[error.grpc_code], error.message)

    if streaming:
        async def stream(request: Any, context: CallContext) -> AsyncIterator[Any]:
            await through(context)
            async with contextlib.aclosing(method(request, context)) as answers:
                async for answer in answers:
                    yield answer

        return stream

    async def unary(request: Any, context: CallContext) -> Any:
        await through(context)
        return await method(request, context)

    return unary
