"""The v2 Locust users' request bodies (``payloads.v2_infer``) are what tritonclient sends for
the same columns: the same JSON head and, in binary, byte for byte the same tensor data."""
from __future__ import annotations

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from loadtests.support.payloads import columns, instances, v2_infer


def _tritonclient(model: str, rows: list, binary: bool) -> tuple[dict, bytes]:
    tensors = []
    for name, array in columns(model, rows).items():
        strings = array.dtype == object
        value = np.array([v.encode() if isinstance(v, str) else v for v in array], dtype=object) if strings else array
        tensor = triton.InferInput(name, list(array.shape), "BYTES" if strings else "FP32")
        tensor.set_data_from_numpy(value, binary_data=binary)
        tensors.append(tensor)
    body, length = triton.InferenceServerClient.generate_request_body(tensors)
    if length is None:
        return orjson.loads(body), b""
    return orjson.loads(body[:length]), body[length:]


def _ours(model: str, rows: list, binary: bool) -> tuple[dict, bytes]:
    body, headers = v2_infer(model, rows, binary)
    length = int(headers.get("Inference-Header-Content-Length", len(body)))
    return orjson.loads(body[:length]), body[length:]


@pytest.mark.parametrize(("model", "binary"), [
    ("natality", False), ("natality", True), ("image_classifier", True)])
def test_body_is_tritonclients(model, binary):
    rows = instances(model, 5, seed=7)
    head, data = _ours(model, rows, binary)
    want_head, want_data = _tritonclient(model, rows, binary)
    assert data == want_data and (len(data) > 0) == binary
    assert head["inputs"] == want_head["inputs"]
    # tritonclient asks for binary outputs whenever it lists none, even for JSON inputs;
    # the JSON user asks for JSON outputs (the whole request is text)
    assert head["parameters"] == {"binary_data_output": binary}
    assert want_head["parameters"] == {"binary_data_output": True}


def test_json_refuses_bytes_that_are_not_text():
    with pytest.raises(ValueError, match="not UTF-8"):
        v2_infer("image_classifier", instances("image_classifier", 1, seed=7), binary=False)
