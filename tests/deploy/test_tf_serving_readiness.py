"""TF Serving's readiness script, as rendered, run by bash against a stand-in for TF Serving's
REST status endpoint: ready only when every configured model has a version AVAILABLE."""
from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.conftest import free_port
from tests.deploy.workloads import is_tf_serving, workloads


def _status(*states: str) -> dict:
    """GET /v1/models/NAME as TF Serving answers it: one entry per known version."""
    return {"model_version_status": [
        {"version": str(v), "state": s, "status": {"error_code": "OK", "error_message": ""}}
        for v, s in enumerate(states, start=1)]}


class _FakeStatus(BaseHTTPRequestHandler):
    """Answers from ``models`` (name -> status) and records the names asked for."""

    models: dict[str, dict] = {}
    asked: list[str] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        name = self.path.removeprefix("/v1/models/")
        self.asked.append(name)
        found = name in self.models
        body = json.dumps(self.models[name] if found else {"error": f"Servable not found: {name}"},
                          indent=1).encode()
        self.send_response(200 if found else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture(scope="module")
def fake_server() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeStatus)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture
def fake_tf_serving(fake_server) -> tuple[int, dict[str, dict], list[str]]:
    _FakeStatus.models.clear()
    _FakeStatus.asked.clear()
    return fake_server, _FakeStatus.models, _FakeStatus.asked


@pytest.fixture
def probe(rendered, tmp_path) -> list[str]:
    """The readiness command of the prod overlay, with its files taken from the rendered ConfigMaps."""
    (server,) = [w for w in workloads(rendered["prod"], tmp_path) if is_tf_serving(w.container)]
    interpreter, script, config, _port = server.container["readinessProbe"]["exec"]["command"]
    return [interpreter, str(server.local(script)), str(server.local(config))]


def _run(probe: list[str], port: int) -> subprocess.CompletedProcess:
    return subprocess.run([*probe, str(port)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("natality, classifier, ready", [
    (_status("AVAILABLE"), _status("AVAILABLE"), True),
    (_status("END", "AVAILABLE"), _status("AVAILABLE"), True),  # after a version switch
    (_status("LOADING"), _status("AVAILABLE"), False),  # TF Serving answers 200 here
    (_status("AVAILABLE"), _status("START"), False),
    (_status("AVAILABLE", "UNLOADING"), None, False),  # unknown to the server: 404
])
def test_ready_only_when_every_model_is_available(fake_tf_serving, probe, natality, classifier, ready):
    port, models, asked = fake_tf_serving
    models["natality"] = natality
    if classifier is not None:
        models["image_classifier"] = classifier
    result = _run(probe, port)
    assert (result.returncode == 0) == ready, result.stdout + result.stderr
    if ready:
        assert sorted(asked) == ["image_classifier", "natality"]  # every model in the config
    else:
        assert "has no AVAILABLE version" in result.stdout


def test_not_ready_while_the_port_is_closed(probe):
    result = _run(probe, free_port())
    assert result.returncode != 0 and "is not open" in result.stdout
