"""Shared fixtures: paths to real models, a real gateway on a loopback port."""
from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn, get_args

import httpx
import numpy as np
import pytest

from loadtests.support.processes import free_port, wait_until  # the repo's only ones, for the tests
from serving.settings import Settings
from tests.object_stores import SCHEMES

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
TFSERVING_MODELS = MODELS / "tfserving"
"""Our builds of TF Serving's test models (``make models``), under their original names."""
TFSERVING_FILES = REPO / "tests" / "fixtures" / "tfserving"
"""TF Serving's text fixtures, copied into the repository (see its README.md)."""
TFSERVING_ORIGINALS = REPO.parent / "shared" / "testdata" / "tfserving"
"""TF Serving's own testdata, beside the repository on machines that have it; not in a clone."""


def missing_outside(what: str, remedy: str) -> NoReturn:
    """The rule for what a test needs from outside Python and the repository (a tool, TF
    Serving's original files): when it is missing the test skips and says how to get it,
    except in CI (``CI=true``), where it fails: CI must run every test."""
    message = f"{what}; {remedy}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: what is missing fails, it never skips)", pytrace=False)
    pytest.skip(message)


def require_tool(command: str, install: str) -> str:
    """The path of ``command``, an outside tool the test needs (see ``missing_outside``)."""
    path = shutil.which(command)
    if path is None:
        missing_outside(f"{command} is not installed", f"install it with: {install}")
    return path


def require_pubsub_emulator() -> None:
    """gcloud, its Pub/Sub emulator and the Java it runs on (see ``missing_outside``)."""
    from loadtests.support.emulator import missing

    gap = missing()
    if gap is not None:
        what, install = gap
        missing_outside(what, f"install it with: {install}")


@pytest.fixture(scope="session")
def tfserving_dir() -> Path:
    """TF Serving's test models as we build them; a missing one fails (never skips)."""
    from serving.examples.tfserving import MODELS as TFSERVING_VERSIONS

    for model, versions in TFSERVING_VERSIONS.items():
        for version in versions:
            assert (TFSERVING_MODELS / model / version / "saved_model.pb").is_file(), (
                f"TF Serving test model {model}/{version} missing under {TFSERVING_MODELS}: "
                "run `make models` (make test does)"
            )
    return TFSERVING_MODELS


@pytest.fixture(scope="session")
def tfserving_files() -> Path:
    """TF Serving's configs and expected metadata answers (independent copies, not ours)."""
    return TFSERVING_FILES


@pytest.fixture(scope="session")
def tfserving_originals() -> Path:
    """TF Serving's original testdata, to check our builds and copies against.

    It lives outside the repository, so a clone lacks it: tests that need it skip there,
    and fail under ``CI=true``, where the comparison must run.
    """
    from serving.examples.tfserving import MODELS as TFSERVING_VERSIONS

    expected = [f"{model}/{version}/saved_model.pb"
                for model, versions in TFSERVING_VERSIONS.items() for version in versions]
    expected += sorted(p.name for p in TFSERVING_FILES.iterdir() if p.name != "README.md")
    missing = [name for name in expected if not (TFSERVING_ORIGINALS / name).is_file()]
    if missing:
        what = (f"no folder {TFSERVING_ORIGINALS}" if not TFSERVING_ORIGINALS.is_dir()
                else f"missing in {TFSERVING_ORIGINALS}: {', '.join(missing)}")
        missing_outside(f"TF Serving's original testdata: {what}",
                        "these checks run where the project's shared/ folder sits beside the clone")
    return TFSERVING_ORIGINALS


@pytest.fixture(scope="session")
def models_dir() -> Path:
    for name in ("natality", "image_classifier"):
        assert (MODELS / name / "1" / "saved_model.pb").is_file(), (
            f"example model {name} missing under {MODELS}: run `make models` (make test does)"
        )
    return MODELS


class Gate:
    """Where the held model's calls wait: closed for each test until the test opens it."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._lock = threading.Lock()
        self.waiting = 0  # model calls waiting at the gate now

    def pass_through(self, hold: np.ndarray) -> np.int64:
        """Run by the model (tf.numpy_function) on its batch's ``hold`` input."""
        if hold.any():
            with self._lock:
                self.waiting += 1
            try:
                self._open.wait(timeout=300)  # a bound for a broken test, never reached
            finally:
                with self._lock:
                    self.waiting -= 1
        return np.int64(0)

    def open(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._open.clear()


@pytest.fixture(scope="session")
def held_model(tmp_path_factory):
    """(base path, gate) of a real SavedModel, y = x + 1, whose calls with ``hold`` set wait
    at the gate; warm-up requests (zeros) pass.

    The wait is a tf.numpy_function, which the loaded model finds only in this process (the
    traced function registers it): serve it with an in-process gateway (gateway_factory).
    """
    import tensorflow as tf

    gate = Gate()

    class Held(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x"),
                                      tf.TensorSpec([None], tf.int64, name="hold")])
        def serve(self, x, hold):
            passed = tf.numpy_function(gate.pass_through, [hold], tf.int64, stateful=True)
            with tf.control_dependencies([passed]):
                return {"y": x + 1.0}

    module = Held()
    base = tmp_path_factory.mktemp("held")
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
    yield base, gate  # ``module`` stays alive, and its numpy function registered, until here


