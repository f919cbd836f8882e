"""``python -m serving`` as production runs it (uvloop, signals, exit codes), with gRPC calls in
flight: SIGTERM on each gRPC server, and a fault injected into the loop server's polling
thread. Calls are held in flight by the gated model (``tests/grpc/conftest.py``): they wait
in it, or queued behind it, until the test opens its gate.

The fault is injected by a wrapper that replaces ``LoopServer._accept`` before running the
``serving`` module (``python -c``): only the test's process has it; the gateway has no switch
for it that an operator or a client could reach.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from loadtests.support.probes import scrape
from loadtests.support.processes import Server
from tests.conftest import free_port, wait_until
from tests.grpc.conftest import GatedModel

CALLS = 50
FAULT_METHOD = "/tfgw.test.Fault/Inject"
FAULT_WRAPPER = """
import runpy
from serving.grpc import core_server

class InjectedCrash(BaseException):
    '''Caught by no guard inside the polling loop: it ends the polling thread.'''

accept = core_server.LoopServer._accept

def faulty(self, event):
    accept(self, event)
    if event.success and event.call_details.method == {method!r}:
        raise {fault}("injected fault in the polling thread")

core_server.LoopServer._accept = faulty
runpy.run_module("serving", run_name="__main__")
"""
FAILED = '{"error":"not ready: the gRPC server failed"}'
"""/readyz's answer once the gRPC server has failed (the details go to the log only)."""
FOREVER = 1_000_000
"""Naps for a call to wait until the gate opens (hours if it never does)."""
GOES_ON = "SIGTERM: the drain under way goes on"
"""The gateway's log line for a SIGTERM during a drain already under way."""
UVICORN_STOPS = "INFO:     Shutting down"
"""uvicorn's log line as it stops serving (at the end of a drain, or at once on a second signal)."""


def gateway(tmp_path: Path, model: GatedModel, grpc_server: str, drain_s: float,
            fault: str | None = None) -> tuple[Server, str]:
    """The gateway process serving the gated model (not yet waited for), and its gRPC target."""
    port, rest_port = free_port(), free_port()
    program = ["-m", "serving"] if fault is None else ["-c", FAULT_WRAPPER.format(method=FAULT_METHOD.encode(),
                                                                                    fault=fault)]
    argv = [sys.executable, *program, f"--port={port}", f"--rest_api_port={rest_port}", "--host=127.0.0.1",
            "--model_name=gated", f"--model_base_path={model.base_path}", f"--grpc_server={grpc_server}",
            f"--drain_timeout_seconds={drain_s}"]
    return Server("gateway", argv, tmp_path / "gateway.log", rest_port, ready_timeout=180), f"127.0.0.1:{port}"


def gated_request(naps: int) -> predict_pb2.PredictRequest:
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "gated"
    request.inputs["x"].dtype = 1  # DT_FLOAT
    request.inputs["x"].tensor_shape.dim.add().size = 1
    request.inputs["x"].float_val.append(1.0)
    request.inputs["hold"].dtype = 9  # DT_INT64
    request.inputs["hold"].tensor_shape.dim.add().size = 1
    request.inputs["hold"].int64_val.append(naps)
    return request


def outcome(future: grpc.Future) -> grpc.StatusCode:
    """The call's status once it has ended (OK: answered y = 2)."""
    error = future.exception(timeout=60)
    if error is not None:
        return error.code()
    y = future.result().outputs["y"]
    values = np.frombuffer(y.tensor_content, np.float32).tolist() if y.tensor_content else list(y.float_val)
    assert values == [2.0]
    return grpc.StatusCode.OK


@contextlib.contextmanager
def concurrent_call(work: Callable[[], httpx.Response]) -> Iterator[concurrent.futures.Future]:
    """``work()`` running in a thread while the block runs."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        yield pool.submit(work)


def in_flight(server: Server, n: int) -> Callable[[], bool]:
    def check() -> bool:
        server.check_alive(f"before {n} calls were in flight")
        return scrape(server, "gated").in_flight == n

    return check


def held_calls(server: Server, channel: grpc.Channel) -> tuple[Any, list[grpc.Future]]:
    """(the Predict stub, ``CALLS`` calls held at the gate: one in the model, the rest queued
    behind it), once the server counts them all in flight."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    calls = [stub.Predict.future(gated_request(FOREVER), timeout=120) for _ in range(CALLS)]
    wait_until(in_flight(server, CALLS), timeout=60, what=f"{CALLS} calls in flight")
    return stub, calls


def one_held_call(server: Server, channel: grpc.Channel) -> tuple[Any, grpc.Future]:
    """(the Predict stub, one call held at the gate), once the server counts it in flight."""
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    held = stub.Predict.future(gated_request(FOREVER), timeout=120)
    wait_until(in_flight(server, 1), timeout=60, what="the call in flight")
    return stub, held


