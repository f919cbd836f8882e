"""The gateway's gRPC server contract (``serving.grpc.contract``) on both servers: tiny
coroutine methods on a loop in a thread and a real grpc client on loopback, no model."""
from __future__ import annotations

import asyncio
import concurrent.futures
import socket
import threading
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from serving.grpc.contract import CANCELLED_BY_THE_SERVER, LARGE_REQUEST_BYTES, GrpcServer
from serving.grpc.server import new_server
from tests.conftest import wait_until
from tests.grpc.conftest import on_loop

ECHO = "/test.Service/Echo"
FAIL = "/test.Service/Fail"
ABORT = "/test.Service/Abort"
HOLD = "/test.Service/Hold"
BIG = "/test.Service/Big"
METADATA = "/test.Service/Metadata"
COUNT = "/test.Service/Count"
FOREVER = "/test.Service/Forever"
CANCELLED = "/test.Service/Cancelled"
CANCELLED_STREAM = "/test.Service/CancelledStream"
LIMIT = 4096


class Methods:
    """What the server runs, and what the tests watch: calls held until ``release`` is set
    (from the loop), the ones that were cancelled, streams that were closed."""

    def __init__(self) -> None:
        self.held = 0
        self.cancelled = 0
        self.closed_streams = 0
        self.release: asyncio.Event | None = None
        self.deadlines: list[float | None] = []

    async def echo(self, request: bytes, call) -> bytes:
        self.deadlines.append(call.time_remaining())
        return b"echo:" + request

    async def fail(self, request: bytes, call) -> bytes:
        raise RuntimeError("broken")

    async def abort(self, request: bytes, call) -> bytes:
        call.set_trailing_metadata((("x-why", "test"),))
        await call.abort(grpc.StatusCode.INVALID_ARGUMENT, "bad " + request.decode())

    async def hold(self, request: bytes, call) -> bytes:
        self.release = self.release or asyncio.Event()
        self.held += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return b"released"

    async def big(self, request: bytes, call) -> bytes:
        return b"z" * (LIMIT + 1)

    async def metadata(self, request: bytes, call) -> bytes:
        got = dict(call.invocation_metadata())
        await call.send_initial_metadata((("x-initial", got["x-in"]),))
        call.set_trailing_metadata((("x-trailing", "t"), ("x-raw-bin", got["x-in-bin"])))
        return b"ok"

    async def count(self, request: bytes, call) -> AsyncIterator[bytes]:
        for i in range(int(request)):
            yield str(i).encode()
        if int(request) == 2:
            await call.abort(grpc.StatusCode.OUT_OF_RANGE, "two is too few")

    async def self_cancelled(self, request: bytes, call) -> bytes:
        await cancelled_by_another()
        return b"never"

    async def self_cancelled_stream(self, request: bytes, call) -> AsyncIterator[bytes]:
        yield b"first"
        await cancelled_by_another()

    async def forever(self, request: bytes, call) -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await asyncio.Event().wait()  # until the call ends
        finally:
            self.closed_streams += 1


async def cancelled_by_another() -> None:
    """Await a future something else cancels: the method ends cancelled, its call was not."""
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.cancel)
    await future


def serve(loop: asyncio.AbstractEventLoop, kind: str, routes: dict[str, tuple], options=()) -> tuple[GrpcServer, int]:
    """A started server of ``kind`` with ``routes`` (path: (method, parse, streaming))."""
    async def make() -> GrpcServer:
        return new_server(kind, options)

    server = on_loop(loop, make())
    for path, (method, parse, streaming) in routes.items():
        server.add_method(path, method, parse, bytes, streaming)
    port = server.add_insecure_port("127.0.0.1:0")
    on_loop(loop, server.start())
    return server, port