@pytest.fixture
def gate(held_model) -> Gate:
    """The held model's gate, closed; opened at teardown, so no call stays held. Request it
    after the fixture that starts the gateway, so it is torn down before the gateway stops."""
    _, gate = held_model
    gate.close()
    yield gate
    gate.open()


@pytest.fixture(scope="module", params=SCHEMES)
def store(request, tmp_path_factory):
    """A real object-store emulator (tests/object_stores.py) for the module, per scheme."""
    from tests.object_stores import running_store

    with running_store(request.param, tmp_path_factory.mktemp(f"{request.param}-emulator")) as store:
        yield store


@pytest.fixture
def store_env(store, monkeypatch, tmp_path):
    """The emulator's variables set for this process (the local Beam runner's workers run in
    it too); local copies of versions go under ``tmp_path`` (returned), so a test sees them
    come and go."""
    import tempfile

    for name, value in store.env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


GRPC_SERVERS = get_args(Settings.model_fields["grpc_server"].annotation)
"""``--grpc_server``'s choices: loop, aio."""


@pytest.fixture(scope="module", params=GRPC_SERVERS)
def grpc_server(request) -> str:
    """The gRPC server under test (``loop`` or ``aio``): a test asking for it runs on each."""
    return request.param


class Gateway:
    """A real gateway (uvicorn + the core) serving on a loopback port in a thread; its gRPC
    methods behind ``grpc_interceptors`` (``serving.grpc.interceptors``), its REST app given
    to ``wrap_app`` first (to add or wrap middleware, as an operator would)."""

    def __init__(self, settings, grpc_interceptors=(), wrap_app=None) -> None:
        import uvicorn

        from serving.core.service import InferenceService
        from serving.grpc.server import create_grpc_server
        from serving.metrics import Metrics
        from serving.rest.app import create_app
        from serving.server import DrainingServer, http_protocol, rest_tls_options

        self.settings = settings
        self.service = InferenceService(settings, Metrics())
        app = create_app(settings, self.service)
        self.http = http_protocol(settings)
        config = uvicorn.Config(app if wrap_app is None else wrap_app(app), host="127.0.0.1",
                                port=settings.rest_api_port, loop="asyncio", http=self.http,
                                lifespan="on", access_log=False, log_level="warning",
                                **rest_tls_options(settings))
        grpc_factory = ((lambda: create_grpc_server(settings, self.service, grpc_interceptors))
                        if settings.port else None)
        self.server = DrainingServer(config, self.service, settings.drain_timeout_seconds, grpc_factory)
        self.url = f"{'https' if settings.rest_api_ssl else 'http'}://127.0.0.1:{settings.rest_api_port}"
        self.grpc_target = f"127.0.0.1:{settings.port}"
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Gateway:
        self._thread.start()
        wait_until(lambda: self._ready(), timeout=120, what="gateway readiness")
        return self

    def _ready(self) -> bool:
        try:
            # the probe's own check of a TLS server's certificate is the TLS tests' business
            return httpx.get(self.url + "/readyz", timeout=2, verify=False).status_code == 200
        except httpx.TransportError:
            return False

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=60)

    def metric(self, name: str, **labels: str) -> float:
        """A sample's value from the server's own registry (0 if absent)."""
        value = self.service.metrics.registry.get_sample_value(name, labels or None)
        return value or 0.0


@pytest.fixture
def gateway_factory() -> Iterator[Callable[..., Gateway]]:
    """Start gateways with the given settings; all stop at the end of the test."""
    started: list[Gateway] = []

    def start(**overrides) -> Gateway:
        overrides.setdefault("rest_api_port", free_port())
        overrides.setdefault("port", 0)
        gateway = Gateway(Settings(**overrides)).__enter__()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.__exit__(None, None, None)


def run(coro):
    return asyncio.run(coro)


class RedisServer:
    """A real ``redis-server`` on a free loopback port, without persistence, started by the
    repo's launcher (``loadtests.support.processes.Job``): for the prediction store's tests and
    whatever writes to or reads from it (batch jobs, gateways)."""

    def __init__(self, log_dir: Path) -> None:
        from loadtests.support.processes import Job

        binary = require_tool("redis-server", "apt-get install redis-server")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
                "--appendonly", "no", "--dir", str(log_dir)]
        self.job = Job("redis-server", argv, log_dir / f"redis-{self.port}.log")
        try:
            wait_until(self._answers, timeout=30, what="redis-server to answer PING")
        except BaseException:
            self.job.stop()
            raise

    def _answers(self) -> bool:
        import socket

        self.job.check_alive("before it answered PING")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(7).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: the server is gone at once, as in a crash."""
        self.job.proc.kill()
        self.job.proc.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: the server still accepts connections (the kernel does) but answers
        nothing, as a store that is overloaded or partitioned away."""
        os.kill(self.job.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.job.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """SIGKILL (nothing to save: no persistence; also ends a paused server), then the
        launcher's own stop for the rest of the group and the log."""
        if self.job.alive():
            self.kill()
        self.job.stop()


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    """A fresh, empty redis-server for the test (skips without redis-server, fails under
    CI=true: ``require_tool``); stopped at the end."""
    server = RedisServer(tmp_path)
    yield server
    server.stop()
