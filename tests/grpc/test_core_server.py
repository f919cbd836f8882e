"""``LoopServer`` alone (``--grpc_server=loop``): its polling thread's guard and its care for
the destroyed C-core server. Faults are injected by replacing one of the server's steps."""
from __future__ import annotations

import asyncio
import threading

import grpc
import pytest

from serving.grpc import core_server
from serving.grpc.contract import LARGE_REQUEST_BYTES
from serving.grpc.core_server import Call, LoopServer
from tests.conftest import wait_until
from tests.grpc.conftest import on_loop

ECHO = "/test.Service/Echo"
HOLD = "/test.Service/Hold"


class Failures:
    """``on_failure``'s handler: the reasons it was called with, and the thread it ran on."""

    def __init__(self) -> None:
        self.reasons: list[str] = []
        self.threads: list[str] = []

    def __call__(self, reason: str) -> None:
        self.reasons.append(reason)
        self.threads.append(threading.current_thread().name)


async def echo(request: bytes, call) -> bytes:
    return b"echo:" + request


def started(loop: asyncio.AbstractEventLoop, **routes) -> tuple[LoopServer, int, Failures]:
    server = LoopServer(loop)
    server.add_method(ECHO, echo, bytes, bytes)
    for path, method in routes.items():
        server.add_method(path, method, bytes, bytes)
    failures = Failures()
    server.on_failure(failures)
    port = server.add_insecure_port("127.0.0.1:0")
    on_loop(loop, server.start())
    return server, port, failures


def test_a_failing_call_step_ends_that_call_internal_and_the_server_goes_on(loop, monkeypatch):
    server, port, failures = started(loop)
    received = Call._received

    def broken_for_poison(self, event):
        if event.success and event.batch_operations[0].message() == b"poison":
            raise RuntimeError("injected step fault")
        received(self, event)

    monkeypatch.setattr(Call, "_received", broken_for_poison)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.RpcError) as error:
            channel.unary_unary(ECHO)(b"poison", timeout=10)
        assert error.value.code() == grpc.StatusCode.INTERNAL
        assert channel.unary_unary(ECHO)(b"fine", timeout=10) == b"echo:fine"
    assert failures.reasons == [] and server.failure is None
    on_loop(loop, server.stop(None))


def on_a_parser_thread() -> bool:
    return threading.current_thread().name.startswith("grpc_parse")


@pytest.mark.parametrize("step", ["_finish", "_soon"])
def test_a_failing_call_step_on_a_parser_thread_ends_that_call_internal(loop, monkeypatch, step):
    """A large request is parsed aside; a step that raises there (ending the call after its
    parse failed, or handing it to the loop) ends the call INTERNAL instead of leaving it open
    until its deadline, and the server goes on."""
    def parse(data: bytes) -> bytes:
        if on_a_parser_thread() and step == "_finish":
            raise ValueError("injected parse fault")  # the call is then ended with _finish
        return data

    def broken(original):
        def step_(*args):
            if on_a_parser_thread():
                raise RuntimeError(f"injected {step} fault")
            return original(*args)

        return step_

    if step == "_finish":
        monkeypatch.setattr(Call, "_finish", broken(Call._finish))
    else:
        monkeypatch.setattr(core_server, "_soon", broken(core_server._soon))
    server = LoopServer(loop, [("grpc.max_receive_message_length", 4 * LARGE_REQUEST_BYTES)])
    server.add_method(ECHO, echo, parse, bytes)
    failures = Failures()
    server.on_failure(failures)
    port = server.add_insecure_port("127.0.0.1:0")
    on_loop(loop, server.start())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.RpcError) as error:
            channel.unary_unary(ECHO)(b"L" * (2 * LARGE_REQUEST_BYTES), timeout=20)
        assert error.value.code() == grpc.StatusCode.INTERNAL, error.value.details()
        assert channel.unary_unary(ECHO)(b"fine", timeout=10) == b"echo:fine"
    assert failures.reasons == [] and server.failure is None
    on_loop(loop, server.stop(None))