@pytest.fixture
def served(loop, grpc_server) -> Iterator[tuple[GrpcServer, Methods, grpc.Channel]]:
    methods = Methods()
    routes = {ECHO: (methods.echo, bytes, False), FAIL: (methods.fail, bytes, False),
              ABORT: (methods.abort, bytes, False), HOLD: (methods.hold, bytes, False),
              BIG: (methods.big, bytes, False), METADATA: (methods.metadata, bytes, False),
              COUNT: (methods.count, bytes, True), FOREVER: (methods.forever, bytes, True),
              CANCELLED: (methods.self_cancelled, bytes, False),
              CANCELLED_STREAM: (methods.self_cancelled_stream, bytes, True)}
    server, port = serve(loop, grpc_server, routes, [("grpc.max_receive_message_length", LIMIT),
                                                      ("grpc.max_send_message_length", LIMIT)])
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield server, methods, channel
    on_loop(loop, server.stop(None))


def call(channel: grpc.Channel, path: str, request: bytes = b"x", **kwargs) -> bytes:
    return channel.unary_unary(path)(request, **kwargs)


def refused(channel: grpc.Channel, path: str, request: bytes = b"x", **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call(channel, path, request, **kwargs)
    return error.value


def code_of(channel: grpc.Channel, path: str, request: bytes = b"x", **kwargs) -> tuple[grpc.StatusCode, str]:
    error = refused(channel, path, request, **kwargs)
    return error.code(), error.details()


def release(loop: asyncio.AbstractEventLoop, methods: Methods) -> None:
    loop.call_soon_threadsafe(lambda: methods.release.set())


def begin_stop(loop: asyncio.AbstractEventLoop, server: GrpcServer, grace: float) -> concurrent.futures.Future:
    """``server.stop(grace)`` on the loop, returned once it refuses new calls (its first step
    has run); the future is done once the server has stopped."""
    refusing = threading.Event()

    async def stop() -> None:
        stopping = asyncio.ensure_future(server.stop(grace))
        await asyncio.sleep(0)  # the stop's first step runs: the server shuts its door
        refusing.set()
        await stopping

    stopped = asyncio.run_coroutine_threadsafe(stop(), loop)
    assert refusing.wait(10)
    return stopped


def test_answers_on_the_loop_and_sees_the_deadline_or_none(served):
    _, methods, channel = served
    assert call(channel, ECHO, b"hi", timeout=30) == b"echo:hi"
    assert 25 < methods.deadlines[-1] < 31  # the deadline crosses clocks: a little slack above 30 s
    assert call(channel, ECHO, b"again") == b"echo:again"
    assert methods.deadlines[-1] is None  # no deadline: None, as grpc.aio says it


def test_abort_gives_its_code_details_and_trailing_metadata(served):
    _, _, channel = served
    error = refused(channel, ABORT, b"input")
    assert (error.code(), error.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "bad input")
    assert ("x-why", "test") in error.trailing_metadata()


def test_an_escaped_exception_is_unknown(served):
    _, _, channel = served
    code, details = code_of(channel, FAIL)
    assert code == grpc.StatusCode.UNKNOWN and "broken" in details


def test_unknown_method_is_unimplemented(served):
    _, _, channel = served
    assert code_of(channel, "/test.Service/Nope")[0] == grpc.StatusCode.UNIMPLEMENTED


def test_a_request_over_the_receive_limit_is_resource_exhausted(served):
    _, _, channel = served
    assert code_of(channel, ECHO, b"x" * (LIMIT + 1))[0] == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_an_answer_over_the_send_limit_is_resource_exhausted(served):
    _, _, channel = served
    code, details = code_of(channel, BIG)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details


def test_metadata_is_read_and_sent_both_ways(served):
    _, _, channel = served
    answer, done = channel.unary_unary(METADATA).with_call(
        b"x", metadata=(("x-in", "hello"), ("x-in-bin", b"\x00\xff")), timeout=10)
    assert answer == b"ok"
    assert ("x-initial", "hello") in done.initial_metadata()
    assert ("x-trailing", "t") in done.trailing_metadata()
    assert ("x-raw-bin", b"\x00\xff") in done.trailing_metadata()


def test_a_server_stream_sends_each_answer_then_its_status(served):
    _, _, channel = served
    stream = channel.unary_stream(COUNT)
    assert list(stream(b"3", timeout=10)) == [b"0", b"1", b"2"]
    assert list(stream(b"0", timeout=10)) == []
    answers = stream(b"2", timeout=10)
    assert next(answers) == b"0" and next(answers) == b"1"
    with pytest.raises(grpc.RpcError) as error:
        next(answers)
    assert error.value.code() == grpc.StatusCode.OUT_OF_RANGE and error.value.details() == "two is too few"


def test_a_client_cancel_closes_the_stream(served):
    _, methods, channel = served
    answers = channel.unary_stream(FOREVER)(b"x", timeout=30)
    assert next(answers) == b"first"
    answers.cancel()
    wait_until(lambda: methods.closed_streams == 1, timeout=10, what="the stream to be closed")


def test_a_method_ending_cancelled_on_its_own_ends_its_call_cancelled(served):
    """Not left open until the client's deadline (grpc.aio sends no status for it)."""
    _, _, channel = served
    assert code_of(channel, CANCELLED, timeout=20) == (grpc.StatusCode.CANCELLED, CANCELLED_BY_THE_SERVER)
    answers = channel.unary_stream(CANCELLED_STREAM)(b"x", timeout=20)
    assert next(answers) == b"first"
    with pytest.raises(grpc.RpcError) as error:
        next(answers)
    assert (error.value.code(), error.value.details()) == (grpc.StatusCode.CANCELLED, CANCELLED_BY_THE_SERVER)
    assert call(channel, ECHO, b"after", timeout=10) == b"echo:after"


def test_client_cancel_cancels_the_method(served):
    _, methods, channel = served
    future = channel.unary_unary(HOLD).future(b"x")
    wait_until(lambda: methods.held == 1, timeout=10, what="the call to be held")
    future.cancel()
    wait_until(lambda: methods.cancelled == 1, timeout=10, what="the method to be cancelled")


def test_passed_deadline_cancels_the_method(served):
    _, methods, channel = served
    assert code_of(channel, HOLD, timeout=0.5)[0] == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_until(lambda: methods.cancelled == 1, timeout=10, what="the method to be cancelled")


def test_stop_lets_running_calls_finish_within_grace_and_refuses_new_ones(served, loop):
    server, methods, channel = served
    held = channel.unary_unary(HOLD).future(b"x")
    wait_until(lambda: methods.held == 1, timeout=10, what="the call to be held")
    stopped = begin_stop(loop, server, grace=30)
    # Refused: UNAVAILABLE once the client has the server's GOAWAY (it reconnects and is
    # refused); a call sent on the old connection before the GOAWAY reached the client is
    # cancelled by the C core instead (seen once in 5 clones). Either way it never runs.
    code, details = code_of(channel, ECHO, timeout=5)
    assert code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED), (code, details)
    assert methods.deadlines == []
    assert not stopped.done()
    release(loop, methods)
    assert held.result(timeout=10) == b"released"
    stopped.result(timeout=10)


