"""What a gRPC server of the gateway offers, whichever answers (``--grpc_server``).

``LoopServer`` (``serving.grpc.core_server``: grpc's C core polled by one thread of ours) and
``AioServer`` (``serving.grpc.aio_server``: grpc.aio's public API) both implement
``GrpcServer``; methods, servicers and interceptors see a ``CallContext``, a subset of
grpc.aio's ``ServicerContext`` under its names, which both servers give. So the servicers,
the interceptors and ``serving.server.DrainingServer`` never know which server runs.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, NoReturn, Protocol

import grpc

Metadata = Sequence[tuple[str, str | bytes]]
"""gRPC metadata: (key, value) pairs; keys lowercase ASCII, values bytes under ``-bin`` keys."""

Parse = Callable[[bytes], Any]
Serialize = Callable[[Any], bytes]

Refusal = tuple[grpc.StatusCode, str]
"""A call's status (code, details) when it is refused before its message is read."""

Admit = Callable[[Metadata], Refusal | None]
"""A method's admission step (``serving.grpc.interceptors.admission``): given the call's
invocation metadata, None lets the call in, a ``Refusal`` ends it. The server runs it as soon as
the call arrives, before its message is read; it never raises, is cheap and thread-safe (the
loop server runs it on its polling thread)."""

CANCELLED_BY_THE_SERVER = "The method was cancelled in the server"
"""The details of CANCELLED when a method ends cancelled while its call was not (it awaited
something another task cancelled): grpc.aio would send no status, and the client would wait
until its deadline, or forever without one."""

LARGE_REQUEST_BYTES = 1 << 20
"""Requests above this size are parsed on a parser thread, not where calls are dispatched
(the polling thread, or the event loop): a 64 MiB Predict takes 40-170 ms to parse."""


class CallContext(Protocol):
    """One call, as its method sees it."""

    def time_remaining(self) -> float | None:
        """Seconds to the client's deadline; None when it set none."""

    def invocation_metadata(self) -> Metadata | None:
        """The metadata the client sent with the call."""

    async def send_initial_metadata(self, metadata: Metadata) -> None:
        """Send the answer's initial metadata now (at most once, before any answer)."""

    def set_trailing_metadata(self, metadata: Metadata) -> None:
        """Metadata to send with the call's status, whatever the status."""

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        """End the call with ``code`` and ``details`` (raises)."""


Method = Callable[[Any, CallContext], Awaitable[Any] | AsyncIterator[Any]]
"""A coroutine (unary) or an async generator (server streaming): (request, context) -> answer(s)."""


class GrpcServer(Protocol):
    """A gRPC server whose methods run on the event loop it was created on."""

    def add_method(self, path: str, method: Method, parse: Parse, serialize: Serialize,
                   streaming: bool = False, admit: Admit | None = None) -> None:
        """Serve ``path`` (``/package.Service/Method``), before ``start``; ``streaming``: the
        method is an async generator whose answers are sent as a server stream; ``admit``: a
        call it refuses ends with the refusal's status, its message neither read nor parsed."""

    def add_insecure_port(self, address: str) -> int:
        """Listen on ``address``; the port bound (RuntimeError if none could be)."""

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        """As ``add_insecure_port``, over TLS."""

    def on_failure(self, handler: Callable[[str], None]) -> None:
        """Call ``handler(reason)`` on the loop, once, if the server stops serving on its own
        (not through ``stop``): the process can no longer answer gRPC and should end."""

    async def start(self) -> None:
        """Begin accepting calls."""

    async def stop(self, grace: float | None) -> None:
        """Refuse new calls now, cancel those still running after ``grace`` seconds (None: at
        once); returns once every call has ended. A caller bounds the wait itself."""
