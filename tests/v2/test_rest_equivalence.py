"""The same inputs through the Open Inference Protocol (tritonclient.http, JSON and binary
tensors) and through TF Serving's REST predict (columnar): the same outputs, for every
example and shape model the suite serves and TF Serving's test models.

Both requests run alone (batching off), so the model sees the same batch and the answers
must be equal exactly, floats included. JPEG bytes are not UTF-8, which v2 JSON cannot
carry (its BYTES are strings): the image classifier is compared in binary only.
"""
from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest
import tritonclient.http as triton

from serving.examples import natality
from serving.settings import ModelConfig, Settings, VersionPolicy
from tests.conftest import MODELS, Gateway, free_port
from tests.v2.test_rest import client  # noqa: F401 - the fixture, on this module's gateway

TFSERVING = MODELS / "tfserving"


def _strings(*values: str | bytes) -> np.ndarray:
    return np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=object)


def _cases() -> dict[str, dict[str, np.ndarray]]:
    rows = natality.sample_rows(8, seed=3)
    image = (MODELS / "sample.jpg").read_bytes()
    return {
        "natality": {name: _strings(*value) if value.dtype == object else value for name, value in rows.items()},
        "image_classifier": {"image_bytes": _strings(image, image[: len(image) // 2] + image[len(image) // 2:])},
        "bytes": {"data_bytes": _strings("abc", "", "\u00e9t\u00e9")},
        "scalar": {"x": np.array([1.5, -2.0, 0.0, 1e30], np.float32)},
        "text": {"text": _strings("hello", "World", "")},
        "vec1": {"x": np.array([[1.0], [2.5]], np.float32)},
        "vec16": {"x": np.linspace(-3, 3, 48, dtype=np.float32).reshape(3, 16)},
        "half_plus_two": {"x": np.array([[2.0], [3.0], [4.0]], np.float32)},
        "half_plus_three": {"x": np.array([2.0, 3.0, 4.0], np.float32)},
        "two_versions@123": {"x": np.array([[1.0], [7.0]], np.float32)},
        "two_versions@124": {"x": np.array([[1.0], [7.0]], np.float32)},
    }


CASES = _cases()
NOT_UTF8 = {"image_classifier"}


@pytest.fixture(scope="module")
def gateway(tfserving_dir, models_dir) -> Gateway:
    shapes = [ModelConfig(name=name, base_path=str(MODELS / "shapes" / name))
              for name in ("bytes", "scalar", "text", "vec1", "vec16")]
    models = (
        *shapes,
        ModelConfig(name="natality", base_path=str(models_dir / "natality")),
        ModelConfig(name="image_classifier", base_path=str(models_dir / "image_classifier")),
        ModelConfig(name="half_plus_two", base_path=str(TFSERVING / "saved_model_half_plus_two_cpu")),
        ModelConfig(name="half_plus_three", base_path=str(TFSERVING / "saved_model_half_plus_three")),
        ModelConfig(name="two_versions", base_path=str(TFSERVING / "saved_model_half_plus_two_2_versions"),
                    version_policy=VersionPolicy(kind="all")),
    )
    with Gateway(Settings(port=0, rest_api_port=free_port(), models=models)) as running:
        yield running


def _tf_serving(gateway: Gateway, model: str, version: str, inputs: dict[str, np.ndarray],
                names: list[str]) -> dict[str, np.ndarray]:
    columns = {name: [{"b64": base64.b64encode(v).decode()} for v in value.tolist()] if value.dtype == object
               else value.tolist() for name, value in inputs.items()}
    path = f"/v1/models/{model}" + (f"/versions/{version}" if version else "") + ":predict"
    response = httpx.post(gateway.url + path, json={"inputs": columns}, timeout=60)
    assert response.status_code == 200, response.text
    outputs = response.json()["outputs"]
    return outputs if len(names) > 1 else {names[0]: outputs}


def _same(v2: np.ndarray, tfs: object, name: str) -> None:
    if v2.dtype == object:
        got = [v if isinstance(v, bytes) else v.encode() for v in v2.ravel().tolist()]
        expected = [v.encode() if isinstance(v, str) else base64.b64decode(v["b64"])
                    for v in np.array(tfs, dtype=object).ravel().tolist()]
        assert got == expected, name
        assert v2.shape == np.array(tfs, dtype=object).shape, name
    else:
        expected = np.array(tfs, dtype=v2.dtype)
        np.testing.assert_array_equal(v2, expected, err_msg=name)
        assert v2.shape == expected.shape, name


@pytest.mark.parametrize(("case", "binary"), [
    pytest.param(case, binary, id=f"{case}-{'binary' if binary else 'json'}")
    for case in sorted(CASES) for binary in (True, False) if binary or case not in NOT_UTF8])
def test_v2_answers_equal_tf_serving_predict(gateway, client, case, binary):  # noqa: F811
    model, _, version = case.partition("@")
    inputs = CASES[case]
    tensors = []
    for name, value in inputs.items():
        tensor = triton.InferInput(name, list(value.shape), "BYTES" if value.dtype == object else "FP32")
        tensor.set_data_from_numpy(value, binary_data=binary)
        tensors.append(tensor)
    names = [t["name"] for t in client.get_model_metadata(model, version)["outputs"]]
    outputs = [triton.InferRequestedOutput(name, binary_data=binary) for name in names]
    result = client.infer(model, tensors, model_version=version, outputs=outputs)
    tfs = _tf_serving(gateway, model, version, inputs, names)
    assert sorted(tfs) == sorted(names)
    for name in names:
        _same(result.as_numpy(name), tfs[name], f"{case} {name}")