def test_an_accept_fault_fails_the_server_once_and_calls_in_flight_still_end(loop):
    release = threading.Event()

    async def hold(request: bytes, call) -> bytes:
        await asyncio.get_running_loop().run_in_executor(None, release.wait, 30)
        return b"held"

    server, port, failures = started(loop, **{HOLD: hold})
    accept = server._accept

    def faulty(event):
        accept(event)
        if event.success and event.call_details.method == b"/test.Fault/Inject":
            raise RuntimeError("injected accept fault")

    server._accept = faulty
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        held = channel.unary_unary(HOLD).future(b"x", timeout=30)
        for _ in range(2):  # the second fault is not reported again
            with pytest.raises(grpc.RpcError):
                channel.unary_unary("/test.Fault/Inject")(b"x", timeout=10)
        wait_until(lambda: failures.reasons, timeout=10, what="the failure to be reported")
        assert channel.unary_unary(ECHO)(b"after", timeout=10) == b"echo:after"  # the thread lives on
        release.set()
        assert held.result(timeout=10) == b"held"
    assert len(failures.reasons) == 1 and "injected accept fault" in failures.reasons[0]
    assert "accepting a call" in failures.reasons[0] and failures.threads == ["loop-thread"]
    on_loop(loop, server.stop(None))


def test_a_fault_in_the_shutdown_branch_fails_the_server_and_stop_never_reports(loop):
    server, port, failures = started(loop)

    def faulty() -> None:
        raise RuntimeError("injected shutdown fault")

    server._destroy = faulty
    with pytest.raises(TimeoutError):
        on_loop(loop, asyncio.wait_for(server.stop(None), 1.0))  # a caller bounds its wait
    wait_until(lambda: failures.reasons, timeout=10, what="the failure to be reported")
    assert "injected shutdown fault" in failures.reasons[0] and "ended" in failures.reasons[0]


def test_a_method_ending_after_the_server_is_destroyed_leaves_it_alone(loop):
    """A method that outlives the cancel of its call (at shutdown) ends after the C-core
    server is destroyed: its answer must not be started (that aborted the whole process)."""
    started_, finish, ended = threading.Event(), threading.Event(), threading.Event()

    async def stubborn(request: bytes, call) -> bytes:
        started_.set()
        while not finish.is_set():
            try:
                await asyncio.sleep(0.005)
            except asyncio.CancelledError:
                continue  # outlives the cancel
        ended.set()
        return b"late"

    server, port, _ = started(loop, **{HOLD: stubborn})
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        pending = channel.unary_unary(HOLD).future(b"x")
        wait_until(started_.is_set, timeout=10, what="the method running")
        on_loop(loop, server.stop(None))  # the call cancelled, the server destroyed
        finish.set()
        wait_until(ended.is_set, timeout=10, what="the method ending after the server")

        async def barrier() -> None:
            pass

        for _ in range(3):  # the loop has run the answer's callback by now
            on_loop(loop, barrier())
        with pytest.raises(grpc.RpcError):
            pending.result(timeout=10)


def test_a_method_that_fails_before_its_coroutine_exists_ends_unknown(loop):
    """A method that is not ``async`` (or cannot be called) raises when called, before there
    is a task: the call still ends UNKNOWN, as grpc.aio ends it, not at the client's deadline."""

    def not_a_coroutine(request: bytes, call) -> bytes:
        raise ValueError("plain function")

    server, port, failures = started(loop, **{HOLD: not_a_coroutine})
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.RpcError) as error:
            channel.unary_unary(HOLD)(b"x", timeout=30)
        assert error.value.code() == grpc.StatusCode.UNKNOWN
        assert "plain function" in error.value.details()
        assert channel.unary_unary(ECHO)(b"fine", timeout=10) == b"echo:fine"
    assert failures.reasons == []
    on_loop(loop, server.stop(None))