def answered_then_exited(server: Server, held: grpc.Future, model: GatedModel, timeline: Timeline) -> int:
    """Open the gate: the held call is answered OK; the process's exit status once it ends."""
    model.open()
    timeline.mark("gate opened")
    assert outcome(held) == grpc.StatusCode.OK
    timeline.mark("the call in flight answered OK")
    code = server.proc.wait(timeout=30)
    timeline.mark(f"process exited {code}")
    return code


def readyz(server: Server) -> tuple[int, str] | None:
    try:
        answer = httpx.get(server.url + "/readyz", timeout=2)
    except httpx.TransportError:
        return None
    return answer.status_code, answer.text


def health(channel: grpc.Channel) -> str:
    """The server's health now: SERVING, NOT_SERVING, or the status code of a call that failed."""
    try:
        answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
    except grpc.RpcError as error:
        return error.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


class Timeline:
    """Seconds since the first event, per event, printed at the end (``pytest -s`` shows it)."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.events: list[tuple[float, str]] = []
        self._start = 0.0

    def mark(self, event: str) -> float:
        if not self.events:
            self._start = time.monotonic()
        at = time.monotonic() - self._start
        self.events.append((at, event))
        return at

    def show(self) -> None:
        print(f"\n{self.title}")
        for at, event in self.events:
            print(f"  +{at:6.3f} s  {event}")


@pytest.mark.slow
def test_sigterm_with_50_grpc_calls_in_flight_answers_them_and_exits_0(tmp_path, gated_model, grpc_server):
    drain_s = 60.0
    server, target = gateway(tmp_path, gated_model, grpc_server, drain_s)
    timeline = Timeline(f"SIGTERM, {CALLS} gRPC calls in flight, --grpc_server={grpc_server}")
    with server, grpc.insecure_channel(target) as channel:
        stub, calls = held_calls(server, channel)
        watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(), timeout=120)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        timeline.mark(f"SIGTERM with {CALLS} calls in flight")
        server.proc.send_signal(signal.SIGTERM)
        assert [answer.status for answer in watch] == [health_pb2.HealthCheckResponse.NOT_SERVING]
        timeline.mark("health Watch said NOT_SERVING and ended")
        wait_until(lambda: (readyz(server) or (0,))[0] == 503, timeout=30, what="/readyz 503")
        timeline.mark("/readyz 503")
        late = [stub.Predict.future(gated_request(0), timeout=30) for _ in range(5)]
        assert [outcome(call) for call in late] == [grpc.StatusCode.UNAVAILABLE] * 5
        timeline.mark("5 new calls refused UNAVAILABLE")
        assert not any(call.done() for call in calls)  # still in flight, at the gate
        gated_model.open()
        timeline.mark("gate opened")
        assert [outcome(call) for call in calls] == [grpc.StatusCode.OK] * CALLS
        timeline.mark(f"all {CALLS} calls answered OK")
        code = server.proc.wait(timeout=drain_s + 15)
        timeline.mark(f"process exited {code}")
    timeline.show()
    assert code == 0, server.log_tail()


@pytest.mark.slow
def test_sigterm_past_the_drain_timeout_ends_the_calls_left_unavailable_and_exits_0(
        tmp_path, gated_model, grpc_server):
    """A call stuck in the model, 49 queued behind it: the drain timeout passes, the gRPC
    server's grace passes, and every call is refused UNAVAILABLE, none left hanging. The
    stuck model call itself cannot be interrupted: the process exits once the test lets it end."""
    drain_s = 2.0
    server, target = gateway(tmp_path, gated_model, grpc_server, drain_s)
    timeline = Timeline(f"SIGTERM past a {drain_s:g} s drain timeout, --grpc_server={grpc_server}")
    with server, grpc.insecure_channel(target) as channel:
        stub, calls = held_calls(server, channel)
        timeline.mark(f"SIGTERM with {CALLS} calls in flight")
        server.proc.send_signal(signal.SIGTERM)
        outcomes = [outcome(call) for call in calls]
        timeline.mark(f"all {CALLS} calls ended: {sorted({code.name for code in outcomes})}")
        gated_model.open()
        timeline.mark("gate opened (the stuck model call ends)")
        code = server.proc.wait(timeout=drain_s + 15)
        timeline.mark(f"process exited {code}")
    timeline.show()
    assert outcomes == [grpc.StatusCode.UNAVAILABLE] * CALLS
    assert code == 0, server.log_tail()


@pytest.mark.slow
def test_an_accept_fault_turns_health_and_readiness_off_answers_what_is_in_flight_and_exits_1(
        tmp_path, gated_model):
    """The polling thread survives the fault: it still answers health (NOT_SERVING) and the
    call in flight, and the process ends with status 1 once the call is answered."""
    server, target = gateway(tmp_path, gated_model, "loop", drain_s=60.0, fault="RuntimeError")
    timeline = Timeline("RuntimeError injected into LoopServer._accept (the polling thread lives on)")
    with server, grpc.insecure_channel(target) as channel:
        stub, held = one_held_call(server, channel)
        assert health(channel) == "SERVING"
        timeline.mark("fault injected (one gRPC call in flight)")
        with pytest.raises(grpc.RpcError):
            channel.unary_unary(FAULT_METHOD)(b"", timeout=10)
        wait_until(lambda: health(channel) == "NOT_SERVING", timeout=30, what="health NOT_SERVING")
        timeline.mark("gRPC health NOT_SERVING")
        wait_until(lambda: (readyz(server) or (0,))[0] == 503, timeout=30, what="/readyz 503")
        timeline.mark(f"/readyz {readyz(server)}")
        assert readyz(server) == (503, FAILED)
        refused = stub.Predict.future(gated_request(0), timeout=30)
        assert outcome(refused) == grpc.StatusCode.UNAVAILABLE
        assert not held.done()
        code = answered_then_exited(server, held, gated_model, timeline)
    timeline.show()
    assert code == 1, server.log_tail()
    assert "the gRPC server failed" in server.log_path.read_text()


@pytest.mark.slow
def test_a_sigterm_during_the_drain_a_fault_started_lets_it_finish_and_exits_1(tmp_path, gated_model):
    """Kubernetes deletes the pod (SIGTERM) while the failed gateway drains: that is not a second
    signal, so the call in flight is still answered and the process exits 1, not by the signal."""
    server, target = gateway(tmp_path, gated_model, "loop", drain_s=60.0, fault="RuntimeError")
    timeline = Timeline("RuntimeError injected into LoopServer._accept, then SIGTERM during the drain")
    with server, grpc.insecure_channel(target) as channel:
        _, held = one_held_call(server, channel)
        timeline.mark("fault injected (one gRPC call in flight)")
        with pytest.raises(grpc.RpcError):
            channel.unary_unary(FAULT_METHOD)(b"", timeout=10)
        wait_until(lambda: readyz(server) == (503, FAILED), timeout=30, what="/readyz 503: draining")
        timeline.mark("draining (/readyz 503)")
        server.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: any(line in server.log_path.read_text() for line in (GOES_ON, UVICORN_STOPS)),
                   timeout=30, what="the SIGTERM handled: the drain going on, or uvicorn stopping")
        timeline.mark("SIGTERM handled")
        assert UVICORN_STOPS not in server.log_path.read_text()  # not at once, as on a second signal
        assert not held.done()  # the drain goes on: the call still waits at the gate
        code = answered_then_exited(server, held, gated_model, timeline)
    timeline.show()
    assert code == 1, server.log_tail()


@pytest.mark.slow
def test_a_fault_that_ends_the_polling_thread_turns_readiness_off_and_exits_1(tmp_path, gated_model):
    """The polling thread is gone: gRPC answers nothing more (health cannot say NOT_SERVING),
    REST's /readyz says 503 while a REST call in flight finishes, then the process ends 1,
    its stop of the dead gRPC server bounded."""
    server, target = gateway(tmp_path, gated_model, "loop", drain_s=60.0, fault="InjectedCrash")
    timeline = Timeline("an exception no guard catches, injected into LoopServer._accept (the thread ends)")
    body = {"inputs": {"x": [1.0], "hold": [FOREVER]}}
    with server, grpc.insecure_channel(target) as channel, httpx.Client(timeout=120) as rest:
        assert health(channel) == "SERVING"
        with concurrent_call(lambda: rest.post(server.url + "/v1/models/gated:predict", json=body)) as held:
            wait_until(in_flight(server, 1), timeout=60, what="the REST call in flight")
            timeline.mark("fault injected (one REST call in flight)")
            with pytest.raises(grpc.RpcError):
                channel.unary_unary(FAULT_METHOD)(b"", timeout=5)
            wait_until(lambda: (readyz(server) or (0,))[0] == 503, timeout=30, what="/readyz 503")
            timeline.mark(f"/readyz {readyz(server)}")
            assert readyz(server) == (503, FAILED)
            timeline.mark(f"gRPC health: {health(channel)}")
            assert not held.done()
            gated_model.open()
            timeline.mark("gate opened")
            assert held.result(timeout=60).json() == {"outputs": [2.0]}
            timeline.mark("the REST call in flight answered 200")
        code = server.proc.wait(timeout=30)
        timeline.mark(f"process exited {code}")
    timeline.show()
    assert code == 1, server.log_tail()
