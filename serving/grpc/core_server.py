"""A gRPC server whose calls are answered on an asyncio event loop, driven straight from
grpc's C core (``grpc._cython.cygrpc``, the layer both ``grpc.server`` and ``grpc.aio``
are built on) by one polling thread: ``--grpc_server=loop``, the default.

Why not grpc's own servers: measured with ``python -m loadtests.benchmarks.bench_grpc --floor`` (a
no-op unary handler, 64 calls in flight, server pinned to one busy core), ``grpc.server``
costs 0.38-0.45 ms of CPU per call before the handler does anything, ``grpc.aio``
0.42-0.43 ms, and this loop 0.14-0.16 ms (a no-op REST route on uvicorn: 0.10 ms). The C
core itself is cheap, grpc's Python layers are not: the thread-pool server wakes a pool
thread per call and hands each of its completions over through a condition variable, and
a handler that awaits the core's batcher must block that thread on the loop. Here one
thread polls the completion queue (the GIL released while it waits), parses each request
and hands it to the loop with one ``call_soon_threadsafe`` (wake-ups coalesce under
load); the loop runs the method and starts the answer's batch itself. No call holds a
thread. The price is grpc's private Cython layer, the one its own servers use: grpcio is
pinned to the minor CI tests, ``tests/grpc/test_cygrpc_contract.py`` fails when the names
and signatures used here change, and ``--grpc_server=aio`` (``serving.grpc.aio_server``) is
the public fallback with the same behaviour.

What it keeps of grpc's server behaviour (``serving.grpc.contract``): a method's ``abort`` ends
the call with its code and details; an exception that escapes a method ends it UNKNOWN; a
method that ends cancelled while its call was not (it awaited something another task cancelled)
ends it CANCELLED (grpc.aio would leave it open until its deadline; the aio server does the
same as this one); an unknown method gets UNIMPLEMENTED; a method's admission step
(``serving.grpc.contract.Admit``) runs on the polling thread as the call arrives, and a call it
refuses ends with the refusal's status before its message is read; a call the client cancels,
or whose deadline passes, cancels its task; invocation metadata is read, initial and trailing
metadata sent; server-streaming methods (async generators) send one message at a time; channel
options (message size limits, compression, keep-alive, connection age) apply as the C core
applies them; ``stop(grace)`` refuses new calls, lets running ones finish for ``grace``
seconds, then cancels the rest. Requests over ``LARGE_REQUEST_BYTES`` are parsed on a parser
thread: protobuf's upb parser holds the GIL, so this saves no CPU, but a small call waits
behind at most the one parse holding the GIL, never behind a queue of large ones on the polling
thread.

The polling thread fails loudly. A call's own step that raises ends that call (INTERNAL) and
the thread goes on (a parser thread's step too). Anything else that raises in it (accepting a
call, the shutdown branch, the poll itself) marks the server failed: ``on_failure``'s handler
runs on the loop (``serving.server`` then turns readiness and gRPC health to NOT_SERVING and
ends the process non-zero), and the thread keeps polling where it still can, so calls in flight
end and health can still answer.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc
from grpc._cython import cygrpc

from serving.grpc.contract import (
    CANCELLED_BY_THE_SERVER,
    LARGE_REQUEST_BYTES,
    Admit,
    Metadata,
    Method,
    Parse,
    Serialize,
)

log = logging.getLogger(__name__)

_OK = cygrpc.StatusCode.ok
_REQUEST = "request"
_SHUTDOWN = "shutdown"
_NO_DEADLINE = 1e18
"""A deadline later than this (seconds since the epoch) is the C core's "none" (about 9.2e18)."""
_PARSER_THREADS = 2


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Route:
    __slots__ = ("method", "parse", "serialize", "streaming", "admit")

    def __init__(self, method: Method, parse: Parse, serialize: Serialize, streaming: bool,
                 admit: Admit | None) -> None:
        self.method = method
        self.parse = parse
        self.serialize = serialize
        self.streaming = streaming
        self.admit = admit