def test_stop_without_grace_cancels_running_calls_and_streams_as_unavailable(served, loop):
    server, methods, channel = served
    held = channel.unary_unary(HOLD).future(b"x")
    stream = channel.unary_stream(FOREVER)(b"x", timeout=30)
    assert next(stream) == b"first"
    wait_until(lambda: methods.held == 1, timeout=10, what="the call to be held")
    on_loop(loop, server.stop(None))
    with pytest.raises(grpc.RpcError) as error:
        held.result(timeout=10)
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError):
        next(stream)
    wait_until(lambda: methods.cancelled == 1 and methods.closed_streams == 1, timeout=10,
               what="the method cancelled and the stream closed")


def test_a_port_it_cannot_bind_fails_loudly(loop, grpc_server):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()

    async def make() -> GrpcServer:
        return new_server(grpc_server)

    server = on_loop(loop, make())
    with taken, pytest.raises(RuntimeError, match="Failed to bind"):
        server.add_insecure_port(f"127.0.0.1:{taken.getsockname()[1]}")


class BlockingParse:
    """A request parser that holds large requests until ``release`` is set, and notes the
    thread each request was parsed on."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.release = threading.Event()
        self.threads: dict[int, str] = {}

    def __call__(self, data: bytes) -> bytes:
        self.threads[len(data)] = threading.current_thread().name
        if len(data) > LARGE_REQUEST_BYTES:
            self.holding.set()
            assert self.release.wait(60), "the test never released the large request"
        return data


def test_a_large_request_is_parsed_aside_while_a_small_call_is_answered(loop, grpc_server):
    """A large request held in its parse must not hold back a small call that comes after it."""
    parse = BlockingParse()

    async def size(request: bytes, call) -> bytes:
        return str(len(request)).encode()

    server, port = serve(loop, grpc_server, {ECHO: (size, parse, False)},
                         [("grpc.max_receive_message_length", 4 * LARGE_REQUEST_BYTES)])
    large = 2 * LARGE_REQUEST_BYTES
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            pending = channel.unary_unary(ECHO).future(b"L" * large, timeout=60)
            assert parse.holding.wait(30), "the large request was never parsed"
            assert call(channel, ECHO, b"small", timeout=30) == b"5"  # answered while the large one waits
            assert not pending.done()
            parse.release.set()
            assert pending.result(timeout=30) == str(large).encode()
        assert parse.threads[large].startswith("grpc_parse"), parse.threads
    finally:
        parse.release.set()
        on_loop(loop, server.stop(None))


class CountingParse:
    """A request parser that counts the requests it parsed (from any thread)."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, data: bytes) -> bytes:
        self.sizes.append(len(data))
        return data


