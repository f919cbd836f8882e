"""The kserve SDK's own Open Inference Protocol clients against a real gateway: its
``InferenceRESTClient`` (``RESTConfig(protocol="v2")``: JSON tensors and the binary extension)
and its ``InferenceGRPCClient`` (typed and raw contents) answer what TF Serving's gRPC Predict
answers for the same inputs, exactly; health, readiness, model metadata read through the SDK's
generated protos, and the gateway's error for an unknown model as the SDK raises it.

The SDK lives in a venv of its own (``make kserve-venv``; see the Makefile for why it cannot
join ours), so ``kserve_sdk_client.py`` runs there as a subprocess, once for the module, and
prints its answers as JSON. Without the venv these tests skip, and fail under ``CI=true``.
"""
from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

from serving.v2 import datatypes
from tests.conftest import REPO, Gateway, missing_outside
from tests.v2.test_grpc_equivalence import CASES, assert_same, serving, tf_serving

KSERVE_VENV = REPO / "build" / "kserve-venv"
CLIENT = Path(__file__).with_name("kserve_sdk_client.py")
MODELS = ("natality", "shapes_text", "shapes_bytes")
"""Strings and floats in, floats out; UTF-8 text in and out; bytes that are not UTF-8."""
UNKNOWN = "no_such_model"
BINARY_ONLY = {"shapes_bytes"}
"""JSON tensors carry UTF-8 text only: these models' inputs go in binary and typed contents."""
VARIANTS = ("rest-json", "rest-binary", "grpc-typed", "grpc-raw")
INFERENCES = [f"{model} {variant}" for model in MODELS for variant in VARIANTS
              if not (model in BINARY_ONLY and variant == "rest-json")]


def _wire(values: np.ndarray) -> dict:
    datatype = datatypes.for_dtype(values.dtype).name
    flat = values.ravel().tolist()
    if datatype == "BYTES":
        flat = [base64.b64encode(v).decode() for v in flat]
    return {"datatype": datatype, "shape": list(values.shape), "values": flat}


def _array(tensor: dict) -> np.ndarray:
    datatype = datatypes.BY_NAME[tensor["datatype"]]
    if datatype is datatypes.BYTES:
        values = np.empty(len(tensor["values"]), dtype=object)
        values[:] = [base64.b64decode(v) for v in tensor["values"]]
    else:
        values = np.array(tensor["values"], dtype=datatype.dtype)
    return values.reshape(tensor["shape"])


@pytest.fixture(scope="module")
def sdk(models_dir) -> Iterator[tuple[Gateway, dict]]:
    """The gateway, and what the SDK answered against it."""
    python = KSERVE_VENV / "bin" / "python"
    if not (KSERVE_VENV / ".installed").exists():
        missing_outside(f"no kserve SDK venv at {KSERVE_VENV}", "build it with: make kserve-venv")
    with serving(list(MODELS)) as gateway:
        job = {"rest": gateway.url, "grpc": gateway.grpc_target, "unknown": UNKNOWN,
               "models": {m: {name: _wire(v) for name, v in CASES[m][1].items()} for m in MODELS}}
        done = subprocess.run([str(python), str(CLIENT)], input=json.dumps(job), capture_output=True,
                              text=True, timeout=300, check=False)
        assert done.returncode == 0, done.stderr[-5000:]
        yield gateway, json.loads(done.stdout)


def test_health_and_readiness(sdk):
    _, answers = sdk
    ready = {**{m: True for m in MODELS}, UNKNOWN: False}
    for protocol in ("rest", "grpc"):
        got = answers[protocol]
        assert (got["live"], got["ready"], got["model_ready"]) == (True, True, ready), protocol


def test_grpc_model_metadata_equals_rest_metadata(sdk):
    gateway, answers = sdk
    for model in MODELS:
        assert answers["metadata"][model] == httpx.get(f"{gateway.url}/v2/models/{model}", timeout=30).json()


def test_every_inference_ran(sdk):
    assert sorted(sdk[1]["infer"]) == sorted(INFERENCES)


@pytest.mark.parametrize("case", INFERENCES)
def test_inference_equals_tf_serving_predict(sdk, case):
    gateway, answers = sdk
    model, variant = case.split()
    got = answers["infer"][case]
    assert (got["id"], got["model_name"]) == (f"kserve-sdk-{variant}", model)
    # InferResponse.from_bytes (the SDK's REST reader) drops model_version; gRPC carries it
    assert got["model_version"] == (None if variant.startswith("rest") else "1")
    content_type = {"rest-json": "application/json", "rest-binary": "application/octet-stream"}
    assert got["content_type"] == content_type.get(variant)  # None: gRPC
    with grpc.insecure_channel(gateway.grpc_target) as channel:
        want = tf_serving(channel, model, CASES[model][1])
    assert_same({name: _array(t) for name, t in got["outputs"].items()}, want, case)


def test_unknown_model_raises_the_gateways_error(sdk):
    gateway, answers = sdk
    inputs = [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]
    plain = httpx.post(f"{gateway.url}/v2/models/{UNKNOWN}/infer", json={"inputs": inputs}, timeout=30)
    assert plain.status_code == 404
    message = plain.json()["error"]
    assert answers["rest"]["error"] == {
        "status": 404, "message": f"{message}, '404 Not Found' for url '{gateway.url}/v2/models/{UNKNOWN}/infer'"}
    assert answers["grpc"]["error"] == {"code": "NOT_FOUND", "details": message}
