"""``serving.rest.one_write.OneWriteHttp``: a response's head and body leave in one write, and
what clients receive is uvicorn's own answer (keep-alive, HEAD, pipelining, close)."""
from __future__ import annotations

import asyncio
import inspect
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
import uvicorn

from loadtests.support.processes import free_port, wait_until
from serving.rest.one_write import OneWriteHttp, _TickWrites


class FakeTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


def test_writes_of_one_loop_step_leave_as_one_and_close_flushes_first():
    async def scenario() -> FakeTransport:
        fake = FakeTransport()
        ticked = _TickWrites(fake, asyncio.get_running_loop())  # type: ignore[arg-type]
        ticked.write(b"head ")
        ticked.write(b"body")
        assert fake.writes == []
        await asyncio.sleep(0)  # one loop step
        assert fake.writes == [b"head body"]
        ticked.write(b"last")
        ticked.close()
        assert fake.writes == [b"head body", b"last"] and fake.closed
        assert ticked.get_extra_info("peername") == "info:peername"
        await asyncio.sleep(0)  # the scheduled flush finds nothing left
        return fake

    assert asyncio.run(scenario()).writes == [b"head body", b"last"]


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    body = b"x" * int(scope["path"].strip("/") or 0)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture
def server() -> Iterator[int]:
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=OneWriteHttp, lifespan="off",
                            log_level="warning")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    wait_until(lambda: srv.started, 10, "the server to start")
    yield port
    srv.should_exit = True
    thread.join(10)


def receive_until(sock: socket.socket, done: Callable[[bytes], bool]) -> bytes:
    """Bytes from ``sock`` until ``done`` holds for them or the server closes."""
    data = b""
    sock.settimeout(10)
    while not done(data) and (chunk := sock.recv(65536)):
        data += chunk
    return data


def test_keep_alive_pipelined_head_and_close_answer_as_uvicorn_does(server):
    with socket.create_connection(("127.0.0.1", server)) as sock:
        sock.sendall(b"GET /3 HTTP/1.1\r\nhost: a\r\n\r\nGET /70000 HTTP/1.1\r\nhost: a\r\n\r\n")
        data = receive_until(sock, lambda got: got.count(b"x") >= 70003)
        assert data.count(b"HTTP/1.1 200 OK\r\n") == 2 and data.count(b"x") == 70003
        first, second = data.split(b"xxx", 1)
        assert b"content-length: 3\r\n" in first and b"content-length: 70000\r\n" in second
        sock.sendall(b"HEAD /5 HTTP/1.1\r\nhost: a\r\n\r\n")
        head = receive_until(sock, lambda got: got.endswith(b"\r\n\r\n"))
        assert head.startswith(b"HTTP/1.1 200 OK\r\n") and b"content-length: 5\r\n" in head
        assert head.endswith(b"\r\n\r\n") and b"x" not in head
        sock.sendall(b"GET /2 HTTP/1.1\r\nhost: a\r\nconnection: close\r\n\r\n")
        last = receive_until(sock, lambda got: False)  # until the server closes
        assert last.startswith(b"HTTP/1.1 200 OK\r\n") and last.endswith(b"\r\n\r\nxx")


def test_the_uvicorn_internals_we_subclass_are_as_tested():
    """``OneWriteHttp`` subclasses uvicorn's httptools protocol (not its public API): this
    fails first when an upgrade moves it. uvicorn is pinned to this minor (pyproject.toml):
    run this file and tests/rest before lifting it; ``--rest_one_write=false`` is the public
    fallback (uvicorn's own protocol)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    assert uvicorn.__version__.split(".")[:2] == ["0", "55"]
    assert issubclass(OneWriteHttp, HttpToolsProtocol)
    assert list(inspect.signature(HttpToolsProtocol.connection_made).parameters) == ["self", "transport"]
    assert "self.loop = " in inspect.getsource(HttpToolsProtocol.__init__)  # which connection_made uses
    assert {"write", "close", "is_closing", "get_extra_info"} <= set(dir(asyncio.Transport))


@pytest.mark.parametrize("one_write", [True, False])
def test_the_gateway_answers_with_and_without_one_write(tfserving_dir, one_write):
    import httpx

    from serving.settings import ModelConfig, Settings
    from tests.conftest import Gateway

    models = (ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),)
    with Gateway(Settings(port=0, rest_api_port=free_port(), models=models, rest_one_write=one_write)) as gateway:
        assert gateway.http is (OneWriteHttp if one_write else "httptools")
        answer = httpx.post(gateway.url + "/v1/models/default:predict", json={"instances": [2.0]}, timeout=30)
        assert answer.json() == {"predictions": [3.0]}


@pytest.mark.slow
def test_without_one_write_the_gateway_never_imports_the_uvicorn_subclass(tmp_path, tfserving_dir):
    """The public fallback stands on its own: with the module that subclasses uvicorn's
    internals made unimportable (as if uvicorn had moved them), ``--rest_one_write=false``
    starts, answers and stops cleanly."""
    import sys

    import httpx

    from loadtests.support.processes import Server

    wrapper = ("import runpy, sys\n"
               "sys.modules['serving.rest.one_write'] = None  # any import of it now fails\n"
               "runpy.run_module('serving', run_name='__main__')\n")
    port = free_port()
    argv = [sys.executable, "-c", wrapper, f"--rest_api_port={port}", "--port=0", "--rest_one_write=false",
            "--model_name=default", f"--model_base_path={tfserving_dir / 'saved_model_half_plus_two_cpu'}"]
    with Server("gateway", argv, tmp_path / "gateway.log", port, ready_timeout=120) as server:
        answer = httpx.post(server.url + "/v1/models/default:predict", json={"instances": [2.0]}, timeout=30)
        assert answer.json() == {"predictions": [3.0]}
    assert server.proc.returncode == 0, server.log_tail()