def let_in_with_pass(metadata) -> tuple[grpc.StatusCode, str] | None:
    """An admission step (``serving.grpc.contract.Admit``): in with ``x-pass: yes``."""
    if ("x-pass", "yes") in tuple(metadata or ()):
        return None
    return grpc.StatusCode.PERMISSION_DENIED, "no pass"


def test_an_admission_refusal_ends_the_call_before_its_message_is_read(loop, grpc_server):
    parse = CountingParse()

    async def size(request: bytes, call) -> bytes:
        return str(len(request)).encode()

    async def make() -> GrpcServer:
        return new_server(grpc_server, [("grpc.max_receive_message_length", 16 << 20)])

    server = on_loop(loop, make())
    server.add_method(ECHO, size, parse, bytes, admit=let_in_with_pass)
    server.add_method(COUNT, Methods().count, parse, bytes, True, admit=let_in_with_pass)
    port = server.add_insecure_port("127.0.0.1:0")
    on_loop(loop, server.start())
    large = b"L" * (8 << 20)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            for _ in range(3):
                assert code_of(channel, ECHO, large, timeout=30) == (grpc.StatusCode.PERMISSION_DENIED, "no pass")
            with pytest.raises(grpc.RpcError) as error:
                list(channel.unary_stream(COUNT)(b"3", timeout=30))
            assert (error.value.code(), error.value.details()) == (grpc.StatusCode.PERMISSION_DENIED, "no pass")
            assert parse.sizes == []  # refused unread
            let_in = (("x-pass", "yes"),)
            assert call(channel, ECHO, large, metadata=let_in, timeout=30) == str(len(large)).encode()
            assert list(channel.unary_stream(COUNT)(b"3", metadata=let_in, timeout=30)) == [b"0", b"1", b"2"]
            assert parse.sizes == [len(large), 1]  # what is let in is parsed
    finally:
        on_loop(loop, server.stop(None))
