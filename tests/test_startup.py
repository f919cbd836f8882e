"""What ``python -m serving`` says as it starts: one line per listener, none of TensorFlow's
start-up noise unless ``--verbose``, and one ``error:`` line with exit status 1 for a port it
cannot listen on (serving/server.py ``bind``, serving/tf_noise.py)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from loadtests.support.processes import Server
from tests.conftest import REPO, free_port

NOISE = ("absl::InitializeLog", "cudart_stub", "cuInit", "cpu_feature_guard", "is deprecated")


def gateway_argv(model: Path, rest: int, grpc: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "serving", "--host=127.0.0.1", f"--rest_api_port={rest}", f"--port={grpc}",
            "--model_name=m", f"--model_base_path={model}", *extra]


def started_log(tmp_path: Path, argv: list[str], rest: int) -> str:
    """The whole log of a gateway started with ``argv`` until ready, then stopped."""
    with Server("gateway", argv, tmp_path / "gateway.log", rest, ready_timeout=180):
        pass
    return (tmp_path / "gateway.log").read_text()


@pytest.fixture
def tf1_model(tfserving_dir: Path) -> Path:
    """A TF1 SavedModel: it is loaded into a Session by TensorFlow's deprecated loader."""
    return tfserving_dir / "saved_model_half_plus_two_cpu"


def test_each_listener_says_where_and_tensorflow_says_nothing(tf1_model, tmp_path):
    rest, grpc = free_port(), free_port()
    log = started_log(tmp_path, gateway_argv(tf1_model, rest, grpc), rest)
    lines = [line.split(" ", 3)[3] for line in log.splitlines() if " INFO serving: " in line]
    assert lines[:3] == [
        f"serving: gRPC API listening on 127.0.0.1:{grpc} (--port)",
        f"serving: REST API listening on http://127.0.0.1:{rest} (--rest_api_port)",
        f"serving: Prometheus metrics at http://127.0.0.1:{rest}/metrics (--monitoring_config_file)",
    ], log
    assert "m version 123 AVAILABLE" in log  # the model was loaded (where TensorFlow's noise comes from)
    assert not [line for line in log.splitlines() if any(word in line for word in NOISE)], log
    assert "Uvicorn running" not in log  # our line says it


@pytest.mark.slow
def test_verbose_shows_tensorflows_own_lines(tf1_model, tmp_path):
    rest = free_port()
    log = started_log(tmp_path, gateway_argv(tf1_model, rest, 0, "--verbose"), rest)
    assert "cudart_stub" in log or "cuInit" in log or "cpu_feature_guard" in log, log
    assert "load (from tensorflow.python.saved_model.loader_impl) is deprecated" in log
    assert "gRPC API listening" not in log  # --port=0: no gRPC server


@pytest.mark.parametrize("busy", ["rest", "grpc"])
def test_a_busy_port_is_one_line_naming_the_port_and_its_flag(busy, tf1_model):
    ports = {"rest": free_port(), "grpc": free_port()}
    flag = {"rest": "--rest_api_port", "grpc": "--port"}[busy]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TFGW_")}
    with socket.create_server(("127.0.0.1", ports[busy])):
        done = subprocess.run(gateway_argv(tf1_model, ports["rest"], ports["grpc"]), cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: cannot listen on 127.0.0.1:{ports[busy]} ({flag}={ports[busy]}): Address already in use"]


def test_only_tensorflows_known_start_up_lines_are_left_out(capsys):
    """Lines as TensorFlow 2.21 printed them here; anything else it prints is kept."""
    from serving.tf_noise import _write_back

    caught = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796677269.016516   31559 cudart_stub.cc:31] Could not find cuda drivers on your "
        "machine, GPU will not be used.",
        "I0000 00:00:1796677269.108742   31559 cpu_feature_guard.cc:227] This TensorFlow binary is optimized "
        "to use available CPU instructions in performance-critical operations.",
        "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the "
        "appropriate compiler flags.",
        "E0000 00:00:1796677449.459389   32455 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA "
        "error: Failed call to cuInit: UNKNOWN ERROR (303)",
    ]
    kept = [
        "E0000 00:00:1796677449.459389   32455 op_kernel.cc:1830] OP_REQUIRES failed: something real",
        "/site-packages/google/protobuf/runtime_version.py:98: UserWarning: Protobuf gencode version ...",
    ]
    _write_back("\n".join(caught[:2] + kept[:1] + caught[2:] + kept[1:]) + "\n")
    assert capsys.readouterr().err.splitlines() == kept


def test_an_app_that_fails_to_start_is_a_startup_error():
    """uvicorn ends a failed lifespan start-up with its own exit status 3: here it becomes the
    one-line StartupError, which ``main`` turns into exit status 1 (the app is a fault)."""
    import asyncio

    import uvicorn

    from serving.server import DrainingServer, StartupError, bind

    async def app(scope, receive, send):
        assert scope["type"] == "lifespan"
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "the store is unreachable"})

    sockets = bind("127.0.0.1", 0, "--rest_api_port")
    server = DrainingServer(uvicorn.Config(app, lifespan="on", log_level="critical"), service=None,
                            drain_timeout=1)
    try:
        with pytest.raises(StartupError, match="could not start"):
            asyncio.run(server.serve(sockets))
    finally:
        for sock in sockets:
            sock.close()
