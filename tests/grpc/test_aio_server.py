"""``AioServer`` alone (``--grpc_server=aio``): grpc.aio's server ending on its own (its
serving task crashed) is reported as ``LoopServer``'s failed polling thread is."""
from __future__ import annotations

import threading

from serving.grpc.aio_server import AioServer
from tests.conftest import wait_until
from tests.grpc.conftest import on_loop


def test_grpc_aio_ending_on_its_own_is_a_failure_and_our_stop_is_not(loop):
    reasons: list[str] = []
    threads: list[str] = []

    def failed(reason: str) -> None:
        reasons.append(reason)
        threads.append(threading.current_thread().name)

    async def make() -> AioServer:
        return AioServer()

    crashing, stopped = on_loop(loop, make()), on_loop(loop, make())
    for server in (crashing, stopped):
        server.on_failure(failed)
        server.add_insecure_port("127.0.0.1:0")
        on_loop(loop, server.start())
    on_loop(loop, crashing._server.stop(None))  # what grpc.aio does when its serving task crashes
    on_loop(loop, stopped.stop(None))
    wait_until(lambda: reasons, timeout=10, what="the failure to be reported")
    assert reasons == ["grpc.aio's server stopped on its own"] and threads == ["loop-thread"]
