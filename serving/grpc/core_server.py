"""A gRPC server whose calls are answered on an asyncio event loop, driven straight from
grpc's C core (``grpc._cython.cygrpc``, the layer both ``grpc.server`` and ``grpc.aio``
are built on) by one polling thread.

Why not grpc's own servers: measured with ``python -m loadtests.bench_grpc --floor`` (a
no-op unary handler, 64 calls in flight, server pinned to one busy core), ``grpc.server``
costs 0.38-0.45 ms of CPU per call before the handler does anything, ``grpc.aio``
0.42-0.43 ms, and this loop 0.14-0.16 ms (a no-op REST route on uvicorn: 0.10 ms). The C
core itself is cheap, grpc's Python layers are not: the thread-pool server wakes a pool
thread per call and hands each of its completions over through a condition variable, and
a handler that awaits the core's batcher must block that thread on the loop. Here one
thread polls the completion queue (the GIL released while it waits), parses each request
and hands it to the loop with one ``call_soon_threadsafe`` (wake-ups coalesce under
load); the loop runs the method and starts the answer's batch itself. No call holds a
thread. The price is grpc's private Cython layer, the one its own servers use: a grpcio
upgrade must pass ``tests/grpc``.

What it keeps of grpc's server behaviour: a method's ``abort`` ends the call with its code
and details; an exception that escapes a method ends it UNKNOWN; an unknown method gets
UNIMPLEMENTED; a call the client cancels, or whose deadline passes, cancels its task;
channel options (message size limits, keep-alive, connection age) apply as the C core
applies them; ``stop(grace)`` refuses new calls, lets running ones finish for ``grace``
seconds, then cancels the rest, and returns an event set once the server has stopped.
Only unary-unary methods are served.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, NoReturn

import grpc
from grpc._cython import cygrpc

log = logging.getLogger(__name__)

Method = Callable[[Any, "Call"], Awaitable[Any]]
"""A coroutine method: (request, its call) -> response."""

_OK = cygrpc.StatusCode.ok
_REQUEST = "request"
_SHUTDOWN = "shutdown"


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class _Route:
    __slots__ = ("method", "parse", "serialize")

    def __init__(self, method: Method, parse: Callable[[bytes], Any], serialize: Callable[[Any], bytes]) -> None:
        self.method = method
        self.parse = parse
        self.serialize = serialize


class Call:
    """One call: the method's context (``time_remaining``, ``abort``), and the steps that
    move it from the polling thread to the loop and back to the C core."""

    __slots__ = ("_call", "_route", "_deadline", "_loop", "_task", "_cancelled", "_server")

    def __init__(self, call: cygrpc.Call, route: _Route, deadline: float,
                 loop: asyncio.AbstractEventLoop, server: LoopServer) -> None:
        self._call = call
        self._server = server
        self._route = route
        self._deadline = deadline
        self._loop = loop
        self._task: asyncio.Task | None = None
        self._cancelled = False

    def time_remaining(self) -> float:
        """Seconds to the client's deadline (about 9e18 when it set none), as grpc's."""
        return max(self._deadline - time.time(), 0.0)

    async def abort(self, code: grpc.StatusCode, details: str) -> NoReturn:
        raise _Abort(code, details)

    # -- on the polling thread -------------------------------------------------------

    def _start(self) -> None:
        self._call.start_server_batch((cygrpc.ReceiveMessageOperation(0),), self._received)
        self._call.start_server_batch((cygrpc.ReceiveCloseOnServerOperation(0),), self._closed)

    def _received(self, event: cygrpc.BaseEvent) -> None:
        if not event.success:
            return  # cancelled: ``_closed`` sees it
        message = event.batch_operations[0].message()
        if message is None:  # the client half-closed without its one message
            self._status(cygrpc.StatusCode.unimplemented, b"A unary call requires exactly one request message.")
            return
        try:
            request = self._route.parse(message)
        except Exception:  # noqa: BLE001 - a status, as grpc's server gives
            log.exception("could not parse a request")
            self._status(cygrpc.StatusCode.internal, b"Exception deserializing request!")
            return
        _soon(self._loop, self._run, request)

    def _closed(self, event: cygrpc.BaseEvent) -> None:
        if event.batch_operations[0].cancelled():  # client cancel, deadline, or server stop
            _soon(self._loop, self._cancel)

    # -- on the loop -----------------------------------------------------------------

    def _run(self, request: Any) -> None:
        if not self._cancelled:
            self._task = self._loop.create_task(self._route.method(request, self))
            self._task.add_done_callback(self._answer)

    def _cancel(self) -> None:
        self._cancelled = True
        if self._task is not None:
            self._task.cancel()

    def _answer(self, task: asyncio.Task) -> None:
        if task.cancelled():
            return  # the call already ended in the C core
        error = task.exception()
        if error is None:
            try:
                answer = self._route.serialize(task.result())
            except Exception as problem:  # noqa: BLE001 - a status, as grpc's server gives
                log.exception("could not serialize the answer")
                self._status(cygrpc.StatusCode.internal, f"Failed to serialize response: {problem}".encode())
                return
            self._server.send(self._call, (
                cygrpc.SendInitialMetadataOperation(None, 0),
                cygrpc.SendMessageOperation(answer, 0),
                cygrpc.SendStatusFromServerOperation(None, _OK, b"", 0),
            ))
        elif isinstance(error, _Abort):
            self._status(error.code.value[0], error.details.encode())
        else:
            log.error("a method raised", exc_info=error)
            self._status(cygrpc.StatusCode.unknown, f"Exception calling application: {error}".encode())

    def _status(self, code: int, details: bytes) -> None:
        self._server.send(self._call, (
            cygrpc.SendInitialMetadataOperation(None, 0),
            cygrpc.SendStatusFromServerOperation(None, code, details, 0),
        ))


def _bound(address: str, port: int) -> int:
    if port == 0:  # the C core's only word for a port it could not bind (as grpc.server raises)
        raise RuntimeError(f"Failed to bind to address {address}")
    return port


def _ignore(_event: cygrpc.BaseEvent) -> None:
    pass


def _soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: Any) -> None:
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:  # the loop has closed: the process is stopping
        pass


class LoopServer:
    """The server (``start``, ``stop``, ports as ``grpc.Server``); methods are added with
    ``add_method`` before ``start`` and run on ``loop``."""

    def __init__(self, loop: asyncio.AbstractEventLoop, options: Sequence[tuple[str, Any]] = ()) -> None:
        self._loop = loop
        self._queue = cygrpc.CompletionQueue()
        self._server = cygrpc.Server(tuple(options), False)
        self._server.register_completion_queue(self._queue)
        self._routes: dict[bytes, _Route] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="grpc_poll", daemon=True)

    def add_method(self, path: str, method: Method, parse: Callable[[bytes], Any],
                   serialize: Callable[[Any], bytes]) -> None:
        """Serve ``path`` (``/package.Service/Method``) with ``method``."""
        self._routes[path.encode()] = _Route(method, parse, serialize)

    def add_insecure_port(self, address: str) -> int:
        return _bound(address, self._server.add_http2_port(address.encode()))

    def add_secure_port(self, address: str, credentials: grpc.ServerCredentials) -> int:
        return _bound(address, self._server.add_http2_port(address.encode(), credentials._credentials))

    def start(self) -> None:
        self._server.start()
        self._server.request_call(self._queue, self._queue, _REQUEST)
        self._thread.start()

    def stop(self, grace: float | None) -> threading.Event:
        """Refuse new calls now, cancel those still running after ``grace`` seconds (None:
        at once); the event is set once every call has ended."""
        with self._lock:
            if not self._stopping:
                self._stopping = True
                self._server.shutdown(self._queue, _SHUTDOWN)
        if grace is None:
            self._cancel_all()
        else:
            timer = threading.Timer(grace, self._cancel_all)
            timer.daemon = True
            timer.start()
        return self._stopped

    def send(self, call: cygrpc.Call, operations: tuple) -> None:
        """Start ``call``'s answer, unless the server is gone: a method that ends after its
        call was cancelled at shutdown must not touch the destroyed C-core server (it aborts
        the process)."""
        with self._lock:
            if not self._stopped.is_set():
                call.start_server_batch(operations, _ignore)

    def _cancel_all(self) -> None:
        with self._lock:
            if not self._stopped.is_set():
                self._server.cancel_all_calls()

    def _poll(self) -> None:
        while True:
            event = self._queue.poll()
            tag = event.tag
            if tag is _REQUEST:
                self._accept(event)
            elif tag is _SHUTDOWN:  # every call has ended
                with self._lock:
                    self._server.destroy()
                    self._stopped.set()
                self._queue.shutdown()
            elif event.completion_type == cygrpc.CompletionType.queue_shutdown:
                return
            elif tag is not None:  # None: the poll's periodic timeout
                try:
                    tag(event)
                except Exception:  # noqa: BLE001 - the polling thread must survive any call
                    log.exception("gRPC call step failed")

    def _accept(self, event: cygrpc.BaseEvent) -> None:
        if not event.success:
            return  # the server is shutting down
        with self._lock:
            if not self._stopping:
                self._server.request_call(self._queue, self._queue, _REQUEST)
        route = self._routes.get(event.call_details.method)
        if route is None:
            event.call.start_server_batch((
                cygrpc.SendInitialMetadataOperation(None, 0),
                cygrpc.ReceiveCloseOnServerOperation(0),
                cygrpc.SendStatusFromServerOperation(None, cygrpc.StatusCode.unimplemented, b"Method not found!", 0),
            ), _ignore)
            return
        Call(event.call, route, event.call_details.deadline, self._loop, self)._start()