class Call:
    """One call: the method's context (``serving.grpc.contract.CallContext``), and the steps
    that move it from the polling thread to the loop and back to the C core."""

    __slots__ = ("_call", "_route", "_deadline", "_metadata", "_loop", "_server", "_task", "_cancelled",
                 "_opened", "_trailing", "_writing")

    def __init__(self, call: cygrpc.Call, route: _Route, deadline: float, metadata: Metadata,
                 loop: asyncio.AbstractEventLoop, server: LoopServer) -> None:
        self._call = call
        self._server = server
        self._route = route
        self._deadline = deadline
        self._metadata = metadata
        self._loop = loop
        self._task: asyncio.Task | None = None
        self._cancelled = False
        self._opened = False  # initial metadata sent (or on its way)
        self._trailing: Metadata | None = None
        self._writing: asyncio.Future | None = None  # the send in progress of a stream

    def time_remaining(self) -> float | None:
        """Seconds to the client's deadline; None when it set none (as grpc.aio's)."""
        if self._deadline > _NO_DEADLINE:
            return None
        return max(self._deadline - time.time(), 0.0)

    def invocation_metadata(self) -> Metadata:
        return self._metadata

    async def send_initial_metadata(self, metadata: Metadata) -> None:
        if self._opened:
            raise RuntimeError("initial metadata was already sent")
        self._opened = True
        await self._write((cygrpc.SendInitialMetadataOperation(tuple(metadata), 0),))

    def set_trailing_metadata(self, metadata: Metadata) -> None:
        self._trailing = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise _Abort(code, details)

    # -- on the polling thread (or a parser thread) -------------------------------------

    def _start(self) -> None:
        self._call.start_server_batch((cygrpc.ReceiveMessageOperation(0),), self._received)
        self._call.start_server_batch((cygrpc.ReceiveCloseOnServerOperation(0),), self._closed)

    def _received(self, event: cygrpc.BaseEvent) -> None:
        if not event.success:
            return  # cancelled: ``_closed`` sees it
        message = event.batch_operations[0].message()
        if message is None:  # the client half-closed without its one message
            self._finish(cygrpc.StatusCode.unimplemented, b"A unary call requires exactly one request message.")
        elif len(message) > LARGE_REQUEST_BYTES:
            self._server.parse_aside(self, message)
        else:
            self._parse(message)

    def _parse(self, message: bytes) -> None:
        try:
            request = self._route.parse(message)
        except Exception:  # noqa: BLE001 - a status, as grpc's server gives
            log.exception("could not parse a request")
            self._finish(cygrpc.StatusCode.internal, b"Exception deserializing request!")
            return
        _soon(self._loop, self._run, request)

    def _closed(self, event: cygrpc.BaseEvent) -> None:
        if event.batch_operations[0].cancelled():  # client cancel, deadline, or server stop
            _soon(self._loop, self._cancel)

    def _written(self, event: cygrpc.BaseEvent) -> None:
        _soon(self._loop, self._settle_write, event.success)

    # -- on the loop -----------------------------------------------------------------

    def _run(self, request: Any) -> None:
        if not self._cancelled:
            try:
                work = self._stream(request) if self._route.streaming else self._route.method(request, self)
            except Exception as error:  # noqa: BLE001 - failed before its coroutine existed: UNKNOWN, as a raise
                work = _raising(error)
            self._task = self._loop.create_task(work)
            self._task.add_done_callback(self._answer)

    async def _stream(self, request: Any) -> None:
        async with contextlib.aclosing(self._route.method(request, self)) as answers:
            async for answer in answers:
                await self._write((cygrpc.SendMessageOperation(self._route.serialize(answer), 0),))

    async def _write(self, operations: tuple) -> None:
        """Send ``operations`` (initial metadata first if not yet sent) and wait until the C
        core has taken them: a stream has one write in flight at a time."""
        self._writing = self._loop.create_future()
        if not self._server.send(self._call, (*self._opening(), *operations), self._written):
            raise asyncio.CancelledError  # the server is gone
        if not await self._writing:
            raise asyncio.CancelledError  # the call has ended (cancelled, or past its deadline)

    def _settle_write(self, success: bool) -> None:
        if self._writing is not None and not self._writing.done():
            self._writing.set_result(success)

    def _cancel(self) -> None:
        self._cancelled = True
        if self._task is not None:
            self._task.cancel()

    def _answer(self, task: asyncio.Task) -> None:
        if task.cancelled():
            if not self._cancelled:  # the method ended cancelled on its own: the call is open
                log.warning("a gRPC method ended cancelled while its call was not; the call ends CANCELLED")
                self._finish(cygrpc.StatusCode.cancelled, CANCELLED_BY_THE_SERVER.encode())
            return  # else the call already ended in the C core
        error = task.exception()
        if error is None:
            if self._route.streaming:
                self._finish(_OK, b"")
                return
            try:
                answer = self._route.serialize(task.result())
            except Exception as problem:  # noqa: BLE001 - a status, as grpc's server gives
                log.exception("could not serialize the answer")
                self._finish(cygrpc.StatusCode.internal, f"Failed to serialize response: {problem}".encode())
                return
            self._finish(_OK, b"", cygrpc.SendMessageOperation(answer, 0))
        elif isinstance(error, _Abort):
            self._finish(error.code.value[0], error.details.encode())
        else:
            log.error("a method raised", exc_info=error)
            self._finish(cygrpc.StatusCode.unknown, f"Exception calling application: {error}".encode())

    # -- either -------------------------------------------------------------------------

    def _opening(self) -> tuple:
        """The initial metadata operation if none has been sent: every answer starts with one."""
        if self._opened:
            return ()
        self._opened = True
        return (cygrpc.SendInitialMetadataOperation(None, 0),)

    def _finish(self, code: int, details: bytes, *messages: cygrpc.Operation) -> None:
        self._server.send(self._call, (
            *self._opening(), *messages, cygrpc.SendStatusFromServerOperation(self._trailing, code, details, 0)))


