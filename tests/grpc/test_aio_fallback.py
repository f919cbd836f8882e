"""``--grpc_server=aio`` is the fallback for when grpc's private cygrpc names change: it must
start and serve without ``serving.grpc.core_server`` (which reads them at import). A wrapper
makes that import fail before running ``python -m serving`` as production does."""
from __future__ import annotations

import signal
import sys

import grpc
import httpx
from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

from loadtests.support.processes import Server
from tests.conftest import free_port

WITHOUT_CORE_SERVER = """
import runpy
import sys

sys.modules["serving.grpc.core_server"] = None  # any import of it raises ImportError
runpy.run_module("serving", run_name="__main__")
"""


def test_the_aio_server_starts_serves_and_stops_without_the_loop_servers_module(tmp_path, tfserving_dir):
    port, rest_port = free_port(), free_port()
    argv = [sys.executable, "-c", WITHOUT_CORE_SERVER, f"--port={port}", f"--rest_api_port={rest_port}",
            "--host=127.0.0.1", "--model_name=default", "--grpc_server=aio",
            f"--model_base_path={tfserving_dir / 'saved_model_half_plus_two_cpu'}"]
    with Server("gateway", argv, tmp_path / "gateway.log", rest_port, ready_timeout=180) as server, \
            grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        assert httpx.get(server.url + "/readyz", timeout=10).status_code == 200
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "default"
        status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(request, timeout=30)
        assert [version.state for version in status.model_version_status] == [
            get_model_status_pb2.ModelVersionStatus.AVAILABLE]
        server.proc.send_signal(signal.SIGTERM)
        code = server.proc.wait(timeout=30)
    assert code == 0, server.log_tail()
