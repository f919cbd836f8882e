"""Shared fixtures: paths to real models, a real gateway on a loopback port."""
from __future__ import annotations

import asyncio
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NoReturn

import httpx
import pytest

from loadtests.processes import free_port, wait_until  # the repo's only ones, for the tests

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parents[1]
MODELS = REPO / "models"
TFSERVING_MODELS = MODELS / "tfserving"
"""Our builds of TF Serving's test models (``make models``), under their original names."""
TFSERVING_FILES = REPO / "tests" / "fixtures" / "tfserving"
"""TF Serving's text fixtures, copied into the repository (see its README.md)."""
TFSERVING_ORIGINALS = REPO.parent / "shared" / "testdata" / "tfserving"
"""TF Serving's own testdata, beside the repository on machines that have it; not in a clone."""


def tool_missing(what: str, install: str) -> NoReturn:
    """The rule for tools from outside Python: a test that needs a missing one skips and says
    what to install, except in CI (``CI=true``), where it fails: CI must run every test."""
    message = f"{what}; install it with: {install}"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message} (CI=true: a missing tool fails, it never skips)", pytrace=False)
    pytest.skip(message)


def require_tool(command: str, install: str) -> str:
    """The path of ``command``, an outside tool the test needs (see ``tool_missing``)."""
    path = shutil.which(command)
    if path is None:
        tool_missing(f"{command} is not installed", install)
    return path


def require_pubsub_emulator() -> None:
    """gcloud, its Pub/Sub emulator and the Java it runs on (see ``tool_missing``)."""
    from loadtests.emulator import missing

    gap = missing()
    if gap is not None:
        tool_missing(*gap)


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
        message = f"TF Serving's original testdata: {what}"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message} (CI=true: the comparison must run)", pytrace=False)
        pytest.skip(message)
    return TFSERVING_ORIGINALS


@pytest.fixture(scope="session")
def models_dir() -> Path:
    for name in ("natality", "image_classifier"):
        assert (MODELS / name / "1" / "saved_model.pb").is_file(), (
            f"example model {name} missing under {MODELS}: run `make models` (make test does)"
        )
    return MODELS


@pytest.fixture(scope="session")
def slow_model_dir(tmp_path_factory) -> Path:
    """A real SavedModel whose cost the caller chooses: y = x + 1 after max(spin) loop steps.

    Lets tests hold the model busy for as long as they need, with no fake in the server.
    """
    import tensorflow as tf

    class Slow(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x"),
                                      tf.TensorSpec([None], tf.int64, name="spin")])
        def serve(self, x, spin):
            steps = tf.reduce_max(tf.concat([spin, tf.zeros([1], tf.int64)], 0))
            _, acc = tf.while_loop(lambda i, a: i < steps, lambda i, a: (i + 1, a * 0.5 + 1.0),
                                   (tf.constant(0, tf.int64), tf.constant(0.0)))
            return {"y": x + 1.0 + 0.0 * acc}

    base = tmp_path_factory.mktemp("slow")
    module = Slow()
    tf.saved_model.save(module, str(base / "1"), signatures={"serving_default": module.serve})
    return base


class Gateway:
    """A real gateway (uvicorn + the core) serving on a loopback port in a thread."""

    def __init__(self, settings) -> None:
        import uvicorn

        from serving.core.service import InferenceService
        from serving.grpc.server import create_grpc_server
        from serving.metrics import Metrics
        from serving.rest.app import create_app
        from serving.server import DrainingServer

        self.settings = settings
        self.service = InferenceService(settings, Metrics())
        config = uvicorn.Config(create_app(settings, self.service), host="127.0.0.1",
                                port=settings.rest_api_port, loop="asyncio", http="httptools",
                                lifespan="on", access_log=False, log_level="warning")
        grpc_factory = (lambda: create_grpc_server(settings, self.service)) if settings.port else None
        self.server = DrainingServer(config, self.service, settings.drain_timeout_seconds, grpc_factory)
        self.url = f"http://127.0.0.1:{settings.rest_api_port}"
        self.grpc_target = f"127.0.0.1:{settings.port}"
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> Gateway:
        self._thread.start()
        wait_until(lambda: self._ready(), timeout=120, what="gateway readiness")
        return self

    def _ready(self) -> bool:
        try:
            return httpx.get(self.url + "/readyz", timeout=2).status_code == 200
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
    from serving.settings import Settings

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