async def _raising(error: Exception) -> NoReturn:
    raise error


def _bound(address: str, port: int) -> int:
    if port == 0:  # the C core's only word for a port it could not bind (as grpc.server raises)
        raise RuntimeError(f"Failed to bind to address {address}")
    return port


def _ignore(_event: cygrpc.BaseEvent) -> None:
    pass


def _refuse(call: cygrpc.Call, code: int, details: bytes) -> None:
    """End ``call`` with ``code`` before its message is read (none ever is)."""
    call.start_server_batch((
        cygrpc.SendInitialMetadataOperation(None, 0),
        cygrpc.ReceiveCloseOnServerOperation(0),
        cygrpc.SendStatusFromServerOperation(None, code, details, 0),
    ), _ignore)


def _soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop has closed: the process is stopping
        pass


class LoopServer:
    """The server (``serving.grpc.contract.GrpcServer``); methods are added with
    ``add_method`` before ``start`` and run on ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, options: Sequence[tuple[str, Any]] = ()) -> None:
        self._loop = loop
        self._queue = cygrpc.CompletionQueue()
        self._server = cygrpc.Server(tuple(options), False)
        self._server.register_completion_queue(self._queue)
        self._routes: dict[bytes, _Route] = {}
        self._parsers = ThreadPoolExecutor(_PARSER_THREADS, thread_name_prefix="grpc_parse")
        self._lock = threading.Lock()
        self._stopping = False
        self._destroyed = False
        self._ended = asyncio.Event()  # set (on the loop) once the server is destroyed
        self._on_failure: Callable[[str], None] | None = None
        self.failure: str | None = None
        """Why the polling thread failed, or None (``on_failure``)."""
        self._thread = threading.Thread(target=self._poll, name="grpc_poll", daemon=True)

    def add_method(self, path: str, method: Method, parse: Parse, serialize: Serialize,
                   streaming: bool = False, admit: Admit | None = None) -> None:
        self._routes[path.encode()] = _Route(method, parse, serialize, streaming, admit)

    def add_insecure_port(self, address: str) -> int:
        return _bound(address, self._server.add_http2_port(address.encode()))

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        return _bound(address, self._server.add_http2_port(address.encode(), credentials._credentials))

    def on_failure(self, handler: Callable[[str], None]) -> None:
        with self._lock:
            self._on_failure = handler
            failure = self.failure
        if failure is not None:
            _soon(self._loop, handler, failure)

    async def start(self) -> None:
        self._server.start()
        self._server.request_call(self._queue, self._queue, _REQUEST)
        self._thread.start()

    async def stop(self, grace: float | None) -> None:
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._server.shutdown(self._queue, _SHUTDOWN)
        if grace is None:
            self._cancel_all()
        else:
            self._loop.call_later(grace, self._cancel_all)
        await self._ended.wait()

    def send(self, call: cygrpc.Call, operations: tuple, tag: Callable[[cygrpc.BaseEvent], None] = _ignore) -> bool:
        """Start ``call``'s batch, unless the server is gone (False): a method that ends after
        its call was cancelled at shutdown must not touch the destroyed C-core server (it
        aborts the process)."""
        with self._lock:
            if self._destroyed:
                return False
            call.start_server_batch(operations, tag)
            return True

    def parse_aside(self, call: Call, message: bytes) -> None:
        """Parse ``call``'s ``message`` on a parser thread (a large request)."""
        self._parsers.submit(self._parse_aside, call, message)

    def _parse_aside(self, call: Call, message: bytes) -> None:
        """On a parser thread, guarded as a call's step on the polling thread is (the
        executor's future would keep the exception, and the call would never end)."""
        try:
            call._parse(message)
        except Exception:  # noqa: BLE001 - one call's step: that call ends, the server goes on
            log.exception("a gRPC call step failed on a parser thread; the call ends INTERNAL")
            self._break(call)

    def _cancel_all(self) -> None:
        with self._lock:
            if not self._destroyed:
                self._server.cancel_all_calls()

    # -- the polling thread ----------------------------------------------------------------

    def _poll(self) -> None:
        """The polling thread: whatever ends it other than the queue's shutdown fails the server."""
        try:
            self._poll_until_shutdown()
        except BaseException as error:  # noqa: BLE001 - the thread ends: no gRPC call is served any more
            self._fail("and ended", error)

    def _poll_until_shutdown(self) -> None:
        while True:
            event = self._queue.poll()
            tag = event.tag
            if event.completion_type == cygrpc.CompletionType.queue_shutdown:
                return
            if tag is _REQUEST:
                try:
                    self._accept(event)
                except Exception as error:  # noqa: BLE001 - new calls may no longer be accepted
                    self._fail("accepting a call", error)
            elif tag is _SHUTDOWN:
                self._destroy()
            elif tag is not None:  # None: the poll's periodic timeout
                try:
                    tag(event)
                except Exception:  # noqa: BLE001 - one call's step: that call ends, the server goes on
                    log.exception("a gRPC call step failed; the call ends INTERNAL")
                    self._break(getattr(tag, "__self__", None))

    def _accept(self, event: cygrpc.BaseEvent) -> None:
        """Ask for the next call, then admit and start this one. What escapes is fatal (the
        next call may not have been asked for); what fails for this call alone ends it INTERNAL."""
        if not event.success:
            return  # the server is shutting down
        with self._lock:
            if not self._stopping:
                self._server.request_call(self._queue, self._queue, _REQUEST)
        try:
            route = self._routes.get(event.call_details.method)
            if route is None:
                _refuse(event.call, cygrpc.StatusCode.unimplemented, b"Method not found!")
                return
            if route.admit is not None:
                refusal = route.admit(event.invocation_metadata)
                if refusal is not None:
                    code, details = refusal
                    _refuse(event.call, code.value[0], details.encode())
                    return
            call = Call(event.call, route, event.call_details.deadline, event.invocation_metadata, self._loop, self)
            call._start()
        except Exception:  # noqa: BLE001 - this call only
            log.exception("could not start a gRPC call; it ends INTERNAL")
            event.call.cancel(cygrpc.StatusCode.internal, "Internal error in the gRPC server")

    def _break(self, call: object) -> None:
        """End ``call`` INTERNAL after one of its steps failed (nothing to end if the step
        was not a call's); if even that fails, the server is failed."""
        if isinstance(call, Call):
            try:
                call._call.cancel(cygrpc.StatusCode.internal, "Internal error in the gRPC server")
            except Exception as error:  # noqa: BLE001
                self._fail("ending a broken call", error)

    def _destroy(self) -> None:
        """Every call has ended after ``stop``: free the C-core server."""
        with self._lock:
            self._server.destroy()
            self._destroyed = True
        self._parsers.shutdown(wait=False)
        self._queue.shutdown()
        _soon(self._loop, self._ended.set)

    def _fail(self, where: str, error: BaseException) -> None:
        reason = f"its polling thread failed {where}: {error!r}"
        log.critical("gRPC server: %s", reason, exc_info=error)
        with self._lock:
            first = self.failure is None
            if first:
                self.failure = reason
            handler = self._on_failure
        if first and handler is not None:
            _soon(self._loop, handler, reason)
