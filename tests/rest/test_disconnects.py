"""A client that goes away mid-upload is nobody's error: one debug line, no traceback, and
the gateway goes on answering."""
from __future__ import annotations

import logging
import socket

import httpx

from serving.settings import ModelConfig, Settings
from tests.conftest import Gateway, free_port, wait_until


def test_a_disconnect_mid_upload_is_a_debug_line(tfserving_dir, caplog):
    models = (ModelConfig(name="default", base_path=str(tfserving_dir / "saved_model_half_plus_two_cpu")),)
    caplog.set_level(logging.DEBUG, logger="serving.rest.app")
    with Gateway(Settings(port=0, rest_api_port=free_port(), models=models)) as gateway:
        with socket.create_connection(("127.0.0.1", gateway.settings.rest_api_port)) as sock:
            sock.sendall(b"POST /v1/models/default:predict HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"instances\": [")
        wait_until(lambda: any("client disconnected" in r.getMessage() for r in caplog.records),
                   timeout=30, what="the disconnect to be logged")
        answer = httpx.post(gateway.url + "/v1/models/default:predict", json={"instances": [2.0]}, timeout=30)
        assert answer.json() == {"predictions": [3.0]}
    ours = [r for r in caplog.records if r.name.startswith("serving")]
    assert [r for r in ours if r.levelno >= logging.WARNING] == []
    assert [r.levelno for r in ours if "client disconnected" in r.getMessage()] == [logging.DEBUG]
